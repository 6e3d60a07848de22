"""Rooms, nicks and the per-room sequencer (docs/protocol.md, "Rooms and sequencing").

:class:`Rooms` is the broker's chat state without I/O. It validates names and sizes, owns the
nick registry and room membership, and makes every room event with the room's next sequence
number. The caller (the broker) stores each event before it publishes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import Refused
from ..protocol import ErrorCode, RoomEvent
from ..protocol.limits import (
    MAX_LIVE_ROOMS,
    MAX_ROOM_TOPIC_BYTES,
    MAX_ROOMS_PER_SESSION,
    MAX_SESSIONS,
    MAX_TEXT_BYTES,
    is_valid_nick,
    is_valid_room,
)


def check_text(text: str, limit_bytes: int = MAX_TEXT_BYTES, what: str = "message") -> None:
    """Raise :class:`Refused` MESSAGE_TOO_LARGE if ``text`` is over ``limit_bytes`` of UTF-8,
    BAD_REQUEST if it cannot be encoded (lone surrogates)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Refused(ErrorCode.BAD_REQUEST, f"{what} is not valid Unicode") from None
    if size > limit_bytes:
        raise Refused(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"{what} is {size} bytes of UTF-8; the limit is {limit_bytes}",
        )


def check_nick(nick: str) -> None:
    """Raise :class:`Refused` INVALID_NAME unless ``nick`` is 1 to 32 of ``[A-Za-z0-9_-]``."""
    if not is_valid_nick(nick):
        raise Refused(
            ErrorCode.INVALID_NAME,
            f"invalid nick {nick[:40]!r}: use 1 to 32 letters, digits, '_' or '-'",
        )


def check_room(room: str) -> None:
    """Raise :class:`Refused` INVALID_NAME unless ``room`` is 1 to 64 of ``[A-Za-z0-9_-]``."""
    if not is_valid_room(room):
        raise Refused(
            ErrorCode.INVALID_NAME,
            f"invalid room {room[:70]!r}: use 1 to 64 letters, digits, '_' or '-'",
        )


@dataclass
class Room:
    """One room: its members (nicks, in join order), room topic and newest sequence number."""

    name: str
    last_seq: int
    topic: str = ""
    members: dict[str, None] = field(default_factory=dict)


