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
hub"), driven by a greenlet per transfer, so the control loop never waits for the disk. An
upload's chunks are accepted in order into a queue of at most WRITE_QUEUE_CHUNKS (FILE-ACK says
so at once); its writer greenlet writes and hashes them, a few per threadpool job. Only when
the queue is full (a disk slower than the network) does FILE-DATA wait, which bounds what an
upload holds in memory: the client's window of unacked chunks plus the queue. A download is
streamed by a greenlet of its own, which reads a few chunks per threadpool job and sends them
as FILE-CHUNK while the client's credit lasts.

A shared file is announced to its room as a room event of type ``file`` (sequenced, stored,
in history, made whole by gap fill like every room event), with ``text`` the JSON object
``{"id", "name", "size", "sha256"}``. A file sent to one nick is offered to that nick alone,
with a FILE-OFFER on the control lane, and listed only for the sender and the recipient.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event

from .. import protocol as p
from ..chat.rooms import check_nick, check_room
from ..errors import Refused as ChatError  # the one refusal type (zmeet.errors)
from ..files.hashing import hash_range, is_sha256, read_exact, write_and_hash
from ..files.progress import format_size
from ..protocol import files as pf
from .service import Service

if TYPE_CHECKING:
    from .server import Broker, ClientSession

log = logging.getLogger("zmeet.broker.files")

MAX_TRANSFERS_PER_SESSION = 16
"""Uploads plus downloads one session may have at once (more: ERROR 429)."""

UPLOAD_TAKEOVER_IDLE_S = 10.0
"""An upload of the same content by another live session that sent nothing for this long may
be taken over (a client that was killed and is retried under another nick)."""

UPLOAD_IDLE_S = 600.0
"""An upload untouched this long is forgotten in memory (its partial stays for a resume)."""

DOWNLOAD_IDLE_S = 120.0
"""A download that got no credit this long is stopped."""

PARTIAL_MAX_AGE_S = 7 * 24 * 3600.0
"""Partial uploads older than this are removed at broker start."""

CATCH_UP_BYTES = 8 * 1024 * 1024
"""Octets of a partial hashed per threadpool job when a resumed upload's hash catches up."""

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
"""Chunks of one upload accepted but not yet written; past this FILE-DATA waits for the disk."""

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


def _write_batch(fd: int, batch: list[tuple[int, bytes]], hasher: Any) -> None:
    """Write chunks ``(offset, data)`` in order (a threadpool job), hashing them if given."""
    for offset, data in batch:
        write_and_hash(fd, data, offset, hasher)


def _hash_batch(hasher: Any, batch: list[tuple[int, bytes]]) -> None:
    """Feed chunks ``(offset, data)`` to ``hasher`` in order (a threadpool job)."""
    for _, data in batch:
        hasher.update(data)


def _not_found(reason: str) -> ChatError:
    """ERROR 404 (``ErrorCode.NOT_FOUND``)."""
    return ChatError(pf.NOT_FOUND, reason)


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


@dataclass
class _Upload:
    """An upload of one content (``sha256``), by whichever session holds it now."""

    sha256: str
    size: int
    path: Path
    complete: bool = False  # the blob is already stored: nothing to send
    upload_id: str = ""
    owner: bytes | None = None  # routing id of the session sending it
    nick: str = ""
    room: str = ""
    to: str = ""
    name: str = ""
    fd: int | None = None
    received: int = 0  # octets written to the partial, in order
    queued: int = 0  # octets accepted: received plus what waits in ``pending``
    pending: deque = field(default_factory=deque)  # (offset, data) not yet written
    writing: bool = False  # the writer greenlet runs
    drained: gevent.event.Event = field(default_factory=gevent.event.Event)
    room_to_queue: gevent.event.Event = field(default_factory=gevent.event.Event)
    error: str = ""  # a write failed: the upload stops here
    hashed: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    catching_up: bool = False
    caught_up: gevent.event.Event = field(default_factory=gevent.event.Event)
    busy: bool = False  # a threadpool write uses ``fd`` now: closing waits for it
    close_wanted: bool = False
    broken: bool = False  # the partial could not be hashed: start over at the next FILE-PUT
    last_active: float = field(default_factory=time.monotonic)


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
    last_credit: float = field(default_factory=time.monotonic)
    greenlet: gevent.Greenlet | None = None


