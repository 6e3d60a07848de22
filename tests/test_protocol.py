"""The wire protocol without sockets: every message round-trips, and ``decode`` refuses any
other input with :class:`RemoteProtocolError` only (STYLE.md, "Errors"; h11's fuzzing)."""

from __future__ import annotations

import dataclasses
import typing

import msgpack
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from zmeet import protocol as p
from zmeet.errors import LocalProtocolError, RemoteProtocolError
from zmeet.protocol.limits import (
    HEADER,
    MAX_MEDIA_FRAME_BYTES,
    MAX_MEDIA_META_BYTES,
    MAX_REQ_ID,
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    SIGNATURE,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- one hand-written example of every message ----------------------------------------------

_EVENT = p.RoomEvent(room="lobby", seq=7, id="9f1c", ts_ms=1_700_000_000_123, type="chat",
                     sender="alice", text="héllo ✓")
EXAMPLES: dict[type[p.Message], p.Message] = {
    p.Hello: p.Hello(req_id=1, nick="alice", client="zmeet-test", resume=b"c-\x00\xffold"),
    p.Discover: p.Discover(req_id=1),
    p.Join: p.Join(req_id=2, room="lobby", history=10),
    p.Leave: p.Leave(req_id=3, room="lobby"),
    p.Say: p.Say(req_id=4, room="lobby", text="hi there 👋"),
    p.History: p.History(req_id=5, room="lobby", after_seq=3, limit=100),
    p.Info: p.Info(req_id=6, room="lobby"),
    p.SetTopic: p.SetTopic(req_id=7, room="lobby", topic="weekly sync"),
    p.Ping: p.Ping(req_id=8),
    p.Bye: p.Bye(req_id=MAX_REQ_ID),
    p.Welcome: p.Welcome(
        req_id=1, nick="alice", epoch="abcd",
        endpoints={"control": "tcp://127.0.0.1:5555", "events": "tcp://127.0.0.1:5556"},
        limits={"max_text_bytes": 4096, "negative": -1}, media_token=b"\x00\xfftoken",
    ),
    p.BrokerInfo: p.BrokerInfo(req_id=1, key="rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
                               endpoints={"control": "tcp://127.0.0.1:5556"}, version=1),
    p.Joined: p.Joined(req_id=2, room="lobby", topic="t", members=("alice", "bob"), last_seq=8,
                       history=(_EVENT, dataclasses.replace(_EVENT, seq=8, text=""))),
    p.Posted: p.Posted(req_id=4, room="lobby", seq=9, id="x", ts_ms=1),
    p.Events: p.Events(req_id=5, room="lobby", events=(_EVENT,)),
    p.RoomInfo: p.RoomInfo(req_id=6, room="lobby", topic="", members=(), message_count=3,
                           last_seq=12),
    p.Pong: p.Pong(req_id=8, ts_ms=INT64_MAX),
    p.Ok: p.Ok(req_id=0),
    p.Error: p.Error(req_id=9, code=int(p.ErrorCode.NOT_MEMBER), reason="join first"),
    p.RoomEvent: _EVENT,
    p.Heartbeat: p.Heartbeat(epoch="e1", ts_ms=INT64_MIN, interval_ms=2000),
    p.MediaFrame: p.MediaFrame(room="lobby", kind="video", seq=0, capture_ts_us=1, pts_ms=33,
                               width=640, height=480, fps=29.97, codec="jpeg", sender="bob",
                               payload=b"\xff\xd8jpeg\x00bytes"),
    p.MediaDemand: p.MediaDemand(room="lobby", kinds=("thumb", "audio", "state")),
}


def test_every_message_class_has_an_example():
    assert set(EXAMPLES) == set(p.ALL_MESSAGES)


@pytest.mark.parametrize("cls", p.ALL_MESSAGES, ids=lambda c: c.__name__)
def test_example_round_trips(cls):
    message = EXAMPLES[cls]
    frames = p.encode(message)
    assert frames[0] == HEADER and frames[1] == cls.COMMAND
    assert all(type(f) is bytes for f in frames)
    decoded = p.decode(frames)
    assert type(decoded) is cls
    assert decoded == message
    if cls is p.MediaFrame:  # repr=False, and compared: the payload is its own frame
        assert frames[3] == message.payload and decoded.payload == message.payload


@pytest.mark.parametrize("cls", p.PUBLISHED + (p.MediaFrame,), ids=lambda c: c.__name__)
def test_published_example_round_trips(cls):
    message = EXAMPLES[cls]
    frames = p.encode_published(message)
    assert frames[1:] == p.encode(message)
    topic, decoded = p.decode_published(frames)
    assert topic == frames[0] == p.topic_of(message)
    assert decoded == message


def test_topics_keep_rooms_apart():
    """A SUB prefix of one room never takes another room whose name it starts."""
    assert not p.room_topic("abc").startswith(p.room_topic("ab"))
    assert p.topic_of(dataclasses.replace(_EVENT, room="ab")).startswith(p.room_topic("ab"))
    frame = EXAMPLES[p.MediaFrame]
    assert p.media_topic("lobby", "bob", "video").startswith(p.media_room_topic("lobby"))
    assert not p.media_topic("lobby2", "bob", "video").startswith(p.media_room_topic("lobby"))
    assert p.topic_of(frame) == p.media_topic("lobby", "bob", "video")


@pytest.mark.parametrize("cls", p.REQUESTS + p.REPLIES, ids=lambda c: c.__name__)
def test_control_messages_are_not_published(cls):
    with pytest.raises(LocalProtocolError):
        p.encode_published(EXAMPLES[cls])


def test_encode_refuses_what_is_not_a_message():
    for thing in (object(), p.Message(), {"req_id": 1}):
        with pytest.raises(LocalProtocolError):
            p.encode(thing)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        p.Say(req_id=1, room="lobby", text="lone surrogate \ud800"),
        p.Say(req_id=2**64, room="lobby", text="req_id past 64 bits"),
        p.Pong(req_id=1, ts_ms=-(2**64)),
    ],
    ids=["lone-surrogate", "int-over-64-bits", "int-under-64-bits"],
)
def test_encode_refuses_unencodable_fields_with_local_protocol_error(message):
    """This side misusing the API is a LocalProtocolError (STYLE.md, "Errors"), not a
    UnicodeEncodeError or OverflowError from msgpack escaping the ZmeetError tree."""
    with pytest.raises(LocalProtocolError):
        p.encode(message)


