"""Games on the command line: ``zmeet ttt``, ``zmeet guess``, ``zmeet games``, and games in the
chat of ``zmeet join`` (``/ttt NICK``, ``!TTT NICK``, ``/accept``, ``/decline``, moves typed as
numbers, ``/resign``). The broker judges every move (docs/protocol.md, "Games"); this module
only asks and shows.

Imported by ``cli/main.py`` for its side effects: it adds the commands to the ``main`` group,
the chat commands to ``ChatTerminal``'s registries, and the games service's windows as options
of ``zmeet broker``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
import gevent
import gevent.event
import gevent.queue
import gevent.socket

from zmeet.client import Notice, Session
from zmeet.errors import RequestRefused, ZmeetError
from zmeet.games import BOT_NAME, GAMES, REASONS, ArenaSettings
from zmeet.games.base import Move
from zmeet.games.guess import HIGH, LOW, WIN
from zmeet.games.tictactoe import MAX_SIZE, MIN_K, MIN_SIZE, board_from_moves, render
from zmeet.protocol import games as pg

from .render import safe

log = logging.getLogger("zmeet.cli.games")


def _host():
    """The module that holds the ``main`` group and ``ChatTerminal`` this process runs: under
    ``python -m zmeet_cli.main`` that is ``__main__``, not a second copy of ``zmeet_cli.main``."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and spec.name == "zmeet_cli.main" and hasattr(main_module, "main"):
        return main_module
    from . import main as host

    return host


_h = _host()
main = _h.main
ChatTerminal = _h.ChatTerminal
nick_option, broker_option, timeout_option = _h.nick_option, _h.broker_option, _h.timeout_option
_open_session, _fail, _setup_logging, _on_signals = (
    _h._open_session, _h._fail, _h._setup_logging, _h._on_signals)

CHALLENGE_WAIT_EXTRA_S = 10.0
"""Beyond a challenge's expiry, how long to wait for the broker to say how it ended."""

RESYNC_S = 2.0
"""A spectator asks WATCH again after this long without a state (a published state can be lost
while its subscription is still being set up)."""

ENDED = {
    "declined": "{by} declined the challenge",
    "expired": "the challenge expired: {opponent} did not answer",
    "offline": "{by} is not online any more",
    "withdrawn": "{by} withdrew the challenge (left)",
}
"""How a challenge ended, told to the challenger (``withdrawn``: to the challenged)."""


# --- what a game looks like to people -------------------------------------------------------


def seconds(ms: int) -> str:
    """``ms`` as seconds for people: ``60``, ``2.5``."""
    return f"{ms / 1000:.1f}".removesuffix(".0") if ms < 10_000 else str(round(ms / 1000))


def _moves(view: pg.GameView) -> list[Move]:
    return [Move(m.seat, m.value, m.note) for m in view.moves]


def seat_of(view: pg.GameView, nick: str | None) -> int | None:
    """The seat of ``nick`` in ``view``, or None for a spectator."""
    if nick is None or nick == BOT_NAME or nick not in view.players:
        return None
    return view.players.index(nick)


def player_name(view: pg.GameView, seat: int) -> str:
    nick = view.players[seat]
    name = "the bot" if nick == BOT_NAME else nick
    return f"{name} ({GAMES[view.kind].SEAT_NAMES[seat]})" if view.kind in GAMES else name


def describe(kind: str, options: dict[str, int]) -> str:
    cls = GAMES.get(kind)
    if cls is None:
        return safe(kind)
    try:
        return cls(options).describe()
    except ZmeetError:
        return cls.TITLE


def board_cells(view: pg.GameView) -> list[str]:
    """A tic-tac-toe board as marks by cell (``""`` for free), for ``--json``."""
    size = view.options.get("size", 3)
    return [("", "X", "O")[v] for v in board_from_moves(size, _moves(view))]


