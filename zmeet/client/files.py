"""Upload and download drivers for files over a connected :class:`~zmeet.client.Session`
(docs/protocol.md, "Files").

Both follow the ZeroMQ Guide's ``fileio3`` (chapter 7): chunks travel on the control lane
(DEALER/ROUTER), never on PUB, and a credit window bounds what is in flight, so memory stays
bounded whatever the file size.

- :meth:`FileClient.upload` hashes the file (SHA-256, in gevent's threadpool), asks FILE-PUT,
  goes on from the offset the broker already has (resume), keeps at most FILE-READY.window
  FILE-DATA requests without their FILE-ACK, and ends with FILE-DONE.
- :meth:`FileClient.download` asks FILE-GET from the length of its partial file
  (``<folder>/.zmeet-partial/<id>.part``: resume), writes and hashes each FILE-CHUNK in the
  threadpool, gives credit back with FILE-CREDIT, checks the SHA-256 of the whole file, and only
  then moves it to its safe name in the folder (:func:`zmeet.files.deliver`). A mismatch sets
  the part aside as ``<id>.rejected`` and raises :class:`~zmeet.files.IntegrityError`.

FILE-CHUNK, FILE-ABORT and FILE-OFFER arrive unasked, as :class:`~zmeet.protocol.Direct`
messages on ``Session.events``; whoever reads that queue hands each item to
:meth:`FileClient.dispatch` (the chat terminal does it in an event handler) or lets
:meth:`FileClient.start_pump` read it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.queue

from .. import protocol as p
from ..errors import BrokerUnavailable, RemoteProtocolError, RequestRefused
from ..files import (
    DownloadCredit,
    FileMissing,
    FileTooLarge,
    FileUnreadable,
    IntegrityError,
    Progress,
    RateLimiter,
    TransferFailed,
    UploadWindow,
    chunk_spans,
    deliver,
    format_size,
    part_path,
    rejected_path,
)
from ..files.hashing import hash_range, read_exact, write_and_hash
from ..files.parts import tidy
from ..protocol import files as pf
from .session import Session

log = logging.getLogger("zmeet.client.files")

HASH_STEP_BYTES = 8 * 1024 * 1024
"""Octets hashed per threadpool job before an upload (progress is told between jobs)."""

MIN_CHUNK_TIMEOUT_S = 10.0
"""Least time a download waits for its next chunk before it asks again from where it is."""

DOWNLOAD_ATTEMPTS = 3
"""FILE-GETs one download makes (the first and the re-asks after a stall or a gap)."""

DONE_TIMEOUT_S = 120.0
"""How long FILE-DONE may take: the broker may still be hashing a resumed upload."""

EARLY_CHUNKS = pf.MAX_CREDIT
"""Chunks kept for a download whose FILE-STREAM reply the caller has not read yet."""

READ_AHEAD_CHUNKS = 4
"""Chunks of an upload read from disk in one threadpool job."""

WRITE_BATCH_CHUNKS = 8
"""Most received chunks written to disk (and hashed) in one threadpool job."""

FINISHED_REMEMBERED = 64
"""Ended downloads whose late chunks are dropped at once (not kept as early ones)."""


@dataclass(frozen=True)
class TransferEvent:
    """Progress of one transfer, given to ``on_progress`` callbacks on the hub.

    ``kind`` is ``hashing`` (before an upload: ``done`` octets hashed), ``start`` (``offset``:
    where it goes on from, more than 0 for a resumed transfer), ``progress`` (after each
    chunk) or ``done`` (with ``info``, and ``path`` for a download). ``direction`` is ``up``
    or ``down``; sizes in octets; ``rate_bps`` octets per second lately; ``eta_s`` seconds
    left or None; ``elapsed_s`` since ``start``.
    """

    kind: str
    direction: str
    name: str
    size: int
    done: int
    offset: int = 0
    rate_bps: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0
    info: pf.FileInfo | None = None
    path: Path | None = None


ProgressCallback = Callable[[TransferEvent], None]


def _event(kind: str, direction: str, name: str, progress: Progress, **extra: Any) -> TransferEvent:
    return TransferEvent(kind=kind, direction=direction, name=name, size=progress.total,
                         done=progress.done, offset=progress.start, rate_bps=progress.rate_bps,
                         eta_s=progress.eta_s, elapsed_s=progress.elapsed_s, **extra)


class _Receiving:
    def __init__(self) -> None:
        self.queue: gevent.queue.Queue = gevent.queue.Queue()


class FileClient:
    """File transfers over ``session`` (connected). ``chunk_timeout_s`` bounds the wait for
    each download chunk (default: twice the session's request timeout, at least 10 s).

    Every method raises :class:`~zmeet.errors.BrokerUnavailable` when the broker does not
    answer and :class:`~zmeet.errors.RequestRefused` for an ERROR reply, besides the
    :mod:`zmeet.files` errors each one names.
    """

    def __init__(self, session: Session, *, chunk_timeout_s: float | None = None) -> None:
        self.session = session
        self.chunk_timeout_s = chunk_timeout_s or max(MIN_CHUNK_TIMEOUT_S, 2 * session.timeout_s)
        self._receiving: dict[str, _Receiving] = {}
        self._early: OrderedDict[str, list[p.Message]] = OrderedDict()
        self._early_count = 0
        self._finished: deque[str] = deque(maxlen=FINISHED_REMEMBERED)
        self._pool = gevent.get_hub().threadpool
        self._pump: gevent.Greenlet | None = None

    # events -----------------------------------------------------------------------------------

    def dispatch(self, item: Any) -> bool:
        """Take ``item`` (from ``Session.events``) if it is a download's FILE-CHUNK or
        FILE-ABORT; True when taken. FILE-OFFER is left to the caller (it is for people)."""
        if not isinstance(item, pf.FileChunk | pf.FileAbort):
            return False
        receiving = self._receiving.get(item.download)
        if receiving is not None:
            receiving.queue.put(item)
            return True
        if item.download in self._finished:
            return True  # a late chunk of a download that ended or was cancelled
        # the FILE-STREAM reply may not have been read yet: keep a few, drop the oldest
        self._early.setdefault(item.download, []).append(item)
        self._early_count += 1
        while self._early_count > EARLY_CHUNKS:
            _, dropped = self._early.popitem(last=False)
            self._early_count -= len(dropped)
        return True

    def start_pump(self, on_other: Callable[[Any], None] | None = None) -> gevent.Greenlet:
        """Read ``Session.events`` in a greenlet: file items to :meth:`dispatch`, the rest to
        ``on_other`` (dropped if None). For programs that have no other reader of the queue."""
        if self._pump is None:
            def run() -> None:
                while True:
                    item = self.session.events.get()
                    if not self.dispatch(item) and on_other is not None:
                        on_other(item)

            self._pump = gevent.spawn(run)
        return self._pump

    def stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.kill()
            self._pump = None

    def _register(self, download_id: str) -> _Receiving:
        receiving = self._receiving[download_id] = _Receiving()
        for item in self._early.pop(download_id, ()):
            self._early_count -= 1
            receiving.queue.put(item)
        return receiving

    @property
    def max_file_size(self) -> int | None:
        """The broker's ``max_file_size`` from WELCOME, or None if it did not say."""
        welcome = self.session.welcome
        return None if welcome is None else welcome.limits.get("max_file_size")

    # listing ----------------------------------------------------------------------------------

    def list(self, room: str = "", limit: int = pf.MAX_FILE_LIST) -> tuple[pf.FileInfo, ...]:
        """Files shared with ``room`` (or, with ``room`` empty, sent one to one by or to this
        nick), oldest first."""
        reply = self.session.request(pf.FileList, room=room, limit=limit)
        assert isinstance(reply, pf.FileListed)
        return reply.files

    # upload -----------------------------------------------------------------------------------

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        room: str = "",
        to: str = "",
        name: str | None = None,
        on_progress: ProgressCallback | None = None,
        limit_rate_bps: float | None = None,
    ) -> pf.FileInfo:
        """Share the file at ``path`` with ``room`` (joined) or send it to nick ``to``, under
        ``name`` (default: its base name). Returns the stored file's record.

        A transfer cut off before (this client killed, the broker restarted) goes on from
        the octets the broker already has. Raises :class:`~zmeet.files.FileMissing` ("File
        doesn't exist") or :class:`~zmeet.files.FileUnreadable` before anything is sent,
        :class:`~zmeet.files.FileTooLarge` if the broker's ``max_file_size`` is smaller (told
        in WELCOME: no octet is sent), RequestRefused for a broker that refuses (FILE-PUT's
        errors), BrokerUnavailable if it stops answering (run it again to resume).
        """
        path = Path(path)
        name = name if name is not None else path.name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileMissing(f"File doesn't exist: {path}") from None
        except IsADirectoryError:
            raise FileUnreadable(f"{path} is a folder: send its files") from None
        except OSError as exc:
            raise FileUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            size = os.fstat(fd).st_size
            limit = self.max_file_size
            if limit is not None and size > limit:
                raise FileTooLarge(
                    f"{name} is {format_size(size)}; the broker takes files up to "
                    f"{format_size(limit)} (--max-file-size): nothing was sent"
                )
            sha256 = self._hash_file(path, name, size, on_progress)
            try:
                ready = self.session.request(pf.FilePut, room=room, to=to, name=name,
                                             size=size, sha256=sha256)
            except RequestRefused as exc:
                if exc.code == p.ErrorCode.MESSAGE_TOO_LARGE:
                    raise FileTooLarge(exc.reason) from None
                raise
            assert isinstance(ready, pf.FileReady)
            if not 0 <= ready.offset <= size or ready.window < 1 or ready.chunk_bytes < 1:
                raise RemoteProtocolError(f"FILE-READY makes no sense: {ready!r}")
            progress = self._send_chunks(fd, ready, size, name, on_progress, limit_rate_bps)
        finally:
            os.close(fd)
        shared = self.session.request(pf.FileDone, upload=ready.upload,
                                      timeout_s=max(DONE_TIMEOUT_S, self.session.timeout_s))
        assert isinstance(shared, pf.FileShared)
        if on_progress is not None:
            on_progress(_event("done", "up", name, progress, info=shared.file))
        return shared.file

    def _hash_file(self, path: Path, name: str, size: int,
                   on_progress: ProgressCallback | None) -> str:
        hasher = hashlib.sha256()
        progress = Progress(size, clock=time.monotonic)
        done = 0
        while True:
            try:
                got = self._pool.apply(hash_range, (hasher, path, done, HASH_STEP_BYTES))
            except OSError as exc:
                raise FileUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
            done += got
            progress.update(done)
            if on_progress is not None:
                on_progress(_event("hashing", "up", name, progress))
            if got < HASH_STEP_BYTES:
                break
        if done != size:
            raise FileUnreadable(f"{path} changed while it was read ({size} -> {done} octets)")
        return hasher.hexdigest()

    def _send_chunks(self, fd: int, ready: pf.FileReady, size: int, name: str,
                     on_progress: ProgressCallback | None,
                     limit_rate_bps: float | None) -> Progress:
        chunk_bytes = min(ready.chunk_bytes, pf.MAX_FILE_CHUNK_BYTES)
        window = UploadWindow(min(ready.window, pf.MAX_CREDIT), start=ready.offset)
        progress = Progress(size, start=ready.offset, clock=time.monotonic)
        limiter = (RateLimiter(limit_rate_bps, burst=chunk_bytes, clock=time.monotonic)
                   if limit_rate_bps else None)
        if on_progress is not None:
            on_progress(_event("start", "up", name, progress))
        in_flight: deque[gevent.Greenlet] = deque()

        def settle_oldest() -> None:
            ack = in_flight.popleft().get()  # re-raises BrokerUnavailable, RequestRefused
            assert isinstance(ack, pf.FileAck)
            window.acked(ack.received)
            progress.update(window.confirmed)
            if on_progress is not None:
                on_progress(_event("progress", "up", name, progress))

        block = memoryview(b"")
        block_start = ready.offset
        try:
            for offset, length in chunk_spans(size, chunk_bytes, ready.offset):
                while not window.can_send():
                    settle_oldest()
                if offset + length > block_start + len(block):  # read a few chunks at once
                    want = min(chunk_bytes * READ_AHEAD_CHUNKS, size - offset)
                    try:
                        block = memoryview(self._pool.apply(read_exact, (fd, want, offset)))
                    except OSError as exc:
                        raise FileUnreadable(f"cannot read {name}: {exc.strerror or exc}") from None
                    block_start = offset
                    if len(block) != want:
                        raise FileUnreadable(f"{name} got shorter while it was sent")
                data = block[offset - block_start:offset - block_start + length]
                if limiter is not None:
                    delay_s = limiter.delay_s(length)
                    if delay_s > 0:
                        gevent.sleep(delay_s)
                in_flight.append(gevent.spawn(self.session.request, pf.FileData,
                                              upload=ready.upload, offset=offset, data=data))
                window.sent(offset, length)
            while in_flight:
                settle_oldest()
        except BaseException:
            gevent.killall(list(in_flight), block=False)
            raise
        return progress

    # download ---------------------------------------------------------------------------------

    def download(
        self,
        file_id: str,
        folder: str | os.PathLike[str],
        *,
        on_progress: ProgressCallback | None = None,
        limit_rate_bps: float | None = None,
        credit: int = pf.DOWNLOAD_CREDIT,
    ) -> tuple[pf.FileInfo, Path]:
        """Fetch file ``file_id`` into ``folder`` (made if missing). Returns its record and
        the path it was saved at: its safe name inside ``folder`` (relative folders of a
        folder that was sent whole kept), never replacing a file (`` (1)`` is added).

        Goes on from ``folder/.zmeet-partial/<id>.part`` if an earlier try was cut off.
        Raises :class:`~zmeet.files.IntegrityError` if the whole file does not match its
        SHA-256 (the part is set aside, nothing delivered), :class:`~zmeet.files.TransferFailed`
        if the broker stops sending (run it again to resume), RequestRefused (404: no such
        file), OSError if the folder cannot be written.
        """
        folder = Path(folder)
        try:
            part = part_path(folder, file_id)
        except ValueError:
            raise RequestRefused(pf.NOT_FOUND, f"no file {file_id[:20]!r}") from None
        part.parent.mkdir(parents=True, exist_ok=True)
        sink = _PartSink(part, self._pool)
        try:
            info, progress = self._receive(file_id, sink, on_progress, limit_rate_bps, credit)
        finally:
            sink.close()
        if sink.hasher.hexdigest() != info.sha256:
            rejected = rejected_path(part)
            os.replace(part, rejected)
            raise IntegrityError(
                f"{info.name}: the data received does not match its sha256; nothing was "
                f"saved (the data was set aside as {rejected})"
            )
        final = deliver(part, folder, info.name)
        tidy(folder)
        if on_progress is not None:
            on_progress(_event("done", "down", info.name, progress, info=info, path=final))
        return info, final

    def fetch_bytes(self, file_id: str, *, max_bytes: int) -> tuple[pf.FileInfo, bytes]:
        """File ``file_id`` in memory (a preview): its record and content, checked against
        its SHA-256. Raises :class:`~zmeet.files.FileTooLarge` for a file over ``max_bytes``
        (nothing is fetched), :class:`~zmeet.files.IntegrityError` on a mismatch."""
        sink = _MemorySink(max_bytes)
        info, _ = self._receive(file_id, sink, None, None, pf.DOWNLOAD_CREDIT)
        data = bytes(sink.data)
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise IntegrityError(f"{info.name}: the data received does not match its sha256")
        return info, data

    def _receive(self, file_id: str, sink: _Sink, on_progress: ProgressCallback | None,
                 limit_rate_bps: float | None, credit_chunks: int) -> tuple[pf.FileInfo, Progress]:
        """FILE-GET ``file_id`` from ``sink``'s offset and write every chunk to ``sink``; ask
        again from where it is after a stall or a gap, DOWNLOAD_ATTEMPTS times at most."""
        limiter = (RateLimiter(limit_rate_bps, burst=pf.MAX_FILE_CHUNK_BYTES, clock=time.monotonic)
                   if limit_rate_bps else None)
        progress: Progress | None = None
        info: pf.FileInfo | None = None
        last_error = ""
        for _attempt in range(DOWNLOAD_ATTEMPTS):
            offset = sink.offset
            try:
                stream = self.session.request(pf.FileGet, id=file_id, offset=offset,
                                              credit=credit_chunks)
            except RequestRefused as exc:
                if exc.code == p.ErrorCode.BAD_REQUEST and offset > 0:
                    sink.restart()  # our part is longer than the file: not this file's
                    continue
                raise
            assert isinstance(stream, pf.FileStream)
            info = stream.file
            if info.id != file_id or stream.offset != offset:
                raise RemoteProtocolError(f"FILE-STREAM makes no sense: {stream!r}")
            try:
                sink.begin(info)
            except BaseException:
                gevent.spawn(self._cancel_quietly, stream.download)
                raise
            if progress is None:
                progress = Progress(info.size, start=offset, clock=time.monotonic)
                if on_progress is not None:
                    on_progress(_event("start", "down", info.name, progress))
            receiving = self._register(stream.download)
            credit = DownloadCredit(credit_chunks, offset, info.size)
            try:
                while not credit.done:
                    try:
                        batch = [receiving.queue.get(timeout=self.chunk_timeout_s)]
                    except gevent.queue.Empty:
                        last_error = f"no data from the broker for {self.chunk_timeout_s:g} s"
                        break
                    while len(batch) < WRITE_BATCH_CHUNKS and receiving.queue.qsize():
                        batch.append(receiving.queue.get_nowait())
                    good: list[tuple[int, bytes]] = []
                    grant, abort, gap = 0, None, False
                    for item in batch:
                        if isinstance(item, pf.FileAbort):
                            abort = TransferFailed(f"{info.name}: {item.reason}")
                            break
                        try:
                            credit.check(item.offset, len(item.data))
                        except RemoteProtocolError as exc:  # a chunk was lost: ask again
                            last_error, gap = str(exc), True
                            break
                        good.append((item.offset, item.data))
                        grant += credit.written(len(item.data))
                    if good:
                        sink.write_many(good)  # one threadpool job for what was waiting
                        progress.update(credit.offset)
                        if on_progress is not None:
                            on_progress(_event("progress", "down", info.name, progress))
                    if abort is not None:
                        raise abort
                    if gap:
                        break
                    if limiter is not None:
                        delay_s = limiter.delay_s(sum(len(d) for _, d in good))
                        if delay_s > 0:
                            gevent.sleep(delay_s)
                    if grant:
                        gevent.spawn(self._give_credit, stream.download, grant)
            except BaseException:
                gevent.spawn(self._cancel_quietly, stream.download)
                raise
            finally:
                self._receiving.pop(stream.download, None)
                self._finished.append(stream.download)
            if credit.done:
                return info, progress
            log.info("download of %s: %s; asking again from %d", file_id, last_error,
                     sink.offset)
            gevent.spawn(self._cancel_quietly, stream.download)
        raise TransferFailed(
            f"{info.name if info else file_id}: {last_error or 'the broker stopped sending'}; "
            "run the same command again to resume"
        )

    def _give_credit(self, download_id: str, credit: int) -> None:
        try:
            self.session.request(pf.FileCredit, download=download_id, credit=credit)
        except (BrokerUnavailable, RequestRefused) as exc:
            log.info("credit for %s not given: %s", download_id, exc)

    def _cancel_quietly(self, transfer_id: str) -> None:
        try:
            self.session.request(pf.FileCancel, id=transfer_id)
        except (BrokerUnavailable, RequestRefused):
            pass


