"""The client side of the Clone pattern, sans-IO: room cursors, ordering, gap fill, recovery.

docs/protocol.md sections 3.7.2 ("Making the stream whole") and 3.8 ("Heartbeats and
liveness") state the rules; the ZeroMQ Guide, chapter 5 ("Reliable Pub-Sub (Clone
Pattern)") is the model. :class:`CloneClient` holds what a client knows of the rooms it is in
and of its link to the broker, and nothing else: no sockets, no clock, no gevent, no zmq (h11's
``Connection`` is the model). A driver (:class:`zmeet.client.Session`) feeds it what happened,
one input method per happening, and carries out the effects each call returns, in order:

=========================================  ===================================================
input (method)                             effects it may return
=========================================  ===================================================
``welcomed(epoch)``                        none (the link is up; remembers the epoch)
``heartbeat(epoch)``                       ``FetchHistory`` (catch-up of rooms joined since the
                                           last heartbeat), or ``Notice`` + ``Reconnect`` (new
                                           epoch), as ``lost``
``lost(kind, text)``                       ``Notice(kind)``, then ``Reconnect`` unless the
                                           session does not reconnect
``join_started(room)``                     ``Subscribe``
``joined(room, joined)``                   ``Deliver`` (history), ``MembersChanged``, then what
                                           the events held until JOINED give
``join_failed(room)``, ``left(room)``      ``Unsubscribe``, ``MembersChanged``
``event(room_event)``                      ``Deliver`` + ``MembersChanged``, or
                                           ``FetchHistory`` (a gap), or none (known, or held)
``history_received(fetch_id, events)``     ``Deliver`` ..., another ``FetchHistory``, then what
                                           waited for the fill
``history_failed(fetch_id, reason)``       ``Notice("gap")`` (unless closing), then what waited
``rejoin_started(room)``                   none (remembers the cursor the JOIN is asked with)
``rejoined(room, joined)``                 ``MembersChanged``, ``Notice("history-lost")``,
                                           ``FetchHistory``
``rejoin_refused(room, reason)``           ``Unsubscribe``, ``MembersChanged``,
                                           ``Notice("left")``
``recovered()``                            ``Notice("reconnected")``
``close_started()``, ``closed()``          none
=========================================  ===================================================

Every effect is a frozen dataclass. ``FetchHistory`` asks the driver for
``HISTORY(room, after_seq, limit)``; the driver answers with ``history_received`` or
``history_failed`` and the same ``fetch_id``, whenever it likes: several fetches may be in
flight at once (a live gap, a catch-up, a recovery), and each delivery is checked against the
room's cursor when it is made, so none is delivered twice. A ``FetchHistory`` is always the
last effect of its list: what depends on the fill (the event that revealed the gap, the events
JOINED held, the next room to catch up) waits inside the machine and comes back from the
reply's input, so a driver that answers each fetch at once delivers exactly what a blocking
loop would, in the same order.

States: :class:`LinkState` for the session (one at a time), :class:`RoomState` for each room.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import LocalProtocolError
from .limits import MAX_HISTORY
from .messages import Joined, RoomEvent

__all__ = [
    "CATCH_UP_TO",
    "CloneClient",
    "Deliver",
    "Effect",
    "FetchHistory",
    "LinkState",
    "MembersChanged",
    "Notice",
    "Reconnect",
    "RoomState",
    "Subscribe",
    "Unsubscribe",
]

CATCH_UP_TO = 2**62
"""The open upper bound of a catch-up fill (3.7.2 step 5): fill until a reply comes back short."""

PRESENCE_TYPES = ("join", "leave", "gone", "kick")
"""Room event types that change the member list (the Clone pattern's updates)."""


class LinkState(enum.Enum):
    """Where the session's link to the broker is (docs/protocol.md 3.8).

    ``NEW`` until the first WELCOME; ``UP``; ``RECOVERING`` from a loss until ``recovered``;
    ``LOST`` after a loss, for a session that does not reconnect (for good: a later loss is
    not announced again); ``CLOSING`` from ``close_started`` (BYE on its way: no catch-up, a
    failed fill is not announced, a loss is not acted on); ``CLOSED``.
    """

    NEW = "new"
    UP = "up"
    RECOVERING = "recovering"
    LOST = "lost"
    CLOSING = "closing"
    CLOSED = "closed"


class RoomState(enum.Enum):
    """Where one room's cursor is (docs/protocol.md 3.7.2).

    ``JOINING``: subscribed, JOIN sent, JOINED not here yet; live events are held.
    ``CATCH_UP_DUE``: JOINED is here and the cursor set; the first heartbeat fills from it
    (the slow joiner). ``LIVE``: caught up; live events are delivered, gaps filled.
    """

    JOINING = "joining"
    CATCH_UP_DUE = "catch-up-due"
    LIVE = "live"


# --- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """Something about the session, not a room event: ``kind`` is ``broker-lost``,
    ``broker-restarted``, ``reconnected``, ``gap`` (events that could not be fetched),
    ``left`` (a room that could not be rejoined), ``history-lost`` (the broker came back
    without a room's history) or ``broker-key-changed`` (the broker came back with another
    key, or none: the session will not reconnect); ``text`` says it for people.

    Also an effect: put it on the application's queue (``Session.events``)."""

    kind: str
    text: str


@dataclass(frozen=True)
class Deliver:
    """Give ``event`` to the application: the next of its room, in sequence order, once."""

    event: RoomEvent


@dataclass(frozen=True)
class MembersChanged:
    """``room``'s member list is now ``members`` (nicks in join order; empty: not in the room).
    Tell the member listeners."""

    room: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Subscribe:
    """Subscribe the events SUB to ``room``'s topic (``room/<room>/``), before JOIN."""

    room: str


@dataclass(frozen=True)
class Unsubscribe:
    """Unsubscribe the events SUB from ``room``'s topic (one unsubscribe per subscribe)."""

    room: str


@dataclass(frozen=True)
class FetchHistory:
    """Send ``HISTORY(room, after_seq, limit)``; answer with
    :meth:`CloneClient.history_received` (the reply's events) or
    :meth:`CloneClient.history_failed` (no reply, or ERROR), giving ``fetch_id``."""

    fetch_id: int
    room: str
    after_seq: int
    limit: int


@dataclass(frozen=True)
class Reconnect:
    """Recover (docs/protocol.md 3.8): say HELLO again (then :meth:`CloneClient.welcomed`),
    JOIN with ``history = 0`` each room of :meth:`CloneClient.rejoin_rooms` (first
    :meth:`~CloneClient.rejoin_started`, then :meth:`~CloneClient.rejoined` or
    :meth:`~CloneClient.rejoin_refused`), then
    :meth:`~CloneClient.recovered`. If HELLO or a JOIN gets no reply, or HELLO is refused, start
    again after one heartbeat interval, until it succeeds or the session is closed."""


Effect = Deliver | Notice | MembersChanged | Subscribe | Unsubscribe | FetchHistory | Reconnect


# --- the machine ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Room:
    name: str
    state: RoomState = RoomState.JOINING
    cursor: int | None = None  # the last seq delivered (or known); None until JOINED
    held: list[RoomEvent] = field(default_factory=list)  # live events before JOINED
    members: dict[str, None] | None = None  # None until a JOINED gave a member list
    rejoin_cursor: int | None = None  # the cursor when a recovery's JOIN was sent


# What waits for a fill to end, in order: the live event that revealed the gap ("then"), an
# event to go through the whole rule again (held until JOINED), a room to catch up.
_Step = tuple[str, "_Room", RoomEvent | None]


@dataclass(eq=False)
class _Fill:
    room: _Room
    upto_seq: int  # exclusive
    after_seq: int  # the cursor when the fetch in flight was asked
    steps: list[_Step]


class CloneClient:
    """One session's room cursors and link state (module docstring: inputs and effects).

    ``reconnect``: whether a lost link is recovered (``Session(reconnect=...)``).
    ``max_history``: the most events one HISTORY reply carries (WELCOME's limits; 1000).
    Each input method returns a list of effects to carry out in order. Misuse (an unknown
    ``fetch_id``) raises :class:`~zmeet.errors.LocalProtocolError`.
    """

    def __init__(self, *, reconnect: bool = True, max_history: int = MAX_HISTORY) -> None:
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self.reconnect = reconnect
        self.max_history = max_history
        self.state = LinkState.NEW
        """The session's :class:`LinkState`."""
        self.epoch: str | None = None
        """The epoch of the last WELCOME (None before the first)."""
        self._rooms: dict[str, _Room] = {}
        self._fills: dict[int, _Fill] = {}
        self._fetch_ids = itertools.count(1)

    # queries -------------------------------------------------------------------------------

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms joined or being joined, in the order their first JOIN started."""
        return tuple(self._rooms)

    def room_state(self, room: str) -> RoomState | None:
        """``room``'s :class:`RoomState`, or None for a room not joined."""
        r = self._rooms.get(room)
        return None if r is None else r.state

    def cursor(self, room: str) -> int | None:
        """The last sequence number delivered (or known through JOINED) in ``room``; None for
        a room not joined or whose JOINED has not arrived."""
        r = self._rooms.get(room)
        return None if r is None else r.cursor

    def is_joined(self, room: str) -> bool:
        """Whether ``room``'s JOINED has arrived (a JOIN now would repeat nothing)."""
        return self.cursor(room) is not None

    def members(self, room: str) -> tuple[str, ...]:
        """``room``'s nicks in join order, as the machine knows them (empty: not joined)."""
        r = self._rooms.get(room)
        return () if r is None or r.members is None else tuple(r.members)

    def rejoin_rooms(self) -> tuple[str, ...]:
        """The rooms a recovery JOINs again: those whose JOINED has arrived (a room whose first
        JOIN is still waiting for its reply is set up by that reply)."""
        return tuple(name for name, r in self._rooms.items() if r.cursor is not None)

    @property
    def fetches_in_flight(self) -> tuple[int, ...]:
        """The ``fetch_id`` of every ``FetchHistory`` not yet answered."""
        return tuple(self._fills)

    @property
    def closing(self) -> bool:
        return self.state in (LinkState.CLOSING, LinkState.CLOSED)

    # link inputs ---------------------------------------------------------------------------

    def welcomed(self, epoch: str) -> list[Effect]:
        """A WELCOME with ``epoch`` arrived (the first, or a recovery's HELLO)."""
        self.epoch = epoch
        if self.state is LinkState.NEW:
            self.state = LinkState.UP
        return []

    def heartbeat(self, epoch: str) -> list[Effect]:
        """A HEARTBEAT arrived. Another epoch than WELCOME's: the broker restarted (as
        :meth:`lost`). The same: catch up every room whose JOINED came since the last one, one
        room after the other (3.7.2 step 5).

        A SUB subscription takes effect at the broker some time after ``setsockopt``, and
        nothing tells the subscriber when (the "slow joiner" of the ZeroMQ Guide, chapter 5).
        An event published in that window would otherwise wait for the next event to be
        noticed as a gap; the catch-up fetches it at the first heartbeat after JOINED."""
        if self.epoch is not None and epoch != self.epoch:
            return self.lost("broker-restarted", "the broker restarted; rejoining")
        if self.closing:
            return []
        out: list[Effect] = []
        # a room whose JOINED arrives while an earlier room catches up is caught up in its turn
        due = [r for r in self._rooms.values() if r.state is not RoomState.LIVE]
        self._run_steps([("catch-up", r, None) for r in due], out)
        return out

    def lost(self, kind: str, text: str) -> list[Effect]:
        """The broker is lost (``kind`` ``broker-lost`` or ``broker-restarted``, ``text`` for
        people). Nothing while recovering, lost for good, or closing; else the notice, and
        ``Reconnect`` for a session that reconnects."""
        if self.state in (LinkState.RECOVERING, LinkState.LOST) or self.closing:
            return []
        if not self.reconnect:
            self.state = LinkState.LOST
            return [Notice(kind, text)]
        self.state = LinkState.RECOVERING
        return [Notice(kind, text), Reconnect()]

    def recovered(self) -> list[Effect]:
        """Every room of :meth:`rejoin_rooms` was rejoined (or left) and filled."""
        if self.state is LinkState.RECOVERING:
            self.state = LinkState.UP
        return [Notice("reconnected", "reconnected to the broker")]

    def recovery_abandoned(self) -> list[Effect]:
        """The driver's ``Reconnect`` ended without :meth:`recovered` (an error it did not
        expect, or its greenlet was killed): the link counts as up again, so that the next
        :meth:`lost` starts a new recovery instead of being ignored for good."""
        if self.state is LinkState.RECOVERING:
            self.state = LinkState.UP
        return []

    def gave_up(self, kind: str, text: str) -> list[Effect]:
        """The driver's recovery met a reason never to reconnect (``kind``
        ``broker-key-changed``: the broker now has another key, or runs without one): lost for
        good, and a notice saying why."""
        self.reconnect = False
        if self.state is not LinkState.CLOSED:
            self.state = LinkState.LOST
        return [Notice(kind, text)]

    def close_started(self) -> list[Effect]:
        """The session is closing (BYE on its way)."""
        if self.state is not LinkState.CLOSED:
            self.state = LinkState.CLOSING
        return []

    def closed(self) -> list[Effect]:
        """The session is closed."""
        self.state = LinkState.CLOSED
        return []

    # room inputs ---------------------------------------------------------------------------

    def join_started(self, room: str) -> list[Effect]:
        """The first JOIN of ``room`` is about to be sent (not for a room already joined:
        :meth:`is_joined`). Subscribe first (3.7.2 step 1); hold live events until JOINED."""
        self._rooms.setdefault(room, _Room(room))
        return [Subscribe(room)]

    def joined(self, room: str, joined: Joined) -> list[Effect]:
        """``room``'s first JOINED: deliver its history, set the cursor to ``last_seq``, then
        replay the held events through the rule (3.7.2 steps 2 and 3)."""
        out: list[Effect] = [Deliver(event) for event in joined.history]
        r = self._rooms.get(room)
        if r is None:  # left while its JOIN was on its way: nothing to follow
            return out
        self._set_members(r, joined.members, out)
        r.cursor = joined.last_seq
        r.state = RoomState.CATCH_UP_DUE
        held, r.held = r.held, []
        self._run_steps([("event", r, e) for e in sorted(held, key=lambda e: e.seq)], out)
        return out

    def join_failed(self, room: str) -> list[Effect]:
        """``room``'s first JOIN failed: forget the room."""
        return self._forget(room)

    def left(self, room: str) -> list[Effect]:
        """LEAVE ``room`` succeeded: forget the room."""
        return self._forget(room)

    def rejoin_started(self, room: str) -> list[Effect]:
        """A recovery's JOIN of ``room`` is about to be sent: remember the cursor it is asked
        with, the one :meth:`rejoined` compares JOINED's ``last_seq`` with."""
        r = self._rooms.get(room)
        if r is not None:
            r.rejoin_cursor = r.cursor
        return []

    def rejoined(self, room: str, joined: Joined) -> list[Effect]:
        """A recovery's JOINED for ``room``. ``last_seq`` below the cursor the JOIN was asked
        with (:meth:`rejoin_started`; else the cursor now): the broker lost the room's history;
        restart the cursor at ``last_seq - 1`` (3.8 step 3). Then fill from the cursor with no
        upper bound (step 4).

        The cursor of the time matters: live events of the new broker newer than ``last_seq``
        may have moved the cursor since the JOIN was sent; compared with them, a broker that
        kept its history looked as if it had lost it (issue 13), and the restarted cursor
        delivered events a second time."""
        r = self._rooms.get(room)
        if r is None or r.cursor is None:
            return []
        out: list[Effect] = []
        self._set_members(r, joined.members, out)
        asked_with = r.cursor if r.rejoin_cursor is None else r.rejoin_cursor
        r.rejoin_cursor = None
        if joined.last_seq < asked_with:
            r.cursor = max(0, joined.last_seq - 1)
            out.append(Notice("history-lost", f"#{room}: the broker lost earlier history"))
        self._start_fill(r, CATCH_UP_TO, [], out)
        return out

    def rejoin_refused(self, room: str, reason: str) -> list[Effect]:
        """A recovery's JOIN of ``room`` was refused (``reason`` for people): leave it."""
        out = self._forget(room)
        out.append(Notice("left", f"#{room}: could not rejoin ({reason})"))
        return out

    def event(self, event: RoomEvent) -> list[Effect]:
        """A room event arrived on the events SUB (3.7.2 steps 3 and 4)."""
        out: list[Effect] = []
        r = self._rooms.get(event.room)
        if r is not None:
            self._run_steps([("event", r, event)], out)
        return out

    def history_received(self, fetch_id: int, events: Iterable[RoomEvent]) -> list[Effect]:
        """The reply to ``FetchHistory(fetch_id, ...)``: its events, oldest first."""
        fill = self._pop_fill(fetch_id)
        out: list[Effect] = []
        r = fill.room
        if self._rooms.get(r.name) is not r:  # left meanwhile: drop what it brings
            self._run_steps(fill.steps, out)
            return out
        assert r.cursor is not None
        events = tuple(events)
        for event in events:
            if r.cursor < event.seq < fill.upto_seq:
                r.cursor = event.seq
                self._deliver(r, event, out)
        if len(events) < self.max_history or r.cursor == fill.after_seq:
            self._run_steps(fill.steps, out)  # the store has no more (or gave nothing new)
        elif not self._start_fill(r, fill.upto_seq, fill.steps, out):
            self._run_steps(fill.steps, out)  # the gap is closed
        return out

    def history_failed(self, fetch_id: int, reason: str) -> list[Effect]:
        """``FetchHistory(fetch_id, ...)`` got no reply or an ERROR (``reason`` for people).
        The missing events are skipped for good: ``Notice("gap")`` unless closing; what waited
        for the fill goes on."""
        fill = self._pop_fill(fetch_id)
        out: list[Effect] = []
        if not self.closing:
            out.append(
                Notice("gap", f"#{fill.room.name}: some events could not be fetched ({reason})")
            )
        self._run_steps(fill.steps, out)
        return out

    # inside --------------------------------------------------------------------------------

    def _pop_fill(self, fetch_id: int) -> _Fill:
        fill = self._fills.pop(fetch_id, None)
        if fill is None:
            raise LocalProtocolError(f"no HISTORY in flight with fetch_id {fetch_id}")
        return fill

    def _forget(self, room: str) -> list[Effect]:
        r = self._rooms.pop(room, None)
        if r is None:
            return []
        out: list[Effect] = [Unsubscribe(room)]
        if r.members is not None:
            out.append(MembersChanged(room, ()))
        return out

    def _set_members(self, r: _Room, members: Iterable[str], out: list[Effect]) -> None:
        new = dict.fromkeys(members)
        if list(new) != list(r.members or {}):
            r.members = new
            out.append(MembersChanged(r.name, tuple(new)))

    def _deliver(self, r: _Room, event: RoomEvent, out: list[Effect]) -> None:
        """``event`` is the next of ``r``: keep the member list, then deliver it."""
        members = r.members
        if members is not None and event.type in PRESENCE_TYPES:
            present = event.sender in members
            if event.type == "join" and not present:
                members[event.sender] = None
                out.append(MembersChanged(r.name, tuple(members)))
            elif event.type != "join" and present:
                del members[event.sender]
                out.append(MembersChanged(r.name, tuple(members)))
        out.append(Deliver(event))

    def _start_fill(self, r: _Room, upto_seq: int, steps: list[_Step], out: list[Effect]) -> bool:
        """Ask for ``r``'s events after its cursor and below ``upto_seq`` (3.7.2 step 4), with
        ``steps`` to run when the fill ends. False (nothing asked) if there is no gap."""
        assert r.cursor is not None
        if r.cursor >= upto_seq - 1:
            return False
        fetch_id = next(self._fetch_ids)
        self._fills[fetch_id] = _Fill(r, upto_seq, r.cursor, steps)
        limit = min(self.max_history, upto_seq - r.cursor - 1)
        out.append(FetchHistory(fetch_id, r.name, r.cursor, limit))
        return True

    def _run_steps(self, steps: list[_Step], out: list[Effect]) -> None:
        """Run ``steps`` in order; one that starts a fill takes the rest with it."""
        for i, (kind, r, event) in enumerate(steps):
            rest = steps[i + 1 :]
            if self._rooms.get(r.name) is not r:
                continue  # the room was left meanwhile
            if kind == "then":  # the event that revealed a gap, after its fill
                assert event is not None and r.cursor is not None
                if event.seq > r.cursor:
                    r.cursor = event.seq
                    self._deliver(r, event, out)
            elif kind == "event":
                assert event is not None
                if r.cursor is None:  # JOINED not yet here: hold it
                    r.held.append(event)
                elif event.seq <= r.cursor:
                    pass  # already delivered (or in history)
                elif event.seq > r.cursor + 1:
                    self._start_fill(r, event.seq, [("then", r, event), *rest], out)
                    return
                else:
                    r.cursor = event.seq
                    self._deliver(r, event, out)
            elif kind == "catch-up":  # the first heartbeat after JOINED (3.7.2 step 5)
                if r.state is RoomState.CATCH_UP_DUE:
                    r.state = RoomState.LIVE
                    if self._start_fill(r, CATCH_UP_TO, rest, out):
                        return
