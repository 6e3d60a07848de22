"""The broker's file service (docs/protocol.md, "Files").

Storage, in the broker's data directory:

- ``blobs/<sha256[:2]>/<sha256>``: each stored content once, named by its SHA-256
  (content-addressed: two shares of the same bytes are two file ids and one blob).
- ``blobs/partial/<sha256>``: an upload in progress, written in order from offset 0, so its
  length is the offset a resumed upload goes on from, also after a broker restart. Partials
  untouched for PARTIAL_MAX_AGE_S are removed when the broker starts.
- ``files.sqlite3``: the file records (id, room or recipient, sender, name, size, sha256,
  time), in its own SQLite file and connection, so file work never holds a lock on the chat
  store (``zmeet.sqlite3``).

Disk I/O and hashing of chunks run in gevent's threadpool (DESIGN.md, "Rules of the gevent
hub"), driven by greenlets of each transfer, so the control loop never waits for the disk and
no handler waits at all. An upload's state is a sans-IO :class:`~zmeet.files.transfer.Upload`
machine; its octets go to a :class:`~zmeet.files.sink.FileSink`, whose writer greenlet writes
and hashes them, a few per threadpool job. FILE-ACK goes at once while at most
WRITE_QUEUE_CHUNKS chunks wait for the disk; past that (a disk slower than the network) it is a
deferred reply sent when writes make room, which bounds what an upload holds in memory: the
client's window of unacked chunks plus the queue. FILE-DONE is answered (deferred) once every
chunk is written and the hash, a resumed upload's catch-up included, has reached the end; the
share itself (record, room event, FILE-SHARED) runs in a greenlet of its own, outside the
control loop, so that a room event that cannot be stored is known there: ERROR 500 and no
record (the content stays stored: FILE-PUT again shares it at once). A fault in a sink's
callback (a bug) refuses 500 every reply the upload holds rather than leave one unanswered.
A download is streamed by a greenlet of its own, which reads a few chunks per threadpool job and
sends them as FILE-CHUNK while the client's credit lasts.

A shared file is announced to its room as a room event of type ``file`` (sequenced, stored,
in history, made whole by gap fill like every room event), with ``text`` the JSON object
``{"id", "name", "size", "sha256"}``. A file sent to one nick is offered to that nick alone,
with a FILE-OFFER on the control lane, and listed only for the sender and the recipient.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool

from .. import protocol as p
from ..chat.rooms import check_nick, check_room
from ..clock import Clock
from ..errors import Refused
from ..files.hashing import is_sha256, read_exact
from ..files.progress import format_size
from ..files.sink import FileSink
from ..files.transfer import (
    Ack,
    CatchUp,
    DataReceived,
    Discard,
    DoneAsked,
    Hashed,
    HashFailed,
    Refuse,
    Share,
    Upload,
    UploadState,
    Verified,
    Verify,
    Write,
    WriteFailed,
    Written,
)
from ..protocol import files as pf
from .service import BrokerCore, Deferred, Handler, Service
from .sessions import ClientSession

log = logging.getLogger("zmeet.broker.files")

MAX_TRANSFERS_PER_SESSION = 16
"""Uploads plus downloads one session may have at once (more: ERROR 429)."""

UPLOAD_TAKEOVER_IDLE_S = 10.0
"""An upload of the same content by another live session that sent nothing for this long (no
FILE-PUT, FILE-DATA, FILE-DONE, no write or hash progress) and waits for no reply (no FILE-ACK
held back, no FILE-DONE being answered) may be taken over (a client that was killed and is
retried under another nick)."""

UPLOAD_IDLE_S = 600.0
"""An upload untouched this long is forgotten in memory (its partial stays for a resume)."""

DOWNLOAD_IDLE_S = 120.0
"""A download that got no credit this long is stopped."""

PARTIAL_MAX_AGE_S = 7 * 24 * 3600.0
"""Partial uploads older than this are removed at broker start."""

EXPIRY_CHECK_S = 1.0

CHUNK_BYTES = pf.MAX_FILE_CHUNK_BYTES
"""Chunk size this broker asks for (FILE-READY) and sends (FILE-STREAM), in octets: the largest
the protocol allows (one control frame). Twice ``pf.FILE_CHUNK_BYTES``: each chunk costs a
request and its reply, a decode and threadpool round trips, and 512 KiB chunks ran about a
quarter slower (benchmarks/NOTES.md, "Files")."""

UPLOAD_WINDOW = pf.UPLOAD_WINDOW * pf.FILE_CHUNK_BYTES // CHUNK_BYTES
"""FILE-READY ``window``: FILE-DATA a client may have without their FILE-ACK. 8 MiB of chunks
(``pf.UPLOAD_WINDOW`` chunks of ``pf.FILE_CHUNK_BYTES``), so 8 of CHUNK_BYTES: bigger chunks
keep the memory an upload holds where it was (a window of 16 was no faster)."""

MAX_CREDIT = pf.MAX_CREDIT * pf.FILE_CHUNK_BYTES // CHUNK_BYTES
"""Most chunks of credit a download keeps (FILE-GET's and FILE-CREDIT's are clipped to it):
16 MiB of chunks (``pf.MAX_CREDIT`` chunks of ``pf.FILE_CHUNK_BYTES``), so 16 of CHUNK_BYTES."""

READ_AHEAD_CHUNKS = 4
"""Most chunks of a download read from disk in one threadpool job."""

CLOSE_DRAIN_S = 5.0
"""How long a stopping broker waits for each upload's queue to reach the disk."""