class _Sink:
    offset: int

    def begin(self, info: pf.FileInfo) -> None: ...

    def restart(self) -> None: ...

    def write_many(self, chunks: list[tuple[int, bytes]]) -> None:
        """Write ``(offset, data)`` chunks that follow each other from :attr:`offset`."""


class _PartSink(_Sink):
    """Writes a download to its part file in order, hashing as it goes (in the threadpool)."""

    def __init__(self, part: Path, pool: Any) -> None:
        self.part = part
        self.pool = pool
        self.fd: int | None = None
        self.hasher = hashlib.sha256()
        self.offset = 0
        try:
            self.offset = part.stat().st_size
        except FileNotFoundError:
            pass
        self._hashed_prefix = False

    def begin(self, info: pf.FileInfo) -> None:
        if self.offset > info.size:
            self.restart()
        if self.fd is None:
            self.fd = os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o666)  # umask applies
        os.ftruncate(self.fd, self.offset)
        if not self._hashed_prefix:
            self._hashed_prefix = True
            if self.offset:  # a resumed download: hash what the part already has
                self.hasher = hashlib.sha256()
                self.pool.apply(hash_range, (self.hasher, self.part, 0, self.offset))

    def restart(self) -> None:
        self.offset = 0
        self.hasher = hashlib.sha256()
        self._hashed_prefix = True
        if self.fd is not None:
            os.ftruncate(self.fd, 0)

    def write_many(self, chunks: list[tuple[int, bytes]]) -> None:
        """Write and hash ``chunks`` in two pool threads at once (both release the GIL): a
        batch costs the longer of the two, not their sum. Raises OSError for a failed write
        (the part is then out of step with the hash: the download fails)."""
        assert self.fd is not None and chunks[0][0] == self.offset
        writing = self.pool.spawn(self._write_all, self.fd, chunks)
        hashing = self.pool.spawn(self._hash_all, self.hasher, chunks)
        try:
            writing.get()
        finally:
            hashing.get()
        self.offset = chunks[-1][0] + len(chunks[-1][1])

    @staticmethod
    def _write_all(fd: int, chunks: list[tuple[int, bytes]]) -> None:
        for offset, data in chunks:
            write_and_hash(fd, data, offset, None)

    @staticmethod
    def _hash_all(hasher: Any, chunks: list[tuple[int, bytes]]) -> None:
        for _, data in chunks:
            hasher.update(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _MemorySink(_Sink):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.data = bytearray()
        self.offset = 0

    def begin(self, info: pf.FileInfo) -> None:
        if info.size > self.max_bytes:
            raise FileTooLarge(f"{info.name} is {format_size(info.size)}; at most "
                               f"{format_size(self.max_bytes)} is fetched here")

    def restart(self) -> None:
        self.data.clear()
        self.offset = 0

    def write_many(self, chunks: list[tuple[int, bytes]]) -> None:
        for _, data in chunks:
            self.data += data
            self.offset += len(data)
