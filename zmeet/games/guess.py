"""Guess-the-number, as in the seeds' course notes: one picks a number from 1 to 100, the other
has 5 tries; each wrong guess is answered LOW (the guess is too low) or HIGH (too high).

Seat 0 is the picker, whose one move is the secret number; seat 1 the guesser, who moves until
the number is guessed (``WIN``) or no tries are left. The secret is hidden from the guesser and
from spectators until the game is over. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from random import Random

from .base import Game, GameError, GameErrorCode, IllegalMove, Move, Outcome

LOW, HIGH, WIN, PICK = "LOW", "HIGH", "WIN", "PICK"
"""Notes on moves: the guess is too low, too high, right; the picker's move."""

MAX_NUMBER = 1_000_000
MAX_TRIES = 50


def bounds(options: Mapping[str, int], moves: Sequence[Move]) -> tuple[int, int]:
    """The range the secret can still be in, from the hints on ``moves``."""
    low, high = options["low"], options["high"]
    for move in moves:
        if move.note == LOW:
            low = max(low, move.value + 1)
        elif move.note == HIGH:
            high = min(high, move.value - 1)
    return low, high


class Guess(Game):
    """Guess-the-number (options ``low`` 1, ``high`` 100, ``tries`` 5)."""

    KIND = "guess"
    TITLE = "guess-the-number"
    SEAT_NAMES = ("picker", "guesser")
    CHALLENGER_SEAT = 1
    DEFAULTS = {"low": 1, "high": 100, "tries": 5}
    HIDDEN_INFO = True

    @classmethod
    def check_options(cls, given: Mapping[str, int]) -> dict[str, int]:
        out = super().check_options(given)
        if not 1 <= out["low"] < out["high"] <= MAX_NUMBER:
            raise GameError(GameErrorCode.BAD_REQUEST,
                            f"the numbers must be a range within 1 to {MAX_NUMBER}")
        if not 1 <= out["tries"] <= MAX_TRIES:
            raise GameError(GameErrorCode.BAD_REQUEST, f"tries must be 1 to {MAX_TRIES}")
        return out

    @property
    def secret(self) -> int | None:
        return self.moves[0].value if self.moves else None

    @property
    def tries_left(self) -> int:
        return self.options["tries"] - max(0, len(self.moves) - 1)

    @property
    def turn(self) -> int | None:
        if self.outcome is not None:
            return None
        return 0 if not self.moves else 1

    def _play(self, seat: int, value: int) -> Move:
        low, high = self.options["low"], self.options["high"]
        if not low <= value <= high:
            raise IllegalMove(f"{value} is out of range: choose {low} to {high}")
        if seat == 0:
            return Move(0, value, PICK)
        secret = self.moves[0].value
        if value == secret:
            self.outcome = Outcome(1, "guessed")
            return Move(1, value, WIN)
        note = LOW if value < secret else HIGH
        if self.tries_left <= 1:
            self.outcome = Outcome(0, "tries")
        return Move(1, value, note)

    def visible_moves(self, viewer: int | None) -> tuple[Move, ...]:
        if self.outcome is not None or viewer == 0 or not self.moves:
            return tuple(self.moves)
        return (Move(0, 0, PICK), *self.moves[1:])

    def bot_move(self, seat: int, rng: Random, node_budget: int) -> int:
        """The picker picks at random; the guesser halves the range the hints leave."""
        if seat == 0:
            return rng.randint(self.options["low"], self.options["high"])
        low, high = bounds(self.options, self.moves)
        return (low + high) // 2 if low <= high else self.options["low"]

    def describe(self) -> str:
        o = self.options
        return f"{self.TITLE}, {o['low']} to {o['high']}, {o['tries']} tries"