class Rooms:
    """The broker's chat state.

    ``clock`` returns wall-clock seconds since the Unix epoch (the broker clock's ``wall_s``, a
    fake in tests); ``load_room`` returns ``(last_seq, topic)`` of a room from the store the
    time a room is loaded, so sequence numbers go on across broker restarts.

    Bounded state: at most ``max_nicks`` nicks held (MAX_SESSIONS) and ``max_rooms`` rooms
    in memory (MAX_LIVE_ROOMS); past them a claim or a JOIN gets TOO_MANY. A room nobody is
    in is kept only until :meth:`free_idle`, which the caller runs once the room's events
    are stored (the broker: after each group commit), so that reloading it from the store
    gives the same ``last_seq`` and room topic.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        load_room: Callable[[str], tuple[int, str]],
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        *,
        max_rooms: int = MAX_LIVE_ROOMS,
        max_nicks: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._load_room = load_room
        self._new_id = new_id
        self.max_rooms = max_rooms
        self.max_nicks = max_nicks
        self._rooms: dict[str, Room] = {}
        self._idle: set[str] = set()
        """Rooms in memory that may have no members: :meth:`free_idle` checks them."""
        self._nicks: dict[str, object] = {}
        self._joined: dict[str, set[str]] = {}

    # nicks ----------------------------------------------------------------------------------

    def claim_nick(self, nick: str, owner: object) -> None:
        """Give ``nick`` to ``owner`` (a session key). Raises :class:`Refused` INVALID_NAME or
        NICK_IN_USE (the holder keeps it), TOO_MANY past ``max_nicks`` nicks held. Claiming a
        nick one already holds is a no-op."""
        check_nick(nick)
        holder = self._nicks.get(nick)
        if holder is not None and holder != owner:
            raise Refused(ErrorCode.NICK_IN_USE, f"nick {nick!r} is in use")
        if holder is None and len(self._nicks) >= self.max_nicks:
            raise Refused(ErrorCode.TOO_MANY,
                          f"the broker serves at most {self.max_nicks} sessions; try later")
        self._nicks[nick] = owner
        self._joined.setdefault(nick, set())

    def release_nick(
        self, nick: str, reason_type: str = "leave", reason: str = ""
    ) -> list[RoomEvent]:
        """Take ``nick`` out of every room and free it. Returns the ``leave`` (or ``gone``)
        events to store and publish, one per room."""
        events = [
            self.leave(room, nick, type_=reason_type, reason=reason)
            for room in sorted(self._joined.get(nick, ()))
        ]
        self._nicks.pop(nick, None)
        self._joined.pop(nick, None)
        return events

    def move_nick(self, nick: str, owner: object) -> None:
        """Give the claimed ``nick`` to ``owner`` (its session resumed on a new connection),
        keeping its rooms. Raises :class:`Refused` NO_SESSION if nobody holds it."""
        if nick not in self._nicks:
            raise Refused(ErrorCode.NO_SESSION, f"nick {nick!r} is not held")
        self._nicks[nick] = owner

    def holder(self, nick: str) -> object | None:
        """The owner that holds ``nick``, or None."""
        return self._nicks.get(nick)

    # rooms ----------------------------------------------------------------------------------

    def room(self, name: str) -> Room:
        """The room called ``name``, loaded from the store if it is not in memory. Raises
        INVALID_NAME, TOO_MANY when ``max_rooms`` rooms are in memory already."""
        check_room(name)
        room = self._rooms.get(name)
        if room is None:
            if len(self._rooms) >= self.max_rooms:
                raise Refused(ErrorCode.TOO_MANY,
                              f"the broker has {self.max_rooms} rooms open; try later")
            last_seq, topic = self._load_room(name)
            room = self._rooms[name] = Room(name, last_seq, topic)
            self._idle.add(name)
        return room

    def free_idle(self) -> int:
        """Forget the rooms in memory that nobody is in; returns how many. Call it only when
        every event made so far is stored (a room's ``last_seq`` comes back from the store).
        O(rooms that lost their last member, or were loaded, since the last call)."""
        freed = 0
        rooms = self._rooms
        for name in self._idle:
            room = rooms.get(name)
            if room is not None and not room.members:
                del rooms[name]
                freed += 1
        self._idle.clear()
        return freed

    def __len__(self) -> int:
        """Rooms in memory now."""
        return len(self._rooms)

    def peek(self, name: str) -> Room:
        """Room ``name`` as it is, without keeping a room that nobody uses in memory.
        Raises INVALID_NAME."""
        check_room(name)
        room = self._rooms.get(name)
        if room is None:
            last_seq, topic = self._load_room(name)
            room = Room(name, last_seq, topic)
        return room

    def rooms_of(self, nick: str) -> frozenset[str]:
        """The rooms ``nick`` is in."""
        return frozenset(self._joined.get(nick, ()))

    def is_member(self, room: str, nick: str) -> bool:
        return room in self._joined.get(nick, ())

    def _event(self, room: Room, type_: str, sender: str, text: str = "") -> RoomEvent:
        room.last_seq += 1
        return RoomEvent(
            room=room.name,
            seq=room.last_seq,
            id=self._new_id(),
            ts_ms=int(self._clock() * 1000),
            type=type_,
            sender=sender,
            text=text,
        )

    def join(self, name: str, nick: str) -> RoomEvent | None:
        """Put ``nick`` in room ``name``. Returns the ``join`` event, or None if already in.
        Raises INVALID_NAME, NO_SESSION for an unclaimed nick, TOO_MANY past
        MAX_ROOMS_PER_SESSION rooms."""
        joined = self._require(nick)
        room = self.room(name)
        if nick in room.members:
            return None
        if len(joined) >= MAX_ROOMS_PER_SESSION:
            raise Refused(ErrorCode.TOO_MANY, f"at most {MAX_ROOMS_PER_SESSION} rooms at once")
        room.members[nick] = None
        joined.add(name)
        return self._event(room, "join", nick)

    def leave(self, name: str, nick: str, type_: str = "leave", reason: str = "") -> RoomEvent:
        """Take ``nick`` out of room ``name``; returns the ``leave`` (or ``gone``) event.
        Raises INVALID_NAME, NOT_MEMBER if it was not in."""
        joined = self._require(nick)
        check_room(name)
        room = self._rooms.get(name)
        if room is None or nick not in room.members:
            raise Refused(ErrorCode.NOT_MEMBER, f"you are not in room {name!r}")
        del room.members[nick]
        joined.discard(name)
        if not room.members:
            self._idle.add(name)
        return self._event(room, type_, nick, reason)

    def say(self, name: str, nick: str, text: str) -> RoomEvent:
        """A ``chat`` event of ``text`` by ``nick`` in room ``name``. Raises NOT_MEMBER,
        MESSAGE_TOO_LARGE (over MAX_TEXT_BYTES of UTF-8), BAD_REQUEST for empty text."""
        room = self._member_room(name, nick)
        check_text(text)
        if not text.strip():
            raise Refused(ErrorCode.BAD_REQUEST, "empty message")
        return self._event(room, "chat", nick, text)

    def set_topic(self, name: str, nick: str, topic: str) -> RoomEvent:
        """A ``topic`` event setting room ``name``'s room topic. Raises NOT_MEMBER,
        MESSAGE_TOO_LARGE (over MAX_ROOM_TOPIC_BYTES)."""
        room = self._member_room(name, nick)
        check_text(topic, MAX_ROOM_TOPIC_BYTES, "room topic")
        room.topic = topic
        return self._event(room, "topic", nick, topic)

    def post(self, name: str, type_: str, nick: str, text: str = "") -> RoomEvent:
        """A room event of a feature's type (``file``, ...) in room ``name`` by ``nick``, with
        the room's next sequence number. Raises INVALID_NAME."""
        return self._event(self.room(name), type_, nick, text)

    def members(self, name: str) -> tuple[str, ...]:
        """Members of room ``name`` in join order. Raises INVALID_NAME."""
        check_room(name)
        room = self._rooms.get(name)
        return tuple(room.members) if room is not None else ()

    def _require(self, nick: str) -> set[str]:
        joined = self._joined.get(nick)
        if joined is None:
            raise Refused(ErrorCode.NO_SESSION, "say HELLO first")
        return joined

    def _member_room(self, name: str, nick: str) -> Room:
        self._require(nick)
        check_room(name)
        room = self._rooms.get(name)  # a room with a member is in memory
        if room is None or nick not in room.members:
            raise Refused(ErrorCode.NOT_MEMBER, f"join room {name!r} first")
        return room

    def all_rooms(self) -> Iterable[Room]:
        return self._rooms.values()