# --- round trips of generated messages --------------------------------------------------------

_int64 = st.integers(INT64_MIN, INT64_MAX)
_text = st.text(max_size=40)
_ENUMS = {("RoomEvent", "type"): p.ROOM_EVENT_TYPES, ("MediaFrame", "kind"): p.MEDIA_KINDS}


def _scalar(hint: typing.Any) -> st.SearchStrategy:
    return {
        int: _int64,
        str: _text,
        bytes: st.binary(max_size=40),
        float: st.floats(allow_nan=False),
    }[hint]


def message_strategy(cls: type[p.Message]) -> st.SearchStrategy:
    """Any valid instance of ``cls``, built from its type hints (so a new field is covered)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, st.SearchStrategy] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if f.name == "req_id":
            low = 1 if issubclass(cls, p.Request) else 0
            strategy = st.integers(low, MAX_REQ_ID)
        elif (cls.__name__, f.name) in _ENUMS:
            strategy = st.sampled_from(_ENUMS[cls.__name__, f.name])
        elif origin is tuple:
            item = typing.get_args(hint)[0]
            inner = message_strategy(item) if item is p.RoomEvent else _scalar(item)
            strategy = st.lists(inner, max_size=3).map(tuple)
        elif origin is dict:
            strategy = st.dictionaries(_text, _scalar(typing.get_args(hint)[1]), max_size=3)
        else:
            strategy = _scalar(hint)
        fields[f.name] = strategy
    return st.builds(cls, **fields)


@pytest.mark.parametrize("cls", p.ALL_MESSAGES, ids=lambda c: c.__name__)
def test_generated_messages_round_trip(cls):
    @ROUND_TRIP
    @given(message_strategy(cls))
    def check(message):
        assert p.decode(p.encode(message)) == message
        if cls is p.MediaFrame and not p.is_valid_nick(message.sender):
            # a media topic names its sender, which only a valid nick can be
            with pytest.raises(RemoteProtocolError):
                p.decode_published(p.encode_published(message))
        elif cls in p.PUBLISHED + (p.MediaFrame,):
            assert p.decode_published(p.encode_published(message)) == (
                p.topic_of(message), message)

    check()


# --- decode refuses, with the right code ------------------------------------------------------


def _refused(frames, **kwargs) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        p.decode(frames, **kwargs)
    return info.value


def _body(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 255])
def test_other_protocol_version_is_version_mismatch(version):
    frames = p.encode(EXAMPLES[p.Say])
    frames[0] = SIGNATURE + bytes([version])
    assert _refused(frames).code == p.ErrorCode.VERSION_MISMATCH


@pytest.mark.parametrize(
    "header", [b"", b"ZMEET", b"ZMEE\x01", b"zmeet\x01", HEADER + b"\x00", b"\x01ZMEET"]
)
def test_bad_header_is_bad_request(header):
    frames = p.encode(EXAMPLES[p.Say])
    frames[0] = header
    assert _refused(frames).code == p.ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("command", [b"", b"NOPE", b"say", b"SAY ", b"\xff\xfe", b"X" * 1000])
def test_unknown_command(command):
    frames = p.encode(EXAMPLES[p.Say])
    frames[1] = command
    error = _refused(frames)
    assert error.code == p.ErrorCode.UNKNOWN_COMMAND
    assert len(error.reason) < 200  # a huge command is not echoed whole


def test_oversize_body_is_message_too_large():
    text = "x" * MAX_REQUEST_BYTES
    frames = p.encode(p.Say(req_id=1, room="lobby", text=text))
    assert len(frames[2]) > MAX_REQUEST_BYTES
    assert _refused(frames, max_body_bytes=MAX_REQUEST_BYTES).code == p.ErrorCode.MESSAGE_TOO_LARGE
    # the same frames are fine under a larger limit: the size, not the content, was refused
    assert p.decode(frames, max_body_bytes=len(frames[2])).text == text


def test_oversize_media_metadata_and_payload_are_message_too_large():
    frame = EXAMPLES[p.MediaFrame]
    frames = p.encode(dataclasses.replace(frame, codec="j" * MAX_MEDIA_META_BYTES))
    assert _refused(frames).code == p.ErrorCode.MESSAGE_TOO_LARGE
    frames = p.encode(frame)
    frames[3] = memoryview(bytes(MAX_MEDIA_FRAME_BYTES + 1))
    assert _refused(frames).code == p.ErrorCode.MESSAGE_TOO_LARGE
    frames[3] = memoryview(bytes(MAX_MEDIA_FRAME_BYTES))
    assert len(p.decode(frames).payload) == MAX_MEDIA_FRAME_BYTES


def test_media_payload_is_not_copied():
    frames = p.encode(EXAMPLES[p.MediaFrame])
    view = memoryview(bytearray(b"pixels"))
    frames[3] = view
    assert p.decode(frames).payload is view


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (p.Say, "req_id", True),
        (p.Join, "history", False),
        (p.History, "after_seq", True),
        (p.RoomEvent, "seq", True),
        (p.Heartbeat, "interval_ms", True),
        (p.MediaFrame, "width", True),
        (p.MediaFrame, "fps", True),
        (p.Welcome, "limits", {"max_text_bytes": True}),
        (p.Say, "req_id", 1.0),
        (p.RoomEvent, "seq", 7.5),
        (p.Say, "text", b"bytes, not str"),
        (p.Welcome, "media_token", "str, not bytes"),
        (p.Joined, "members", ["alice", 3]),
        (p.Joined, "members", "alice"),
        (p.Welcome, "endpoints", {"control": 5555}),
        (p.RoomEvent, "type", ""),
        (p.RoomEvent, "type", "Not a type!"),
        (p.MediaFrame, "kind", "smell"),
        (p.RoomEvent, "ts_ms", 2**63),
        (p.Pong, "ts_ms", 2**64 - 1),
    ],
)
def test_field_of_wrong_type_or_value_is_refused(cls, field, value):
    """Strict types: an int field takes no bool or float, a float field no bool."""
    frames = p.encode(EXAMPLES[cls])
    body = msgpack.unpackb(frames[2])
    body["from" if field == "sender" else field] = value
    frames[2] = msgpack.packb(body, use_bin_type=True)
    assert _refused(frames).code == p.ErrorCode.BAD_REQUEST


def test_a_float_field_takes_an_int():
    frames = p.encode(EXAMPLES[p.MediaFrame])
    body = msgpack.unpackb(frames[2])
    body["fps"] = 30
    frames[2] = msgpack.packb(body)
    fps = p.decode(frames).fps
    assert fps == 30.0 and type(fps) is float


@pytest.mark.parametrize("cls", p.ALL_MESSAGES, ids=lambda c: c.__name__)
def test_missing_required_field_is_refused(cls):
    frames = p.encode(EXAMPLES[cls])
    body = msgpack.unpackb(frames[2])
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert required
    for name in required:
        partial = {k: v for k, v in body.items() if k != {"sender": "from"}.get(name, name)}
        frames[2] = msgpack.packb(partial, use_bin_type=True)
        assert _refused(frames).code == p.ErrorCode.BAD_REQUEST, name


def test_optional_fields_take_their_defaults():
    message = p.decode([HEADER, b"JOIN", _body(req_id=1, room="lobby")])
    assert message == p.Join(req_id=1, room="lobby", history=-1)


@pytest.mark.parametrize("req_id", [0, -1, MAX_REQ_ID + 1])
def test_request_id_out_of_range_is_refused(req_id):
    error = _refused([HEADER, b"PING", _body(req_id=req_id)])
    assert error.code == p.ErrorCode.BAD_REQUEST and error.req_id == 0


def test_req_id_is_recovered_into_the_error_when_readable():
    error = _refused([HEADER, b"SAY", _body(req_id=42, room="lobby", text=7)])
    assert (error.code, error.req_id) == (p.ErrorCode.BAD_REQUEST, 42)
    error = _refused([HEADER, b"JOIN", _body(req_id=43, room=["lobby"])])
    assert error.req_id == 43
    error = _refused([HEADER, b"EVENTS", _body(req_id=44, room="r", events=[{"seq": 1}])])
    assert error.req_id == 44  # also when a nested event is the bad part


@pytest.mark.parametrize(
    ("header", "command", "max_body_bytes", "code"),
    [
        (SIGNATURE + bytes([PROTOCOL_VERSION + 1]), b"SAY", None, p.ErrorCode.VERSION_MISMATCH),
        (HEADER, b"SHOUT", None, p.ErrorCode.UNKNOWN_COMMAND),
        (HEADER, b"SAY", 16, p.ErrorCode.MESSAGE_TOO_LARGE),
    ],
    ids=["version", "command", "size"],
)
def test_req_id_is_recovered_also_when_the_body_is_not_decoded(header, command, max_body_bytes,
                                                               code):
    """So that a client's request fails at once with its ERROR instead of timing out."""
    body = _body(req_id=45, room="lobby", text="x" * 40)
    kwargs = {} if max_body_bytes is None else {"max_body_bytes": max_body_bytes}
    error = _refused([header, command, body], **kwargs)
    assert (error.code, error.req_id) == (code, 45)
    error = _refused([header, command, b"\x93\x01\x02\x03" + b"x" * 40], **kwargs)
    assert (error.code, error.req_id) == (code, 0)  # unreadable: 0