WRITE_QUEUE_CHUNKS = 8
"""Chunks of one upload accepted but not yet written with their FILE-ACK sent; past this
FILE-ACK waits (a deferred reply) for the disk."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id        TEXT PRIMARY KEY,
    room      TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sender    TEXT NOT NULL,
    name      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_room ON files (room, ts_ms);
CREATE INDEX IF NOT EXISTS files_recipient ON files (recipient, ts_ms);
CREATE INDEX IF NOT EXISTS files_sender ON files (sender, ts_ms);
"""
_COLUMNS = "id, room, recipient, sender, name, size, sha256, ts_ms"


def _not_found(reason: str) -> Refused:
    """ERROR 404 (``ErrorCode.NOT_FOUND``)."""
    return Refused(pf.NOT_FOUND, reason)


def _info(row: tuple) -> pf.FileInfo:
    id_, room, to, sender, name, size, sha256, ts_ms = row
    return pf.FileInfo(id=id_, name=name, size=size, sha256=sha256, sender=sender, room=room,
                       to=to, ts_ms=ts_ms)


class FileStore:
    """File records in the SQLite file at ``path`` (WAL, ``synchronous=NORMAL``, like the chat
    store). Each call is one small statement, fast enough for the hub.

    Raises :class:`sqlite3.Error` (``DatabaseError`` for a file that is not a zmeet file store).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def remove(self, file_id: str) -> None:
        """Delete the record ``file_id`` (nothing happens if there is none)."""
        self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def add(self, info: pf.FileInfo) -> None:
        self._db.execute(
            f"INSERT INTO files ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            (info.id, info.room, info.to, info.sender, info.name, info.size, info.sha256,
             info.ts_ms),
        )

    def new_id(self) -> str:
        """A file id (12 hex digits) no record has."""
        while True:
            candidate = secrets.token_hex(6)
            if self.get(candidate) is None:
                return candidate

    def get(self, file_id: str) -> pf.FileInfo | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
        return _info(row) if row else None

    def in_room(self, room: str, limit: int) -> list[pf.FileInfo]:
        """The newest ``limit`` files of ``room``, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE room = ? ORDER BY ts_ms DESC, rowid DESC LIMIT ?",
            (room, limit),
        ).fetchall()
        return [_info(r) for r in reversed(rows)]

    def direct(self, nick: str, limit: int) -> list[pf.FileInfo]:
        """The newest ``limit`` files sent one to one by or to ``nick``, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE room = '' AND (recipient = ? OR sender = ?) "
            "ORDER BY ts_ms DESC, rowid DESC LIMIT ?",
            (nick, nick, limit),
        ).fetchall()
        return [_info(r) for r in reversed(rows)]


class _Answer:
    """The token of one FILE-PUT, FILE-DATA or FILE-DONE in an :class:`Upload` machine: the
    handler's reply if the answer comes at once, else its :class:`Deferred` (made on return)."""

    __slots__ = ("deferred", "refusal", "reply", "request", "session")

    def __init__(self, session: ClientSession, request: Any) -> None:
        self.session = session
        self.request = request
        self.reply: p.Reply | None = None
        self.refusal: tuple[int, str] | None = None
        self.deferred: Deferred | None = None

    def send(self, reply: p.Reply) -> None:
        if self.deferred is not None:
            if not self.deferred.done:
                self.deferred.reply(reply)
        elif self.reply is None and self.refusal is None:
            self.reply = reply

    def refuse(self, code: int, reason: str) -> None:
        if self.deferred is not None:
            if not self.deferred.done:
                self.deferred.refuse(code, reason)
        elif self.reply is None and self.refusal is None:
            self.refusal = (int(code), reason)

    def settle(self, broker: BrokerCore) -> p.Reply | Deferred:
        """What the handler returns: the reply given already, or a Deferred for later. Raises
        Refused for a refusal given already."""
        if self.refusal is not None:
            raise Refused(*self.refusal)
        if self.reply is not None:
            return self.reply
        self.deferred = broker.defer(self.session, self.request)
        return self.deferred


@dataclass
class _Upload:
    """An upload of one content (``sha256``), by whichever session holds it now: its sink
    (None once the content is stored), the :class:`Upload` machine of its current owner,
    and who that is."""

    sha256: str
    size: int
    sink: FileSink | None
    machine: Upload
    upload_id: str = ""
    owner: bytes | None = None  # routing id of the session sending it
    room: str = ""
    to: str = ""
    name: str = ""
    last_active: float = 0.0
    puts: list[tuple[_Answer, pf.FilePut]] = field(default_factory=list)
    """FILE-PUTs waiting for the previous owner's chunks to reach the disk."""


