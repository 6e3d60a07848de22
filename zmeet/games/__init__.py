"""Games, pure: the rules of each game, the broker's bot, and the machinery that runs games
(challenges, turns, clocks, disconnects, rematches). No sockets; clocks and randomness are
injected. The broker drives it (:mod:`zmeet.broker.games`); clients use the rules to draw.

A new game is one module: a :class:`Game` subclass, added to :data:`GAMES`
(:mod:`zmeet.games.registry`).
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
from .registry import GAMES
from .tictactoe import TicTacToe

__all__ = [
    "BOT_NAME", "GAMES", "REASONS", "Arena", "ArenaSettings", "Challenge", "Game", "GameError",
    "GameErrorCode", "GameOver", "Guess", "IllegalMove", "Move", "NotYourTurn", "Outcome",
    "Table", "TicTacToe",
]
