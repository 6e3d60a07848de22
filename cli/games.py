"""Games on the command line: ``zmeet ttt``, ``zmeet guess``, ``zmeet games``, and games in the
chat of ``zmeet join`` (``/ttt NICK``, ``!TTT NICK``, ``/accept``, ``/decline``, moves typed as
numbers, ``/resign``): :class:`GamesChat`, a terminal plugin. The broker judges every move
(docs/protocol.md, "Games"); both flows only ask, through one
:class:`~zmeet.client.GameClient`, and show, through :mod:`zmeet_cli.game_display`.

The composition root (:mod:`zmeet_cli.main`) adds :data:`COMMANDS` to its group and gives each
``zmeet join`` terminal a :class:`GamesChat`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from datetime import datetime
from typing import Any

import click
import gevent
import gevent.event
import gevent.queue
import gevent.socket

from zmeet.client import GameClient, Notice, Session
from zmeet.errors import RequestRefused, ZmeetError
from zmeet.games import GAMES
from zmeet.games.tictactoe import MAX_SIZE, MIN_K, MIN_SIZE
from zmeet.protocol import games as pg

from .common import (
    _fail,
    _on_signals,
    _open_session,
    _setup_logging,
    broker_option,
    nick_option,
    timeout_option,
)
from .game_display import (
    GameDisplay,
    challenge_sent_line,
    describe,
    ended_text,
    players_line,
    prompt_line,
    reason_line,
    record_view,
    result_line,
    seat_of,
    view_dict,
)
from .render import safe
from .terminal import ChatTerminal, Plugin

log = logging.getLogger("zmeet.cli.games")

CHALLENGE_WAIT_EXTRA_S = 10.0
"""Beyond a challenge's expiry, how long to wait for the broker to say how it ended."""

RESYNC_S = 2.0
"""A spectator asks WATCH again after this long without a state (a published state can be lost
while its subscription is still being set up)."""


def challenge(games: GameClient, kind: str, opponent: str, options: dict[str, int],
              move_timeout_s: int = 120) -> pg.ChallengeSent:
    """CHALLENGE ``opponent`` (a nick, or ``bot`` in any case for the broker's bot) to a game
    of ``kind``. Raises RequestRefused."""
    bot = opponent.lower() == "bot"
    return games.challenge(kind, "" if bot else opponent, options=options, bot=bot,
                           move_timeout_s=move_timeout_s)


def play_number(games: GameClient, game_id: str, value: int) -> None:
    """A number typed during a game: 0 resigns (as in the seeds), any other is a move."""
    if value == 0:
        games.resign(game_id)
    else:
        games.move(game_id, value)


def is_number(text: str) -> bool:
    """Whether ``text`` reads as an integer move (at most 18 digits)."""
    return text.lstrip("-").isdigit() and len(text) < 19


# --- zmeet ttt / zmeet guess -----------------------------------------------------------------


class _Stdin:
    """Lines of stdin, put on ``inbox`` as ``("line", text)`` and finally ``("eof", None)``.

    On a terminal every line is read as it is typed. Otherwise a line is read only when
    :meth:`want` is called (the player's turn came), so that a script's moves are taken one per
    turn, in order.
    """

    def __init__(self, inbox: gevent.queue.Queue, interactive: bool) -> None:
        self.inbox = inbox
        self.interactive = interactive
        self._want = gevent.event.Event()
        self.outstanding = False
        self.greenlet = gevent.spawn(self._run)

    def want(self) -> None:
        if not self.outstanding:
            self.outstanding = True
            self._want.set()

    def _run(self) -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            self.inbox.put(("eof", None))
            return
        buffer = b""
        eof = False
        while True:
            if not self.interactive:
                self._want.wait()
                self._want.clear()
            while b"\n" not in buffer and not eof:
                gevent.socket.wait_read(fd)
                chunk = os.read(fd, 65536)
                if chunk:
                    buffer += chunk
                else:
                    eof = True
            if b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
            elif buffer:
                raw, buffer = buffer, b""
            else:
                self.inbox.put(("eof", None))
                return
            self.inbox.put(("line", raw.decode("utf-8", "replace").rstrip("\r")))