@dataclass
class _Download:
    download_id: str
    session: ClientSession
    info: pf.FileInfo
    path: Path
    offset: int
    credit: int
    wake: gevent.event.Event = field(default_factory=gevent.event.Event)
    stopped: bool = False
    last_credit: float = 0.0
    greenlet: gevent.Greenlet | None = None


class FilesService(Service):
    """FILE-* requests (docs/protocol.md, "Files") over a blob store in ``data_dir/blobs``.

    No handler waits: FILE-DATA with the write queue full, FILE-PUT of an upload whose chunks
    are still being written, and FILE-DONE (which needs the writes and the hash, a resumed
    upload's catch-up included) return a :class:`Deferred`, answered by the upload's sink
    greenlets when its :class:`~zmeet.files.transfer.Upload` machine says so. A client's
    FILE-ACKs keep the order of its FILE-DATA; FILE-SHARED comes once the content is written,
    checked and stored, and its record and room event are stored (else ERROR 500; ERROR 403
    if the sender left the room meanwhile). An upload whose owner waits for a deferred reply
    is not taken over by another session.

    Raises :class:`sqlite3.Error` or OSError at construction if the data directory cannot be
    used.
    """

    name = "files"

    def __init__(self, broker: BrokerCore) -> None:
        super().__init__(broker)
        data_dir = Path(broker.config.data_dir)
        self.clock: Clock = broker.clock
        self.max_file_size = int(broker.config.max_file_size)
        self.blobs = data_dir / "blobs"
        self.partials = self.blobs / "partial"
        self.partials.mkdir(parents=True, exist_ok=True)
        self.store = FileStore(data_dir / "files.sqlite3")
        self.uploads: dict[str, _Upload] = {}  # by upload id
        self._by_sha: dict[str, _Upload] = {}
        self.downloads: dict[str, _Download] = {}
        self._pool = gevent.get_hub().threadpool
        self._sharing = gevent.pool.Group()  # greenlets of _record: record, announce, reply
        self._closing = False  # close() has begun: no share is recorded any more
        self._next_expiry_s = 0.0
        self.counters = {"uploaded": 0, "rejected": 0, "downloads": 0, "chunks_out": 0,
                         "chunks_in": 0}
        self._remove_old_partials()

    # Service API ----------------------------------------------------------------------------

    def handlers(self) -> dict[type, Handler]:
        return {
            pf.FilePut: self._put,
            pf.FileData: self._data,
            pf.FileDone: self._done,
            pf.FileGet: self._get,
            pf.FileCredit: self._credit,
            pf.FileCancel: self._cancel,
            pf.FileList: self._list,
        }

    def on_session_end(self, session: ClientSession, reason: str) -> None:
        for up in list(self.uploads.values()):
            if up.owner == session.routing_id:
                self._release(up)
        for dl in list(self.downloads.values()):
            if dl.session.routing_id == session.routing_id:
                self._stop(dl)

    def on_session_moved(self, session: ClientSession, old_routing_id: bytes) -> None:
        for up in self.uploads.values():
            if up.owner == old_routing_id:
                up.owner = session.routing_id

    def tick(self, now_s: float) -> None:
        if now_s < self._next_expiry_s:
            return
        self._next_expiry_s = now_s + EXPIRY_CHECK_S
        for up in list(self._by_sha.values()):
            if (now_s - up.last_active > UPLOAD_IDLE_S and not up.machine.waiting
                    and not up.puts and (up.sink is None or up.sink.idle)):
                self._forget(up)
        for dl in list(self.downloads.values()):
            if dl.credit <= 0 and now_s - dl.last_credit > DOWNLOAD_IDLE_S:
                log.info("download %s of %s stopped: no credit for %.0f s", dl.download_id,
                         dl.info.id, DOWNLOAD_IDLE_S)
                self._stop(dl)

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "uploads_open": len(self.uploads),
                "downloads_open": len(self.downloads)}

    def close(self) -> None:
        """Stop the downloads; let each upload's queue reach its partial (CLOSE_DRAIN_S at
        most each: what was acked is on the disk), then drop the uploads and wait (as long at
        most) for their catch-ups to end after their current job, so that nothing calls into
        the store once it is closed. Shares not yet recorded are not (their replies would be
        dropped: the broker stops)."""
        self._closing = True  # a share that runs while this waits below records nothing
        self._sharing.kill(block=False)
        for dl in list(self.downloads.values()):
            self._stop(dl)
        sinks: list[FileSink] = []
        for up in list(self._by_sha.values()):  # what was acked reaches the partial first
            if up.sink is not None:
                sinks.append(up.sink)
                if not up.sink.wait_drained(CLOSE_DRAIN_S):
                    log.warning("upload of %s: the queue was not written in time", up.name)
            self._forget(up)
        self._sharing.kill(block=False)
        deadline_s = self.clock.monotonic_s() + CLOSE_DRAIN_S
        for sink in sinks:
            if not sink.wait_idle(max(0.0, deadline_s - self.clock.monotonic_s())):
                log.warning("%s: a catch-up hash was still running at stop", sink.path.name)
        self.store.close()

    # helpers --------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the content ``sha256`` is stored: ``blobs/<sha256[:2]>/<sha256>``."""
        return self.blobs / sha256[:2] / sha256

    def _remove_old_partials(self) -> None:
        cutoff = self.clock.wall_s() - PARTIAL_MAX_AGE_S
        for path in self.partials.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    log.info("removed an abandoned partial upload %s", path.name)
            except OSError as exc:
                log.warning("could not remove %s: %s", path, exc)

    def _transfers_of(self, session: ClientSession) -> int:
        return sum(1 for up in self.uploads.values() if up.owner == session.routing_id) + sum(
            1 for dl in self.downloads.values() if dl.session.routing_id == session.routing_id
        )

    def _release(self, up: _Upload) -> None:
        """Its session is gone or cancelled: keep the upload (and the hash so far) for a
        resume, answer what its machine held back, close the file once the queue is written."""
        self.uploads.pop(up.upload_id, None)
        up.owner = None
        up.upload_id = ""
        self._run(up, up.machine.release())
        if up.sink is not None:
            up.sink.close()

    def _forget(self, up: _Upload, *, delete: bool = False) -> None:
        """Drop ``up`` for good: its queue is dropped, so what its machine holds back (FILE-ACKs,
        a FILE-DONE) is refused 500, never acked; so are the FILE-PUTs waiting for it. Its
        partial stays for a resume unless ``delete``."""
        self.uploads.pop(up.upload_id, None)
        up.owner = None
        up.upload_id = ""
        self._run(up, up.machine.abort(p.ErrorCode.INTERNAL_ERROR,
                                       "the upload was dropped: send FILE-PUT again"))
        if self._by_sha.get(up.sha256) is up:
            del self._by_sha[up.sha256]
        for answer, _ in up.puts:
            answer.refuse(p.ErrorCode.INTERNAL_ERROR, "the upload was dropped: send FILE-PUT again")
        up.puts.clear()
        if up.sink is not None:
            up.sink.stop()  # a catch-up still running stops
            if delete:
                try:
                    up.sink.path.unlink()
                except FileNotFoundError:
                    pass

    def _stop(self, dl: _Download) -> None:
        dl.stopped = True
        dl.wake.set()
        self.downloads.pop(dl.download_id, None)

    def _may_see(self, info: pf.FileInfo, nick: str) -> bool:
        if not info.room:
            return nick in (info.sender, info.to)
        access, rooms = self.broker.access, self.broker.rooms
        assert access is not None and rooms is not None
        # a private room's files are its members' (and owners' and invited nicks')
        return access.may_see(info.room, nick, rooms.is_member(info.room, nick))

    # upload ---------------------------------------------------------------------------------

    def _put(self, session: ClientSession, req: pf.FilePut) -> p.Reply | Deferred:
        self._check_put(session, req)
        if self._transfers_of(session) >= MAX_TRANSFERS_PER_SESSION:
            raise Refused(p.ErrorCode.TOO_MANY,
                          f"at most {MAX_TRANSFERS_PER_SESSION} transfers at once")
        up = self._by_sha.get(req.sha256)
        # a live owner's upload is never taken over or dropped by another session, whatever
        # size that one claims (else anyone who knows a hash could wipe a large resumable upload)
        if up is not None and up.owner is not None and up.owner != session.routing_id:
            owner_alive = up.owner in self.broker.sessions
            idle_s = self.clock.monotonic_s() - up.last_active
            if owner_alive and (idle_s < UPLOAD_TAKEOVER_IDLE_S or up.machine.waiting):
                raise Refused(p.ErrorCode.TOO_MANY,
                              "the same content is being uploaded by another client; "
                              "try again shortly")
        if up is not None and up.size != req.size:  # same hash, other size: one of them lies
            self._forget(up, delete=True)
            up = None
        if up is not None and up.owner is not None and up.owner != session.routing_id:
            log.info("upload of %s taken over by %s", req.sha256[:12], session.nick)
        answer = _Answer(session, req)
        if up is None:
            self._ready(answer, req, self._open_upload(req.sha256, req.size))
        else:  # FILE-READY once the previous owner's chunks are written (at once if they are)
            self._release(up)
            up.puts.append((answer, req))
            if up.sink is None or not up.sink.writing:
                self._go_on_puts(up)
        return answer.settle(self.broker)

    def _go_on_puts(self, up: _Upload) -> None:
        """The FILE-PUTs waiting for ``up``'s queue to be written get their FILE-READY, as if
        they had come one after the other (the last one holds the upload)."""
        puts, up.puts = up.puts, []
        for answer, req in puts:
            if self.broker.sessions.get(answer.session.routing_id) is not answer.session:
                continue  # that session ended meanwhile
            try:
                current = self._by_sha.get(req.sha256)
                if current is not None and current.size != req.size:
                    self._forget(current, delete=True)
                    current = None
                if current is not None:
                    if current.owner is not None:
                        self._release(current)
                    if current.sink is not None and current.sink.writing:
                        current.puts.append((answer, req))  # its on_drained goes on
                        continue
                    if current.machine.state is UploadState.FAILED or (
                            current.sink is not None and current.sink.error):
                        self._forget(current, delete=True)
                        current = None
                if current is None:
                    current = self._open_upload(req.sha256, req.size)
                else:
                    self._reopen(current)
                self._ready(answer, req, current)
            except Refused as exc:
                answer.refuse(exc.code, exc.reason)
            except Exception:  # a bug: this FILE-PUT is answered all the same
                log.exception("FILE-PUT of %s after the previous owner's writes failed",
                              req.sha256[:12])
                answer.refuse(p.ErrorCode.INTERNAL_ERROR, "internal error")

    def _ready(self, answer: _Answer, req: pf.FilePut, up: _Upload) -> None:
        """Give ``up`` to ``answer``'s session with a new machine; reply FILE-READY."""
        session = answer.session
        up.upload_id = secrets.token_hex(8)
        up.owner = session.routing_id
        up.room, up.to, up.name = req.room, req.to, req.name
        up.last_active = self.clock.monotonic_s()
        if up.sink is not None:
            up.machine = Upload(up.size, up.sha256, received=up.sink.written,
                                hashed=min(up.sink.hashed, up.sink.written),
                                queue_chunks=WRITE_QUEUE_CHUNKS, window=UPLOAD_WINDOW)
        self.uploads[up.upload_id] = up
        offset = up.machine.accepted
        log.info("%s %s %s (%s) from offset %d", session.nick,
                 "resumes" if offset and up.sink is not None else "uploads",
                 req.name, format_size(req.size), offset)
        answer.send(pf.FileReady(req_id=req.req_id, upload=up.upload_id, offset=offset,
                                 chunk_bytes=CHUNK_BYTES, window=UPLOAD_WINDOW))

    def _check_put(self, session: ClientSession, req: pf.FilePut) -> None:
        if not is_sha256(req.sha256):
            raise Refused(p.ErrorCode.INVALID_NAME, "sha256 must be 64 lower-case hex digits")
        if req.size < 0:
            raise Refused(p.ErrorCode.BAD_REQUEST, "size must be 0 or more")
        if req.size > self.max_file_size:
            raise Refused(
                p.ErrorCode.MESSAGE_TOO_LARGE,
                f"{req.name[:80]!r} is {format_size(req.size)}; this broker takes files up to "
                f"{format_size(self.max_file_size)} (--max-file-size)",
            )
        try:
            name_bytes = len(req.name.encode("utf-8"))
        except UnicodeEncodeError:
            raise Refused(p.ErrorCode.BAD_REQUEST, "name is not valid Unicode") from None
        if not req.name.strip("/\\ ") or "\x00" in req.name:
            raise Refused(p.ErrorCode.INVALID_NAME, "a file needs a name (and no NUL in it)")
        if name_bytes > pf.MAX_FILE_NAME_BYTES:
            raise Refused(p.ErrorCode.MESSAGE_TOO_LARGE,
                          f"name is {name_bytes} bytes; the limit is {pf.MAX_FILE_NAME_BYTES}")
        if bool(req.room) == bool(req.to):
            raise Refused(p.ErrorCode.BAD_REQUEST, "give a room or a nick to send to (one)")
        rooms = self.broker.rooms
        assert rooms is not None
        if req.room:
            check_room(req.room)
            if not rooms.is_member(req.room, session.nick):
                raise Refused(p.ErrorCode.NOT_MEMBER, f"join room {req.room!r} first")
        else:
            check_nick(req.to)
            if self.broker.session_of(req.to) is None:
                raise _not_found(f"no one called {req.to!r} is connected")

    def _open_upload(self, sha256: str, size: int) -> _Upload:
        blob = self.blob_path(sha256)
        try:
            if blob.stat().st_size == size:
                up = _Upload(sha256, size, None, Upload(size, sha256, received=size,
                                                        stored=True))
                self._by_sha[sha256] = up
                return up
        except FileNotFoundError:
            pass
        sink = FileSink(self.partials / sha256, mode=0o600, pool=self._pool,
                        max_chunks=WRITE_QUEUE_CHUNKS + UPLOAD_WINDOW)
        up = _Upload(sha256, size, sink, Upload(size, sha256))
        sink.on_written = self._guarded(up, self._on_written)
        sink.on_hashed = self._guarded(up, self._on_hashed)
        sink.on_error = self._guarded(up, self._on_sink_error)
        sink.on_drained = self._guarded(up, self._on_drained)
        self._reopen(up)
        self._by_sha[sha256] = up
        return up

    def _reopen(self, up: _Upload) -> None:
        """Open ``up``'s partial again and go on from its length (from 0 if it is longer than
        the upload, or shorter than what was written: not ours, or cut short under us); start
        hashing what the hash has not had. Raises Refused 500 if it cannot be opened."""
        sink = up.sink
        if sink is None:
            return
        try:
            have = sink.open()
            sink.truncate(0 if have > up.size or have < sink.written else have)
        except (OSError, ValueError) as exc:  # ValueError: cut short under a running catch-up
            log.error("cannot open %s: %s", sink.path, exc)
            raise Refused(p.ErrorCode.INTERNAL_ERROR,
                          "the broker cannot store files now") from None
        sink.catch_up()

    def _guarded(self, up: _Upload, callback: Any) -> Any:
        """``callback(up, *args)`` as a sink callback (run by the sink's writer or catch-up
        greenlet) that cannot strand a reply: an exception in it (a bug) is logged, every
        reply ``up`` holds is refused 500 and the upload dropped (:meth:`_abort`), and the
        sink's greenlet goes on to its end."""

        def call(*args: Any) -> None:
            try:
                callback(up, *args)
            except Exception:
                log.exception("upload of %s: %s failed", up.sha256[:12], callback.__name__)
                self._abort(up)

        return call

    def _abort(self, up: _Upload) -> None:
        """A bug hit ``up``: refuse 500 every reply it holds (its machine's FILE-ACKs and
        FILE-DONE, the FILE-PUTs waiting for it) and drop it; its partial stays for a resume."""
        reason = "the broker failed on this upload: send FILE-PUT again"
        for effect in up.machine.abort(p.ErrorCode.INTERNAL_ERROR, reason):
            effect.token.refuse(effect.code, effect.reason)
        try:
            self._forget(up)
        except Exception:
            log.exception("upload of %s could not be dropped", up.sha256[:12])
            for answer, _ in up.puts:
                answer.refuse(p.ErrorCode.INTERNAL_ERROR, reason)
            up.puts.clear()
            if self._by_sha.get(up.sha256) is up:
                del self._by_sha[up.sha256]
            self.uploads.pop(up.upload_id, None)

    def _on_written(self, up: _Upload, end: int) -> None:
        up.last_active = self.clock.monotonic_s()
        self._run(up, up.machine.handle(Written(end)))

    def _on_hashed(self, up: _Upload, end: int) -> None:
        up.last_active = self.clock.monotonic_s()  # a long catch-up is not an idle owner
        self._run(up, up.machine.handle(Hashed(end)))

    def _on_drained(self, up: _Upload) -> None:
        if up.puts:
            self._go_on_puts(up)

    def _on_sink_error(self, up: _Upload, where: str, exc: OSError) -> None:
        reason = str(exc.strerror or exc)
        event = WriteFailed(reason) if where == "write" else HashFailed(reason)
        self._run(up, up.machine.handle(event))

    def _upload_of(self, session: ClientSession, upload_id: str) -> _Upload:
        up = self.uploads.get(upload_id)
        if up is None or up.owner != session.routing_id:
            raise _not_found(f"no upload {upload_id[:20]!r}: send FILE-PUT again")
        return up

    def _run(self, up: _Upload, effects: list[Any], data: Any = None) -> None:
        """Carry out the effects of ``up``'s machine, in order. If one raises (a bug), it is
        logged, the replies of it and of the effects after it are refused 500 and the upload
        is dropped (:meth:`_abort`): no reply is left unanswered."""
        for i, effect in enumerate(effects):
            try:
                self._effect(up, effect, data)
            except Exception:
                log.exception("upload of %s: %s failed", up.sha256[:12], type(effect).__name__)
                for rest in effects[i:]:
                    token = getattr(rest, "token", None)
                    if isinstance(token, _Answer):
                        token.refuse(p.ErrorCode.INTERNAL_ERROR, "internal error")
                self._abort(up)
                return

    def _effect(self, up: _Upload, effect: Any, data: Any) -> None:
        """Carry out one effect of ``up``'s machine (``data``: the octets of a Write)."""
        if isinstance(effect, Ack):
            effect.token.send(pf.FileAck(req_id=effect.token.request.req_id,
                                         upload=effect.token.request.upload,
                                         received=effect.received))
        elif isinstance(effect, Write):
            assert up.sink is not None and data is not None
            up.sink.put(effect.offset, data)
            self.counters["chunks_in"] += 1
        elif isinstance(effect, Refuse):
            effect.token.refuse(effect.code, effect.reason)
        elif isinstance(effect, CatchUp):
            if up.sink is not None:
                up.sink.catch_up()
        elif isinstance(effect, Verify):
            assert up.sink is not None
            self._run(up, up.machine.handle(Verified(up.sink.hexdigest())))
        elif isinstance(effect, Share):
            self._share(up, effect.token)
        elif isinstance(effect, Discard):
            self._forget(up, delete=True)
            self.counters["rejected"] += 1
            log.warning("upload of %r does not match its sha256 or was lost: dropped",
                        up.name)

    def _data(self, session: ClientSession, req: pf.FileData) -> p.Reply | Deferred:
        """Accept a chunk in order for the upload's sink (its writer greenlet writes it): the
        FILE-ACK goes at once while the write queue has room, else once the disk catches up
        (a Deferred), which bounds the memory an upload holds."""
        up = self._upload_of(session, req.upload)
        answer = _Answer(session, req)
        self._run(up, up.machine.handle(DataReceived(answer, req.offset, len(req.data))),
                  req.data)
        up.last_active = self.clock.monotonic_s()
        return answer.settle(self.broker)

    def _done(self, session: ClientSession, req: pf.FileDone) -> p.Reply | Deferred:
        """FILE-SHARED once every chunk is written and the hash (a resumed upload's catch-up
        included) matches: at once, or from the sink's greenlet (a Deferred)."""
        up = self._upload_of(session, req.upload)
        rooms = self.broker.rooms
        assert rooms is not None
        if up.room and not rooms.is_member(up.room, session.nick):
            raise Refused(p.ErrorCode.NOT_MEMBER, f"join room {up.room!r} first")
        up.last_active = self.clock.monotonic_s()
        answer = _Answer(session, req)
        self._run(up, up.machine.handle(DoneAsked(answer)))
        return answer.settle(self.broker)

    def _share(self, up: _Upload, answer: _Answer) -> None:
        """The content is whole and matches: move the partial to its blob and forget the
        upload (a FILE-PUT of the same content now finds it stored), then record, announce
        and reply FILE-SHARED in a greenlet of its own (:meth:`_record`)."""
        if up.sink is not None:
            up.sink.close()
            blob = self.blob_path(up.sha256)
            try:
                blob.parent.mkdir(parents=True, exist_ok=True)
                os.replace(up.sink.path, blob)
            except OSError as exc:
                log.error("cannot store blob %s: %s", blob, exc)
                self._forget(up)
                answer.refuse(p.ErrorCode.INTERNAL_ERROR, "the broker could not store the file")
                return
        self._forget(up)
        self._sharing.spawn(self._record, up, answer)

    def _record(self, up: _Upload, answer: _Answer) -> None:
        """Record the stored content ``up`` as a file of ``answer``'s session, announce it
        (the room event, or FILE-OFFER to the recipient) and reply FILE-SHARED.

        It runs outside the control loop, so that ``publish_events`` stores the event at once
        and raises if it cannot: then the record is removed again, as it is never added if
        its own store fails, and the reply is ERROR 500 (nothing was shared; the content
        stays stored, so FILE-PUT again shares it at once). ERROR 403 if the sender left the
        room after FILE-DONE. Any other exception (a bug) is logged and answered 500."""
        session = answer.session
        rooms = self.broker.rooms
        if self._closing or self.broker.sessions.get(session.routing_id) is not session:
            return  # the broker stops, or the sender's session ended: its reply would be dropped
        try:
            assert rooms is not None
            if up.room and not rooms.is_member(up.room, session.nick):
                answer.refuse(p.ErrorCode.NOT_MEMBER, f"join room {up.room!r} first")
                return
            info = pf.FileInfo(id=self.store.new_id(), name=up.name, size=up.size,
                               sha256=up.sha256, sender=session.nick, room=up.room, to=up.to,
                               ts_ms=self.clock.wall_ms())
            self.store.add(info)
            try:
                self._announce(session, info)
            except Exception:
                self._unrecord(info)
                raise
        except (Refused, sqlite3.Error) as exc:
            log.error("%s's %r was not shared: %s", session.nick, up.name, exc)
            answer.refuse(p.ErrorCode.INTERNAL_ERROR, "the broker could not store this")
            return
        except Exception:
            log.exception("%s's %r was not shared", session.nick, up.name)
            answer.refuse(p.ErrorCode.INTERNAL_ERROR, "internal error")
            return
        self.counters["uploaded"] += 1
        log.info("%s shared %r (%s) as %s", session.nick, info.name, format_size(info.size),
                 info.id)
        answer.send(pf.FileShared(req_id=answer.request.req_id, file=info))

    def _unrecord(self, info: pf.FileInfo) -> None:
        """Remove the record of a file that could not be announced (logged if that fails
        too: the record then lists a file no room event told of)."""
        try:
            self.store.remove(info.id)
        except sqlite3.Error as exc:
            log.error("could not remove the record of %s (%r): %s", info.id, info.name, exc)

    def _announce(self, session: ClientSession, info: pf.FileInfo) -> None:
        broker = self.broker
        offer = pf.FileOffer(file=info)
        if not info.room:
            broker.send_to_nick(info.to, offer)  # each of the recipient's terminals
            return
        rooms = broker.rooms
        assert rooms is not None
        room = rooms.room(info.room)
        text = json.dumps({"id": info.id, "name": info.name, "size": info.size,
                           "sha256": info.sha256}, ensure_ascii=False)
        broker.publish_events([rooms.post(room.name, pf.FILE_EVENT_TYPE, session.nick, text)])

    # download -------------------------------------------------------------------------------

    def _get(self, session: ClientSession, req: pf.FileGet) -> pf.FileStream:
        info = self.store.get(req.id) if pf.FILE_ID_PATTERN.fullmatch(req.id) else None
        if info is None or not self._may_see(info, session.nick):
            raise _not_found(f"no file {req.id[:20]!r}")
        if not 0 <= req.offset <= info.size:
            raise Refused(p.ErrorCode.BAD_REQUEST, f"offset must be 0 to {info.size}")
        if req.credit < 1:
            raise Refused(p.ErrorCode.BAD_REQUEST, "credit must be 1 or more")
        if self._transfers_of(session) >= MAX_TRANSFERS_PER_SESSION:
            raise Refused(p.ErrorCode.TOO_MANY,
                          f"at most {MAX_TRANSFERS_PER_SESSION} transfers at once")
        blob = self.blob_path(info.sha256)
        if not blob.is_file():
            log.error("file %s: blob %s is missing", info.id, blob)
            raise Refused(p.ErrorCode.INTERNAL_ERROR, "the broker lost this file's content")
        dl = _Download(secrets.token_hex(8), session, info, blob, req.offset,
                       min(req.credit, MAX_CREDIT), last_credit=self.clock.monotonic_s())
        self.downloads[dl.download_id] = dl
        self.counters["downloads"] += 1
        if req.offset < info.size:
            dl.greenlet = gevent.spawn(self._stream, dl)
        else:
            self.downloads.pop(dl.download_id, None)
        return pf.FileStream(req_id=req.req_id, download=dl.download_id, file=info,
                             offset=req.offset, chunk_bytes=CHUNK_BYTES)

    def _stream(self, dl: _Download) -> None:
        """Send ``dl``'s chunks while it has credit. Owns its fd: it alone closes it, after its
        last threadpool read returned."""
        fd: int | None = None
        size = dl.info.size
        try:
            fd = os.open(dl.path, os.O_RDONLY)
            while dl.offset < size and not dl.stopped:
                while dl.credit <= 0 and not dl.stopped:
                    dl.wake.clear()
                    dl.wake.wait()
                if dl.stopped:
                    break
                # one threadpool read for as many chunks as the credit allows (a few at most)
                chunks = min(dl.credit, READ_AHEAD_CHUNKS)
                n = min(CHUNK_BYTES * chunks, size - dl.offset)
                data = memoryview(self._pool.apply(read_exact, (fd, n, dl.offset)))
                if len(data) != n:
                    raise OSError(f"the stored copy ends before {dl.offset + n}")
                for start in range(0, n, CHUNK_BYTES):
                    if dl.stopped:
                        break
                    piece = data[start:start + CHUNK_BYTES]
                    self.broker.send_direct(dl.session, pf.FileChunk(
                        download=dl.download_id, offset=dl.offset, data=piece))  # type: ignore[arg-type]
                    self.counters["chunks_out"] += 1
                    dl.offset += len(piece)
                    dl.credit -= 1
        except OSError as exc:
            log.error("download %s of %s failed: %s", dl.download_id, dl.info.id, exc)
            if not dl.stopped:
                self.broker.send_direct(dl.session, pf.FileAbort(
                    download=dl.download_id, code=int(p.ErrorCode.INTERNAL_ERROR),
                    reason="the broker could not read this file"))
        finally:
            if fd is not None:
                os.close(fd)
            self.downloads.pop(dl.download_id, None)

    def _credit(self, session: ClientSession, req: pf.FileCredit) -> p.Ok:
        if req.credit < 1:
            raise Refused(p.ErrorCode.BAD_REQUEST, "credit must be 1 or more")
        dl = self.downloads.get(req.download)
        if dl is not None and dl.session.routing_id == session.routing_id:
            dl.credit = min(dl.credit + req.credit, MAX_CREDIT)
            dl.last_credit = self.clock.monotonic_s()
            dl.wake.set()
        return p.Ok(req_id=req.req_id)

    def _cancel(self, session: ClientSession, req: pf.FileCancel) -> p.Ok:
        up = self.uploads.get(req.id)
        if up is not None and up.owner == session.routing_id:
            self._release(up)
        dl = self.downloads.get(req.id)
        if dl is not None and dl.session.routing_id == session.routing_id:
            self._stop(dl)
        return p.Ok(req_id=req.req_id)

    def _list(self, session: ClientSession, req: pf.FileList) -> pf.FileListed:
        if not 1 <= req.limit <= pf.MAX_FILE_LIST:
            raise Refused(p.ErrorCode.TOO_MANY, f"limit must be 1 to {pf.MAX_FILE_LIST}")
        if req.room:
            check_room(req.room)
            rooms, access = self.broker.rooms, self.broker.access
            assert rooms is not None and access is not None
            if access.may_see(req.room, session.nick, rooms.is_member(req.room, session.nick)):
                files = self.store.in_room(req.room, req.limit)
            else:  # a private room's files: as for a room with none
                files = []
        else:
            files = self.store.direct(session.nick, req.limit)
        return pf.FileListed(req_id=req.req_id, room=req.room, files=tuple(files))
