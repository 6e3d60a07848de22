"""The chat domain without sockets and with a fake clock: nicks, rooms, sequencing, limits."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmeet.chat import Rooms, check_text
from zmeet.errors import Refused
from zmeet.protocol import ErrorCode, RoomEvent, is_valid_nick, is_valid_room
from zmeet.protocol.limits import MAX_ROOM_TOPIC_BYTES, MAX_ROOMS_PER_SESSION, MAX_TEXT_BYTES

NICK_CHARS = set(string.ascii_letters + string.digits + "_-")


class FakeClock:
    """Wall-clock seconds since the Unix epoch, moved by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """What the store would say about each room: ``(last_seq, topic)``; counts lookups."""

    def __init__(self, rooms: dict[str, tuple[int, str]] | None = None) -> None:
        self.rooms = rooms or {}
        self.loads: list[str] = []

    def load_room(self, room: str) -> tuple[int, str]:
        self.loads.append(room)
        return self.rooms.get(room, (0, ""))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def rooms(clock, store) -> Rooms:
    ids = itertools.count(1)
    return Rooms(clock, store.load_room, new_id=lambda: f"id{next(ids)}")


def refused(code: ErrorCode, call, *args) -> Refused:
    with pytest.raises(Refused) as info:
        call(*args)
    assert info.value.code == code, info.value.reason
    assert info.value.reason
    return info.value


def member(rooms: Rooms, nick: str, *room_names: str, owner: object | None = None) -> None:
    rooms.claim_nick(nick, owner if owner is not None else f"owner-{nick}")
    for name in room_names:
        rooms.join(name, nick)


# --- nicks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("nick", ["a", "Z", "9", "_", "-", "alice", "Bob_the-2nd", "x" * 32])
def test_valid_nicks_are_taken(rooms, nick):
    rooms.claim_nick(nick, "owner")
    assert rooms.holder(nick) == "owner"


@pytest.mark.parametrize(
    "nick",
    ["", "x" * 33, "a b", " alice", "alice ", "alice\n", "élodie", "日本", "a.b", "a/b", "a@b",
     "\u0661", "ａlice", "alice\x00", "tab\t"],
)
def test_invalid_nicks_are_refused(rooms, nick):
    refused(ErrorCode.INVALID_NAME, rooms.claim_nick, nick, "owner")
    assert rooms.holder(nick) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.text(alphabet=sorted(NICK_CHARS), max_size=40))
def test_nick_rule_is_1_to_32_ascii_letters_digits_underscore_dash(nick):
    expected = 1 <= len(nick) <= 32 and set(nick) <= NICK_CHARS
    assert is_valid_nick(nick) is expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | st.text(alphabet=sorted(NICK_CHARS), max_size=80))
def test_room_rule_is_1_to_64_ascii_letters_digits_underscore_dash(room):
    assert is_valid_room(room) is (1 <= len(room) <= 64 and set(room) <= NICK_CHARS)


def test_names_must_be_str():
    for thing in (None, 5, b"alice", ["alice"]):
        assert not is_valid_nick(thing) and not is_valid_room(thing)


def test_nick_in_use_keeps_the_holder(rooms):
    member(rooms, "alice", "lobby", owner="first")
    refused(ErrorCode.NICK_IN_USE, rooms.claim_nick, "alice", "second")
    assert rooms.holder("alice") == "first"
    assert rooms.members("lobby") == ("alice",)
    assert rooms.say("lobby", "alice", "still mine").sender == "alice"
    rooms.claim_nick("alice", "first")  # the holder claiming again changes nothing
    assert rooms.rooms_of("alice") == {"lobby"}


def test_release_nick_leaves_every_room_and_frees_the_nick(rooms, clock):
    member(rooms, "alice", "b-room", "a-room")
    member(rooms, "bob", "a-room")
    before = {name: rooms.room(name).last_seq for name in ("a-room", "b-room")}
    clock.now += 5
    events = rooms.release_nick("alice", "gone", "heartbeats stopped")
    assert sorted(e.room for e in events) == ["a-room", "b-room"]
    for event in events:
        assert (event.type, event.sender, event.text) == ("gone", "alice", "heartbeats stopped")
        assert event.seq == before[event.room] + 1
        assert event.ts_ms == int(clock.now * 1000)
    assert rooms.members("a-room") == ("bob",) and rooms.members("b-room") == ()
    assert rooms.rooms_of("alice") == frozenset()
    assert rooms.holder("alice") is None
    rooms.claim_nick("alice", "someone else")  # free now
    refused(ErrorCode.NOT_MEMBER, rooms.say, "a-room", "alice", "not in any room yet")