class GamePlayer:
    """One person playing games of one kind from ``zmeet ttt``/``zmeet guess``: sends the
    challenge or the acceptance, shows every state, reads moves, offers rematches.

    :meth:`run` returns the exit status: 0 when the game (and any rematch) was played to its
    end, 1 when it could not be (declined, expired, not online, stdin closed mid-game).
    """

    def __init__(self, session: Session, kind: str, *, as_json: bool, interactive: bool) -> None:
        self.session = session
        self.games = GameClient(session)
        self.me = session.nick
        self.kind = kind
        self.as_json = as_json
        self.interactive = interactive
        self.inbox: gevent.queue.Queue = gevent.queue.Queue()
        self.display = GameDisplay(
            self.me, self.say, self.emit if as_json else None,
            after_game="-- /rematch to play again; anything else (or Ctrl-D) leaves")
        self.game_id = ""
        self.challenge_id = ""
        self.challenged = ""
        self.waiting_offer = False
        self.deadline: float | None = None
        self.stashed: deque[str] = deque()
        self.status: int | None = None
        self.stdin: _Stdin | None = None
        self.eof = False

    # output -----------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        if not self.as_json:
            click.echo(text)
            sys.stdout.flush()

    def emit(self, obj: dict) -> None:
        click.echo(json.dumps(obj, ensure_ascii=False))
        sys.stdout.flush()

    def tell(self, text: str, obj: dict) -> None:
        if self.as_json:
            self.emit(obj)
        else:
            self.say(text)

    def error(self, text: str, code: int = 0) -> None:
        if self.as_json:
            self.emit({"type": "error", "code": code, "text": text})
        else:
            self.say(f"-- error: {safe(text)}")

    # starting ---------------------------------------------------------------------------------

    def challenge(self, opponent: str, options: dict[str, int], move_timeout_s: int) -> None:
        reply = challenge(self.games, self.kind, opponent, options, move_timeout_s)
        if reply.game_id:
            self.game_id = reply.game_id
            return
        self.challenge_id = reply.challenge_id
        self.challenged = opponent
        self.deadline = time.monotonic() + reply.expires_in_ms / 1000 + CHALLENGE_WAIT_EXTRA_S
        self.tell(challenge_sent_line(opponent, self.kind, options, reply.expires_in_ms),
                  {"type": "challenge-sent", "challenge_id": reply.challenge_id,
                   "to": opponent, "game": self.kind, "expires_in_ms": reply.expires_in_ms})

    def accept(self, wait_s: float) -> None:
        """Accept the oldest challenge to this nick, or the first to come within ``wait_s``."""
        try:
            reply = self.games.accept(game=self.kind)
        except RequestRefused as exc:
            if exc.code != 404:
                raise
            self.waiting_offer = True
            self.deadline = time.monotonic() + wait_s
            self.tell(f"-- waiting for a challenge (up to {wait_s:g} s)",
                      {"type": "waiting", "for": "challenge", "timeout_s": wait_s})
            return
        self.game_id = reply.game_id

    def resume(self) -> None:
        """Take up this nick's running game of this kind (after a reconnect)."""
        mine = [g for g in self.games.list(nick=self.me, limit=100).games if g.kind == self.kind]
        if not mine:
            raise RequestRefused(404, f"you have no {self.kind} game to resume: "
                                      "use --vs NICK, --vs bot or --accept")
        self.game_id = mine[0].id
        self.deadline = time.monotonic() + 5.0  # the broker sends the state on our return
        self.tell(f"-- resuming game {self.game_id}", {"type": "resuming", "game_id": self.game_id})

    # the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        pump = gevent.spawn(self._pump)
        self.stdin = _Stdin(self.inbox, self.interactive)
        handlers = _on_signals(lambda: self.inbox.put(("quit", None)))
        try:
            while self.status is None:
                if self._needs_line():
                    if self.stashed:
                        self._on_line(self.stashed.popleft())
                        continue
                    if self.eof:
                        self._on_eof()
                        continue
                    self.stdin.want()
                timeout = (None if self.deadline is None
                           else max(0.0, self.deadline - time.monotonic()))
                try:
                    kind, item = self.inbox.get(timeout=timeout)
                except gevent.queue.Empty:
                    self._on_deadline()
                    continue
                try:
                    if kind == "event":
                        self._on_event(item)
                    elif kind == "line":
                        if self.stdin is not None:
                            self.stdin.outstanding = False
                        if self._needs_line() or self.interactive:
                            self._on_line(item)
                        else:
                            self.stashed.append(item)
                    elif kind == "eof":
                        self.eof = True
                        if self.interactive or self._needs_line():
                            self._on_eof()
                    elif kind == "quit":
                        self.status = 1 if self._playing() else 0
                except RequestRefused as exc:
                    self.error(exc.reason, exc.code)
                    if self.challenge_id == "" and self.game_id == "" and not self.waiting_offer:
                        self.status = 1
        finally:
            for h in handlers:
                h.cancel()
            gevent.killall([pump, self.stdin.greenlet], timeout=1)
        return self.status

    def _pump(self) -> None:
        while True:
            self.inbox.put(("event", self.session.events.get()))

    def _view(self) -> pg.GameView | None:
        return self.display.views.get(self.game_id)

    def _playing(self) -> bool:
        view = self._view()
        return view is not None and view.status != "over"

    def _needs_line(self) -> bool:
        view = self._view()
        if view is None or self.challenge_id or self.waiting_offer:
            return False
        if view.status == "over":
            return True  # rematch or leave
        others_away = any(n != self.me for n in view.away)
        return view.turn == self.me or others_away

    def _on_deadline(self) -> None:
        if self.waiting_offer:
            self.error("no challenge came in time")
        elif self.challenge_id:
            self.error(f"no answer from the broker about the challenge to {self.challenged}")
        elif self.game_id and self._view() is None:
            self.error(f"the broker did not send game {self.game_id}")
        else:
            self.deadline = None
            return
        self.status = 1

    def _on_event(self, item: Any) -> None:
        if isinstance(item, pg.GameState):
            view = item.game
            if seat_of(view, self.me) is None or view.kind != self.kind:
                return
            if not self.game_id or view.rematch_of == self.game_id and view.id != self.game_id:
                self.game_id = view.id
                self.challenge_id = ""
            if view.id != self.game_id:
                return
            self.deadline = None
            self.display.show(view)
        elif isinstance(item, pg.ChallengeEnded):
            self._on_challenge_ended(item)
        elif isinstance(item, pg.ChallengeOffer):
            self._on_offer(item)
        elif isinstance(item, Notice):
            self.tell(f"-- {item.text}", {"type": "notice", "kind": item.kind, "text": item.text})
            if item.kind == "broker-restarted" and (self._playing() or self.challenge_id):
                self.error("the broker restarted: games and challenges in play are lost")
                self.status = 1

    def _on_challenge_ended(self, item: pg.ChallengeEnded) -> None:
        if item.challenge_id != self.challenge_id:
            if item.reason != "accepted":
                self.tell(f"-- challenge {item.challenge_id} {item.reason}",
                          {"type": "challenge-ended", "challenge_id": item.challenge_id,
                           "reason": item.reason, "by": item.by})
            return
        self.tell(
            f"-- {item.by} accepted: game {item.game_id}" if item.reason == "accepted"
            else "-- " + ended_text(item.reason, item.by, self.challenged),
            {"type": "challenge-ended", "challenge_id": item.challenge_id,
             "reason": item.reason, "by": item.by, "game_id": item.game_id},
        )
        self.challenge_id = ""
        if item.reason == "accepted":
            self.game_id = item.game_id
            self.deadline = time.monotonic() + 5.0
        else:
            rematch = self._view() is not None
            self.status = 0 if rematch else 1

    def _on_offer(self, offer: pg.ChallengeOffer) -> None:
        if self.waiting_offer and offer.game == self.kind:
            self.waiting_offer = False
            self.tell(f"-- {offer.sender} challenges you to "
                      f"{describe(offer.game, dict(offer.options))}: accepting",
                      {"type": "challenge", "challenge_id": offer.challenge_id,
                       "from": offer.sender, "game": offer.game, "options": dict(offer.options)})
            self.game_id = self.games.accept(offer.challenge_id).game_id
            self.deadline = time.monotonic() + 5.0
            return
        if offer.rematch_of and offer.rematch_of == self.game_id:
            self.tell(f"-- {offer.sender} wants a rematch: type /rematch to play again",
                      {"type": "rematch-offer", "challenge_id": offer.challenge_id,
                       "from": offer.sender, "game_id": offer.rematch_of})
            return
        self.tell(f"-- {offer.sender} challenges you to {describe(offer.game, dict(offer.options))}"
                  f" (zmeet {offer.game} --accept, or /accept in zmeet join)",
                  {"type": "challenge", "challenge_id": offer.challenge_id,
                   "from": offer.sender, "game": offer.game, "options": dict(offer.options)})

    def _on_line(self, line: str) -> None:
        text = line.strip()
        view = self._view()
        word = text.lower()
        if not text:
            return
        if word in ("/quit", "/exit", "!disconnect"):
            self.status = 1 if self._playing() else 0
            return
        if view is None:
            self.error("no game yet")
            return
        if view.status == "over":
            if word in ("/rematch", "rematch", "r"):
                self._rematch(view)
            else:
                self.status = 0
            return
        try:
            if word in ("/resign", "resign"):
                self.games.resign(view.id)
            elif word in ("/claim", "claim"):
                self.games.claim(view.id)
            elif is_number(word):
                play_number(self.games, view.id, int(word))
            else:
                raise RequestRefused(
                    400, f"{text[:40]!r} is not a move: type a number, 0 or /resign to resign"
                    + (", /claim to claim the win" if view.away else ""))
        except RequestRefused as exc:
            self.error(exc.reason, exc.code)
            view = self._view() or view
            if view.turn == self.me and view.status != "over" and not self.as_json:
                self.say(prompt_line(view))  # the same player moves again

    def _rematch(self, view: pg.GameView) -> None:
        reply = self.games.rematch(view.id)
        if reply.game_id:
            self.game_id = reply.game_id
            self.deadline = time.monotonic() + 5.0
            return
        self.challenge_id = reply.challenge_id
        opponent = view.players[1 - (seat_of(view, self.me) or 0)]
        self.challenged = opponent
        self.deadline = time.monotonic() + reply.expires_in_ms / 1000 + CHALLENGE_WAIT_EXTRA_S
        self.tell(f"-- asked {opponent} for a rematch; waiting",
                  {"type": "challenge-sent", "challenge_id": reply.challenge_id, "to": opponent,
                   "game": view.kind, "rematch_of": view.id,
                   "expires_in_ms": reply.expires_in_ms})

    def _on_eof(self) -> None:
        if self.challenge_id or self.waiting_offer:
            return  # nothing to read yet: keep waiting
        if self._playing():
            self.error("stdin closed before the game ended: leaving it")
            self.status = 1
        else:
            self.status = 0