def test_room_event_types_are_an_open_set():
    """A newer broker's event type reaches an older client as an event, not an error."""
    future = dataclasses.replace(_EVENT, type="file-shared")
    assert p.decode(p.encode(future)) == future


@pytest.mark.parametrize(
    "body",
    [
        _body(req_id=True, room="lobby", text="x"),
        _body(req_id="42", room="lobby", text="x"),
        _body(req_id=-42, room="lobby", text="x"),
        b"\xc1",
        msgpack.packb([42, "lobby", "x"]),
    ],
    ids=["bool", "str", "negative", "not-msgpack", "not-a-map"],
)
def test_unreadable_req_id_gives_zero(body):
    assert _refused([HEADER, b"SAY", body]).req_id == 0


def test_wrong_frame_counts_are_refused():
    frames = p.encode(EXAMPLES[p.Say])
    for bad in ([], frames[:1], frames[:2], [*frames, b""], [*frames, frames[2]]):
        assert _refused(bad).code == p.ErrorCode.BAD_REQUEST
    media = p.encode(EXAMPLES[p.MediaFrame])
    for bad in (media[:3], [*media, b""]):
        assert _refused(bad).code == p.ErrorCode.BAD_REQUEST


def test_trailing_bytes_after_the_body_are_refused():
    frames = p.encode(EXAMPLES[p.Say])
    frames[2] += b"\x00"
    assert _refused(frames).code == p.ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("cls", [p.Joined, p.Welcome, p.MediaFrame, p.Say],
                         ids=lambda c: c.__name__)