def test_release_nick_defaults_to_leave_and_is_harmless_for_unknown_nicks(rooms):
    member(rooms, "alice", "lobby")
    assert [e.type for e in rooms.release_nick("alice")] == ["leave"]
    assert rooms.release_nick("nobody") == []


# --- rooms and sequencing -----------------------------------------------------------------------


def test_sequence_numbers_increase_per_room_independently(rooms):
    member(rooms, "alice", "one", "two")
    member(rooms, "bob", "two")
    seqs: dict[str, list[int]] = {"one": [1], "two": [1, 2]}  # the joins so far
    for room, text in [("one", "a"), ("two", "b"), ("one", "c"), ("one", "d"), ("two", "e")]:
        seqs[room].append(rooms.say(room, "alice", text).seq)
    assert seqs == {"one": [1, 2, 3, 4], "two": [1, 2, 3, 4]}
    assert rooms.room("one").last_seq == 4 and rooms.room("two").last_seq == 4


def test_events_are_stamped_with_sender_time_and_unique_ids(rooms, clock):
    member(rooms, "alice", "lobby")
    clock.now = 1_700_000_123.5
    event = rooms.say("lobby", "alice", "hello")
    assert event == RoomEvent(room="lobby", seq=2, id=event.id, ts_ms=1_700_000_123_500,
                              type="chat", sender="alice", text="hello")
    ids = {event.id, rooms.say("lobby", "alice", "again").id, rooms.leave("lobby", "alice").id}
    assert len(ids) == 3


def test_sequence_numbers_continue_from_the_store(clock):
    store = FakeStore({"lobby": (41, "old topic")})
    rooms = Rooms(clock, store.load_room)
    member(rooms, "alice", "lobby")
    assert rooms.room("lobby").topic == "old topic"
    assert rooms.say("lobby", "alice", "hi").seq == 43  # 42 was alice's join
    rooms.room("lobby")
    assert store.loads == ["lobby"]  # loaded once, on first use


def test_peek_shows_a_room_without_keeping_it(clock):
    store = FakeStore({"archive": (12, "old")})
    rooms = Rooms(clock, store.load_room)
    room = rooms.peek("archive")
    assert (room.last_seq, room.topic, tuple(room.members)) == (12, "old", ())
    assert list(rooms.all_rooms()) == []
    refused(ErrorCode.INVALID_NAME, rooms.peek, "no/slash")
    member(rooms, "alice", "archive")
    assert tuple(rooms.peek("archive").members) == ("alice",)


def test_join_event_and_join_twice(rooms):
    rooms.claim_nick("alice", "owner")
    event = rooms.join("lobby", "alice")
    assert (event.type, event.sender, event.seq) == ("join", "alice", 1)
    assert rooms.join("lobby", "alice") is None
    assert rooms.room("lobby").last_seq == 1  # joining again consumed no number


def test_members_in_join_order(rooms):
    for nick in ("carol", "alice", "bob"):
        member(rooms, nick, "lobby")
    assert rooms.members("lobby") == ("carol", "alice", "bob")
    rooms.leave("lobby", "alice")
    assert rooms.members("lobby") == ("carol", "bob")


def test_leave_event_then_not_member(rooms):
    member(rooms, "alice", "lobby")
    event = rooms.leave("lobby", "alice")
    assert (event.type, event.sender, event.seq) == ("leave", "alice", 2)
    assert not rooms.is_member("lobby", "alice")
    refused(ErrorCode.NOT_MEMBER, rooms.leave, "lobby", "alice")
    refused(ErrorCode.NOT_MEMBER, rooms.say, "lobby", "alice", "hi")
    assert rooms.room("lobby").last_seq == 2  # refusals consumed no number


def test_not_member_of_a_room_one_never_joined(rooms):
    member(rooms, "alice", "lobby")
    refused(ErrorCode.NOT_MEMBER, rooms.say, "elsewhere", "alice", "hi")
    refused(ErrorCode.NOT_MEMBER, rooms.set_topic, "elsewhere", "alice", "t")
    refused(ErrorCode.NOT_MEMBER, rooms.leave, "elsewhere", "alice")


