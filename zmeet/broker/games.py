"""The broker's games service: it drives the pure game machinery (:class:`zmeet.games.Arena`)
with the game requests of docs/protocol.md ("Games"), the broker's timer and session ends, and
turns what the arena asks for into messages: CHALLENGE-OFFER, CHALLENGE-ENDED and GAME-STATE
to players on the control lane, GAME-STATE published under ``game/<id>/`` for spectators once
one of them has asked WATCH for that game (a spectator subscribes, then asks WATCH: it misses
nothing, and games nobody watches cost no publishing).

Finished games are stored in their own SQLite file, ``games.sqlite3`` in the broker's data
directory (WAL mode), so that the chat store's file is left to the chat. Every access to it
runs on one thread of its own, in order, driven by the service's store greenlet: finished games
are written there in batches, off the hub (a WAL checkpoint's fsync can take tens of
milliseconds on a busy disk), and GAME-HISTORY reads there too, after the writes queued before
it. Its handler does not wait for that read: it defers the reply
(:class:`~zmeet.broker.service.Deferred`), and the store greenlet sends it.

The bot thinks off the hub: a tic-tac-toe move is a search of up to tens of milliseconds
(about 60 ms for an empty 3 x 3 board, the first time; 5 x 5 boards up to ~100 ms), so it runs
in gevent's threadpool on a copy of the game, and its move is played only if nothing happened
to the game meanwhile. Guess-the-number's bot is instant and plays inline.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.threadpool

from .. import protocol as p
from ..errors import Refused
from ..games import BOT_NAME, Arena, ArenaSettings, GameError, Table
from ..games.arena import BotTurn, Changed, Closed, Finished, Offered
from ..games.base import Game
from ..games.guess import Guess
from ..protocol import games as pg
from ..protocol.limits import is_valid_nick
from .service import BrokerCore, Deferred, Handler, Service
from .sessions import ClientSession

log = logging.getLogger("zmeet.broker.games")

GAMES_DB = "games.sqlite3"
"""The file of finished games in the broker's data directory."""

MAX_HISTORY_READS_PER_SESSION = 4
"""GAME-HISTORY requests of one session waiting for the store at once; past it TOO_MANY (the
reads are queued on one store thread: one client must not make everyone else wait)."""

MAX_HISTORY_READS = 256
"""GAME-HISTORY requests of all sessions waiting for the store at once; past it TOO_MANY."""

MAX_LIST = 1000
"""Most games one GAMES or GAME-HISTORY reply carries."""

INLINE_BOTS: tuple[type[Game], ...] = (Guess,)
"""Games whose bot is instant: it plays on the hub, not in the threadpool."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS games (
    seq        INTEGER PRIMARY KEY,  -- order of storing
    id         TEXT    NOT NULL,     -- unique among running games, not forever
    kind       TEXT    NOT NULL,
    player0    TEXT    NOT NULL,
    player1    TEXT    NOT NULL,
    options    TEXT    NOT NULL,   -- JSON object of ints
    moves      TEXT    NOT NULL,   -- JSON array of [seat, value, note]
    result     TEXT    NOT NULL,   -- win, draw, abandoned
    winner     TEXT    NOT NULL,   -- nick, or ''
    reason     TEXT    NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms   INTEGER NOT NULL,
    rematch_of TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS games_player0 ON games (player0, seq);
CREATE INDEX IF NOT EXISTS games_player1 ON games (player1, seq);
"""

SCHEMA_VERSION = 1


