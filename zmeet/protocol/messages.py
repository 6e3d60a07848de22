"""The messages of the zmeet protocol as frozen dataclasses (docs/protocol.md, section "Commands").

Each class names its ``COMMAND`` (the command frame on the wire) and its fields; the codec
(:mod:`zmeet.protocol.codec`) turns them into frames and back. Field types are checked on
decode, strictly: an ``int`` field never takes a ``bool`` or a ``float``.

Lanes: requests travel client to broker on the control lane and each gets exactly one reply
(a reply class, or :class:`Error`) with the same ``req_id``; :class:`RoomEvent` and
:class:`Heartbeat` are published on the events lane; :class:`MediaFrame` travels the media lane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

ROOM_EVENT_TYPES = ("chat", "join", "leave", "gone", "topic")
"""``RoomEvent.type`` values this version sends: chat message, member joined, member left,
member's heartbeats stopped, room topic changed. A receiver accepts any other short type too
(forward compatibility) and shows it generically."""

MEDIA_KINDS = ("video", "thumb", "screen", "audio", "state")
"""``MediaFrame.kind`` values: ``thumb`` is a small copy of the sender's ``video`` (the low
layer of simulcast, for small tiles); ``state`` is a participant's media state (codec
``json``: muted, video on, screen on), sent on every change and once a second
(docs/protocol.md, 3.9)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Base of every message. ``COMMAND`` is the ASCII command frame."""

    COMMAND: ClassVar[bytes] = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(Message):
    """A control-lane request. ``req_id`` is chosen by the client (1 to 2**63-1), unique per
    session; the broker answers a repeated ``req_id`` with its first reply, so a retry is
    never applied twice."""

    req_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply(Message):
    """A control-lane reply, carrying the ``req_id`` of the request it answers."""

    req_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Direct(Message):
    """A message the broker sends one client on the control lane unasked (a challenge, a
    file offer): it carries no ``req_id`` and gets no reply. The client session queues it on
    ``Session.events``."""


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Request):
    """Open a session under ``nick``. Reply: :class:`Welcome`, or ERROR NICK_IN_USE,
    NICK_REGISTERED, INVALID_NAME, VERSION_MISMATCH.

    ``resume`` is the control routing id of this client's previous connection (empty for a
    new client): a client that reconnects on a new DEALER names it, and if that session is
    still there and held by the same key, the broker moves it to this connection, its rooms,
    games, transfers and reply cache with it (docs/protocol.md 3.8)."""

    COMMAND: ClassVar[bytes] = b"HELLO"
    nick: str
    client: str = ""
    resume: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Join(Request):
    """Join ``room`` and get its last ``history`` chat messages (-1: the broker's default),
    with ``key`` for a room that has one (3.16). Reply: :class:`Joined`."""

    COMMAND: ClassVar[bytes] = b"JOIN"
    room: str
    history: int = -1
    key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave(Request):
    """Leave ``room``. Reply: :class:`Ok`."""

    COMMAND: ClassVar[bytes] = b"LEAVE"
    room: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Say(Request):
    """Say ``text`` (at most MAX_TEXT_BYTES of UTF-8) in ``room``. Reply: :class:`Posted`."""

    COMMAND: ClassVar[bytes] = b"SAY"
    room: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class History(Request):
    """Ask for ``room``'s events with ``after_seq < seq``, at most ``limit`` of them, oldest
    first (gap fill). Reply: :class:`Events`."""

    COMMAND: ClassVar[bytes] = b"HISTORY"
    room: str
    after_seq: int
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Info(Request):
    """Ask about ``room`` (the seeds' ``!INFO``). Reply: :class:`RoomInfo`."""

    COMMAND: ClassVar[bytes] = b"INFO"
    room: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTopic(Request):
    """Set ``room``'s room topic. Reply: :class:`Ok`; a ``topic`` event is published."""

    COMMAND: ClassVar[bytes] = b"TOPIC"
    room: str
    topic: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Request):
    """Client heartbeat, sent every ``heartbeat_interval_ms``. Reply: :class:`Pong`."""

    COMMAND: ClassVar[bytes] = b"PING"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye(Request):
    """End the session (the seeds' ``!DISCONNECT``): leave every room. Reply: :class:`Ok`."""

    COMMAND: ClassVar[bytes] = b"BYE"


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomEvent(Message):
    """Something that happened in a room, sequenced and stored by the broker.

    ``seq`` is the room's sequence number (1, 2, ...), ``id`` a message id unique on this
    broker, ``ts_ms`` the broker's wall clock in milliseconds since the Unix epoch, ``sender``
    (``from`` on the wire) the nick the broker took from the connection. ``type`` is one of
    :data:`ROOM_EVENT_TYPES` or a newer one (an open set: 1 to 32 of ``[a-z0-9-]``); ``text``
    is the chat text, the new room topic, or the reason of a leave or gone.
    """

    COMMAND: ClassVar[bytes] = b"EVENT"
    room: str
    seq: int
    id: str
    ts_ms: int
    type: str
    sender: str
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Message):
    """Published by the broker every ``interval_ms`` on topic ``broker/heartbeat``. ``epoch``
    is random per broker start: a new epoch tells clients the broker restarted."""

    COMMAND: ClassVar[bytes] = b"HEARTBEAT"
    epoch: str
    ts_ms: int
    interval_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Discover(Request):
    """Sent on the entry lane, the only lane without encryption: who is this broker?
    Reply: :class:`BrokerInfo` (docs/protocol.md 2.3)."""

    COMMAND: ClassVar[bytes] = b"DISCOVER"


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome(Reply):
    """Reply to HELLO. ``endpoints`` maps ``control``, ``events``, ``media_in`` and
    ``media_out`` to ZeroMQ endpoints; ``limits`` maps limit names to integers;
    ``media_token`` is the routing id the client must set on its media-lane DEALER."""

    COMMAND: ClassVar[bytes] = b"WELCOME"
    nick: str
    epoch: str
    endpoints: dict[str, str]
    limits: dict[str, int]
    media_token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerInfo(Reply):
    """Reply to DISCOVER on the entry lane: the broker's CurveZMQ public ``key`` (40
    characters of Z85; empty for a broker run with ``--insecure``) and its ``endpoints``
    (``control``, ``events``, ``media_in``, ``media_out``). Nothing here is secret, and nothing
    here is trusted: the client pins ``key`` (docs/protocol.md 2.3), and a forged one cannot
    complete the CURVE handshake of the other lanes."""

    COMMAND: ClassVar[bytes] = b"BROKER-INFO"
    key: str
    endpoints: dict[str, str]
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined(Reply):
    """Reply to JOIN: the room as it is, ``last_seq`` the room's newest sequence number
    (already including this join), ``history`` its last chat messages, oldest first."""

    COMMAND: ClassVar[bytes] = b"JOINED"
    room: str
    topic: str
    members: tuple[str, ...]
    last_seq: int
    history: tuple[RoomEvent, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Posted(Reply):
    """Reply to SAY: the message was stored and published as ``seq`` in ``room``."""

    COMMAND: ClassVar[bytes] = b"POSTED"
    room: str
    seq: int
    id: str
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Events(Reply):
    """Reply to HISTORY: the stored events asked for, oldest first."""

    COMMAND: ClassVar[bytes] = b"EVENTS"
    room: str
    events: tuple[RoomEvent, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomInfo(Reply):
    """Reply to INFO: members, room topic, stored chat message count, newest seq."""

    COMMAND: ClassVar[bytes] = b"ROOM-INFO"
    room: str
    topic: str
    members: tuple[str, ...]
    message_count: int
    last_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Reply):
    """Reply to PING, with the broker's wall clock in ms."""

    COMMAND: ClassVar[bytes] = b"PONG"
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok(Reply):
    """A request that has nothing else to say succeeded."""

    COMMAND: ClassVar[bytes] = b"OK"


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Reply):
    """A request failed: ``code`` is an :class:`~zmeet.protocol.codes.ErrorCode`, ``reason``
    text for people. ``req_id`` is 0 when the request could not be read at all.
    ``retry_after_ms`` is, for RATE_LIMITED, the milliseconds after which the same request is
    admitted (docs/protocol.md, "Rate limits"), else 0; an ERROR without it (an older broker)
    decodes as 0."""

    COMMAND: ClassVar[bytes] = b"ERROR"
    code: int
    reason: str
    retry_after_ms: int = 0