def view_dict(view: pg.GameView) -> dict[str, Any]:
    """The JSON object of a game's state."""
    out: dict[str, Any] = {
        "id": view.id, "kind": view.kind, "players": list(view.players),
        "options": dict(view.options),
        "moves": [[m.seat, m.value, m.note] for m in view.moves],
        "turn": view.turn, "status": view.status, "result": view.result,
        "winner": view.winner, "reason": view.reason, "away": list(view.away),
        "move_timeout_s": view.move_timeout_s, "time_left_ms": view.time_left_ms,
        "version": view.version, "rematch_of": view.rematch_of,
    }
    if view.kind == "ttt":
        out["board"] = board_cells(view)
    return out


def result_for(view: pg.GameView, me: str | None) -> str:
    """``win``, ``lose``, ``draw`` or ``abandoned`` for a player; for a spectator ``win``
    stays ``win`` (see ``winner``)."""
    if view.result == "win" and me is not None and seat_of(view, me) is not None:
        return "win" if view.winner == me else "lose"
    return view.result


def result_line(view: pg.GameView, me: str | None) -> str:
    """``You win!``, ``You lose!``, ``Draw`` (the seeds' words), or for spectators who won."""
    outcome = result_for(view, me)
    if outcome == "win" and seat_of(view, me) is not None:
        return "You win!"
    if outcome == "lose":
        return "You lose!"
    if outcome == "win":
        if view.winner in view.players:
            return f"{player_name(view, view.players.index(view.winner))} wins!"
        return f"{safe(view.winner)} wins!"
    if outcome == "draw":
        return "Draw"
    return "Game abandoned: both players left"


def reason_line(view: pg.GameView) -> str:
    """How it ended, in words: ``alice resigned``, ``bob ran out of time``..."""
    reason = view.reason
    winner = view.players.index(view.winner) if view.winner in view.players else None
    loser = None if winner is None else 1 - winner

    def who(seat: int | None) -> str:
        return "nobody" if seat is None else player_name(view, seat)

    if reason == "line":
        return f"{who(winner)} has {view.options.get('k', 3)} in a row"
    if reason == "full":
        return "the board is full"
    if reason == "resign":
        return f"{who(loser)} resigned"
    if reason == "time":
        return f"{who(loser)} ran out of time"
    if reason == "claim":
        return f"{who(loser)} left and {who(winner)} claimed the win"
    if reason == "disconnect":
        return f"{who(loser)} left and did not come back"
    if reason in ("guessed", "tries"):
        secret = view.moves[0].value if view.moves else 0
        tries = max(0, len(view.moves) - 1)
        if reason == "guessed":
            return f"{who(1)} guessed {secret} in {tries} {'try' if tries == 1 else 'tries'}"
        return f"{who(1)} ran out of tries; the number was {secret}"
    return REASONS.get(reason, safe(reason))


def move_line(view: pg.GameView, move: pg.GameMove, me: str | None) -> str:
    """One move for people: ``-- alice (O) takes 5``, ``Your guess is too low.``"""
    mine = me is not None and seat_of(view, me) == move.seat
    if view.kind == "guess":
        if move.note == "PICK":
            if mine:
                return f"-- you picked {move.value}"
            return f"-- {player_name(view, 0)} has picked a number"
        if mine:
            return {LOW: "Your guess is too low.", HIGH: "Your guess is too high.",
                    WIN: f"Your guess {move.value} is right."}.get(move.note,
                                                                   f"-- {safe(move.note)}")
        said = {LOW: "too low", HIGH: "too high", WIN: "right"}.get(move.note, safe(move.note))
        return f"-- {player_name(view, move.seat)} guesses {move.value}: {said}"
    if mine:
        return f"-- you take {move.value}"
    return f"-- {player_name(view, move.seat)} takes {move.value}"


def prompt_line(view: pg.GameView) -> str:
    """What the player to move is asked, the seeds' way."""
    seat = view.players.index(view.turn)
    o = view.options
    if view.kind == "ttt":
        last = o.get("size", 3) ** 2
        return f"Your move, {GAMES['ttt'].SEAT_NAMES[seat]} (1-{last}, 0 to resign):"
    if view.kind == "guess":
        if seat == 0:
            return (f"Pick a number ({o.get('low', 1)}-{o.get('high', 100)}) for "
                    f"{player_name(view, 1)} to guess (0 to resign):")
        left = o.get("tries", 5) - max(0, len(view.moves) - 1)
        return (f"Enter guess ({o.get('low', 1)}-{o.get('high', 100)}), "
                f"{left} {'try' if left == 1 else 'tries'} left (0 to resign):")
    return "Your move:"