class FilesService(Service):
    """FILE-* requests (docs/protocol.md, "Files") over a blob store in ``data_dir/blobs``.

    Raises :class:`sqlite3.Error` or OSError at construction if the data directory cannot be
    used.
    """

    name = "files"

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        data_dir = Path(broker.config.data_dir)
        self.max_file_size = int(getattr(broker.config, "max_file_size",
                                         pf.DEFAULT_MAX_FILE_SIZE))
        self.blobs = data_dir / "blobs"
        self.partials = self.blobs / "partial"
        self.partials.mkdir(parents=True, exist_ok=True)
        self.store = FileStore(data_dir / "files.sqlite3")
        self.uploads: dict[str, _Upload] = {}  # by upload id
        self._by_sha: dict[str, _Upload] = {}
        self.downloads: dict[str, _Download] = {}
        self._pool = gevent.get_hub().threadpool
        self._next_expiry_s = 0.0
        self.counters = {"uploaded": 0, "rejected": 0, "downloads": 0, "chunks_out": 0,
                         "chunks_in": 0}
        self._remove_old_partials()

    # Service API ----------------------------------------------------------------------------

    def handlers(self) -> dict[type, Callable[[ClientSession, Any], Any]]:
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

    def tick(self, now_s: float) -> None:
        if now_s < self._next_expiry_s:
            return
        self._next_expiry_s = now_s + EXPIRY_CHECK_S
        for up in list(self._by_sha.values()):
            if (now_s - up.last_active > UPLOAD_IDLE_S and not up.writing
                    and not up.catching_up):
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
        for dl in list(self.downloads.values()):
            self._stop(dl)
        for up in list(self._by_sha.values()):  # what was acked reaches the partial first
            if up.writing and not up.drained.wait(CLOSE_DRAIN_S):
                log.warning("upload of %s: the queue was not written in time", up.name)
            self._forget(up)
        self.store.close()

    # helpers --------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the content ``sha256`` is stored: ``blobs/<sha256[:2]>/<sha256>``."""
        return self.blobs / sha256[:2] / sha256

    def _remove_old_partials(self) -> None:
        cutoff = time.time() - PARTIAL_MAX_AGE_S
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

    def _close_fd(self, up: _Upload) -> None:
        """Close ``up.fd`` now, or as soon as the threadpool write using it returns (closing
        an fd another thread writes to could let a new file take its number)."""
        if up.busy or up.writing:
            up.close_wanted = True
            return
        if up.fd is not None:
            try:
                os.close(up.fd)
            except OSError:
                pass
            up.fd = None
        up.close_wanted = False

    def _release(self, up: _Upload) -> None:
        """Its session is gone or cancelled: keep the state (and the hash so far) for a
        resume, close the file."""
        self.uploads.pop(up.upload_id, None)
        up.owner = None
        up.upload_id = ""
        self._close_fd(up)

    def _forget(self, up: _Upload, *, delete: bool = False) -> None:
        self._release(up)
        if self._by_sha.get(up.sha256) is up:
            del self._by_sha[up.sha256]
        up.broken = True  # a catch-up still running stops
        if delete and not up.complete:
            try:
                up.path.unlink()
            except FileNotFoundError:
                pass

    def _stop(self, dl: _Download) -> None:
        dl.stopped = True
        dl.wake.set()
        self.downloads.pop(dl.download_id, None)

    def _may_see(self, info: pf.FileInfo, nick: str) -> bool:
        return bool(info.room) or nick in (info.sender, info.to)

    # upload ---------------------------------------------------------------------------------

    def _put(self, session: ClientSession, req: pf.FilePut) -> pf.FileReady:
        self._check_put(session, req)
        if self._transfers_of(session) >= MAX_TRANSFERS_PER_SESSION:
            raise ChatError(p.ErrorCode.TOO_MANY,
                            f"at most {MAX_TRANSFERS_PER_SESSION} transfers at once")
        up = self._by_sha.get(req.sha256)
        if up is not None and up.size != req.size:  # same hash, other size: one of them lies
            self._forget(up, delete=True)
            up = None
        if up is not None and up.owner is not None and up.owner != session.routing_id:
            owner_alive = up.owner in self.broker.sessions
            idle_s = time.monotonic() - up.last_active
            if owner_alive and idle_s < UPLOAD_TAKEOVER_IDLE_S:
                raise ChatError(p.ErrorCode.TOO_MANY,
                                "the same content is being uploaded by another client; "
                                "try again shortly")
            log.info("upload of %s taken over by %s", req.sha256[:12], session.nick)
        if up is not None:
            self._release(up)
            self._drain(up)
            if up.broken or up.error:
                self._forget(up, delete=True)
                up = None
        if up is None:
            up = self._open_upload(req.sha256, req.size)
        else:
            self._ensure_fd(up)
        up.upload_id = secrets.token_hex(8)
        up.owner = session.routing_id
        up.nick, up.room, up.to, up.name = session.nick, req.room, req.to, req.name
        up.last_active = time.monotonic()
        self.uploads[up.upload_id] = up
        log.info("%s %s %s (%s) from offset %d", session.nick,
                 "resumes" if up.received and not up.complete else "uploads",
                 req.name, format_size(req.size), up.received)
        return pf.FileReady(req_id=req.req_id, upload=up.upload_id, offset=up.received,
                            chunk_bytes=CHUNK_BYTES, window=UPLOAD_WINDOW)

    def _check_put(self, session: ClientSession, req: pf.FilePut) -> None:
        if not is_sha256(req.sha256):
            raise ChatError(p.ErrorCode.INVALID_NAME, "sha256 must be 64 lower-case hex digits")
        if req.size < 0:
            raise ChatError(p.ErrorCode.BAD_REQUEST, "size must be 0 or more")
        if req.size > self.max_file_size:
            raise ChatError(
                p.ErrorCode.MESSAGE_TOO_LARGE,
                f"{req.name[:80]!r} is {format_size(req.size)}; this broker takes files up to "
                f"{format_size(self.max_file_size)} (--max-file-size)",
            )
        try:
            name_bytes = len(req.name.encode("utf-8"))
        except UnicodeEncodeError:
            raise ChatError(p.ErrorCode.BAD_REQUEST, "name is not valid Unicode") from None
        if not req.name.strip("/\\ ") or "\x00" in req.name:
            raise ChatError(p.ErrorCode.INVALID_NAME, "a file needs a name (and no NUL in it)")
        if name_bytes > pf.MAX_FILE_NAME_BYTES:
            raise ChatError(p.ErrorCode.MESSAGE_TOO_LARGE,
                            f"name is {name_bytes} bytes; the limit is {pf.MAX_FILE_NAME_BYTES}")
        if bool(req.room) == bool(req.to):
            raise ChatError(p.ErrorCode.BAD_REQUEST, "give a room or a nick to send to (one)")
        rooms = self.broker.rooms
        assert rooms is not None
        if req.room:
            check_room(req.room)
            if not rooms.is_member(req.room, session.nick):
                raise ChatError(p.ErrorCode.NOT_MEMBER, f"join room {req.room!r} first")
        else:
            check_nick(req.to)
            if self.broker.session_of(req.to) is None:
                raise _not_found(f"no one called {req.to!r} is connected")

    def _open_upload(self, sha256: str, size: int) -> _Upload:
        blob = self.blob_path(sha256)
        try:
            if blob.stat().st_size == size:
                up = _Upload(sha256, size, blob, complete=True, received=size, queued=size,
                             hashed=size)
                up.caught_up.set()
                self._by_sha[sha256] = up
                return up
        except FileNotFoundError:
            pass
        path = self.partials / sha256
        up = _Upload(sha256, size, path)
        self._ensure_fd(up)
        self._by_sha[sha256] = up
        return up

    def _ensure_fd(self, up: _Upload) -> None:
        if up.complete or up.fd is not None:
            return
        try:
            up.fd = os.open(up.path, os.O_RDWR | os.O_CREAT, 0o600)
            have = os.fstat(up.fd).st_size
            if have > up.size or have < up.received:  # not ours, or cut short under us
                os.ftruncate(up.fd, 0)
                have = 0
                up.hasher, up.hashed = hashlib.sha256(), 0
        except OSError as exc:
            log.error("cannot open %s: %s", up.path, exc)
            raise ChatError(p.ErrorCode.INTERNAL_ERROR,
                            "the broker cannot store files now") from None
        up.received = up.queued = have
        if up.hashed > up.received:
            up.hasher, up.hashed = hashlib.sha256(), 0
        if up.hashed < up.received:
            self._start_catch_up(up)
        else:
            up.caught_up.set()

    def _start_catch_up(self, up: _Upload) -> None:
        if not up.catching_up:
            up.catching_up = True
            up.caught_up.clear()
            gevent.spawn(self._catch_up, up)

    def _catch_up(self, up: _Upload) -> None:
        """Hash what is on disk but not yet hashed (a partial found after a restart), in the
        threadpool, while new chunks go on being written."""
        try:
            while up.hashed < up.received and not up.broken:
                want = min(CATCH_UP_BYTES, up.received - up.hashed)
                got = self._pool.apply(hash_range, (up.hasher, up.path, up.hashed, want))
                if got != want:
                    raise OSError(f"the partial is shorter than {up.hashed + want}")
                up.hashed += got
        except OSError as exc:
            log.warning("could not hash partial %s: %s", up.path.name, exc)
            up.broken = True
        finally:
            up.catching_up = False
            up.caught_up.set()

    def _upload_of(self, session: ClientSession, upload_id: str) -> _Upload:
        up = self.uploads.get(upload_id)
        if up is None or up.owner != session.routing_id:
            raise _not_found(f"no upload {upload_id[:20]!r}: send FILE-PUT again")
        return up

    def _data(self, session: ClientSession, req: pf.FileData) -> pf.FileAck:
        """Accept a chunk in order and queue it for the upload's writer greenlet, so the control
        loop never waits for the disk; it waits only when WRITE_QUEUE_CHUNKS are queued (a
        disk slower than the network), which bounds the memory an upload holds."""
        up = self._upload_of(session, req.upload)
        n = len(req.data)
        if up.error:
            raise ChatError(p.ErrorCode.INTERNAL_ERROR, up.error)
        if up.broken:
            self._forget(up, delete=True)
            raise ChatError(p.ErrorCode.BAD_REQUEST, "the partial upload was lost: start again")
        if n == 0:
            raise ChatError(p.ErrorCode.BAD_REQUEST, "empty chunk")
        if req.offset != up.queued:
            raise ChatError(p.ErrorCode.BAD_REQUEST,
                            f"chunk at offset {req.offset}, expected {up.queued}")
        if req.offset + n > up.size:
            raise ChatError(p.ErrorCode.BAD_REQUEST,
                            f"chunk ends at {req.offset + n}, past the size {up.size}")
        while len(up.pending) >= WRITE_QUEUE_CHUNKS and not up.error:
            up.room_to_queue.clear()
            up.room_to_queue.wait()
        if up.error:
            raise ChatError(p.ErrorCode.INTERNAL_ERROR, up.error)
        self._ensure_fd(up)
        up.pending.append((req.offset, req.data))
        up.queued += n
        if not up.writing:
            up.writing = True
            up.drained.clear()
            gevent.spawn(self._write_queue, up)
        up.last_active = time.monotonic()
        self.counters["chunks_in"] += 1
        return pf.FileAck(req_id=req.req_id, upload=req.upload, received=up.queued)

    def _write_queue(self, up: _Upload) -> None:
        """Write (and hash, when in order with the hash) what ``up`` has queued, a few chunks
        per threadpool job, until the queue is empty."""
        try:
            while up.pending and not up.error:
                batch = list(up.pending)
                up.pending.clear()
                up.room_to_queue.set()
                first = batch[0][0]
                end = batch[-1][0] + len(batch[-1][1])
                inline = up.hashed == first and not up.catching_up
                up.busy = True
                try:  # writing and hashing in two pool threads at once: both release the GIL
                    writing = self._pool.spawn(_write_batch, up.fd, batch, None)
                    hashing = self._pool.spawn(_hash_batch, up.hasher, batch) if inline else None
                    try:
                        writing.get()
                    finally:
                        if hashing is not None:
                            hashing.get()
                except OSError as exc:
                    log.error("cannot write %s: %s", up.path, exc)
                    up.error = f"the broker could not store the file: {exc.strerror or exc}"
                    up.queued = up.received
                    up.pending.clear()
                    up.hasher, up.hashed = hashlib.sha256(), 0  # a resume hashes the partial again
                    break
                finally:
                    up.busy = False
                up.received = end
                if inline:
                    up.hashed = end
                else:
                    self._start_catch_up(up)
        finally:
            up.writing = False
            up.room_to_queue.set()
            up.drained.set()
            if up.close_wanted:
                self._close_fd(up)

    def _drain(self, up: _Upload) -> None:
        """Wait until everything ``up`` accepted is written (control greenlet: FILE-PUT after
        a takeover, FILE-DONE; a few chunks at most)."""
        if up.writing:
            up.drained.wait()

    def _done(self, session: ClientSession, req: pf.FileDone) -> pf.FileShared:
        up = self._upload_of(session, req.upload)
        self._drain(up)
        if up.error:
            raise ChatError(p.ErrorCode.INTERNAL_ERROR, up.error)
        if up.received < up.size:
            raise ChatError(p.ErrorCode.BAD_REQUEST,
                            f"{up.received} of {up.size} octets received: send the rest first")
        rooms = self.broker.rooms
        assert rooms is not None
        if up.room and not rooms.is_member(up.room, session.nick):
            raise ChatError(p.ErrorCode.NOT_MEMBER, f"join room {up.room!r} first")
        if not up.complete:
            if up.hashed < up.received and not up.catching_up and not up.broken:
                self._start_catch_up(up)
            up.caught_up.wait()  # only a resumed upload's catch-up can still be running
            digest = up.hasher.hexdigest() if not up.broken else ""
            if digest != up.sha256:
                self._forget(up, delete=True)
                self.counters["rejected"] += 1
                log.warning("upload of %r by %s does not match its sha256: dropped",
                            up.name, session.nick)
                raise ChatError(
                    p.ErrorCode.BAD_REQUEST,
                    f"the data received does not match sha256 {up.sha256[:16]}...: nothing "
                    "was stored; upload it again",
                )
            self._close_fd(up)
            blob = self.blob_path(up.sha256)
            try:
                blob.parent.mkdir(parents=True, exist_ok=True)
                os.replace(up.path, blob)
            except OSError as exc:
                log.error("cannot store blob %s: %s", blob, exc)
                raise ChatError(p.ErrorCode.INTERNAL_ERROR,
                                "the broker could not store the file") from None
        info = pf.FileInfo(id=self.store.new_id(), name=up.name, size=up.size,
                           sha256=up.sha256, sender=session.nick, room=up.room, to=up.to,
                           ts_ms=int(time.time() * 1000))
        self.store.add(info)
        self._forget(up)
        self.counters["uploaded"] += 1
        self._announce(session, info)
        log.info("%s shared %r (%s) as %s", session.nick, info.name, format_size(info.size),
                 info.id)
        return pf.FileShared(req_id=req.req_id, file=info)

    def _announce(self, session: ClientSession, info: pf.FileInfo) -> None:
        broker = self.broker
        offer = pf.FileOffer(file=info)
        if not info.room:
            recipient = broker.session_of(info.to)
            if recipient is not None:
                broker.send_direct(recipient, offer)
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
            raise ChatError(p.ErrorCode.BAD_REQUEST, f"offset must be 0 to {info.size}")
        if req.credit < 1:
            raise ChatError(p.ErrorCode.BAD_REQUEST, "credit must be 1 or more")
        if self._transfers_of(session) >= MAX_TRANSFERS_PER_SESSION:
            raise ChatError(p.ErrorCode.TOO_MANY,
                            f"at most {MAX_TRANSFERS_PER_SESSION} transfers at once")
        blob = self.blob_path(info.sha256)
        if not blob.is_file():
            log.error("file %s: blob %s is missing", info.id, blob)
            raise ChatError(p.ErrorCode.INTERNAL_ERROR, "the broker lost this file's content")
        dl = _Download(secrets.token_hex(8), session, info, blob, req.offset,
                       min(req.credit, MAX_CREDIT))
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
            raise ChatError(p.ErrorCode.BAD_REQUEST, "credit must be 1 or more")
        dl = self.downloads.get(req.download)
        if dl is not None and dl.session.routing_id == session.routing_id:
            dl.credit = min(dl.credit + req.credit, MAX_CREDIT)
            dl.last_credit = time.monotonic()
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
            raise ChatError(p.ErrorCode.TOO_MANY, f"limit must be 1 to {pf.MAX_FILE_LIST}")
        if req.room:
            check_room(req.room)
            files = self.store.in_room(req.room, req.limit)
        else:
            files = self.store.direct(session.nick, req.limit)
        return pf.FileListed(req_id=req.req_id, room=req.room, files=tuple(files))
