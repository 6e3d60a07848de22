"""Games, pure: the rules of each game, the broker's bot, and the machinery that runs games
(challenges, turns, clocks, disconnects, rematches). No sockets; clocks and randomness are
injected. The broker drives it (:mod:`zmeet.broker.games`); clients use the rules to draw.

A new game is one module: a :class:`Game` subclass, added to :data:`GAMES`.
"""

from __future__ import annotations

from .arena import BOT_NAME, Arena, ArenaSettings, Challenge, Table
from .base import (
    REASONS,
    Game,
    GameError,
    GameErrorCode,
    GameOver,
    IllegalMove,
    Move,
    NotYourTurn,
    Outcome,
)
from .guess import Guess
from .tictactoe import TicTacToe

GAMES: dict[str, type[Game]] = {TicTacToe.KIND: TicTacToe, Guess.KIND: Guess}
"""Every game the broker runs, by its wire name."""

__all__ = [
    "BOT_NAME", "GAMES", "REASONS", "Arena", "ArenaSettings", "Challenge", "Game", "GameError",
    "GameErrorCode", "GameOver", "Guess", "IllegalMove", "Move", "NotYourTurn", "Outcome",
    "Table", "TicTacToe",
]