class GameDisplay:
    """Shows game states to one person (``me``, or None for a spectator) through ``out``:
    a header for a new game, each new move, the board after every move (tic-tac-toe, drawn as
    the seeds draw it), who left or came back, the result. States not newer than the last one
    shown are dropped. With ``emit_json``, every state and result is one JSON object instead.
    """

    def __init__(self, me: str | None, out: Callable[[str], None],
                 emit_json: Callable[[dict], None] | None = None, after_game: str = "") -> None:
        self.me = me
        self.out = out
        self.emit_json = emit_json
        self.after_game = after_game
        self.views: dict[str, pg.GameView] = {}

    def show(self, view: pg.GameView) -> bool:
        """Show ``view`` if it is news; True if it was. A state that does not make sense (a
        broker bug) is reported in one line, never a crash."""
        prev = self.views.get(view.id)
        if prev is not None and view.version <= prev.version:
            return False
        self.views[view.id] = view
        try:
            self._show(view, prev)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            log.warning("cannot show game state %r: %r", view, exc)
            self.out(f"-- game {safe(view.id)}: a state from the broker could not be shown")
        return True

    def _show(self, view: pg.GameView, prev: pg.GameView | None) -> None:
        if self.emit_json is not None:
            mine = seat_of(view, self.me)
            self.emit_json({"type": "state", "game": view_dict(view),
                            "you": mine, "your_turn": bool(self.me and view.turn == self.me)})
            if view.status == "over" and (prev is None or prev.status != "over"):
                self.emit_json({"type": "result", "game_id": view.id,
                                "result": result_for(view, self.me), "winner": view.winner,
                                "reason": view.reason, "text": reason_line(view)})
            return
        lines: list[str] = []
        if prev is None:
            players = " vs ".join(player_name(view, s) for s in range(len(view.players)))
            rematch = f" (rematch of {view.rematch_of})" if view.rematch_of else ""
            lines.append(f"-- game {view.id}: {describe(view.kind, dict(view.options))}; "
                         f"{players}{rematch}")
            if seat_of(view, self.me) is not None:
                lines.append(f"-- spectators can watch: zmeet {view.kind} --watch {view.id}")
            new_moves = () if view.kind == "ttt" else view.moves  # the board shows them
        else:
            new_moves = view.moves[len(prev.moves):]
        for move in new_moves:
            lines.append(move_line(view, move, self.me))
        if view.kind == "ttt" and (prev is None or new_moves or view.status == "over"):
            lines.append(render(board_from_moves(view.options.get("size", 3), _moves(view)),
                                view.options.get("size", 3)))
        gone = [n for n in view.away if prev is None or n not in prev.away]
        back = [n for n in (prev.away if prev else ()) if n not in view.away]
        for nick in gone:
            if nick == self.me:
                continue
            if seat_of(view, self.me) is not None:
                lines.append(f"-- {nick} left the game: wait for them to come back, "
                             "or /claim the win")
            else:
                lines.append(f"-- {nick} left the game; it waits for them to come back")
        for nick in back:
            if view.status != "over":
                lines.append(f"-- {nick} is back: the game goes on")
        if view.status == "over":
            if prev is None or prev.status != "over":
                lines.append(f"-- {reason_line(view)}")
                lines.append(result_line(view, self.me))
                if self.after_game and seat_of(view, self.me) is not None:
                    lines.append(self.after_game)
        elif view.turn and view.turn == self.me:
            lines.append(prompt_line(view))
        elif view.turn and (prev is None or prev.turn != view.turn) and view.status == "playing":
            lines.append(f"-- waiting for {player_name(view, view.players.index(view.turn))}")
        for line in lines:
            self.out(line)


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
        bot = opponent.lower() == "bot"
        reply = self.session.request(pg.Challenge, game=self.kind, options=options,
                                     opponent="" if bot else opponent, bot=bot,
                                     move_timeout_s=move_timeout_s)
        assert isinstance(reply, pg.ChallengeSent)
        if reply.game_id:
            self.game_id = reply.game_id
            return
        self.challenge_id = reply.challenge_id
        self.challenged = opponent
        self.deadline = time.monotonic() + reply.expires_in_ms / 1000 + CHALLENGE_WAIT_EXTRA_S
        self.tell(f"-- challenged {opponent} to {describe(self.kind, options)}; waiting for an "
                  f"answer (expires in {seconds(reply.expires_in_ms)} s)",
                  {"type": "challenge-sent", "challenge_id": reply.challenge_id,
                   "to": opponent, "game": self.kind, "expires_in_ms": reply.expires_in_ms})

    def accept(self, wait_s: float) -> None:
        """Accept the oldest challenge to this nick, or the first to come within ``wait_s``."""
        try:
            reply = self.session.request(pg.Accept, challenge_id="", game=self.kind)
        except RequestRefused as exc:
            if exc.code != 404:
                raise
            self.waiting_offer = True
            self.deadline = time.monotonic() + wait_s
            self.tell(f"-- waiting for a challenge (up to {wait_s:g} s)",
                      {"type": "waiting", "for": "challenge", "timeout_s": wait_s})
            return
        assert isinstance(reply, pg.Accepted)
        self.game_id = reply.game_id

    def resume(self) -> None:
        """Take up this nick's running game of this kind (after a reconnect)."""
        reply = self.session.request(pg.ListGames, nick=self.me, limit=100)
        assert isinstance(reply, pg.GameList)
        mine = [g for g in reply.games if g.kind == self.kind]
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
            else "-- " + ENDED.get(item.reason, "the challenge ended: {reason}").format(
                by=item.by, opponent=self.challenged, reason=item.reason),
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
            reply = self.session.request(pg.Accept, challenge_id=offer.challenge_id)
            assert isinstance(reply, pg.Accepted)
            self.game_id = reply.game_id
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
            if word in ("/resign", "0", "resign"):
                self.session.request(pg.Resign, game_id=view.id)
            elif word in ("/claim", "claim"):
                self.session.request(pg.Claim, game_id=view.id)
            elif word.lstrip("-").isdigit() and len(word) < 19:
                self.session.request(pg.MakeMove, game_id=view.id, value=int(word))
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
        reply = self.session.request(pg.Rematch, game_id=view.id)
        assert isinstance(reply, pg.ChallengeSent)
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
    session.subscribe(pg.game_topic(game_id))  # first subscribe, then the snapshot

    def snapshot() -> pg.GameView:
        reply = session.request(pg.Watch, game_id=game_id)
        assert isinstance(reply, pg.GameSnapshot)
        return reply.game

    try:
        view = snapshot()
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
                    item = pg.GameState(game=snapshot())
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


