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
from typing import Any, NoReturn

import gevent
import gevent.queue

from .. import protocol as p
from ..errors import BrokerUnavailable, Refused, RemoteProtocolError
from ..files import (
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
from ..files.hashing import hash_range, read_exact
from ..files.parts import tidy
from ..files.sink import FileSink
from ..files.transfer import (
    Aborted,
    Ask,
    Cancel,
    CatchUp,
    ChunkReceived,
    Deliver,
    Download,
    DownloadState,
    Fail,
    GiveCredit,
    Hashed,
    HashFailed,
    Reject,
    Restart,
    Stalled,
    StreamOpened,
    StreamRefused,
    Verified,
    Verify,
    Write,
    WriteFailed,
    Written,
)
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
"""How long FILE-DONE may take (the broker may still be hashing a resumed upload), and how long
a download waits for its disk to make room in the write queue or finish."""

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


class FileClient:
    """File transfers over ``session`` (connected). ``chunk_timeout_s`` bounds the wait for
    each download chunk (default: twice the session's request timeout, at least 10 s).

    Every method raises :class:`~zmeet.errors.BrokerUnavailable` when the broker does not
    answer and :class:`~zmeet.errors.Refused` for an ERROR reply, besides the
    :mod:`zmeet.files` errors each one names.
    """

    def __init__(self, session: Session, *, chunk_timeout_s: float | None = None) -> None:
        self.session = session
        self.chunk_timeout_s = chunk_timeout_s or max(MIN_CHUNK_TIMEOUT_S, 2 * session.timeout_s)
        self._receiving: dict[str, gevent.queue.Queue] = {}  # by download id: its events
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
            receiving.put(item)
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

    def _register(self, download_id: str, events: gevent.queue.Queue) -> None:
        """FILE-CHUNK and FILE-ABORT of ``download_id`` go to ``events`` (those that came
        before its FILE-STREAM was read first)."""
        self._receiving[download_id] = events
        for item in self._early.pop(download_id, ()):
            self._early_count -= 1
            events.put(item)

    def _unregister(self, download_id: str) -> None:
        """Late items of ``download_id`` are dropped from now on."""
        if self._receiving.pop(download_id, None) is not None:
            self._finished.append(download_id)

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
        in WELCOME: no octet is sent), Refused for a broker that refuses (FILE-PUT's
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
            except Refused as exc:
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
            ack = in_flight.popleft().get()  # re-raises BrokerUnavailable, Refused
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
        if the broker stops sending (run it again to resume), Refused (404: no such
        file), OSError if the folder cannot be written.
        """
        folder = Path(folder)
        try:
            part = part_path(folder, file_id)
        except ValueError:
            raise Refused(pf.NOT_FOUND, f"no file {file_id[:20]!r}") from None
        part.parent.mkdir(parents=True, exist_ok=True)
        target = _PartTarget(part, self._pool, credit)
        try:
            info, progress, matched = self._receive(file_id, target, on_progress,
                                                    limit_rate_bps, credit)
        finally:
            target.close()
        if not matched:
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
        target = _MemoryTarget(max_bytes)
        info, _, matched = self._receive(file_id, target, None, None, pf.DOWNLOAD_CREDIT)
        data = bytes(target.data)
        if not matched or hashlib.sha256(data).hexdigest() != info.sha256:
            raise IntegrityError(f"{info.name}: the data received does not match its sha256")
        return info, data

    def _receive(self, file_id: str, target: _Target, on_progress: ProgressCallback | None,
                 limit_rate_bps: float | None,
                 credit_chunks: int) -> tuple[pf.FileInfo, Progress, bool]:
        """Drive a :class:`~zmeet.files.transfer.Download` machine: FILE-GET ``file_id`` from
        ``target``'s length, chunks to ``target`` (written and hashed in the threadpool),
        credit back as they are written, asked again from where it is after a stall or a gap.
        Returns the record, the progress and whether the SHA-256 matched."""
        limiter = (RateLimiter(limit_rate_bps, burst=pf.MAX_FILE_CHUNK_BYTES, clock=time.monotonic)
                   if limit_rate_bps else None)
        events: gevent.queue.Queue = gevent.queue.Queue()
        target.listen(events.put)
        machine = Download(target.have, credit=credit_chunks, attempts=DOWNLOAD_ATTEMPTS)
        progress: Progress | None = None
        info: pf.FileInfo | None = None
        streams: list[str] = []
        todo: deque[Any] = deque(machine.start())
        chunk: Any = None  # the FILE-CHUNK whose Write effect is being carried out
        reported = target.have
        try:
            while True:
                while todo:
                    effect = todo.popleft()
                    if isinstance(effect, Ask):
                        try:
                            stream = self.session.request(pf.FileGet, id=file_id,
                                                          offset=effect.offset,
                                                          credit=credit_chunks)
                        except Refused as exc:
                            todo.extend(machine.handle(StreamRefused(exc.code, exc.reason)))
                            continue
                        assert isinstance(stream, pf.FileStream)
                        if stream.file.id != file_id:
                            raise RemoteProtocolError(f"FILE-STREAM makes no sense: {stream!r}")
                        info = stream.file
                        machine.expected_sha256 = info.sha256
                        streams.append(stream.download)
                        self._register(stream.download, events)
                        target.begin(info)
                        todo.extend(machine.handle(StreamOpened(stream.download, info.size,
                                                                stream.offset)))
                        if progress is None:
                            progress = Progress(info.size, start=effect.offset,
                                                clock=time.monotonic)
                            if on_progress is not None:
                                on_progress(_event("start", "down", info.name, progress))
                    elif isinstance(effect, Write):
                        target.put(effect.offset, chunk.data)
                    elif isinstance(effect, GiveCredit):
                        gevent.spawn(self._give_credit, effect.download, effect.credit)
                    elif isinstance(effect, Cancel):
                        self._unregister(effect.download)
                        gevent.spawn(self._cancel_quietly, effect.download)
                    elif isinstance(effect, Restart):
                        target.restart()
                        reported = 0
                    elif isinstance(effect, CatchUp):
                        target.catch_up()
                    elif isinstance(effect, Verify):
                        todo.extend(machine.handle(Verified(target.hexdigest())))
                    elif isinstance(effect, Deliver | Reject):
                        assert info is not None and progress is not None
                        return info, progress, isinstance(effect, Deliver)
                    elif isinstance(effect, Fail):
                        self._fail(effect, info, file_id, target)
                try:
                    item = events.get(timeout=self.chunk_timeout_s)
                except gevent.queue.Empty:
                    todo.extend(machine.handle(Stalled(
                        f"no data from the broker for {self.chunk_timeout_s:g} s")))
                    continue
                if isinstance(item, pf.FileChunk):
                    chunk = item
                    todo.extend(machine.handle(ChunkReceived(item.download, item.offset,
                                                             len(item.data))))
                elif isinstance(item, pf.FileAbort):
                    todo.extend(machine.handle(Aborted(item.download, item.reason)))
                elif isinstance(item, Written):
                    if limiter is not None:
                        delay_s = limiter.delay_s(max(0, item.end - reported))
                        if delay_s > 0:
                            gevent.sleep(delay_s)
                    reported = item.end
                    if progress is not None and info is not None:
                        progress.update(item.end)
                        if on_progress is not None:
                            on_progress(_event("progress", "down", info.name, progress))
                    todo.extend(machine.handle(item))
                else:
                    todo.extend(machine.handle(item))  # Hashed, WriteFailed, HashFailed
        except BaseException:
            if streams and machine.state not in (DownloadState.DONE, DownloadState.FAILED):
                gevent.spawn(self._cancel_quietly, streams[-1])
            raise
        finally:
            for download in streams:
                self._unregister(download)

    def _fail(self, fail: Fail, info: pf.FileInfo | None, file_id: str,
              target: _Target) -> NoReturn:
        """Raise what :class:`~zmeet.files.transfer.Fail` stands for."""
        name = info.name if info else file_id
        if fail.kind == "refused":
            raise Refused(fail.code, fail.reason)
        if fail.kind == "aborted":
            raise TransferFailed(f"{name}: {fail.reason}")
        if fail.kind == "io":
            if target.error is not None:
                raise target.error
            raise OSError(fail.reason)
        log.info("download of %s: %s; giving up", file_id, fail.reason)
        raise TransferFailed(
            f"{name}: {fail.reason or 'the broker stopped sending'}; "
            "run the same command again to resume"
        )

    def _give_credit(self, download_id: str, credit: int) -> None:
        try:
            self.session.request(pf.FileCredit, download=download_id, credit=credit)
        except (BrokerUnavailable, Refused) as exc:
            log.info("credit for %s not given: %s", download_id, exc)

    def _cancel_quietly(self, transfer_id: str) -> None:
        try:
            self.session.request(pf.FileCancel, id=transfer_id)
        except (BrokerUnavailable, Refused):
            pass


class _Target:
    """Where a download's chunks go: a part file (:class:`_PartTarget`) or memory."""

    have: int = 0
    error: OSError | None = None

    def listen(self, put: Callable[[Any], None]) -> None:
        """Events of the writes (Written, Hashed, WriteFailed, HashFailed) go to ``put``."""

    def begin(self, info: pf.FileInfo) -> None: ...

    def restart(self) -> None: ...

    def put(self, offset: int, data: Any) -> None: ...

    def catch_up(self) -> None: ...

    def hexdigest(self) -> str:
        raise NotImplementedError

    def close(self) -> None: ...


class _PartTarget(_Target):
    """A download's part file, written and hashed by a :class:`~zmeet.files.sink.FileSink`
    (opened at the first FILE-STREAM: a refused download leaves no part behind)."""

    def __init__(self, part: Path, pool: Any, credit: int) -> None:
        self.part = part
        self.pool = pool
        self.max_chunks = max(credit, 1) + WRITE_BATCH_CHUNKS
        self._put: Callable[[Any], None] | None = None
        self.sink: FileSink | None = None
        try:
            self.have = part.stat().st_size
        except FileNotFoundError:
            self.have = 0

    def _open(self) -> FileSink:
        sink = FileSink(self.part, mode=0o666, pool=self.pool, max_chunks=self.max_chunks,
                        batch_chunks=WRITE_BATCH_CHUNKS, catch_up_bytes=HASH_STEP_BYTES,
                        on_written=self._written, on_hashed=self._hashed, on_error=self._error)
        sink.truncate(sink.open())  # umask applies to the mode
        return sink

    def _written(self, end: int) -> None:
        if self._put is not None:
            self._put(Written(end))

    def _hashed(self, end: int) -> None:
        if self._put is not None:
            self._put(Hashed(end))

    def _error(self, where: str, exc: OSError) -> None:
        reason = str(exc.strerror or exc)
        if self._put is not None:
            self._put(WriteFailed(reason) if where == "write" else HashFailed(reason))

    @property
    def error(self) -> OSError | None:  # type: ignore[override]
        return None if self.sink is None else self.sink.error

    def listen(self, put: Callable[[Any], None]) -> None:
        self._put = put

    def begin(self, info: pf.FileInfo) -> None:
        if self.sink is None:
            self.sink = self._open()

    def restart(self) -> None:
        opened = self.sink is not None
        self.close()
        self.sink = None
        self.have = 0
        try:
            os.truncate(self.part, 0)
        except FileNotFoundError:
            pass
        if opened:
            self.sink = self._open()

    def put(self, offset: int, data: Any) -> None:
        """Queue a chunk (waiting for room, a few chunks at most: credit bounds them).
        Raises OSError if an earlier write failed, :class:`~zmeet.files.TransferFailed` if
        the disk made no room for DONE_TIMEOUT_S seconds (the part keeps what was written:
        the same command resumes)."""
        assert self.sink is not None
        if self.sink.error is not None:
            raise self.sink.error
        if not self.sink.wait_room(DONE_TIMEOUT_S):
            raise TransferFailed(
                f"{self.part.name}: the disk wrote nothing for {DONE_TIMEOUT_S:g} s; "
                "run the same command again to resume")
        self.sink.put(offset, data)

    def catch_up(self) -> None:
        if self.sink is not None:
            self.sink.catch_up()

    def hexdigest(self) -> str:
        assert self.sink is not None
        return self.sink.hexdigest()

    def close(self) -> None:
        """Stop (what is queued and not written is dropped: the part stays the prefix written
        in order) and wait for the threadpool job under way."""
        if self.sink is not None:
            self.sink.stop()
            self.sink.wait_idle(DONE_TIMEOUT_S)


class _MemoryTarget(_Target):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.data = bytearray()
        self.hasher = hashlib.sha256()
        self._put: Callable[[Any], None] = lambda event: None

    def listen(self, put: Callable[[Any], None]) -> None:
        self._put = put

    def begin(self, info: pf.FileInfo) -> None:
        if info.size > self.max_bytes:
            raise FileTooLarge(f"{info.name} is {format_size(info.size)}; at most "
                               f"{format_size(self.max_bytes)} is fetched here")

    def restart(self) -> None:
        self.data.clear()
        self.hasher = hashlib.sha256()

    def put(self, offset: int, data: Any) -> None:
        assert offset == len(self.data)
        self.data += data
        self.hasher.update(data)
        self._put(Written(len(self.data)))
        self._put(Hashed(len(self.data)))

    def hexdigest(self) -> str:
        return self.hasher.hexdigest()