def _watch(session: Session, game_id: str, as_json: bool) -> int:
    """Show game ``game_id`` as a spectator until it ends. Returns the exit status."""
    def out(text: str) -> None:
        if not as_json:
            click.echo(text)
            sys.stdout.flush()

    def emit(obj: dict) -> None:
        click.echo(json.dumps(obj, ensure_ascii=False))
        sys.stdout.flush()

    display = GameDisplay(None, out, emit if as_json else None)
    client = GameClient(session)
    try:
        view = client.watch(game_id).game  # first subscribe, then the snapshot
    except RequestRefused as exc:
        _fail(exc)
    display.show(view)
    stop = gevent.event.Event()
    handlers = _on_signals(stop.set)
    try:
        while view.status != "over" and not stop.is_set():
            try:
                item = session.events.get(timeout=RESYNC_S)
            except gevent.queue.Empty:
                try:
                    item = pg.GameState(game=client.snapshot(game_id).game)
                except ZmeetError as exc:
                    log.info("re-sync of game %s failed: %s", game_id, exc)
                    continue
            if isinstance(item, pg.GameState) and item.game.id == game_id:
                if display.show(item.game):
                    view = item.game
            elif isinstance(item, Notice):
                out(f"-- {item.text}")
    finally:
        for h in handlers:
            h.cancel()
    return 0 if view.status == "over" else 1