@main.command()
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


@main.command()
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


@main.command()
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
    try:
        if history:
            reply = session.request(pg.GameHistory, nick=player, limit=limit)
            assert isinstance(reply, pg.GameRecords)
            for record in reply.records:
                view = pg.GameView(
                    id=record.id, kind=record.kind, players=record.players,
                    options=record.options, moves=record.moves, turn="", status="over",
                    result=record.result, winner=record.winner, reason=record.reason, away=(),
                    move_timeout_s=0, time_left_ms=0, version=0, rematch_of=record.rematch_of)
                if as_json:
                    click.echo(json.dumps({
                        "type": "record", **{k: v for k, v in view_dict(view).items()
                                             if k not in ("turn", "status", "away",
                                                          "move_timeout_s", "time_left_ms",
                                                          "version")},
                        "started_ms": record.started_ms, "ended_ms": record.ended_ms},
                        ensure_ascii=False))
                else:
                    players = " vs ".join(player_name(view, s) for s in range(len(view.players)))
                    click.echo(f"{_when(record.ended_ms)}  {record.id}  "
                               f"{describe(record.kind, dict(record.options))}  {players}  "
                               f"{result_line(view, None)} ({reason_line(view)}), "
                               f"{len(record.moves)} moves")
            if not reply.records and not as_json:
                click.echo("no finished games")
        else:
            reply = session.request(pg.ListGames, nick=player, limit=limit)
            assert isinstance(reply, pg.GameList)
            for view in reply.games:
                if as_json:
                    click.echo(json.dumps({"type": "game", **view_dict(view)}, ensure_ascii=False))
                    continue
                players = " vs ".join(player_name(view, s) for s in range(len(view.players)))
                state = (f"{view.turn} to move" if view.turn else view.status)
                if view.away:
                    state += f"; away: {', '.join(view.away)}"
                click.echo(f"{view.id}  {describe(view.kind, dict(view.options))}  {players}  "
                           f"{len(view.moves)} moves, {state}")
            if not reply.games and not as_json:
                click.echo("no games running")
    except ZmeetError as exc:
        session.close()
        _fail(exc)
    session.close()