def test_requests_without_a_claimed_nick_are_no_session(rooms):
    refused(ErrorCode.NO_SESSION, rooms.join, "lobby", "ghost")
    refused(ErrorCode.NO_SESSION, rooms.say, "lobby", "ghost", "boo")
    refused(ErrorCode.NO_SESSION, rooms.leave, "lobby", "ghost")


@pytest.mark.parametrize("room", ["", "a/b", "room/x/", "x" * 65, "café", "a b"])
def test_invalid_room_names_are_refused(rooms, room):
    rooms.claim_nick("alice", "owner")
    refused(ErrorCode.INVALID_NAME, rooms.join, room, "alice")
    refused(ErrorCode.INVALID_NAME, rooms.room, room)


def test_max_rooms_per_session(rooms):
    rooms.claim_nick("alice", "owner")
    names = [f"room{i}" for i in range(MAX_ROOMS_PER_SESSION)]
    for name in names:
        rooms.join(name, "alice")
    refused(ErrorCode.TOO_MANY, rooms.join, "one-too-many", "alice")
    assert "alice" not in rooms.members("one-too-many")
    assert rooms.join(names[0], "alice") is None  # a room one is in is no new room
    rooms.leave(names[0], "alice")
    assert rooms.join("one-too-many", "alice").type == "join"
    member(rooms, "bob", "one-too-many")  # the limit is per session, not per broker


# --- text and topic limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("x" * MAX_TEXT_BYTES, MAX_TEXT_BYTES),
        ("é" * (MAX_TEXT_BYTES // 2), MAX_TEXT_BYTES),  # 2 bytes each
        ("€" * (MAX_TEXT_BYTES // 3) + "x" * (MAX_TEXT_BYTES % 3), MAX_TEXT_BYTES),  # 3 bytes
        ("😀" * (MAX_TEXT_BYTES // 4), MAX_TEXT_BYTES),  # 4 bytes each
    ],
    ids=["ascii", "2-byte", "3-byte", "4-byte"],
)
def test_text_limit_is_bytes_of_utf8(rooms, text, size):
    assert len(text.encode()) == size
    member(rooms, "alice", "lobby")
    assert rooms.say("lobby", "alice", text).text == text  # at the limit: whole, not cut
    for one_more in ("x", "é", "😀"):
        refused(ErrorCode.MESSAGE_TOO_LARGE, rooms.say, "lobby", "alice", text + one_more)
    refused(ErrorCode.MESSAGE_TOO_LARGE, check_text, text + "x")


def test_text_limit_counts_bytes_not_characters(rooms):
    member(rooms, "alice", "lobby")
    text = "é" * (MAX_TEXT_BYTES // 2 + 1)  # far fewer characters than the limit, 2 bytes more
    assert len(text) < MAX_TEXT_BYTES
    refused(ErrorCode.MESSAGE_TOO_LARGE, rooms.say, "lobby", "alice", text)
    assert rooms.room("lobby").last_seq == 1


def test_empty_text_is_refused_and_spaces_are_kept(rooms):
    member(rooms, "alice", "lobby")
    refused(ErrorCode.BAD_REQUEST, rooms.say, "lobby", "alice", "")
    assert rooms.say("lobby", "alice", "  padded  ").text == "  padded  "


def test_lone_surrogate_is_bad_request():
    refused(ErrorCode.BAD_REQUEST, check_text, "broken \udc80")


def test_room_topic(rooms):
    member(rooms, "alice", "lobby")
    event = rooms.set_topic("lobby", "alice", "weekly sync")
    assert (event.type, event.sender, event.text, event.seq) == ("topic", "alice", "weekly sync", 2)
    assert rooms.room("lobby").topic == "weekly sync"
    limit = "ü" * (MAX_ROOM_TOPIC_BYTES // 2)
    assert len(limit.encode()) == MAX_ROOM_TOPIC_BYTES
    rooms.set_topic("lobby", "alice", limit)
    refused(ErrorCode.MESSAGE_TOO_LARGE, rooms.set_topic, "lobby", "alice", limit + "x")
    assert rooms.room("lobby").topic == limit  # a refused topic changes nothing
    rooms.set_topic("lobby", "alice", "")
    assert rooms.room("lobby").topic == ""