def _play(kind: str, *, nick: str, broker: str, connect_timeout_s: float, opponent: str | None,
          accept: bool, watch_id: str | None, options: dict[str, int], move_timeout_s: int,
          wait_s: float, as_json: bool, log_level: str) -> None:
    _setup_logging(log_level)
    modes = sum(bool(x) for x in (opponent, accept, watch_id))
    if modes > 1:
        raise click.UsageError("use one of --vs, --accept and --watch")
    try:
        GAMES[kind].check_options(options)
    except ZmeetError as exc:
        raise click.UsageError(str(exc)) from None
    session = _open_session(broker, nick, connect_timeout_s)
    status = 1
    try:
        if watch_id:
            status = _watch(session, watch_id, as_json)
        else:
            player = GamePlayer(session, kind, as_json=as_json, interactive=sys.stdin.isatty())
            try:
                if opponent:
                    player.challenge(opponent, options, move_timeout_s)
                elif accept:
                    player.accept(wait_s)
                else:
                    player.resume()
            except RequestRefused as exc:
                if as_json:
                    player.error(exc.reason, exc.code)
                else:
                    click.echo(f"zmeet: error: {exc.reason}", err=True)
            else:
                status = player.run()
    except ZmeetError as exc:
        click.echo(f"zmeet: error: {exc}", err=True)
        status = 1
    finally:
        session.close()
    sys.exit(status)