# --- zmeet broker: the games service's windows ------------------------------------------------


def _extend_broker_command() -> None:
    """Add the games service's windows to ``zmeet broker`` as options."""
    command = main.commands.get("broker")
    if command is None or getattr(command, "_games_options", False):
        return
    command.params.extend([
        click.Option(["--challenge-expiry", "challenge_expiry_s"],
                     type=click.FloatRange(0.1, 86_400), default=60.0, show_default=True,
                     help="Seconds before an unanswered game challenge expires."),
        click.Option(["--reconnect-window", "reconnect_window_s"],
                     type=click.FloatRange(0.1, 86_400), default=60.0, show_default=True,
                     help="Seconds a game waits for a player who left to come back."),
    ])
    callback = command.callback
    assert callback is not None

    @functools.wraps(callback)
    def with_games_settings(*args, challenge_expiry_s: float = 60.0,
                            reconnect_window_s: float = 60.0, **kwargs):
        settings = ArenaSettings(challenge_expiry_s=challenge_expiry_s,
                                 reconnect_window_s=reconnect_window_s)
        click.get_current_context().meta["zmeet.arena_settings"] = settings  # cli/main.broker
        return callback(*args, **kwargs)

    command.callback = with_games_settings
    command._games_options = True  # type: ignore[attr-defined]


_extend_broker_command()


# --- in the chat (zmeet join) ------------------------------------------------------------------


class _ChatGames:
    """A chat terminal's games: the display, the game being played, the last challenge."""

    def __init__(self, term) -> None:
        self.display = GameDisplay(term.session.nick, term.out,
                                   after_game="-- /rematch to play again")
        self.current = ""

    def playing(self) -> pg.GameView | None:
        view = self.display.views.get(self.current)
        return view if view is not None and view.status != "over" else None

    def last(self) -> pg.GameView | None:
        return self.display.views.get(self.current)


def _games_of(term) -> _ChatGames:
    state = getattr(term, "_zmeet_games", None)
    if state is None:
        state = _ChatGames(term)
        term._zmeet_games = state
    return state


def _chat_challenge(term, kind: str, rest: str) -> None:
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
    bot = opponent.lower() == "bot"
    reply = term.session.request(pg.Challenge, game=kind, options=options,
                                 opponent="" if bot else opponent, bot=bot)
    assert isinstance(reply, pg.ChallengeSent)
    if reply.game_id:
        _games_of(term).current = reply.game_id
    else:
        term.out(f"-- challenged {opponent} to {describe(kind, options)}; waiting for an answer "
                 f"(expires in {seconds(reply.expires_in_ms)} s)")


def _chat_ttt(term, rest: str) -> None:
    _chat_challenge(term, "ttt", rest)


def _chat_guess(term, rest: str) -> None:
    _chat_challenge(term, "guess", rest)


def _chat_accept(term, rest: str) -> None:
    reply = term.session.request(pg.Accept, challenge_id=rest.strip())
    assert isinstance(reply, pg.Accepted)
    _games_of(term).current = reply.game_id


