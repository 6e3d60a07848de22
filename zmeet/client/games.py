"""The games requests of zmeet/1 over a connected :class:`~zmeet.client.Session`
(docs/protocol.md, 3.14 "Games").

The broker runs every game and is its only judge: a :class:`GameClient` only asks. Each method
sends one request on the control lane and waits for its reply (``Session.timeout_s``, or the
``timeout_s`` given). The broker's unasked CHALLENGE-OFFER, CHALLENGE-ENDED and GAME-STATE
messages arrive on ``Session.events`` (as :class:`~zmeet.protocol.Direct` items), and so do the
published GAME-STATEs of a watched game: whoever reads that queue shows them.

Every method raises :class:`~zmeet.errors.RequestRefused` when the broker answers ERROR (its
``code`` is a :class:`zmeet.games.GameErrorCode` or :class:`zmeet.protocol.ErrorCode` value,
its ``reason`` a line for people), :class:`~zmeet.errors.BrokerUnavailable` when no reply
comes in time, and :class:`~zmeet.errors.RemoteProtocolError` when the reply is not the one the
protocol gives that request.
"""

from __future__ import annotations

from typing import TypeVar

from .. import protocol as p
from ..errors import RemoteProtocolError
from ..protocol import games as pg
from .session import Session

_R = TypeVar("_R", bound=p.Reply)


class GameClient:
    """Typed games requests of one :class:`Session` (docs/protocol.md, 3.14.2).

    ``timeout_s`` bounds each reply (None: the session's own ``timeout_s``). The client keeps
    no state of its own beyond the topics :meth:`watch` subscribed to.
    """

    def __init__(self, session: Session, *, timeout_s: float | None = None) -> None:
        self.session = session
        self.timeout_s = timeout_s
        self.watching: set[str] = set()
        """Game ids whose ``game/<id>/`` topic :meth:`watch` subscribed to."""

    def _ask(self, cls: type[p.Request], expected: type[_R], **fields: object) -> _R:
        reply = self.session.request(cls, timeout_s=self.timeout_s, **fields)
        if not isinstance(reply, expected):
            raise RemoteProtocolError(
                f"{cls.COMMAND.decode()} got {reply.COMMAND.decode()}, not "
                f"{expected.COMMAND.decode()}")
        return reply

    # challenges --------------------------------------------------------------------------------

    def challenge(self, game: str, opponent: str = "", *, options: dict[str, int] | None = None,
                  bot: bool = False, move_timeout_s: int = 120) -> pg.ChallengeSent:
        """CHALLENGE ``opponent`` (a nick), or with ``bot`` the broker's bot, to ``game``
        (``ttt``, ``guess``) with ``options`` (missing ones take their defaults) and
        ``move_timeout_s`` seconds per move (1..86400).

        Returns CHALLENGE-SENT: an open challenge (``challenge_id``, ``expires_in_ms``) whose
        end arrives later as CHALLENGE-ENDED, or, with ``game_id`` set, a game that started or
        resumed at once (against the bot; when ``opponent`` had challenged you to the same
        game; when you already play that game with them). Refused: 400 (bad game, options,
        time-out, yourself), 404 (not online), 422 (not a valid nick), 429 (too many)."""
        return self._ask(pg.Challenge, pg.ChallengeSent, game=game, options=dict(options or {}),
                         opponent="" if bot else opponent, bot=bot,
                         move_timeout_s=move_timeout_s)

    def accept(self, challenge_id: str = "", *, game: str = "") -> pg.Accepted:
        """ACCEPT challenge ``challenge_id`` ("": the oldest open one to you, of ``game`` if
        given). Returns ACCEPTED with the ``game_id`` whose GAME-STATE follows. Refused: 403
        (not to you), 404 (no such challenge waiting), 429."""
        return self._ask(pg.Accept, pg.Accepted, challenge_id=challenge_id, game=game)

    def decline(self, challenge_id: str = "", *, game: str = "") -> None:
        """DECLINE challenge ``challenge_id`` ("": the oldest open one to you, of ``game`` if
        given); the challenger gets CHALLENGE-ENDED ``declined``. Refused: 403, 404."""
        self._ask(pg.Decline, p.Ok, challenge_id=challenge_id, game=game)

    def rematch(self, game_id: str) -> pg.ChallengeSent:
        """REMATCH the finished game ``game_id``, seats swapped. Returns CHALLENGE-SENT as
        :meth:`challenge` does (``game_id`` set when the opponent had asked too, or is the
        bot). Refused: 403 (you did not play it), 404 (not kept, or the opponent is not
        online), 412 (not over yet), 429."""
        return self._ask(pg.Rematch, pg.ChallengeSent, game_id=game_id)

    # playing -----------------------------------------------------------------------------------

    def move(self, game_id: str, value: int) -> None:
        """MOVE ``value`` (a cell 1..N*N, a number) in game ``game_id``; the new GAME-STATE
        follows on ``Session.events``. Refused: 403 (not a player), 404, 410 (over), 412
        (illegal move), 425 (not your turn); the game is unchanged and you may move again."""
        self._ask(pg.MakeMove, p.Ok, game_id=game_id, value=value)

    def resign(self, game_id: str) -> None:
        """RESIGN game ``game_id``: the opponent wins. Refused: 403, 404, 410."""
        self._ask(pg.Resign, p.Ok, game_id=game_id)

    def claim(self, game_id: str) -> None:
        """CLAIM the win of game ``game_id`` while the opponent is away. Refused: 403, 404,
        410, 412 (the opponent is here)."""
        self._ask(pg.Claim, p.Ok, game_id=game_id)

    # spectators and lists ----------------------------------------------------------------------

    def snapshot(self, game_id: str) -> pg.GameSnapshot:
        """WATCH game ``game_id`` without subscribing: its state now, as a spectator sees it.
        Refused: 404."""
        return self._ask(pg.Watch, pg.GameSnapshot, game_id=game_id)

    def watch(self, game_id: str) -> pg.GameSnapshot:
        """Watch game ``game_id`` as a spectator (the Clone pattern, 3.14.3): subscribe to
        ``game/<id>/`` first, then ask WATCH. Every later state is published there and
        arrives on ``Session.events`` as a :class:`~zmeet.protocol.games.GameState`; drop those
        whose ``version`` is not newer than the snapshot's. Refused: 404 (then nothing stays
        subscribed)."""
        topic = pg.game_topic(game_id)
        self.session.subscribe(topic)
        try:
            snapshot = self.snapshot(game_id)
        except BaseException:
            self.session.unsubscribe(topic)
            raise
        self.watching.add(game_id)
        return snapshot

    def unwatch(self, game_id: str) -> None:
        """Stop receiving the published states of game ``game_id`` (no request is sent)."""
        if game_id in self.watching:
            self.watching.discard(game_id)
            self.session.unsubscribe(pg.game_topic(game_id))

    def list(self, nick: str = "", limit: int = 100) -> pg.GameList:
        """GAMES: the running games (of ``nick``, if given), oldest first, at most ``limit``
        (1..1000), as a spectator sees them. Refused: 429 (``limit`` out of range)."""
        return self._ask(pg.ListGames, pg.GameList, nick=nick, limit=limit)

    def history(self, nick: str = "", limit: int = 20) -> pg.GameRecords:
        """GAME-HISTORY: finished games (of ``nick``, if given), newest first, at most ``limit``
        (1..1000). Refused: 429 (``limit`` out of range), 500 (the games store failed)."""
        return self._ask(pg.GameHistory, pg.GameRecords, nick=nick, limit=limit)


__all__ = ["GameClient"]