# --- media ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaFrame(Message):
    """One captured frame on the media lane (docs/protocol.md, "Media lane").

    ``kind`` is one of :data:`MEDIA_KINDS`; ``codec`` ``"jpeg"`` for video and screen;
    ``seq`` counts this sender's frames of this kind from 0; ``capture_ts_us`` is the sender's
    wall clock at capture in microseconds since the Unix epoch; ``pts_ms`` the frame's position
    in its source (a video file's timeline, else time since capture started); ``width`` and
    ``height`` in pixels; ``fps`` the rate the sender aims at. ``sender`` is empty from a client;
    the broker stamps the sender's nick in the PUB topic, and ``decode_published`` sets
    ``sender`` from it. ``payload`` travels as its own frame and is never copied into the
    metadata body.
    """

    COMMAND: ClassVar[bytes] = b"FRAME"
    room: str
    kind: str
    seq: int
    capture_ts_us: int
    pts_ms: int
    width: int
    height: int
    fps: float
    codec: str
    sender: str = ""
    payload: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDemand(Direct):
    """Which of this client's media streams in ``room`` anyone receives: ``kinds``, a subset of
    :data:`MEDIA_KINDS` (docs/protocol.md, 3.9.5). Sent by the broker when it changes, and
    after the client's first frame in the room. A sender SHOULD stop sending a ``video`` or
    ``thumb`` no one receives (simulcast layer suspension) and resume when it is wanted."""

    COMMAND: ClassVar[bytes] = b"MEDIA-DEMAND"
    room: str
    kinds: tuple[str, ...]


REQUESTS: tuple[type[Request], ...] = (
    Hello, Join, Leave, Say, History, Info, SetTopic, Ping, Bye, Discover)
REPLIES: tuple[type[Reply], ...] = (
    Welcome, Joined, Posted, Events, RoomInfo, Pong, Ok, Error, BrokerInfo)
PUBLISHED: tuple[type[Message], ...] = (RoomEvent, Heartbeat)
ALL_MESSAGES: tuple[type[Message], ...] = (
    REQUESTS + REPLIES + PUBLISHED + (MediaFrame, MediaDemand)
)