def test_body_truncated_at_every_byte_is_refused(cls):
    """h11's one-byte-at-a-time spirit: no prefix of a valid body is taken for a message."""
    frames = p.encode(EXAMPLES[cls])
    body = frames[2]
    for cut in range(len(body)):
        truncated = [frames[0], frames[1], body[:cut], *frames[3:]]
        assert _refused(truncated).code == p.ErrorCode.BAD_REQUEST, cut
    assert p.decode(frames) == EXAMPLES[cls]


def test_frames_of_the_wrong_type_are_refused():
    frames = p.encode(EXAMPLES[p.Say])
    for bad in ([None, *frames[1:]], [frames[0], "SAY", frames[2]], [-1, *frames[1:]], 5, None):
        with pytest.raises(RemoteProtocolError):
            p.decode(bad)  # type: ignore[arg-type]


def test_decode_published_checks_topic_and_lane():
    frames = p.encode_published(_EVENT)
    frames[0] = p.room_topic("elsewhere")
    with pytest.raises(RemoteProtocolError):
        p.decode_published(frames)
    with pytest.raises(RemoteProtocolError):
        p.decode_published([p.room_topic("lobby"), *p.encode(EXAMPLES[p.Say])])
    with pytest.raises(RemoteProtocolError):
        p.decode_published(p.encode(_EVENT))  # no topic frame
    with pytest.raises(RemoteProtocolError):
        p.decode_published([])


