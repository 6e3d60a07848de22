"""The broker's SQLite store (docs/architecture.md, "Storage"): room events, room topics and
registered nicks.

One file, ``zmeet.sqlite3`` in the data directory, in WAL mode with ``synchronous=NORMAL``:
a commit is durable across a broker crash, and only a power cut may lose the last ones.
Each append is one small transaction, fast enough for the hub (tens of microseconds);
bulk work belongs in gevent's threadpool (DESIGN.md, "Rules of the gevent hub").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from ..protocol import RoomEvent

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    room   TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    id     TEXT    NOT NULL,
    ts_ms  INTEGER NOT NULL,
    type   TEXT    NOT NULL,
    sender TEXT    NOT NULL,
    text   TEXT    NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_chat ON events (room, type, seq);
CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, topic TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS nicks (
    nick          TEXT    PRIMARY KEY,
    key           TEXT    NOT NULL,
    registered_ms INTEGER NOT NULL,
    seen_ms       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nicks_key ON nicks (key);
CREATE TABLE IF NOT EXISTS room_access (room TEXT PRIMARY KEY, rules TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS direct_messages (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT    NOT NULL,
    id        TEXT    NOT NULL,
    sender    TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    ts_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS direct_messages_to ON direct_messages (recipient, seq);
"""

_COLUMNS = "room, seq, id, ts_ms, type, sender, text"


def _event(row: tuple) -> RoomEvent:
    room, seq, id_, ts_ms, type_, sender, text = row
    return RoomEvent(room=room, seq=seq, id=id_, ts_ms=ts_ms, type=type_, sender=sender, text=text)


class Store:
    """Room history in a SQLite file at ``path`` (created with its folder if missing).

    Raises :class:`sqlite3.Error` (``DatabaseError`` for a file that is not a zmeet store).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    def close(self) -> None:
        self._db.close()

    def append(self, events: Iterable[RoomEvent]) -> None:
        """Store ``events`` in one transaction; a topic event also sets the room topic."""
        rows = [(e.room, e.seq, e.id, e.ts_ms, e.type, e.sender, e.text) for e in events]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT INTO events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", rows)
            for room, _seq, _id, _ts, type_, _s, text in rows:
                if type_ == "topic":
                    self._db.execute(
                        "INSERT INTO rooms (name, topic) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET topic = excluded.topic",
                        (room, text),
                    )

    def load_room(self, room: str) -> tuple[int, str]:
        """``(last_seq, topic)`` of ``room``: ``(0, "")`` for a room never used."""
        (last_seq,) = self._db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE room = ?", (room,)
        ).fetchone()
        row = self._db.execute("SELECT topic FROM rooms WHERE name = ?", (room,)).fetchone()
        return last_seq, row[0] if row else ""

    def recent_chat(self, room: str, count: int) -> list[RoomEvent]:
        """The last ``count`` chat events of ``room``, oldest first."""
        if count <= 0:
            return []
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE room = ? AND type = 'chat' "
            "ORDER BY seq DESC LIMIT ?",
            (room, count),
        ).fetchall()
        return [_event(r) for r in reversed(rows)]

    def after(self, room: str, after_seq: int, limit: int) -> list[RoomEvent]:
        """Events of ``room`` with ``seq > after_seq``, oldest first, at most ``limit``."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
            (room, after_seq, limit),
        ).fetchall()
        return [_event(r) for r in rows]

    # registered nicks: a nick belongs to the key that first used it (docs/protocol.md 5) ----

    def nick_owner(self, nick: str) -> str | None:
        """The key (Z85 text) ``nick`` is registered to, or None."""
        row = self._db.execute("SELECT key FROM nicks WHERE nick = ?", (nick,)).fetchone()
        return row[0] if row else None

    def register_nick(self, nick: str, key: str, now_ms: int, keep: int,
                      held: frozenset[str] = frozenset()) -> bool:
        """Register ``nick`` to ``key`` unless it is registered already (to any key), or mark
        it seen if it is ``key``'s; returns whether it is now ``key``'s. A key keeps at most
        ``keep`` nicks: past that, its least recently seen nick not in ``held`` (the nicks in
        use now) is released (as NickServ lets unused registrations expire). One transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO nicks VALUES (?, ?, ?, ?) "
                "ON CONFLICT(nick) DO UPDATE SET seen_ms = excluded.seen_ms "
                "WHERE nicks.key = excluded.key",
                (nick, key, now_ms, now_ms))
            rows = self._db.execute(
                "SELECT nick FROM nicks WHERE key = ? ORDER BY seen_ms, nick", (key,)).fetchall()
            extra = len(rows) - keep
            for (old,) in rows:
                if extra <= 0:
                    break
                if old != nick and old not in held:
                    self._db.execute("DELETE FROM nicks WHERE nick = ?", (old,))
                    extra -= 1
        return self.nick_owner(nick) == key

    # room access (zmeet.chat.access) and stored direct messages (docs/protocol.md 3.16) ----

    def room_access(self, room: str) -> str | None:
        """The JSON rules of ``room`` (:class:`zmeet.chat.access.Access`), or None."""
        row = self._db.execute("SELECT rules FROM room_access WHERE room = ?",
                               (room,)).fetchone()
        return row[0] if row else None

    def set_room_access(self, room: str, rules: str) -> None:
        with self._db:
            self._db.execute("INSERT INTO room_access VALUES (?, ?) ON CONFLICT(room) "
                             "DO UPDATE SET rules = excluded.rules", (room, rules))

    def store_direct(self, recipient: str, id_: str, sender: str, text: str,
                     ts_ms: int) -> None:
        """Keep a direct message for ``recipient`` until :meth:`take_directs`."""
        with self._db:
            self._db.execute(
                "INSERT INTO direct_messages (recipient, id, sender, text, ts_ms) "
                "VALUES (?, ?, ?, ?, ?)", (recipient, id_, sender, text, ts_ms))

    def directs_waiting(self, recipient: str) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM direct_messages WHERE recipient = ?",
                                (recipient,)).fetchone()
        return n

    def take_directs(self, recipient: str) -> list[tuple[str, str, str, int]]:
        """The direct messages kept for ``recipient``, oldest first, as ``(id, sender, text,
        ts_ms)``, removed from the store in the same transaction."""
        with self._db:
            self._db.execute("BEGIN")
            rows = self._db.execute(
                "SELECT id, sender, text, ts_ms FROM direct_messages WHERE recipient = ? "
                "ORDER BY seq", (recipient,)).fetchall()
            self._db.execute("DELETE FROM direct_messages WHERE recipient = ?", (recipient,))
        return [tuple(r) for r in rows]

    def chat_count(self, room: str) -> int:
        """How many chat messages ``room`` has stored."""
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM events WHERE room = ? AND type = 'chat'", (room,)
        ).fetchone()
        return n
