"""What a game looks like to people and to scripts (``--json``): the words of states, moves,
results and challenges, and :class:`GameDisplay`, which shows one person a game's states as
they come (docs/protocol.md, 3.14). No requests and no I/O but the ``out`` it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from zmeet.errors import ZmeetError
from zmeet.games import BOT_NAME, GAMES, REASONS
from zmeet.games.base import Move
from zmeet.games.guess import HIGH, LOW, WIN
from zmeet.games.tictactoe import board_from_moves, render
from zmeet.protocol import games as pg

from .render import safe

log = logging.getLogger("zmeet.cli.games")

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
            players = players_line(view)
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


def ended_text(reason: str, by: str, opponent: str) -> str:
    """How a challenge ended (CHALLENGE-ENDED ``reason``, not ``accepted``), in words."""
    return ENDED.get(reason, "the challenge ended: {reason}").format(
        by=by, opponent=opponent, reason=reason)


def players_line(view: pg.GameView) -> str:
    """``bob (X) vs alice (O)``."""
    return " vs ".join(player_name(view, s) for s in range(len(view.players)))


def challenge_sent_line(opponent: str, kind: str, options: dict[str, int],
                        expires_in_ms: int) -> str:
    """What the challenger reads once an open challenge was sent."""
    return (f"-- challenged {opponent} to {describe(kind, options)}; waiting for an answer "
            f"(expires in {seconds(expires_in_ms)} s)")


def record_view(record: pg.GameRecord) -> pg.GameView:
    """A finished game's record as the view of its last state (to show it as one)."""
    return pg.GameView(
        id=record.id, kind=record.kind, players=record.players, options=record.options,
        moves=record.moves, turn="", status="over", result=record.result, winner=record.winner,
        reason=record.reason, away=(), move_timeout_s=0, time_left_ms=0, version=0,
        rematch_of=record.rematch_of)