def test_a_media_frame_takes_its_sender_from_the_topic():
    """The broker stamps the sender in the topic only (docs/protocol.md, 3.9)."""
    frame = p.MediaFrame(room="lobby", kind="video", seq=1, capture_ts_us=2, pts_ms=3, width=4,
                         height=5, fps=6.0, codec="jpeg", payload=b"jpeg")
    wire = p.encode(frame)  # as a client sends it: from empty
    topic, got = p.decode_published([p.media_topic("lobby", "alice", "video"), *wire])
    assert topic == b"media/lobby/alice/video"
    assert got.sender == "alice" and bytes(got.payload) == b"jpeg"
    assert dataclasses.replace(got, payload=b"jpeg") == dataclasses.replace(frame, sender="alice")
    stamped = p.encode_published(dataclasses.replace(frame, sender="alice"))
    assert p.decode_published(stamped)[1].sender == "alice"  # from equal to the topic's: fine
    for bad_topic in (b"media/lobby/alice/screen", b"media/other/alice/video",
                      b"media/lobby/al/ice/video", b"media/lobby//video", b"room/lobby/",
                      b"media/lobby/\xff/video"):
        with pytest.raises(RemoteProtocolError):
            p.decode_published([bad_topic, *wire])
    with pytest.raises(RemoteProtocolError, match="from"):
        p.decode_published([p.media_topic("lobby", "mallory", "video"), *stamped[1:]])


# --- fuzzing: RemoteProtocolError and nothing else ------------------------------------------

_COMMANDS = [cls.COMMAND for cls in p.ALL_MESSAGES]
_WIRE_NAMES = sorted({"from" if f.name == "sender" else f.name
                      for cls in p.ALL_MESSAGES for f in dataclasses.fields(cls)})

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(_WIRE_NAMES) | st.text(max_size=6) | st.binary(max_size=4),
                      children, max_size=6),
    max_leaves=25,
)
"""Anything msgpack can pack, maps keyed mostly by real field names to reach deep checks."""

field_maps = st.dictionaries(st.sampled_from(_WIRE_NAMES), msgpack_values, max_size=12)
"""Bodies that look like messages: real field names, values of any type."""


