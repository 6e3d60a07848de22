"""The one write-and-hash helper of file transfers (docs/protocol.md 3.15, "Integrity").

:class:`FileSink` writes chunks ``(offset, data)`` in order to a file and feeds them to a
SHA-256 hasher in the same order, the two jobs overlapping in two threads of gevent's
threadpool (both ``os.pwrite`` and ``hashlib`` release the GIL: a batch costs the longer of the
two, not their sum; DESIGN.md, "Rules of the gevent hub"). The broker's upload writes the
partial with it (:mod:`zmeet.broker.files`), the client's download its part file
(:mod:`zmeet.client.files`).

Chunks wait in a bounded queue (``max_chunks``); a writer greenlet takes what is queued, a few
chunks per threadpool job. Octets already in the file but not hashed (a resumed transfer's
partial) are hashed from the disk by a catch-up greenlet, ``catch_up_bytes`` per job, while new
chunks go on being written; chunks are hashed as they are written only once the hash has caught
up with them. Callbacks (on the hub, from the sink's greenlets) say how far it got:
``on_written(end)``, ``on_hashed(end)``, ``on_error(where, exc)`` (``where`` is ``write`` or
``hash``) and ``on_drained()`` (the writer greenlet has ended: every queued chunk is written,
or a write failed).

This module only drives I/O; what the octets mean is the business of the sans-IO machines in
:mod:`zmeet.files.transfer`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event

from .hashing import hash_range, write_and_hash

log = logging.getLogger("zmeet.files.sink")

CATCH_UP_BYTES = 8 * 1024 * 1024
"""Octets of the file hashed per threadpool job when the hash catches up with the disk (the
default of ``catch_up_bytes``; the broker's uploads use it)."""

BATCH_CHUNKS = 8
"""Most queued chunks written (and hashed) in one threadpool job."""

WrittenCallback = Callable[[int], None]
DrainedCallback = Callable[[], None]
ErrorCallback = Callable[[str, OSError], None]


def _write_batch(fd: int, batch: list[tuple[int, Any]]) -> None:
    for offset, data in batch:
        write_and_hash(fd, data, offset, None)


def _hash_batch(hasher: Any, batch: list[tuple[int, Any]]) -> None:
    for _, data in batch:
        hasher.update(data)


class FileSink:
    """Write chunks in order to the file at ``path`` while hashing them.

    ``path`` is opened by :meth:`open` (``O_RDWR | O_CREAT`` with ``mode``, the umask applies);
    the file's first ``hashed`` octets are already fed to ``hasher`` (a new SHA-256 if None).
    ``pool`` is anything with ``spawn(fn, *args)`` returning a result with ``get()``
    (default: gevent's hub threadpool). At most ``max_chunks`` chunks wait to be written.

    Attributes, all octet offsets in the file: :attr:`queued` (end of the chunks accepted),
    :attr:`written` (end of what is in the file, in order from 0), :attr:`hashed` (end of what
    the hasher has had). ``hashed <= written <= queued`` always. :attr:`error` is the first
    OSError of a write; after it nothing more is written (call :meth:`reset` to start over).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: int = 0o600,
        hasher: Any = None,
        hashed: int = 0,
        max_chunks: int = 8,
        batch_chunks: int = BATCH_CHUNKS,
        catch_up_bytes: int = CATCH_UP_BYTES,
        pool: Any = None,
        on_written: WrittenCallback | None = None,
        on_hashed: WrittenCallback | None = None,
        on_error: ErrorCallback | None = None,
        on_drained: DrainedCallback | None = None,
    ) -> None:
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
        self.path = Path(path)
        self.mode = mode
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self.hashed = hashed
        self.written = self.queued = 0
        self.max_chunks = max_chunks
        self.batch_chunks = batch_chunks
        self.catch_up_bytes = catch_up_bytes
        self.pool = pool if pool is not None else gevent.get_hub().threadpool
        self.on_written = on_written
        self.on_hashed = on_hashed
        self.on_error = on_error
        self.on_drained = on_drained
        self.error: OSError | None = None
        self.fd: int | None = None
        self._pending: deque[tuple[int, Any]] = deque()
        self._writer: gevent.Greenlet | None = None
        self._catcher: gevent.Greenlet | None = None
        self._close_wanted = False
        self._stopped = False
        self._idle = gevent.event.Event()
        self._idle.set()
        self._drained = gevent.event.Event()
        self._drained.set()
        self._room = gevent.event.Event()
        self._room.set()

    # state ----------------------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        """The writer greenlet runs (chunks are queued or being written)."""
        return self._writer is not None

    @property
    def catching_up(self) -> bool:
        """The catch-up greenlet runs (the hash reads the file from the disk)."""
        return self._catcher is not None

    @property
    def idle(self) -> bool:
        """Nothing runs: every accepted chunk is written, no catch-up runs."""
        return self._writer is None and self._catcher is None

    @property
    def full(self) -> bool:
        """``max_chunks`` chunks wait: :meth:`put` would refuse."""
        return len(self._pending) >= self.max_chunks

    def hexdigest(self) -> str:
        """The hex SHA-256 of the first :attr:`hashed` octets."""
        return str(self.hasher.hexdigest())

    # file -----------------------------------------------------------------------------------

    def open(self) -> int:
        """Open the file (made if missing) unless it is open; returns its length in octets
        (call :meth:`truncate` to say where writing goes on). Raises OSError if it cannot be
        opened."""
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, self.mode)
        self._close_wanted = False
        return os.fstat(self.fd).st_size

    def truncate(self, length: int) -> None:
        """Cut the file to ``length`` octets and go on writing there (the sink must be open and
        not :attr:`writing`); a hash past it is started over, a write error forgotten. Raises
        OSError, ValueError."""
        if self.writing or self.fd is None or (self.catching_up and length < self.hashed):
            raise ValueError("truncate an open sink that is not writing")
        os.ftruncate(self.fd, length)
        self.written = self.queued = length
        self.error = None
        if self.hashed > length:
            self.reset_hash()

    def reset_hash(self) -> None:
        """Start the hash over from octet 0 (not while a catch-up runs)."""
        self.hasher, self.hashed = hashlib.sha256(), 0

    def close(self) -> None:
        """Close the file once the writer has written what was queued (a catch-up goes on: it
        reads by path). Idempotent; :meth:`open` opens it again."""
        self._close_wanted = True
        if self._writer is None:
            self._close_fd()

    def stop(self) -> None:
        """Stop for good: drop what is queued, end a catch-up after its current job, close.
        No ``on_written``, ``on_hashed`` or ``on_error`` comes after it (``on_drained`` still
        tells when the writer has ended); :meth:`wait_idle` waits for the job under way."""
        self._stopped = True
        self._pending.clear()
        self.close()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait (green) until :attr:`idle`; False if ``timeout_s`` passed first."""
        return bool(self._idle.wait(timeout_s))

    def wait_room(self, timeout_s: float | None = None) -> bool:
        """Wait (green) until :meth:`put` has room for a chunk; False if ``timeout_s`` passed
        first."""
        while self.full:
            self._room.clear()
            if not self._room.wait(timeout_s):
                return False
        return True

    def wait_drained(self, timeout_s: float | None = None) -> bool:
        """Wait (green) until every queued chunk is written (a catch-up may go on); False if
        ``timeout_s`` passed first."""
        return bool(self._drained.wait(timeout_s))

    def _close_fd(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        self._close_wanted = False

    # writing --------------------------------------------------------------------------------

    def put(self, offset: int, data: Any) -> None:
        """Queue chunk ``data`` (bytes-like, not empty) for offset ``offset``, which must be
        :attr:`queued`. Returns at once; :attr:`on_written` tells when it is in the file.
        Raises ValueError if the chunk is out of order or empty, the queue is :attr:`full`,
        the sink is not open or a write failed (:attr:`error`)."""
        if self.fd is None or self._close_wanted or self._stopped:
            raise ValueError("the sink is not open")
        if self.error is not None:
            raise ValueError(f"a write failed: {self.error}")
        if offset != self.queued or not len(data):
            raise ValueError(f"chunk at {offset} ({len(data)} octets), expected {self.queued}")
        if self.full:
            raise ValueError(f"{self.max_chunks} chunks wait already")
        self._pending.append((offset, data))
        self.queued += len(data)
        if self._writer is None:
            self._idle.clear()
            self._drained.clear()
            self._writer = gevent.spawn(self._write_queue)

    def catch_up(self) -> None:
        """Hash what the file has beyond :attr:`hashed` from the disk, in a greenlet of its own
        (nothing happens if the hash is level with :attr:`written` or a catch-up runs)."""
        if self._catcher is None and not self._stopped and self.hashed < self.written:
            self._idle.clear()
            self._catcher = gevent.spawn(self._catch_up)

    def _write_queue(self) -> None:
        try:
            while self._pending and self.error is None and self.fd is not None:
                batch = [self._pending.popleft()
                         for _ in range(min(self.batch_chunks, len(self._pending)))]
                self._room.set()
                first = batch[0][0]
                end = batch[-1][0] + len(batch[-1][1])
                inline = self.hashed == first and self._catcher is None
                try:
                    writing = self.pool.spawn(_write_batch, self.fd, batch)
                    hashing = self.pool.spawn(_hash_batch, self.hasher, batch) if inline else None
                    try:
                        writing.get()
                    finally:
                        if hashing is not None:
                            hashing.get()
                except OSError as exc:
                    log.error("cannot write %s: %s", self.path, exc)
                    self.error = exc
                    self._pending.clear()
                    self.queued = self.written
                    self.reset_hash()  # a resume hashes the file again
                    if self.on_error is not None and not self._stopped:
                        self.on_error("write", exc)
                    break
                self.written = end
                if inline:
                    self.hashed = end
                if self._stopped:  # stopped while the batch was written: nothing more to tell
                    break
                if self.on_written is not None:
                    self.on_written(end)
                if inline and self.on_hashed is not None:
                    self.on_hashed(end)
                if not inline:
                    self.catch_up()
        finally:
            self._writer = None
            if self._close_wanted:
                self._close_fd()
            self._drained.set()
            self._room.set()
            if self.idle:
                self._idle.set()
            if self.on_drained is not None:
                self.on_drained()

    def _catch_up(self) -> None:
        try:
            hasher = self.hasher
            while self.hashed < self.written and not self._stopped:
                want = min(self.catch_up_bytes, self.written - self.hashed)
                got = self.pool.spawn(hash_range, hasher, self.path, self.hashed, want).get()
                if self.hasher is not hasher:  # started over meanwhile (a write failed)
                    break
                if got != want:
                    raise OSError(f"{self.path.name} is shorter than {self.hashed + want}")
                self.hashed += got
                if self._stopped:  # stopped during the job: nothing more to tell
                    break
                if self.on_hashed is not None:
                    self.on_hashed(self.hashed)
        except OSError as exc:
            log.warning("could not hash %s: %s", self.path.name, exc)
            stopped, self._stopped = self._stopped, True
            if self.on_error is not None and not stopped:
                self.on_error("hash", exc)
        finally:
            self._catcher = None
            if self.idle:
                self._idle.set()
