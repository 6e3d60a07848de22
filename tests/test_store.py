"""The broker's SQLite store on a real file: append, read back, reopen."""

from __future__ import annotations

import sqlite3

import pytest

from zmeet.broker import Store
from zmeet.protocol import RoomEvent


def ev(room: str, seq: int, type_: str = "chat", text: str = "", sender: str = "alice",
       ) -> RoomEvent:
    return RoomEvent(room=room, seq=seq, id=f"{room}-{seq}", ts_ms=1_700_000_000_000 + seq,
                     type=type_, sender=sender, text=text or f"{type_} {seq}")


@pytest.fixture
def path(tmp_path):
    return tmp_path / "data" / "zmeet.sqlite3"


@pytest.fixture
def store(path):
    s = Store(path)
    yield s
    s.close()


def lobby_history() -> list[RoomEvent]:
    """join, chat, chat, topic, chat, leave, chat: seqs 1..7 in the lobby."""
    return [
        ev("lobby", 1, "join"),
        ev("lobby", 2, text="first"),
        ev("lobby", 3, text="héllo ✓ 😀", sender="bob"),
        ev("lobby", 4, "topic", "weekly sync"),
        ev("lobby", 5, text="third"),
        ev("lobby", 6, "leave", "quit", sender="bob"),
        ev("lobby", 7, text="fourth"),
    ]


def test_a_new_store_creates_its_folder_and_has_no_rooms(store, path):
    assert path.is_file()
    assert store.load_room("lobby") == (0, "")
    assert store.after("lobby", 0, 100) == []
    assert store.recent_chat("lobby", 10) == []
    assert store.chat_count("lobby") == 0


def test_after_returns_events_oldest_first_within_limit(store):
    events = lobby_history()
    store.append(events[:3])
    store.append(events[3:])
    store.append([ev("other", 1, text="elsewhere")])
    assert store.after("lobby", 0, 100) == events
    assert store.after("lobby", 2, 3) == events[2:5]
    assert store.after("lobby", 7, 100) == []
    assert store.after("lobby", 0, 0) == []
    assert store.after("other", 0, 100) == [ev("other", 1, text="elsewhere")]


def test_recent_chat_is_the_last_chat_messages_oldest_first(store):
    events = lobby_history()
    store.append(events)
    chats = [e for e in events if e.type == "chat"]
    assert store.recent_chat("lobby", 2) == chats[-2:]
    assert store.recent_chat("lobby", 100) == chats
    assert store.recent_chat("lobby", 0) == []
    assert store.recent_chat("lobby", -1) == []
    assert store.chat_count("lobby") == len(chats) == 4


def test_load_room_gives_last_seq_and_latest_topic(store):
    store.append(lobby_history())
    assert store.load_room("lobby") == (7, "weekly sync")
    store.append([ev("lobby", 8, "topic", "first"), ev("lobby", 9, "topic", "second")])
    assert store.load_room("lobby") == (9, "second")
    assert store.load_room("other") == (0, "")


def test_append_is_one_transaction(store):
    store.append(lobby_history()[:2])
    batch = [ev("lobby", 3, text="new"), ev("lobby", 4, "topic", "never set"), ev("lobby", 2)]
    with pytest.raises(sqlite3.IntegrityError):
        store.append(batch)  # seq 2 is taken: nothing of the batch may be kept
    assert store.after("lobby", 0, 100) == lobby_history()[:2]
    assert store.load_room("lobby") == (2, "")
    store.append([])  # nothing to do
    assert store.chat_count("lobby") == 1


def test_reopening_the_file_finds_the_same_data(path):
    first = Store(path)
    try:
        first.append(lobby_history())
        first.append([ev("other", 1, text="elsewhere")])
    finally:
        first.close()
    again = Store(path)
    try:
        assert again.after("lobby", 0, 100) == lobby_history()
        assert again.load_room("lobby") == (7, "weekly sync")
        assert again.recent_chat("other", 5) == [ev("other", 1, text="elsewhere")]
        assert again.chat_count("lobby") == 4
        again.append([ev("lobby", 8, text="after reopening")])
        assert again.load_room("lobby") == (8, "weekly sync")
    finally:
        again.close()


def test_a_file_that_is_not_a_store_is_a_database_error(tmp_path):
    path = tmp_path / "zmeet.sqlite3"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        Store(path).close()
