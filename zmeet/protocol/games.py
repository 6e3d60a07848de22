"""Game messages of zmeet/1 (docs/protocol.md, "Games"), registered with the codec on import.

The broker runs every game and is its only judge; clients send requests and show the state
they are sent. Requests and replies travel the control lane; the broker sends a player the
unasked CHALLENGE-OFFER, CHALLENGE-ENDED and GAME-STATE there too (as :class:`Direct`
messages). Spectators subscribe to ``game/<id>/`` on the events lane, then ask WATCH for a
snapshot; from that WATCH on, the broker publishes every GAME-STATE of the game there (the
Clone pattern: drop published states whose ``version`` is not newer than the snapshot's).

Game kinds are ``ttt`` (tic-tac-toe, options ``size`` and ``k``) and ``guess``
(guess-the-number, options ``low``, ``high``, ``tries``); see :mod:`zmeet.games`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .codec import register
from .messages import Direct, Reply, Request

GAME_STATUSES = ("playing", "paused", "over")
"""``GameView.status``: moves are being made; a player is away (no clock runs); ended."""

GAME_RESULTS = ("", "win", "draw", "abandoned")
"""``GameView.result``: not over; someone won (``winner``); nobody did; both players left."""

CHALLENGE_END_REASONS = ("accepted", "declined", "expired", "offline", "withdrawn")
"""``ChallengeEnded.reason``: accepted (``game_id`` set), declined, not answered in time, the
challenged nick left, the challenger left."""


def game_topic(game_id: str) -> bytes:
    """PUB topic (and SUB prefix) of game ``game_id``'s states: ``game/<id>/``."""
    return b"game/" + game_id.encode() + b"/"


# --- records (nested in messages) -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GameMove:
    """One move: ``seat`` (0 moves first), ``value`` (a cell 1..N*N, a number; 0 when hidden
    from this receiver), ``note`` from the rules (guess: ``PICK``, ``LOW``, ``HIGH``,
    ``WIN``; tic-tac-toe: empty)."""

    seat: int
    value: int
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GameView:
    """A game as its players and spectators see it.

    ``players`` are the nicks by seat (``@bot`` for the broker's bot); ``turn`` the nick to
    move ("" when none); ``status`` one of :data:`GAME_STATUSES`; ``result`` one of
    :data:`GAME_RESULTS` with ``winner`` (a nick or "") and ``reason`` (``line``, ``full``,
    ``guessed``, ``tries``, ``resign``, ``time``, ``claim``, ``disconnect``, ``abandoned``);
    ``away`` the players whose session ended, within their reconnect window;
    ``time_left_ms`` what the player to move has left (0: no clock runs); ``version`` counts the
    game's changes from 1.
    """

    id: str
    kind: str
    players: tuple[str, ...]
    options: dict[str, int]
    moves: tuple[GameMove, ...]
    turn: str
    status: str
    result: str
    winner: str
    reason: str
    away: tuple[str, ...]
    move_timeout_s: int
    time_left_ms: int
    version: int
    rematch_of: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GameRecord:
    """A finished game as stored: players by seat, every move, how it ended, and when (wall
    clock, ms since the Unix epoch)."""

    id: str
    kind: str
    players: tuple[str, ...]
    options: dict[str, int]
    moves: tuple[GameMove, ...]
    result: str
    winner: str
    reason: str
    started_ms: int
    ended_ms: int
    rematch_of: str = ""


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge(Request):
    """Challenge ``opponent`` (or, with ``bot``, the broker's bot) to a ``game`` with
    ``options`` (missing ones take their defaults) and a move time-out. Reply: CHALLENGE-SENT;
    ERROR 400, 404 (not online), 422 (invalid opponent nick), 429."""

    COMMAND: ClassVar[bytes] = b"CHALLENGE"
    game: str
    options: dict[str, int]
    opponent: str = ""
    bot: bool = False
    move_timeout_s: int = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept(Request):
    """Accept challenge ``challenge_id`` ("": the oldest open one to you, of ``game`` if
    given). Reply: ACCEPTED; ERROR 403, 404, 429."""

    COMMAND: ClassVar[bytes] = b"ACCEPT"
    challenge_id: str = ""
    game: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decline(Request):
    """Decline challenge ``challenge_id`` ("": the oldest open one to you, of ``game`` if
    given). Reply: OK; ERROR 403, 404."""

    COMMAND: ClassVar[bytes] = b"DECLINE"
    challenge_id: str = ""
    game: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MakeMove(Request):
    """Play ``value`` in game ``game_id``. Reply: OK (the new GAME-STATE follows);
    ERROR 403, 404, 410, 412, 425."""

    COMMAND: ClassVar[bytes] = b"MOVE"
    game_id: str
    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Resign(Request):
    """Resign game ``game_id``: the opponent wins. Reply: OK; ERROR 403, 404, 410."""

    COMMAND: ClassVar[bytes] = b"RESIGN"
    game_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim(Request):
    """Claim the win of game ``game_id`` while the opponent is away. Reply: OK;
    ERROR 403, 404, 410, 412 (the opponent is here)."""

    COMMAND: ClassVar[bytes] = b"CLAIM"
    game_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rematch(Request):
    """Ask for a rematch of the finished game ``game_id``, seats swapped. Reply:
    CHALLENGE-SENT (``game_id`` set when the new game started: the opponent had asked too, or
    is the bot); ERROR 403, 404, 412 (not over yet), 429."""

    COMMAND: ClassVar[bytes] = b"REMATCH"
    game_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Watch(Request):
    """Ask for game ``game_id``'s state now (after subscribing to its topic). Reply:
    GAME-SNAPSHOT; ERROR 404."""

    COMMAND: ClassVar[bytes] = b"WATCH"
    game_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListGames(Request):
    """Running games (of ``nick``, if given), oldest first, at most ``limit`` (1..1000).
    Reply: GAME-LIST; ERROR 429."""

    COMMAND: ClassVar[bytes] = b"GAMES"
    nick: str = ""
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class GameHistory(Request):
    """Finished games (of ``nick``, if given), newest first, at most ``limit`` (1..1000).
    Reply: GAME-RECORDS; ERROR 429, 500 (the store failed)."""

    COMMAND: ClassVar[bytes] = b"GAME-HISTORY"
    nick: str = ""
    limit: int = 20


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeSent(Reply):
    """Reply to CHALLENGE and REMATCH: the open challenge and when it expires, or, with
    ``game_id`` set, the game that started (or resumed) at once."""

    COMMAND: ClassVar[bytes] = b"CHALLENGE-SENT"
    challenge_id: str
    game_id: str = ""
    expires_in_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted(Reply):
    """Reply to ACCEPT: the game started (its GAME-STATE follows)."""

    COMMAND: ClassVar[bytes] = b"ACCEPTED"
    game_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GameSnapshot(Reply):
    """Reply to WATCH: the game's state as a spectator sees it."""

    COMMAND: ClassVar[bytes] = b"GAME-SNAPSHOT"
    game: GameView


