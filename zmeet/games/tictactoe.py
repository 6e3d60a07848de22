"""Tic-tac-toe on an N x N board, K in a row wins (the seeds' game, generalised).

Cells are numbered 1 to N*N, row by row, as in the seeds' ``tictactoe.py``; a board is a tuple
of N*N ints, 0 for a free cell, 1 for X (seat 0, who moves first) and 2 for O (seat 1).
Pure: no I/O, no clock. The line tables are in :mod:`zmeet.games.lines` (shared with the
bot, which this module calls for :meth:`TicTacToe.bot_move`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from random import Random

from .base import Game, GameError, GameErrorCode, IllegalMove, Move, Outcome
from .bot import best_move
from .lines import DIRECTIONS, lines

MIN_SIZE = 3
MAX_SIZE = 10
"""Board sizes allowed: 3 x 3 to 10 x 10 (100 cells)."""

MIN_K = 3

MARKS = (".", "X", "O")
"""How a cell value is drawn: free, seat 0, seat 1."""


def winner(cells: Sequence[int], size: int, k: int) -> int:
    """The mark (1 or 2) that has ``k`` in a row on ``cells``, or 0."""
    for line in lines(size, k):
        first = cells[line[0]]
        if first and all(cells[i] == first for i in line):
            return first
    return 0


def wins_at(cells: Sequence[int], size: int, k: int, index: int) -> bool:
    """True if the mark on ``cells[index]`` makes ``k`` in a row through that cell."""
    mark = cells[index]
    if not mark:
        return False
    r0, c0 = divmod(index, size)
    for dr, dc in DIRECTIONS:
        count = 1
        for sign in (1, -1):
            r, c = r0 + sign * dr, c0 + sign * dc
            while 0 <= r < size and 0 <= c < size and cells[r * size + c] == mark:
                count += 1
                r, c = r + sign * dr, c + sign * dc
        if count >= k:
            return True
    return False


def board_from_moves(size: int, moves: Sequence[Move]) -> tuple[int, ...]:
    """The board after ``moves`` (cells 1-based), as :class:`TicTacToe` keeps it."""
    cells = [0] * (size * size)
    for move in moves:
        if 1 <= move.value <= size * size:
            cells[move.value - 1] = move.seat + 1
    return tuple(cells)


def render(cells: Sequence[int], size: int) -> str:
    """The board drawn as the seeds draw it: free cells show their number, rows joined by
    ``|`` and divided by dashes::

         1 | 2 | X
        -----------
         4 | O | 6
        -----------
         7 | 8 | 9
    """
    width = len(str(size * size))
    rows = []
    for r in range(size):
        row = []
        for c in range(size):
            index = r * size + c
            text = MARKS[cells[index]] if cells[index] else str(index + 1)
            row.append(" " + text.ljust(width) + " ")
        rows.append("|".join(row).rstrip())
    divider = "\n" + "-" * ((width + 3) * size - 1) + "\n"
    return divider.join(rows)


class TicTacToe(Game):
    """N x N tic-tac-toe, K in a row (options ``size`` 3..10 and ``k`` 3..size, defaults 3, 3).

    A move is a cell number 1 to N*N. X (seat 0) moves first.
    """

    KIND = "ttt"
    TITLE = "tic-tac-toe"
    SEAT_NAMES = ("X", "O")
    CHALLENGER_SEAT = 0
    DEFAULTS = {"size": 3, "k": 3}

    def __init__(self, options: Mapping[str, int] | None = None) -> None:
        super().__init__(options)
        self.size = self.options["size"]
        self.k = self.options["k"]
        self.cells = [0] * (self.size * self.size)

    @classmethod
    def check_options(cls, given: Mapping[str, int]) -> dict[str, int]:
        out = super().check_options(given)
        size, k = out["size"], out["k"]
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise GameError(GameErrorCode.BAD_REQUEST,
                            f"board size must be {MIN_SIZE} to {MAX_SIZE}, not {size}")
        if not MIN_K <= k <= size:
            raise GameError(GameErrorCode.BAD_REQUEST,
                            f"k (in a row) must be {MIN_K} to the board size {size}, not {k}")
        return out

    @property
    def turn(self) -> int | None:
        return None if self.outcome is not None else len(self.moves) % 2

    @property
    def board(self) -> tuple[int, ...]:
        return tuple(self.cells)

    def _play(self, seat: int, value: int) -> Move:
        last = self.size * self.size
        if not 1 <= value <= last:
            raise IllegalMove(f"cell {value} does not exist: choose 1 to {last}")
        if self.cells[value - 1]:
            raise IllegalMove(f"cell {value} is taken by {MARKS[self.cells[value - 1]]}")
        self.cells[value - 1] = seat + 1
        if wins_at(self.cells, self.size, self.k, value - 1):
            self.outcome = Outcome(seat, "line")
        elif len(self.moves) + 1 == last:
            self.outcome = Outcome(None, "full")
        return Move(seat, value)

    def _copy_from(self, other: Game) -> None:
        assert isinstance(other, TicTacToe)
        self.cells = list(other.cells)

    def bot_move(self, seat: int, rng: Random, node_budget: int) -> int:
        return best_move(self.board, self.size, self.k, seat + 1, node_budget)

    def render(self) -> str:
        return render(self.cells, self.size)

    def describe(self) -> str:
        return f"{self.TITLE} {self.size}x{self.size}, {self.k} in a row"


__all__ = [
    "MARKS", "MAX_SIZE", "MIN_K", "MIN_SIZE", "TicTacToe", "board_from_moves", "lines", "render",
    "winner", "wins_at",
]
