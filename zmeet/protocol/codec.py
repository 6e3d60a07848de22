"""Frames to messages and back, with no I/O (docs/protocol.md, sections "Framing" and "Lanes").

A message is a list of frames::

    control lane   header command body
    events lane    topic header command body
    media lane     [topic] header "FRAME" body payload

``header`` is ``"ZMEET"`` and one version byte, ``command`` the ASCII command name, ``body`` a
msgpack map of the message's fields (``sender`` is written ``from``), ``payload`` the raw
encoded media. A ROUTER adds the routing id in front, and the broker and client drivers take it
off before they call :func:`decode`.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from typing import Any

import msgpack

from ..errors import LocalProtocolError, RemoteProtocolError
from . import messages as m
from .codes import ErrorCode
from .limits import (
    HEADER,
    MAX_MEDIA_FRAME_BYTES,
    MAX_MEDIA_META_BYTES,
    MAX_REQ_ID,
    PROTOCOL_VERSION,
    SIGNATURE,
    is_valid_nick,
)

Buffer = bytes | bytearray | memoryview

_WIRE_NAMES = {"sender": "from"}
_BY_COMMAND: dict[bytes, type[m.Message]] = {cls.COMMAND: cls for cls in m.ALL_MESSAGES}
_MAX_BODY_BYTES = 64 * 1024 * 1024  # a reply of MAX_HISTORY events of MAX_TEXT_BYTES fits
_ENUMS = {("MediaFrame", "kind"): m.MEDIA_KINDS}
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9-]{0,31}")  # open set: new types must not break old clients

HEARTBEAT_TOPIC = b"broker/heartbeat"


def room_topic(room: str) -> bytes:
    """PUB topic (and SUB prefix) of ``room``'s events: ``room/<room>/``."""
    return b"room/" + room.encode() + b"/"


def media_room_topic(room: str) -> bytes:
    """SUB prefix that takes every media frame of ``room``: ``media/<room>/``."""
    return b"media/" + room.encode() + b"/"


def media_topic(room: str, sender: str, kind: str) -> bytes:
    """PUB topic of one sender's media of one kind: ``media/<room>/<sender>/<kind>``."""
    return b"media/%s/%s/%s" % (room.encode(), sender.encode(), kind.encode())


def topic_of(message: m.Message) -> bytes:
    """The PUB topic a published message goes out under.

    Raises :class:`LocalProtocolError` for a message that is never published.
    """
    if isinstance(message, m.RoomEvent):
        return room_topic(message.room)
    if isinstance(message, m.Heartbeat):
        return HEARTBEAT_TOPIC
    if isinstance(message, m.MediaFrame):
        return media_topic(message.room, message.sender, message.kind)
    if type(message) in _PUBLISHED and hasattr(message, "topic"):
        return message.topic()
    raise LocalProtocolError(f"{type(message).__name__} is not published")


# --- field specs ----------------------------------------------------------------------------


def _check_int(value: Any) -> bool:
    return type(value) is int


def _check_float(value: Any) -> bool:
    return type(value) in (int, float)


_SCALARS: dict[str, Any] = {
    "int": _check_int,
    "bool": lambda v: type(v) is bool,
    "str": lambda v: type(v) is str,
    "bytes": lambda v: type(v) is bytes,
    "float": _check_float,
}


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    wire: str
    kind: str  # scalar name, "list:<scalar>", "list:<Record>", "rec:<Record>", "map:<scalar>"
    required: bool
    default: Any


def _spec(cls: type[m.Message]) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if origin is tuple:
            item = typing.get_args(hint)[0]
            kind = "list:" + item.__name__
        elif origin is dict:
            kind = "map:" + typing.get_args(hint)[1].__name__
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kind = "rec:" + hint.__name__
        else:
            kind = hint.__name__
        has_default = f.default is not dataclasses.MISSING
        out.append(
            _Field(
                f.name,
                _WIRE_NAMES.get(f.name, f.name),
                kind,
                not has_default,
                f.default if has_default else None,
            )
        )
    return tuple(out)


