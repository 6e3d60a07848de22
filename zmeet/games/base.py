"""What every game is to the machinery (:mod:`zmeet.games.arena`): two seats, moves, an outcome.

A game is one module of pure rules (:mod:`.tictactoe`, :mod:`.guess`): a subclass of
:class:`Game` that says whose turn it is, checks and applies a move, and decides the outcome.
Challenges, clocks, resigning, disconnects, rematches, spectators and the bot's turn are the
machinery's, written once for every game. No sockets, no clocks; randomness is passed in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from random import Random
from typing import ClassVar

from ..errors import Refused
from ..protocol.codes import ErrorCode


class GameErrorCode(IntEnum):
    """Codes of the ERROR replies to game requests (docs/protocol.md, "Games"), beside the
    common ones (400 BAD_REQUEST, 429 TOO_MANY). The numbers are ``ErrorCode``'s."""

    BAD_REQUEST = ErrorCode.BAD_REQUEST
    """Unknown game, bad options or time-out, challenging yourself."""
    NOT_PLAYER = ErrorCode.NOT_MEMBER
    """The game or challenge is not yours to move in, answer, resign or claim."""
    NOT_FOUND = ErrorCode.NOT_FOUND
    """No such game or challenge, or the nick challenged is not online."""
    GAME_OVER = ErrorCode.GONE
    """The game has ended: no more moves."""
    ILLEGAL_MOVE = ErrorCode.PRECONDITION_FAILED
    """The rules refuse the move (a cell that does not exist or is taken, a number out of
    range), or the action does not apply now (a claim while the opponent is here)."""
    NOT_YOUR_TURN = ErrorCode.NOT_YOUR_TURN
    """It is the other player's turn."""
    TOO_MANY = ErrorCode.TOO_MANY
    """Too many running games or open challenges for this nick."""


class GameError(Refused):
    """A game request broke a rule. ``code`` is a :class:`GameErrorCode`, ``reason`` text for
    people; the broker answers ``ERROR(code, reason)`` (it is a
    :class:`~zmeet.errors.Refused`) and the player may try again."""


class IllegalMove(GameError):
    """The rules refuse this move; the same player moves again."""

    def __init__(self, reason: str) -> None:
        super().__init__(GameErrorCode.ILLEGAL_MOVE, reason)


class NotYourTurn(GameError):
    """It is the other player's turn."""

    def __init__(self, reason: str = "it is not your turn") -> None:
        super().__init__(GameErrorCode.NOT_YOUR_TURN, reason)


class GameOver(GameError):
    """The game has ended."""

    def __init__(self, reason: str = "the game is over") -> None:
        super().__init__(GameErrorCode.GAME_OVER, reason)


