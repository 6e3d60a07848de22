"""The games the broker runs, by their wire name: one place that knows every :class:`Game`.

A new game is one module and one line here. :class:`~zmeet.games.Arena` takes this table by
default (so the arena never imports the package that imports it).
"""

from __future__ import annotations

from .base import Game
from .guess import Guess
from .tictactoe import TicTacToe

GAMES: dict[str, type[Game]] = {TicTacToe.KIND: TicTacToe, Guess.KIND: Guess}
"""Every game the broker runs, by its wire name."""

__all__ = ["GAMES"]