_SPECS: dict[type, tuple[_Field, ...]] = {cls: _spec(cls) for cls in m.ALL_MESSAGES}
_RECORDS: dict[str, type] = {"RoomEvent": m.RoomEvent}
_PUBLISHED: set[type] = set(m.PUBLISHED) | {m.MediaFrame}
_PAYLOADS: dict[type, tuple[str, int]] = {m.MediaFrame: ("payload", MAX_MEDIA_FRAME_BYTES)}
"""Classes whose last field travels as its own raw frame after the body: field name and the
largest payload decoded. A registered class opts in with ``PAYLOAD_FIELD`` and
``MAX_PAYLOAD_BYTES`` class attributes."""


def register(*classes: type, published: bool = False) -> None:
    """Add message classes (with a ``COMMAND``) or nested record dataclasses (without) to the
    codec, for the protocol's feature modules (games, files). A published message class must
    have a ``topic() -> bytes`` method and ``published=True``. A message class with a
    ``PAYLOAD_FIELD`` class attribute (a ``bytes`` field's name) and ``MAX_PAYLOAD_BYTES``
    carries that field as a raw frame after the body, as MediaFrame's payload.

    Raises :class:`LocalProtocolError` for a command or record name already taken.
    """
    for cls in classes:
        command = getattr(cls, "COMMAND", b"")
        if command:
            if command in _BY_COMMAND and _BY_COMMAND[command] is not cls:
                raise LocalProtocolError(f"command {command!r} is already registered")
            _BY_COMMAND[command] = cls
        else:
            if cls.__name__ in _RECORDS and _RECORDS[cls.__name__] is not cls:
                raise LocalProtocolError(f"record {cls.__name__} is already registered")
            _RECORDS[cls.__name__] = cls
        _SPECS[cls] = _spec(cls)
        payload_field = getattr(cls, "PAYLOAD_FIELD", "")
        if command and payload_field:
            _PAYLOADS[cls] = (payload_field, int(getattr(cls, "MAX_PAYLOAD_BYTES", 0)))
        if published:
            _PUBLISHED.add(cls)


def _to_wire(message: m.Message) -> dict[str, Any]:
    body: dict[str, Any] = {}
    skip = _PAYLOADS.get(type(message), ("payload",))[0]
    for f in _SPECS[type(message)]:
        if f.name == "payload" or f.name == skip:
            continue
        value = getattr(message, f.name)
        if f.kind.startswith("list:") and f.kind[5:] in _RECORDS:
            value = [_to_wire(e) for e in value]
        elif f.kind.startswith("rec:"):
            value = _to_wire(value)
        elif f.kind.startswith("list:"):
            value = list(value)
        body[f.wire] = value
    return body


def _fail(reason: str, req_id: int = 0, code: ErrorCode = ErrorCode.BAD_REQUEST) -> typing.NoReturn:
    raise RemoteProtocolError(reason, code=int(code), req_id=req_id)