@dataclass(frozen=True, slots=True)
class Move:
    """One move: the ``seat`` (0 or 1) that made it, its ``value`` (a cell, a number) and the
    ``note`` the rules put on it (guess-the-number: ``LOW``, ``HIGH``, ``WIN``; else "")."""

    seat: int
    value: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a game ended: ``winner`` is a seat, or None for a draw or an abandoned game;
    ``reason`` one of :data:`REASONS`."""

    winner: int | None
    reason: str


REASONS = {
    "line": "K in a row",
    "full": "the board is full",
    "guessed": "the number was guessed",
    "tries": "no tries left",
    "resign": "resigned",
    "time": "out of time",
    "claim": "the opponent left and the win was claimed",
    "disconnect": "the opponent left and did not come back",
    "abandoned": "both players left",
}
"""Why a game ended, and how to say it to people."""


class Game(ABC):
    """Pure rules of one two-seat, turn-based game.

    Seat 0 moves first. ``options`` (validated by :meth:`check_options`) are small integers the
    challenger chose (board size, range of numbers). Subclasses implement :attr:`turn`,
    :meth:`_play`, :meth:`visible_moves` and :meth:`bot_move`; the machinery ends games for
    reasons outside the rules (resign, time, disconnect) with :meth:`end`.
    """

    KIND: ClassVar[str] = ""
    """The game's name on the wire: ``ttt``, ``guess``."""
    TITLE: ClassVar[str] = ""
    """The game's name for people."""
    SEAT_NAMES: ClassVar[tuple[str, str]] = ("first", "second")
    """What each seat is called: ``("X", "O")``, ``("picker", "guesser")``."""
    CHALLENGER_SEAT: ClassVar[int] = 0
    """The seat a challenger takes (a rematch swaps the seats)."""
    DEFAULTS: ClassVar[dict[str, int]] = {}
    """Every option with its default."""
    HIDDEN_INFO: ClassVar[bool] = False
    """True if :meth:`visible_moves` hides something from some viewers."""

    def __init__(self, options: Mapping[str, int] | None = None) -> None:
        self.options = self.check_options(options or {})
        self.moves: list[Move] = []
        self.outcome: Outcome | None = None

    @classmethod
    def check_options(cls, given: Mapping[str, int]) -> dict[str, int]:
        """``given`` completed with the defaults. Raises :class:`GameError` BAD_REQUEST for an
        unknown option or a value out of range; subclasses add their range checks."""
        unknown = set(given) - set(cls.DEFAULTS)
        if unknown:
            raise GameError(
                GameErrorCode.BAD_REQUEST,
                f"{cls.TITLE} has no option {sorted(unknown)[0]!r} "
                f"(it has: {', '.join(cls.DEFAULTS) or 'none'})",
            )
        out = dict(cls.DEFAULTS)
        for key, value in given.items():
            if type(value) is not int:
                raise GameError(GameErrorCode.BAD_REQUEST, f"option {key!r} must be an integer")
            out[key] = value
        return out

    @property
    def over(self) -> bool:
        return self.outcome is not None

    @property
    @abstractmethod
    def turn(self) -> int | None:
        """The seat to move, or None when the game is over."""

    def play(self, seat: int, value: int) -> Move:
        """Apply ``seat``'s move ``value`` and return it as recorded (with its note).

        Raises :class:`GameOver`, :class:`NotYourTurn` or :class:`IllegalMove` (nothing
        changes: the same player moves again).
        """
        if self.outcome is not None:
            raise GameOver()
        if seat != self.turn:
            raise NotYourTurn()
        move = self._play(seat, value)
        self.moves.append(move)
        return move

    @abstractmethod
    def _play(self, seat: int, value: int) -> Move:
        """Check and apply a move of the seat whose turn it is; set :attr:`outcome` if it ends
        the game. Raises :class:`IllegalMove` and changes nothing then."""

    def end(self, winner: int | None, reason: str) -> None:
        """End the game for a reason outside the rules (resign, time, disconnect). Raises
        :class:`GameOver` if it has already ended."""
        if self.outcome is not None:
            raise GameOver()
        self.outcome = Outcome(winner, reason)

    def visible_moves(self, viewer: int | None) -> tuple[Move, ...]:
        """The moves as ``viewer`` (a seat, or None for a spectator) may see them: a game with
        hidden information shows a hidden value as 0 until the game is over."""
        return tuple(self.moves)

    @abstractmethod
    def bot_move(self, seat: int, rng: Random, node_budget: int) -> int:
        """A move for ``seat`` chosen by the broker's bot, searching at most ``node_budget``
        positions. Pure: it reads this game and never changes it, so that the broker can run it
        on a copy in a thread."""

    def copy(self) -> Game:
        """An independent copy (for the bot to think about while the game goes on)."""
        other = type(self)(self.options)
        other.moves = list(self.moves)
        other.outcome = self.outcome
        other._copy_from(self)
        return other

    def _copy_from(self, other: Game) -> None:  # noqa: B027 (optional hook, not abstract)
        """Copy the subclass's own state from ``other`` (called by :meth:`copy`); a game
        whose state is only its moves needs nothing."""

    def describe(self) -> str:
        """The game and its options in a few words, for people."""
        return self.TITLE