def _chat_decline(term, rest: str) -> None:
    term.session.request(pg.Decline, challenge_id=rest.strip())
    term.out("-- declined")


def _current_or_say(term) -> pg.GameView | None:
    view = _games_of(term).playing()
    if view is None:
        term.out("-- you are not playing a game: /ttt NICK to start one")
    return view


def _chat_resign(term, rest: str) -> None:
    view = _current_or_say(term)
    if view is not None:
        term.session.request(pg.Resign, game_id=view.id)


def _chat_claim(term, rest: str) -> None:
    view = _current_or_say(term)
    if view is not None:
        term.session.request(pg.Claim, game_id=view.id)


def _chat_move(term, rest: str) -> None:
    view = _current_or_say(term)
    if view is None:
        return
    try:
        value = int(rest)
    except ValueError:
        term.out("-- usage: /move N")
        return
    term.session.request(pg.MakeMove, game_id=view.id, value=value)


def _chat_rematch(term, rest: str) -> None:
    view = _games_of(term).last()
    if view is None or view.status != "over":
        term.out("-- no finished game to rematch")
        return
    reply = term.session.request(pg.Rematch, game_id=view.id)
    assert isinstance(reply, pg.ChallengeSent)
    if reply.game_id:
        _games_of(term).current = reply.game_id
    else:
        other = [n for n in view.players if n != term.session.nick]
        term.out(f"-- asked {other[0] if other else 'them'} for a rematch; waiting")


def _chat_games(term, rest: str) -> None:
    reply = term.session.request(pg.ListGames, limit=20)
    assert isinstance(reply, pg.GameList)
    if not reply.games:
        term.out("-- no games running")
    for view in reply.games:
        players = " vs ".join(player_name(view, s) for s in range(len(view.players)))
        term.out(f"-- {view.id}  {describe(view.kind, dict(view.options))}  {players}  "
                 f"{len(view.moves)} moves")


def _chat_line(term, line: str) -> bool:
    """A number typed during a game is a move (0 resigns, as in the seeds)."""
    text = line.strip()
    if not (text.lstrip("-").isdigit() and len(text) < 19):
        return False
    view = _games_of(term).playing()
    if view is None:
        return False
    value = int(text)
    if value == 0:
        term.session.request(pg.Resign, game_id=view.id)
    else:
        term.session.request(pg.MakeMove, game_id=view.id, value=value)
    return True


def _chat_event(term, item: Any) -> bool:
    games = _games_of(term)
    me = term.session.nick
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
            games.current = item.game_id
            term.out(f"-- {item.by} accepted your challenge")
        else:
            text = ("the challenge expired" if item.reason == "expired" else
                    ENDED.get(item.reason, "the challenge ended: {reason}").format(
                        by=item.by, opponent=item.by, reason=item.reason))
            term.out(f"-- challenge {item.challenge_id}: {text}")
        return True
    if isinstance(item, pg.GameState):
        view = item.game
        if seat_of(view, me) is None:
            return False
        if view.status != "over" or not games.current:
            games.current = view.id
        games.display.show(view)
        return True
    return False


ChatTerminal.COMMANDS.update({
    "/ttt": _chat_ttt, "!ttt": _chat_ttt, "/guess": _chat_guess, "!guess": _chat_guess,
    "/accept": _chat_accept, "/decline": _chat_decline, "/resign": _chat_resign,
    "/claim": _chat_claim, "/move": _chat_move, "/rematch": _chat_rematch, "/games": _chat_games,
})
ChatTerminal.LINE_HANDLERS.append(_chat_line)
ChatTerminal.EVENT_HANDLERS.append(_chat_event)
ChatTerminal.HELP_LINES.extend([
    "Games:",
    "  /ttt NICK [SIZE [K]]  challenge NICK (or bot) to tic-tac-toe (also !TTT NICK)",
    "  /guess [NICK]         guess-the-number against NICK (default: the bot)",
    "  /accept [ID], /decline [ID]   answer a challenge",
    "  N (a number)          your move in the game you are playing; 0 resigns",
    "  /resign, /claim, /rematch, /games",
])