def _from_wire(cls: type, body: Any, req_id: int = 0) -> Any:
    name = getattr(cls, "COMMAND", b"").decode() or cls.__name__
    if type(body) is not dict:
        _fail(f"{name} body is not a map", req_id)
    values: dict[str, Any] = {}
    skip = _PAYLOADS.get(cls, ("payload",))[0]
    for f in _SPECS[cls]:
        if f.name == "payload" or f.name == skip:
            continue
        if f.wire not in body:
            if f.required:
                _fail(f"{name} lacks field {f.wire!r}", req_id)
            continue
        value = body[f.wire]
        kind = f.kind
        if kind.startswith("list:") and kind[5:] in _RECORDS:
            if type(value) is not list:
                _fail(f"{f.wire!r} is not a list", req_id)
            record = _RECORDS[kind[5:]]
            value = tuple(_from_wire(record, e, req_id) for e in value)
        elif kind.startswith("rec:"):
            value = _from_wire(_RECORDS[kind[4:]], value, req_id)
        elif kind.startswith("list:"):
            check = _SCALARS[kind[5:]]
            if type(value) is not list or not all(check(v) for v in value):
                _fail(f"{f.wire!r} is not a list of {kind[5:]}", req_id)
            value = tuple(value)
        elif kind.startswith("map:"):
            check = _SCALARS[kind[4:]]
            if type(value) is not dict or not all(
                type(k) is str and check(v) for k, v in value.items()
            ):
                _fail(f"{f.wire!r} is not a map of str to {kind[4:]}", req_id)
        else:
            if not _SCALARS[kind](value):
                _fail(f"{f.wire!r} must be {kind}, not {type(value).__name__}", req_id)
            if kind == "int" and not -(2**63) <= value < 2**63:
                _fail(f"{f.wire!r} is out of range", req_id)
            if kind == "float":
                value = float(value)
        if cls is m.RoomEvent and f.name == "type" and not _EVENT_TYPE.fullmatch(value):
            _fail("'type' must be 1 to 32 of [a-z0-9-], starting with a letter", req_id)
        allowed = _ENUMS.get((cls.__name__, f.name))
        if allowed is not None and value not in allowed:
            _fail(f"{f.wire!r} must be one of {', '.join(allowed)}", req_id)
        values[f.name] = value
    if isinstance(cls, type) and issubclass(cls, m.Request | m.Reply):
        rid = values["req_id"]
        low = 1 if issubclass(cls, m.Request) else 0
        if not low <= rid <= MAX_REQ_ID:
            _fail(f"req_id must be {low} to 2**63-1", 0)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a field combination the class rejects
        _fail(f"{name}: {exc}", req_id)


def _peek_req_id(body: bytes) -> int:
    """The ``req_id`` of a body that is otherwise refused, so that the ERROR can name it; 0
    when it cannot be read (msgpack writes map keys in order: ``req_id`` comes first)."""
    try:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(body) + 1)
        unpacker.feed(body)
        size = unpacker.read_map_header()
        if size < 1 or unpacker.unpack() != "req_id":
            return 0
        value = unpacker.unpack()
    except Exception:  # any malformed body: nothing to name
        return 0
    return value if type(value) is int and 0 < value <= MAX_REQ_ID else 0


# --- public API -----------------------------------------------------------------------------