def _mutated(cls: type[p.Message]) -> st.SearchStrategy:
    """A valid body of ``cls`` with some fields replaced by arbitrary values."""
    base = msgpack.unpackb(p.encode(EXAMPLES[cls])[2])
    return st.dictionaries(st.sampled_from(sorted(base)), msgpack_values, max_size=3).map(
        lambda changes: {**base, **changes})


_bodies = st.one_of(
    st.binary(max_size=64),
    msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    field_maps.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.sampled_from(p.ALL_MESSAGES).flatmap(_mutated).map(
        lambda v: msgpack.packb(v, use_bin_type=True)),
)
_headers = st.one_of(st.just(HEADER), st.binary(max_size=8),
                     st.integers(0, 255).map(lambda v: SIGNATURE + bytes([v])))
_commands = st.one_of(st.sampled_from(_COMMANDS), st.binary(max_size=12))
_frame_lists = st.one_of(
    st.lists(st.binary(max_size=64), max_size=6),
    st.tuples(_headers, _commands, _bodies, st.lists(st.binary(max_size=16), max_size=2)).map(
        lambda t: [t[0], t[1], t[2], *t[3]]),
)


def _accepted_is_consistent(message: p.Message) -> None:
    """Whatever decode accepts is a message that encodes and decodes to the same frames."""
    assert isinstance(message, p.Message)
    frames = p.encode(message)
    assert p.encode(p.decode(frames)) == frames


@FUZZ
@given(_frame_lists)
@example([HEADER, b"SAY", _body(req_id=1, room="lobby", text="ok")])
@example([HEADER, b"EVENTS", _body(req_id=1, room="r", events=[[1, 2]])])
@example([HEADER, b"WELCOME", msgpack.packb({b"req_id": 1}, use_bin_type=True)])
@example([HEADER, b"HISTORY", msgpack.packb({"req_id": 1, "room": "r", "after_seq": 2**64 - 1,
                                             "limit": 1})])
@example([HEADER, b"FRAME", msgpack.packb([1] * 10), b""])
@example([HEADER, b"PING", b"\x91" * 100_000])  # deep nesting
def test_decode_raises_only_remote_protocol_error(frames):
    try:
        message = p.decode(frames)
    except RemoteProtocolError as exc:
        assert isinstance(exc.code, int) and exc.code in {c.value for c in p.ErrorCode}
        assert isinstance(exc.req_id, int) and 0 <= exc.req_id <= MAX_REQ_ID
        assert isinstance(exc.reason, str) and exc.reason
        return
    _accepted_is_consistent(message)


_topics = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([p.HEARTBEAT_TOPIC, p.room_topic("lobby"), p.topic_of(EXAMPLES[p.MediaFrame])]),
)


@FUZZ
@given(st.one_of(
    st.lists(st.binary(max_size=32), max_size=6),
    st.tuples(_topics, _frame_lists).map(lambda t: [t[0], *t[1]]),
    st.tuples(st.sampled_from(p.PUBLISHED + (p.MediaFrame,)), _topics).flatmap(
        lambda t: _mutated(t[0]).map(
            lambda body, t=t: [t[1], HEADER, t[0].COMMAND, msgpack.packb(body, use_bin_type=True),
                               *([b"payload"] if t[0] is p.MediaFrame else [])])),
))
def test_decode_published_raises_only_remote_protocol_error(frames):
    try:
        topic, message = p.decode_published(frames)
    except RemoteProtocolError as exc:
        assert exc.code in {c.value for c in p.ErrorCode}
        return
    assert topic == p.topic_of(message)
    _accepted_is_consistent(message)


@ROUND_TRIP
@given(st.sampled_from(p.ALL_MESSAGES).flatmap(message_strategy), st.data())
def test_any_single_byte_change_decodes_or_is_refused(message, data):
    """Flip one byte of a valid message: the result is a message or a RemoteProtocolError."""
    frames = p.encode(message)
    index = data.draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[index])
    assume(frame)
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] = data.draw(st.integers(0, 255))
    frames[index] = bytes(frame)
    try:
        decoded = p.decode(frames)
    except RemoteProtocolError:
        return
    _accepted_is_consistent(decoded)