def _game_options(func):
    for decorator in reversed([
        nick_option, broker_option, timeout_option,
        click.option("--vs", "opponent", metavar="NICK|bot", default=None,
                     help="Challenge NICK (or the broker's bot); if NICK challenged you "
                          "already, this accepts."),
        click.option("--accept", is_flag=True,
                     help="Accept a challenge to you (the oldest; or wait for one, --wait)."),
        click.option("--watch", "watch_id", metavar="GAME_ID", default=None,
                     help="Watch a game as a spectator (zmeet games lists them)."),
        click.option("--move-timeout", "move_timeout_s", type=click.IntRange(1, 86_400),
                     default=120, show_default=True,
                     help="Seconds a player has for each move before losing on time."),
        click.option("--wait", "wait_s", type=click.FloatRange(0.1, 3600), default=60.0,
                     show_default=True, help="With --accept: how long to wait for a challenge."),
        click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines."),
    ]):
        func = decorator(func)
    return func


@click.command()
@_game_options
@click.option("--size", type=click.IntRange(MIN_SIZE, MAX_SIZE), default=3, show_default=True,
              help="Board size N (N x N cells, numbered 1 to N*N).")
@click.option("--k", type=click.IntRange(MIN_K, MAX_SIZE), default=3, show_default=True,
              help="Marks in a row that win.")