def encode(message: m.Message) -> list[bytes]:
    """Frames of ``message`` without a topic: ``[header, command, body]``, plus ``payload``
    for a :class:`~zmeet.protocol.messages.MediaFrame` (and the ``PAYLOAD_FIELD`` of a
    registered class that has one).

    Raises :class:`LocalProtocolError` if ``message`` is not a zmeet message or msgpack cannot
    pack a field (a str with lone surrogates, an int out of 64-bit range). Field types are
    checked on decode, not here: build messages with the types their classes declare.
    """
    if type(message) not in _SPECS:
        raise LocalProtocolError(f"not a zmeet message: {message!r}")
    try:
        body = msgpack.packb(_to_wire(message), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from None
    frames = [HEADER, message.COMMAND, body]
    payload = _PAYLOADS.get(type(message))
    if payload is not None:
        frames.append(getattr(message, payload[0]))
    return frames


def encode_published(message: m.Message) -> list[bytes]:
    """Frames of a published message: ``[topic] + encode(message)`` (see :func:`topic_of`)."""
    return [topic_of(message), *encode(message)]


def decode(frames: Sequence[Buffer], *, max_body_bytes: int = _MAX_BODY_BYTES) -> m.Message:
    """The message in ``frames`` (``[header, command, body(, payload)]``, no routing id, no topic).

    Bodies longer than ``max_body_bytes`` are refused with MESSAGE_TOO_LARGE; the broker passes
    ``MAX_REQUEST_BYTES``. A media payload is kept as the object given (pass ``bytes`` or a
    ``memoryview``; it is not copied).

    Raises :class:`RemoteProtocolError`, and nothing else, for any input that is not a valid
    message; its ``code`` is an :class:`ErrorCode` and its ``req_id`` the request's id when the
    body could be read, so that the caller can reply ``ERROR``.
    """
    try:
        n = len(frames)
    except TypeError:
        _fail("frames must be a sequence of bytes")
    if n < 3:
        _fail(f"a message has at least 3 frames, got {n}")
    try:
        header, command, body = bytes(frames[0]), bytes(frames[1]), bytes(frames[2])
    except (TypeError, ValueError):
        _fail("frames must be bytes")
    if header[: len(SIGNATURE)] != SIGNATURE or len(header) != len(HEADER):
        _fail("bad header frame: not a zmeet message")
    if header[-1] != PROTOCOL_VERSION:
        _fail(
            f"protocol version {header[-1]} is not supported (this side speaks {PROTOCOL_VERSION})",
            _peek_req_id(body),
            code=ErrorCode.VERSION_MISMATCH,
        )
    cls = _BY_COMMAND.get(command)
    if cls is None:
        shown = command[:32].decode("ascii", "replace")
        _fail(f"unknown command {shown!r}", _peek_req_id(body), code=ErrorCode.UNKNOWN_COMMAND)
    is_media = cls is m.MediaFrame
    payload_spec = _PAYLOADS.get(cls)
    limit = MAX_MEDIA_META_BYTES if is_media else max_body_bytes
    if len(body) > limit:
        _fail(
            f"body of {len(body)} bytes is over the limit of {limit}",
            _peek_req_id(body[:4096]),
            code=ErrorCode.MESSAGE_TOO_LARGE,
        )
    expected = 3 if payload_spec is None else 4
    if n != expected:
        _fail(f"{command.decode()} has {n} frames, expected {expected}")
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types for bad input: all mean the same
        _fail(f"body is not valid msgpack: {type(exc).__name__}")
    req_id = 0
    if type(raw) is dict and type(raw.get("req_id")) is int and 0 < raw["req_id"] <= MAX_REQ_ID:
        req_id = raw["req_id"]
    message = _from_wire(cls, raw, req_id)
    if payload_spec is not None:
        name, max_payload = payload_spec
        payload = frames[3]
        if not isinstance(payload, bytes | bytearray | memoryview):
            _fail("payload must be bytes", req_id)
        if len(payload) > max_payload:
            _fail(f"{command.decode()} payload of {len(payload)} bytes is over the limit of "
                  f"{max_payload}", req_id, code=ErrorCode.MESSAGE_TOO_LARGE)
        message = dataclasses.replace(message, **{name: payload})  # type: ignore[arg-type]
    return message


def decode_published(frames: Sequence[Buffer]) -> tuple[bytes, m.Message]:
    """``(topic, message)`` from frames ``[topic, header, command, body(, payload)]``.

    Raises :class:`RemoteProtocolError` for anything else, including a topic that does not
    match the message (a published message's topic is derived from its fields).
    """
    try:
        n = len(frames)
        topic = bytes(frames[0]) if n else b""
    except (TypeError, ValueError):
        _fail("frames must be a sequence of bytes")
    if n < 4:
        _fail(f"a published message has at least 4 frames, got {n}")
    message = decode(frames[1:])
    if type(message) not in _PUBLISHED:
        _fail(f"{message.COMMAND.decode()} is not published")
    if type(message) is m.MediaFrame:
        return topic, _stamped_media(topic, message)
    if topic_of(message) != topic:
        _fail("topic does not match the message")
    return topic, message


def _stamped_media(topic: bytes, frame: m.MediaFrame) -> m.MediaFrame:
    """``frame`` with ``sender`` taken from its topic ``media/<room>/<nick>/<kind>``.

    The broker forwards a media frame's meta as the sender wrote it and stamps the sender
    in the topic only (docs/protocol.md, 3.9), so the meta's ``from`` must be empty or the
    topic's nick. Raises :class:`RemoteProtocolError` for a topic of another room or kind,
    a bad nick, or a ``from`` that contradicts the topic.
    """
    prefix = media_room_topic(frame.room)
    suffix = b"/" + frame.kind.encode()
    if not (topic.startswith(prefix) and topic.endswith(suffix)):
        _fail("topic does not match the message")
    nick = topic[len(prefix) : len(topic) - len(suffix)].decode("ascii", "replace")
    if not is_valid_nick(nick):
        _fail("the media topic does not name a valid sender")
    if frame.sender != nick:
        if frame.sender:
            _fail("the frame's from does not match its topic")
        frame = dataclasses.replace(frame, sender=nick)
    return frame
