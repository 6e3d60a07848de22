"""Named limits of the zmeet protocol (docs/protocol.md, section "Limits").

Every limit is enforced in the codec or the domain logic, the socket-level ones also with
``zmq.MAXMSGSIZE``, and the broker tells clients the values in ``WELCOME.limits``.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = 1
"""The version carried in every message's header frame."""

SIGNATURE = b"ZMEET"
"""The five signature bytes that open every header frame."""

HEADER = SIGNATURE + bytes([PROTOCOL_VERSION])
"""The header frame of every message this side sends: ``"ZMEET" %x01``."""

MAX_NICK_LENGTH = 32
NICK_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NICK_LENGTH}}}")
"""A nick: 1 to 32 ASCII letters, digits, ``_`` or ``-``."""

MAX_ROOM_LENGTH = 64
ROOM_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ROOM_LENGTH}}}")
"""A room name: 1 to 64 ASCII letters, digits, ``_`` or ``-`` (never ``/``: it ends a PUB topic)."""

DEFAULT_ROOM = "lobby"

MAX_TEXT_BYTES = 4096
"""Largest chat message, in bytes of UTF-8. A longer one gets MESSAGE_TOO_LARGE, never
truncation."""

MAX_ROOM_TOPIC_BYTES = 256
"""Largest room topic, in bytes of UTF-8."""

MAX_REQUEST_BYTES = 64 * 1024
"""Largest body frame the broker decodes on the control lane."""

MAX_CONTROL_FRAME_BYTES = 1024 * 1024
"""The largest frame the broker's control ROUTER takes (its ``zmq.MAXMSGSIZE``, plus
:data:`CURVE_OVERHEAD_BYTES`): a larger frame drops the connection in libzmq."""

CURVE_OVERHEAD_BYTES = 64
"""What a frame grows by on a CURVE connection, rounded up: libzmq checks ``ZMQ_MAXMSGSIZE``
against the MESSAGE command on the wire (RFC 26: its name, an 8-octet nonce, a flags octet and
a 16-octet MAC around the frame; 34 octets), so every ``MAXMSGSIZE`` is a limit plus this."""

MAX_MEDIA_FRAME_BYTES = 8 * 1024 * 1024
"""Largest encoded media payload (a 4K JPEG fits)."""

MAX_MEDIA_META_BYTES = 4096
"""Largest media metadata body."""

MEDIA_SOCKET_BUFFER_BYTES = 256 * 1024
"""Kernel buffer (``ZMQ_SNDBUF``, ``ZMQ_RCVBUF``) of every media-lane TCP socket, both sides:
a few 1280x720 frames. Left to itself, Linux grows a TCP buffer to megabytes (``tcp_wmem``,
``tcp_rmem``), where a slow link would queue seconds of video out of ZeroMQ's high-water
marks' reach: newest-frame-wins needs the kernel's queues short too."""

DEFAULT_HISTORY = 50
"""Chat messages a JOIN returns when it does not say how many."""

MAX_HISTORY = 1000
"""Most events one JOIN or HISTORY reply carries."""

MAX_ROOMS_PER_SESSION = 64

MAX_NICKS_PER_KEY = 8
"""Nicks a key keeps registered: past it, its least recently used nick not in use is released
(a person with a few names keeps them; a squatter with thousands cannot hold them)."""

MAX_ENTRY_BYTES = 1024
"""Largest message the entry lane reads (a DISCOVER is a few dozen octets)."""

HEARTBEAT_INTERVAL_MS = 2000
"""How often the broker publishes HEARTBEAT and a client sends PING."""

HEARTBEAT_LIVENESS = 5
"""Intervals of silence after which the broker declares a client gone (and a client the broker)."""

MAX_SESSIONS = 10_000
"""Most sessions, and most nicks held, a broker keeps at once; a HELLO past it gets
TOO_MANY."""

MAX_SESSIONS_PER_KEY = 16
"""Most sessions (connections) one key holds at once, all its nicks together: a person's
terminals, not a flood of connections; a HELLO past it gets TOO_MANY."""

MAX_LIVE_ROOMS = 10_000
"""Most rooms with members a broker keeps in memory at once; a JOIN that would open another
gets TOO_MANY. A room nobody is in is freed (its sequence number and room topic come back
from the store)."""

MAX_REQ_ID = 2**63 - 1


def is_valid_nick(nick: object) -> bool:
    """True if ``nick`` is a str of 1 to 32 letters, digits, ``_`` or ``-``."""
    return isinstance(nick, str) and NICK_PATTERN.fullmatch(nick) is not None


def is_valid_room(room: object) -> bool:
    """True if ``room`` is a str of 1 to 64 letters, digits, ``_`` or ``-``."""
    return isinstance(room, str) and ROOM_PATTERN.fullmatch(room) is not None