@dataclass(frozen=True, slots=True, kw_only=True)
class GameList(Reply):
    """Reply to GAMES: running games as a spectator sees them."""

    COMMAND: ClassVar[bytes] = b"GAME-LIST"
    games: tuple[GameView, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GameRecords(Reply):
    """Reply to GAME-HISTORY: finished games, newest first."""

    COMMAND: ClassVar[bytes] = b"GAME-RECORDS"
    records: tuple[GameRecord, ...]


# --- unasked (direct) and published ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeOffer(Direct):
    """To the challenged nick: ``sender`` (``from``) challenges you to ``game``; you would
    sit in ``seat`` (0 moves first). Answer with ACCEPT or DECLINE within ``expires_in_ms``;
    ``rematch_of`` names the finished game this would be a rematch of."""

    COMMAND: ClassVar[bytes] = b"CHALLENGE-OFFER"
    challenge_id: str
    game: str
    sender: str
    options: dict[str, int]
    move_timeout_s: int
    seat: int
    expires_in_ms: int
    rematch_of: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeEnded(Direct):
    """A challenge is closed: ``reason`` is one of :data:`CHALLENGE_END_REASONS`; ``game_id``
    is the game it started when accepted; ``by`` the nick whose act or absence closed it."""

    COMMAND: ClassVar[bytes] = b"CHALLENGE-ENDED"
    challenge_id: str
    reason: str
    game_id: str = ""
    by: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GameState(Direct):
    """A game's state after every change: sent to its players on the control lane and, once
    a spectator has asked WATCH, published under ``game/<id>/`` (:func:`game_topic`)."""

    COMMAND: ClassVar[bytes] = b"GAME-STATE"
    game: GameView

    def topic(self) -> bytes:
        return game_topic(self.game.id)


GAME_REQUESTS: tuple[type[Request], ...] = (
    Challenge, Accept, Decline, MakeMove, Resign, Claim, Rematch, Watch, ListGames, GameHistory,
)
GAME_REPLIES: tuple[type[Reply], ...] = (
    ChallengeSent, Accepted, GameSnapshot, GameList, GameRecords,
)

register(GameMove, GameView, GameRecord)
register(*GAME_REQUESTS, *GAME_REPLIES, ChallengeOffer, ChallengeEnded)
register(GameState, published=True)

__all__ = [
    "CHALLENGE_END_REASONS", "GAME_REPLIES", "GAME_REQUESTS", "GAME_RESULTS", "GAME_STATUSES",
    "Accept", "Accepted", "Challenge", "ChallengeEnded", "ChallengeOffer", "ChallengeSent",
    "Claim", "Decline", "GameHistory", "GameList", "GameMove", "GameRecord", "GameRecords",
    "GameSnapshot", "GameState", "GameView", "ListGames", "MakeMove", "Rematch", "Resign",
    "Watch", "game_topic",
]
