"""The zmeet wire protocol, sans-IO (docs/protocol.md): messages, codec, limits, error codes.

Imports neither gevent nor zmq: ``decode(frames) -> Message`` and ``encode(message) -> frames``.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from . import files as files  # registers the file messages (docs/protocol.md, "Files")
from . import games as games  # registers the game messages (docs/protocol.md, "Games")
from . import privacy as privacy  # registers private rooms and direct messages (3.16)
from .codec import (
    HEARTBEAT_TOPIC,
    decode,
    decode_published,
    encode,
    encode_published,
    media_room_topic,
    media_topic,
    register,
    room_topic,
    topic_of,
)
from .codes import ErrorCode
from .limits import HEADER, PROTOCOL_VERSION, is_valid_nick, is_valid_room
from .media import MAX_STATE_BYTES, STATE_INTERVAL_S, MediaState
from .messages import (
    ALL_MESSAGES,
    MEDIA_KINDS,
    PUBLISHED,
    REPLIES,
    REQUESTS,
    ROOM_EVENT_TYPES,
    BrokerInfo,
    Bye,
    Direct,
    Discover,
    Error,
    Events,
    Heartbeat,
    Hello,
    History,
    Info,
    Join,
    Joined,
    Leave,
    MediaDemand,
    MediaFrame,
    Message,
    Ok,
    Ping,
    Pong,
    Posted,
    Reply,
    Request,
    RoomEvent,
    RoomInfo,
    Say,
    SetTopic,
    Welcome,
)

__all__ = [
    "ALL_MESSAGES", "HEADER", "HEARTBEAT_TOPIC", "MEDIA_KINDS", "PROTOCOL_VERSION", "PUBLISHED",
    "REPLIES", "REQUESTS", "ROOM_EVENT_TYPES", "Bye", "Direct", "Error", "ErrorCode", "Events",
    "Heartbeat", "Hello", "History", "Info", "Join", "Joined", "Leave", "LocalProtocolError",
    "MediaDemand", "MediaFrame", "Message", "Ok", "Ping", "Pong", "Posted", "ProtocolError",
    "RemoteProtocolError",
    "Reply", "Request", "RoomEvent", "RoomInfo", "Say", "SetTopic", "Welcome", "decode",
    "decode_published", "encode", "encode_published", "is_valid_nick", "is_valid_room",
    "media_room_topic", "media_topic", "register", "room_topic", "topic_of",
]
__all__ += ["BrokerInfo", "Discover"]  # the entry lane (2.3)
__all__ += ["MAX_STATE_BYTES", "STATE_INTERVAL_S", "MediaState"]  # media state (3.9.2)