@click.pass_context
def ttt(ctx, nick, broker, connect_timeout_s, opponent, accept, watch_id, move_timeout_s,
        wait_s, as_json, size, k) -> None:
    """Play tic-tac-toe through the broker: --vs NICK, --vs bot, --accept, or --watch GAME_ID.

    The challenger plays X and moves first. Type a cell number (1 to N*N) on your turn, 0 or
    /resign to resign, /claim to claim the win when the opponent has left, /rematch when the
    game is over. When stdin is not a terminal, one line is read per turn. Without --vs,
    --accept or --watch, resumes your running game (after a reconnect).
    """
    _play("ttt", nick=nick, broker=broker, connect_timeout_s=connect_timeout_s,
          opponent=opponent, accept=accept, watch_id=watch_id, options={"size": size, "k": k},
          move_timeout_s=move_timeout_s, wait_s=wait_s, as_json=as_json,
          log_level=ctx.obj["log_level"])


@click.command()
@_game_options
@click.option("--low", type=click.IntRange(1, 999_999), default=1, show_default=True,
              help="Smallest number.")
@click.option("--high", type=click.IntRange(2, 1_000_000), default=100, show_default=True,
              help="Largest number.")
@click.option("--tries", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Guesses allowed.")
@click.pass_context
def guess(ctx, nick, broker, connect_timeout_s, opponent, accept, watch_id, move_timeout_s,
          wait_s, as_json, low, high, tries) -> None:
    """Guess the number (the seeds' GUESS game): the broker picks, or --vs NICK picks.

    You guess: after each wrong guess you hear whether it was too low or too high. With
    --vs NICK, NICK picks the number and you guess; a rematch swaps. 0 resigns.
    """
    if opponent is None and not accept and not watch_id:
        opponent = "bot"
    _play("guess", nick=nick, broker=broker, connect_timeout_s=connect_timeout_s,
          opponent=opponent, accept=accept, watch_id=watch_id,
          options={"low": low, "high": high, "tries": tries}, move_timeout_s=move_timeout_s,
          wait_s=wait_s, as_json=as_json, log_level=ctx.obj["log_level"])


# --- zmeet games -------------------------------------------------------------------------------


def _when(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000).strftime("%Y-%m-%d %H:%M")


@click.command()
@click.option("--nick", envvar="ZMEET_GAMES_NICK", default=None,
              help="Nick to connect as [a made-up one: listing needs no identity].")
@broker_option
@timeout_option
@click.option("--history", is_flag=True, help="List finished games, newest first.")
@click.option("--player", default="", help="Only games of this nick.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per game.")
@click.pass_context
def games(ctx, nick, broker, connect_timeout_s, history, player, limit, as_json) -> None:
    """List running games (watch one with: zmeet ttt --watch ID), or finished ones."""
    _setup_logging(ctx.obj["log_level"])
    session = _open_session(broker, nick or f"games-{os.urandom(3).hex()}", connect_timeout_s)
    client = GameClient(session)
    try:
        if history:
            records = client.history(nick=player, limit=limit).records
            for record in records:
                view = record_view(record)
                if as_json:
                    click.echo(json.dumps({
                        "type": "record", **{k: v for k, v in view_dict(view).items()
                                             if k not in ("turn", "status", "away",
                                                          "move_timeout_s", "time_left_ms",
                                                          "version")},
                        "started_ms": record.started_ms, "ended_ms": record.ended_ms},
                        ensure_ascii=False))
                else:
                    click.echo(f"{_when(record.ended_ms)}  {record.id}  "
                               f"{describe(record.kind, dict(record.options))}  "
                               f"{players_line(view)}  "
                               f"{result_line(view, None)} ({reason_line(view)}), "
                               f"{len(record.moves)} moves")
            if not records and not as_json:
                click.echo("no finished games")
        else:
            running = client.list(nick=player, limit=limit).games
            for view in running:
                if as_json:
                    click.echo(json.dumps({"type": "game", **view_dict(view)}, ensure_ascii=False))
                    continue
                state = (f"{view.turn} to move" if view.turn else view.status)
                if view.away:
                    state += f"; away: {', '.join(view.away)}"
                click.echo(f"{view.id}  {describe(view.kind, dict(view.options))}  "
                           f"{players_line(view)}  {len(view.moves)} moves, {state}")
            if not running and not as_json:
                click.echo("no games running")
    except ZmeetError as exc:
        session.close()
        _fail(exc)
    session.close()




# --- in the chat (zmeet join) ------------------------------------------------------------------

HELP_LINES = [
    "Games:",
    "  /ttt NICK [SIZE [K]]  challenge NICK (or bot) to tic-tac-toe (also !TTT NICK)",
    "  /guess [NICK]         guess-the-number against NICK (default: the bot)",
    "  /accept [ID], /decline [ID]   answer a challenge",
    "  N (a number)          your move in the game you are playing; 0 resigns",
    "  /resign, /claim, /rematch, /games",
]


class GamesChat(Plugin):
    """The games of a ``zmeet join`` terminal: ``/ttt NICK [SIZE [K]]`` (also ``!TTT``),
    ``/guess [NICK]``, ``/accept``, ``/decline``, ``/resign``, ``/claim``, ``/move N``,
    ``/rematch``, ``/games``; a number typed during a game is a move (0 resigns); challenges,
    their ends and the states of the games this nick plays are shown as they come.

    One instance per terminal: it keeps the terminal's game client, its :class:`GameDisplay`
    and the game being played (``current``)."""

    def __init__(self) -> None:
        super().__init__(
            commands={
                "/ttt": self.cmd_ttt, "!ttt": self.cmd_ttt, "/guess": self.cmd_guess,
                "!guess": self.cmd_guess, "/accept": self.cmd_accept,
                "/decline": self.cmd_decline, "/resign": self.cmd_resign,
                "/claim": self.cmd_claim, "/move": self.cmd_move, "/rematch": self.cmd_rematch,
                "/games": self.cmd_games,
            },
            line_handlers=[self.on_line],
            item_handlers=[self.on_item],
            help_lines=HELP_LINES,
        )
        self.current = ""
        self._games: GameClient | None = None
        self._display: GameDisplay | None = None

    def games(self, term: ChatTerminal) -> GameClient:
        if self._games is None:
            self._games = GameClient(term.session)
        return self._games

    def display(self, term: ChatTerminal) -> GameDisplay:
        if self._display is None:
            self._display = GameDisplay(term.session.nick, term.out,
                                        after_game="-- /rematch to play again")
        return self._display

    def last(self, term: ChatTerminal) -> pg.GameView | None:
        """The game played last (it may be over)."""
        return self.display(term).views.get(self.current)

    def playing(self, term: ChatTerminal) -> pg.GameView | None:
        """The game being played, if it is not over."""
        view = self.last(term)
        return view if view is not None and view.status != "over" else None

    def _playing_or_say(self, term: ChatTerminal) -> pg.GameView | None:
        view = self.playing(term)
        if view is None:
            term.out("-- you are not playing a game: /ttt NICK to start one")
        return view

    # commands ------------------------------------------------------------------------------

    def _challenge(self, term: ChatTerminal, kind: str, rest: str) -> None:
        words = rest.split()
        if kind == "guess" and not words:
            words = ["bot"]
        if not words:
            term.out(f"-- usage: /{kind} NICK (or bot)" + (" [SIZE [K]]" if kind == "ttt" else ""))
            return
        opponent = words[0]
        options: dict[str, int] = {}
        if kind == "ttt":
            try:
                numbers = [int(w) for w in words[1:3]]
            except ValueError:
                term.out("-- usage: /ttt NICK [SIZE [K]]")
                return
            if numbers:
                options["size"] = numbers[0]
            if len(numbers) > 1:
                options["k"] = numbers[1]
        reply = challenge(self.games(term), kind, opponent, options)
        if reply.game_id:
            self.current = reply.game_id
        else:
            term.out(challenge_sent_line(opponent, kind, options, reply.expires_in_ms))

    def cmd_ttt(self, term: ChatTerminal, rest: str) -> None:
        self._challenge(term, "ttt", rest)

    def cmd_guess(self, term: ChatTerminal, rest: str) -> None:
        self._challenge(term, "guess", rest)

    def cmd_accept(self, term: ChatTerminal, rest: str) -> None:
        self.current = self.games(term).accept(rest.strip()).game_id

    def cmd_decline(self, term: ChatTerminal, rest: str) -> None:
        self.games(term).decline(rest.strip())
        term.out("-- declined")

    def cmd_resign(self, term: ChatTerminal, rest: str) -> None:
        view = self._playing_or_say(term)
        if view is not None:
            self.games(term).resign(view.id)

    def cmd_claim(self, term: ChatTerminal, rest: str) -> None:
        view = self._playing_or_say(term)
        if view is not None:
            self.games(term).claim(view.id)

    def cmd_move(self, term: ChatTerminal, rest: str) -> None:
        view = self._playing_or_say(term)
        if view is None:
            return
        try:
            value = int(rest)
        except ValueError:
            term.out("-- usage: /move N")
            return
        self.games(term).move(view.id, value)

    def cmd_rematch(self, term: ChatTerminal, rest: str) -> None:
        view = self.last(term)
        if view is None or view.status != "over":
            term.out("-- no finished game to rematch")
            return
        reply = self.games(term).rematch(view.id)
        if reply.game_id:
            self.current = reply.game_id
        else:
            other = [n for n in view.players if n != term.session.nick]
            term.out(f"-- asked {other[0] if other else 'them'} for a rematch; waiting")

    def cmd_games(self, term: ChatTerminal, rest: str) -> None:
        running = self.games(term).list(limit=20).games
        if not running:
            term.out("-- no games running")
        for view in running:
            term.out(f"-- {view.id}  {describe(view.kind, dict(view.options))}  "
                     f"{players_line(view)}  {len(view.moves)} moves")

    # what is typed and what arrives --------------------------------------------------------

    def on_line(self, term: ChatTerminal, line: str) -> bool:
        """A number typed during a game is a move (0 resigns, as in the seeds)."""
        text = line.strip()
        if not is_number(text):
            return False
        view = self.playing(term)
        if view is None:
            return False
        play_number(self.games(term), view.id, int(text))
        return True

    def on_item(self, term: ChatTerminal, item: Any) -> bool:
        if isinstance(item, pg.ChallengeOffer):
            what = describe(item.game, dict(item.options))
            if item.rematch_of:
                term.out(f"-- {item.sender} wants a rematch of game {item.rematch_of}: "
                         f"/rematch or /accept to play, /decline to refuse")
            else:
                seat = GAMES[item.game].SEAT_NAMES[item.seat] if item.game in GAMES else item.seat
                term.out(f"-- {item.sender} challenges you to {what} (you would be {seat}): "
                         f"/accept or /decline (challenge {item.challenge_id})")
            return True
        if isinstance(item, pg.ChallengeEnded):
            if item.reason == "accepted":
                self.current = item.game_id
                term.out(f"-- {item.by} accepted your challenge")
            else:
                text = ("the challenge expired" if item.reason == "expired"
                        else ended_text(item.reason, item.by, item.by))
                term.out(f"-- challenge {item.challenge_id}: {text}")
            return True
        if isinstance(item, pg.GameState):
            view = item.game
            if seat_of(view, term.session.nick) is None:
                return False
            if view.status != "over" or not self.current:
                self.current = view.id
            self.display(term).show(view)
            return True
        return False


COMMANDS: tuple[click.Command, ...] = (ttt, guess, games)
"""The commands the games feature adds to ``zmeet``."""