class GamesStore:
    """Finished games in the SQLite file ``path`` (created with its folder if missing).

    Blocking: call it from one thread (the service's store thread), not from the hub. Raises
    :class:`sqlite3.Error` when the file cannot be opened or is not a games store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def add(self, records: list[pg.GameRecord]) -> None:
        """Store finished games, in one transaction."""
        rows = [(r.id, r.kind, r.players[0], r.players[1], json.dumps(r.options),
                 json.dumps([[m.seat, m.value, m.note] for m in r.moves]), r.result, r.winner,
                 r.reason, r.started_ms, r.ended_ms, r.rematch_of) for r in records]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO games (id, kind, player0, player1, options, moves, result, winner, "
                "reason, started_ms, ended_ms, rematch_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def recent(self, limit: int, nick: str = "") -> list[pg.GameRecord]:
        """The last ``limit`` finished games (of ``nick``, if given), newest first."""
        where, args = ("WHERE player0 = ? OR player1 = ?", (nick, nick)) if nick else ("", ())
        rows = self._db.execute(
            "SELECT id, kind, player0, player1, options, moves, result, winner, reason, "
            f"started_ms, ended_ms, rematch_of FROM games {where} ORDER BY seq DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        out = []
        for (id_, kind, p0, p1, options, moves, result, winner, reason, started_ms, ended_ms,
             rematch_of) in rows:
            out.append(pg.GameRecord(
                id=id_, kind=kind, players=(p0, p1), options=json.loads(options),
                moves=tuple(pg.GameMove(seat=s, value=v, note=n) for s, v, n in json.loads(moves)),
                result=result, winner=winner, reason=reason, started_ms=started_ms,
                ended_ms=ended_ms, rematch_of=rematch_of,
            ))
        return out


def _result(table: Table) -> tuple[str, str, str]:
    """``(result, winner nick, reason)`` of a table; empty strings while it runs."""
    outcome = table.game.outcome
    if outcome is None:
        return "", "", ""
    if outcome.winner is not None:
        return "win", table.players[outcome.winner], outcome.reason
    return ("abandoned" if outcome.reason == "abandoned" else "draw"), "", outcome.reason


class GamesService(Service):
    """Games on the broker (docs/protocol.md, "Games"). ``settings`` shortens the windows in
    tests; ``rng`` is injected into the arena, whose clock is the broker's
    (``BrokerConfig.clock``)."""

    name = "games"

    def __init__(
        self,
        broker: BrokerCore,
        settings: ArenaSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(broker)
        self.settings = settings or ArenaSettings()
        self._store: GamesStore | None = None
        self._store_thread = gevent.threadpool.ThreadPool(1)  # FIFO: writes, then reads
        self._to_store: list[pg.GameRecord] = []
        self._reads: deque[Deferred] = deque()
        """GAME-HISTORY requests waiting for the store greenlet, oldest first."""
        self._reads_of: dict[int, int] = {}
        """Waiting GAME-HISTORY reads per session (``id`` of the ClientSession: a routing id
        outlives a session, when its connection says HELLO with another nick, and a read
        already in the store thread must not be counted against the session after it)."""
        self._store_wakeup = gevent.event.Event()
        self._writer: gevent.Greenlet | None = None
        self._thinking: set[gevent.Greenlet] = set()
        self._closed = False
        self.arena = Arena(
            clock=broker.clock.monotonic_s, wall_ms=broker.clock.wall_ms,
            is_online=self._is_online, rng=rng or random.Random(), settings=self.settings,
        )

    # plug-in API ------------------------------------------------------------------------------

    def handlers(self) -> dict[type, Handler]:
        table: dict[type, Handler] = {
            pg.Challenge: self._challenge, pg.Accept: self._accept, pg.Decline: self._decline,
            pg.MakeMove: self._move, pg.Resign: self._resign, pg.Claim: self._claim,
            pg.Rematch: self._rematch, pg.Watch: self._watch, pg.ListGames: self._list,
            pg.GameHistory: self._history,
        }
        return {cls: self._guarded(fn) for cls, fn in table.items()}

    def on_session_end(self, session: ClientSession, reason: str) -> None:
        # its waiting GAME-HISTORY reads go: their replies would be dropped, and a client that
        # says HELLO with a new nick must not leave reads behind to dodge the per-session limit
        if self._reads_of.pop(id(session), None):
            self._reads = deque(d for d in self._reads if d.session is not session)
        if self.broker.session_of(session.nick) is None:  # its last session: the player left
            self.arena.disconnected(session.nick)
            self._dispatch(leaving=session.nick)

    def tick(self, now_s: float) -> None:
        self.arena.tick()
        self._dispatch()

    def stats(self) -> dict[str, Any]:
        return {"games_running": len(self.arena.running()),
                "challenges_open": len(self.arena.challenges)}

    def close(self) -> None:
        self._closed = True
        gevent.killall([*self._thinking, *([self._writer] if self._writer else [])],
                       block=True, timeout=1)
        batch, self._to_store = self._to_store, []
        try:
            if batch:
                self._in_store_thread(self._store_add, batch)
            if self._store is not None:
                self._in_store_thread(self._store.close)
        except Exception:
            log.exception("could not store %d finished games", len(batch))
        self._store = None
        self._store_thread.kill()

    def _open_store(self) -> GamesStore:
        """The games store, opened on first use; call it in the store thread only."""
        if self._store is None:
            self._store = GamesStore(Path(self.broker.config.data_dir) / GAMES_DB)
        return self._store

    def _store_add(self, records: list[pg.GameRecord]) -> None:
        self._open_store().add(records)

    def _store_recent(self, limit: int, nick: str) -> list[pg.GameRecord]:
        return self._open_store().recent(limit, nick)

    def _in_store_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the store thread, after everything queued there before; the
        calling greenlet waits, the hub does not. Never call it from a handler."""
        return self._store_thread.apply(fn, args)

    def _wake_store(self) -> None:
        """Have the store greenlet (started on first use) write and read what waits."""
        if self._closed:
            return
        if self._writer is None:
            self._writer = gevent.spawn(self._store_loop)
        self._store_wakeup.set()

    def _store_loop(self) -> None:
        """The store greenlet: the finished games recorded so far are written, then the oldest
        GAME-HISTORY read waiting is answered, in turn, until nothing waits. No failure of one
        write or read ends it (each is answered, or logged); if it ends all the same (killed
        at close), the next use starts another."""
        try:
            while True:
                self._store_wakeup.wait()
                self._store_wakeup.clear()
                while True:
                    batch, self._to_store = self._to_store, []
                    written = True
                    if batch:  # what was recorded before a read goes in first
                        try:
                            self._in_store_thread(self._store_add, batch)
                        except Exception:
                            log.exception("could not store %d finished games", len(batch))
                            written = False
                    if not self._reads:
                        break
                    deferred = self._reads.popleft()
                    try:  # a read counts against its session until it is answered
                        self._answer_history(deferred, written)
                    finally:
                        self._read_done(deferred)
        finally:
            if self._writer is gevent.getcurrent():
                self._writer = None

    def _read_done(self, deferred: Deferred) -> None:
        session = deferred.session
        if self.broker.sessions.get(session.routing_id) is not session:
            return  # ended (its count went with it) or another session now at that connection
        left = self._reads_of.get(id(session), 0) - 1
        if left > 0:
            self._reads_of[id(session)] = left
        else:
            self._reads_of.pop(id(session), None)

    def _answer_history(self, deferred: Deferred, written: bool) -> None:
        """Read the games store for a GAME-HISTORY request and answer it; ERROR 500 if the
        games recorded before it could not be written or the store cannot be read."""
        req = deferred.request
        assert isinstance(req, pg.GameHistory)
        try:
            if not written:
                raise sqlite3.Error("the finished games before this request were not stored")
            records = self._in_store_thread(self._store_recent, req.limit, req.nick)
        except Exception:  # sqlite3.Error, OSError (the data directory), a row it cannot read
            log.exception("could not read the games store")
            deferred.refuse(p.ErrorCode.INTERNAL_ERROR,
                            "the broker could not read its games store")
            return
        deferred.reply(pg.GameRecords(req_id=req.req_id, records=tuple(records)))

    # requests ---------------------------------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        """``handler``, then the arena's effects carried out, whether it answered or raised
        (a GameError is a Refused: the broker answers it)."""
        def run(session: ClientSession, request: Any) -> p.Reply | Deferred:
            try:
                return handler(session, request)
            finally:
                self._dispatch()

        return run

    def _challenge(self, session: ClientSession, req: pg.Challenge) -> p.Reply:
        if not req.bot and not is_valid_nick(req.opponent):
            raise Refused(p.ErrorCode.INVALID_NAME,
                          f"invalid nick {req.opponent[:40]!r} to challenge")
        got = self.arena.challenge(session.nick, req.game, req.opponent, req.options,
                                   req.move_timeout_s, bot=req.bot)
        if isinstance(got, Table):
            self._make_sure_sent(got, session.nick)
            return pg.ChallengeSent(req_id=req.req_id, challenge_id="", game_id=got.id)
        return pg.ChallengeSent(req_id=req.req_id, challenge_id=got.id,
                                expires_in_ms=self._expires_in_ms(got.expires_at))

    def _accept(self, session: ClientSession, req: pg.Accept) -> p.Reply:
        table = self.arena.accept(session.nick, req.challenge_id, req.game)
        return pg.Accepted(req_id=req.req_id, game_id=table.id)

    def _decline(self, session: ClientSession, req: pg.Decline) -> p.Reply:
        self.arena.decline(session.nick, req.challenge_id, req.game)
        return p.Ok(req_id=req.req_id)

    def _move(self, session: ClientSession, req: pg.MakeMove) -> p.Reply:
        self.arena.move(session.nick, req.game_id, req.value)
        return p.Ok(req_id=req.req_id)

    def _resign(self, session: ClientSession, req: pg.Resign) -> p.Reply:
        self.arena.resign(session.nick, req.game_id)
        return p.Ok(req_id=req.req_id)

    def _claim(self, session: ClientSession, req: pg.Claim) -> p.Reply:
        self.arena.claim(session.nick, req.game_id)
        return p.Ok(req_id=req.req_id)

    def _rematch(self, session: ClientSession, req: pg.Rematch) -> p.Reply:
        got = self.arena.rematch(session.nick, req.game_id)
        if isinstance(got, Table):
            return pg.ChallengeSent(req_id=req.req_id, challenge_id="", game_id=got.id)
        return pg.ChallengeSent(req_id=req.req_id, challenge_id=got.id,
                                expires_in_ms=self._expires_in_ms(got.expires_at))

    def _watch(self, session: ClientSession, req: pg.Watch) -> p.Reply:
        table = self.arena.table(req.game_id)
        table.watched = True  # from now on its states are published
        return pg.GameSnapshot(req_id=req.req_id, game=self.view(table, None))

    def _list(self, session: ClientSession, req: pg.ListGames) -> p.Reply:
        self._check_limit(req.limit)
        tables = self.arena.running(req.nick or None)[: req.limit]
        return pg.GameList(req_id=req.req_id, games=tuple(self.view(t, None) for t in tables))

    def _history(self, session: ClientSession, req: pg.GameHistory) -> Deferred:
        """Deferred: the store greenlet reads, after the games recorded before, and replies."""
        self._check_limit(req.limit)
        if self._closed:
            raise Refused(p.ErrorCode.INTERNAL_ERROR, "the games service is stopping")
        waiting = self._reads_of.get(id(session), 0)
        if waiting >= MAX_HISTORY_READS_PER_SESSION or len(self._reads) >= MAX_HISTORY_READS:
            raise Refused(p.ErrorCode.TOO_MANY,
                          "too many GAME-HISTORY requests wait for the games store: "
                          f"at most {MAX_HISTORY_READS_PER_SESSION} of a session, "
                          f"{MAX_HISTORY_READS} in all")
        deferred = self.broker.defer(session, req)
        self._reads.append(deferred)
        self._reads_of[id(session)] = waiting + 1
        self._wake_store()
        return deferred

    @staticmethod
    def _check_limit(limit: int) -> None:
        if not 1 <= limit <= MAX_LIST:
            raise Refused(p.ErrorCode.TOO_MANY, f"limit must be 1 to {MAX_LIST}")

    # effects ----------------------------------------------------------------------------------

    def view(self, table: Table, viewer: int | None) -> pg.GameView:
        """``table`` as the player in seat ``viewer`` (None: a spectator) may see it."""
        game = table.game
        result, winner, reason = _result(table)
        left = self.arena.time_left_s(table)
        return pg.GameView(
            id=table.id, kind=game.KIND, players=tuple(table.players),
            options=dict(game.options),
            moves=tuple(pg.GameMove(seat=m.seat, value=m.value, note=m.note)
                        for m in game.visible_moves(viewer)),
            turn=table.turn_nick, status=table.status, result=result, winner=winner,
            reason=reason, away=tuple(table.players[s] for s in sorted(table.away)),
            move_timeout_s=table.move_timeout_s,
            time_left_ms=0 if left is None else max(1, int(left * 1000)),
            version=table.version, rematch_of=table.rematch_of,
        )

    def _dispatch(self, leaving: str = "") -> None:
        """Carry out the arena's effects (and those they lead to, such as an instant bot's
        move). ``leaving`` is a nick whose session is ending: nothing is sent to it."""
        sent: set[tuple[str, int]] = set()
        for _ in range(10_000):  # bounded: each round plays at most one inline bot move
            effects = self.arena.drain()
            if not effects:
                return
            latest = {e.table.id: e.table.version for e in effects if isinstance(e, Changed)}
            for effect in effects:
                if isinstance(effect, Changed):
                    table = effect.table
                    if latest.get(table.id) != table.version or (table.id, table.version) in sent:
                        continue
                    sent.add((table.id, table.version))
                    self._send_state(table, leaving)
                elif isinstance(effect, Offered):
                    self._send_offer(effect)
                elif isinstance(effect, Closed):
                    self._send_closed(effect, leaving)
                elif isinstance(effect, Finished):
                    self._record(effect.table)
                elif isinstance(effect, BotTurn):
                    self._bot_turn(effect)
        log.error("games: effects did not settle")  # pragma: no cover

    def _direct(self, nick: str, message: p.Message) -> None:
        if nick == BOT_NAME:
            return
        self.broker.send_to_nick(nick, message)  # each of the player's terminals

    def _send_state(self, table: Table, leaving: str = "") -> None:
        public = pg.GameState(game=self.view(table, None))
        for seat, nick in enumerate(table.players):
            if seat == table.bot_seat or seat in table.away or nick == leaving:
                continue
            hidden = table.game.HIDDEN_INFO
            self._direct(nick, pg.GameState(game=self.view(table, seat)) if hidden else public)
        if table.watched:  # no spectator has asked WATCH: nothing to publish (and encode)
            self.broker.publish(public)
        if table.game.over:
            log.info("game %s over: %s (%s)", table.id, _result(table)[0] or "-",
                     _result(table)[1] or _result(table)[2])
        elif table.version == 1:
            log.info("game %s started: %s %s", table.id, table.game.describe(),
                     " vs ".join(table.players))

    def _make_sure_sent(self, table: Table, nick: str) -> None:
        """Send ``nick`` the state of ``table`` now (a resumed game produced no change)."""
        if any(isinstance(e, Changed) and e.table is table for e in self.arena.outbox):
            return
        seat = table.seat_of(nick)
        self._direct(nick, pg.GameState(game=self.view(table, seat)))

    def _send_offer(self, effect: Offered) -> None:
        c = effect.challenge
        self._direct(c.opponent, pg.ChallengeOffer(
            challenge_id=c.id, game=c.kind, sender=c.challenger, options=dict(c.options),
            move_timeout_s=c.move_timeout_s, seat=c.opponent_seat,
            expires_in_ms=self._expires_in_ms(c.expires_at), rematch_of=c.rematch_of,
        ))

    def _send_closed(self, effect: Closed, leaving: str) -> None:
        message = pg.ChallengeEnded(challenge_id=effect.challenge.id, reason=effect.reason,
                                    game_id=effect.game_id, by=effect.by)
        for nick in effect.notify:
            if nick != leaving:
                self._direct(nick, message)

    def _record(self, table: Table) -> None:
        result, winner, reason = _result(table)
        record = pg.GameRecord(
            id=table.id, kind=table.game.KIND, players=tuple(table.players),
            options=dict(table.game.options),
            moves=tuple(pg.GameMove(seat=m.seat, value=m.value, note=m.note)
                        for m in table.game.moves),
            result=result, winner=winner, reason=reason, started_ms=table.started_ms,
            ended_ms=table.ended_ms, rematch_of=table.rematch_of,
        )
        self._to_store.append(record)
        self._wake_store()

    def _bot_turn(self, effect: BotTurn) -> None:
        table = effect.table
        if isinstance(table.game, INLINE_BOTS):
            self.arena.bot_play(table.id, effect.version, self.arena.think(table))
            return
        if self._closed:
            return
        greenlet = gevent.spawn(self._think_off_hub, table, effect.version)
        self._thinking.add(greenlet)
        greenlet.link(self._thinking.discard)

    def _think_off_hub(self, table: Table, version: int) -> None:
        game = table.game.copy()
        seat = table.bot_seat
        assert seat is not None
        budget = self.settings.bot_node_budget
        try:
            value = gevent.get_hub().threadpool.apply(
                game.bot_move, (seat, random.Random(version), budget))
        except Exception:
            log.exception("the bot failed in game %s", table.id)
            return
        try:
            self.arena.bot_play(table.id, version, value)
        except GameError as exc:  # a bot bug: do not take the broker down with it
            log.error("the bot's move %d in game %s was refused: %s", value, table.id, exc)
        self._dispatch()

    # helpers ----------------------------------------------------------------------------------

    def _is_online(self, nick: str) -> bool:
        return self.broker.session_of(nick) is not None

    def _expires_in_ms(self, expires_at: float) -> int:
        return max(0, int((expires_at - self.arena.clock()) * 1000))
