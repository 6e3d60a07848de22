"""Sans-IO state machines of file transfers (docs/protocol.md 3.15), in h11's style.

No gevent, no zmq, no clock: a driver feeds events in with :meth:`handle` and carries out the
effects it returns, in order. Both machines count octets only; the octets themselves go from
the driver to a :class:`zmeet.files.sink.FileSink`, whose progress comes back as
:class:`Written`, :class:`Hashed` and :class:`WriteFailed` / :class:`HashFailed` events.

* :class:`Upload` is one owner's upload as the broker sees it, from FILE-READY to FILE-SHARED
  (or an ERROR): FILE-DATA in order with the FILE-ACKs held back while the write queue is full
  (in their order), FILE-DONE answered once every chunk is written and the hash (a resumed
  upload's catch-up included) has reached the end, then checked against the SHA-256.
* :class:`Download` is a download as the client sees it: FILE-GET from the octets it has,
  chunks in order, credit given back as chunks are written (fileio3), asked again from where
  it is after a stall or a gap, then the SHA-256 of the whole file checked.

Events and effects are frozen dataclasses. ``token`` fields are opaque to the machine (the
driver's handle on a request to answer: a pending reply, a request id).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..errors import RemoteProtocolError
from ..protocol.codes import ErrorCode

__all__ = [
    "Ack", "Ask", "Aborted", "CatchUp", "Cancel", "ChunkReceived", "DataReceived", "Deliver",
    "Discard", "DoneAsked", "Download", "DownloadState", "Fail", "GiveCredit", "HashFailed",
    "Hashed", "Refuse", "Reject", "Restart", "Share", "Stalled", "StreamOpened",
    "StreamRefused", "Upload", "UploadState", "Verified", "Verify", "Write", "WriteFailed",
    "Written",
]


# --- events both machines take ----------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """The sink has written the file up to octet ``end`` (in order from 0)."""

    end: int


@dataclass(frozen=True)
class Hashed:
    """The hasher has had the file's octets up to ``end``."""

    end: int


@dataclass(frozen=True)
class WriteFailed:
    """A write failed (disk full, I/O error): ``reason`` for people."""

    reason: str


@dataclass(frozen=True)
class HashFailed:
    """The file could not be read back to hash it (cut short, gone): ``reason`` for people."""

    reason: str


@dataclass(frozen=True)
class Verified:
    """The driver's answer to :class:`Verify`: the hex SHA-256 of the whole file."""

    sha256: str


# --- effects both machines give ---------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """Give the chunk of ``length`` octets at ``offset`` (the one just received) to the sink."""

    offset: int
    length: int


@dataclass(frozen=True)
class CatchUp:
    """Hash from the disk what the file has beyond the hash (a resumed transfer), unless a
    catch-up runs or the hash is level with the disk (it may come more than once)."""


@dataclass(frozen=True)
class Verify:
    """Every octet is written and hashed: answer with :class:`Verified`."""


# --- upload (the broker's side) ---------------------------------------------------------------


class UploadState(enum.Enum):
    """States of :class:`Upload`.

    ``RECEIVING`` -(FILE-DONE)-> ``FINISHING`` -(digest matches)-> ``VERIFIED``;
    ``FINISHING`` -(not all octets sent)-> ``RECEIVING``; ``STORED`` (the content was stored
    before) -(FILE-DONE)-> ``VERIFIED``; any but ``VERIFIED`` -(write or hash failure, digest
    mismatch)-> ``FAILED``.
    """

    RECEIVING = "receiving"
    FINISHING = "finishing"
    STORED = "stored"
    VERIFIED = "verified"
    FAILED = "failed"


@dataclass(frozen=True)
class DataReceived:
    """FILE-DATA: ``length`` octets at ``offset``, to be answered through ``token``."""

    token: Any
    offset: int
    length: int


@dataclass(frozen=True)
class DoneAsked:
    """FILE-DONE, to be answered through ``token``."""

    token: Any


@dataclass(frozen=True)
class Ack:
    """Reply FILE-ACK with ``received`` octets to ``token``."""

    token: Any
    received: int


@dataclass(frozen=True)
class Refuse:
    """Reply ERROR ``code`` (an :class:`~zmeet.protocol.ErrorCode`) with ``reason`` to
    ``token``."""

    token: Any
    code: int
    reason: str


@dataclass(frozen=True)
class Share:
    """The content matched its SHA-256: store it, announce it, reply FILE-SHARED to ``token``."""

    token: Any


@dataclass(frozen=True)
class Discard:
    """The partial is worth nothing (lost, or not this content): delete it, forget the upload."""


class Upload:
    """One owner's upload of ``size`` octets with SHA-256 ``sha256`` (docs/protocol.md 3.15.2).

    ``received`` octets are already in the partial (a resume: FILE-READY's ``offset``), of
    which the first ``hashed`` are hashed; ``stored`` says the content is stored already
    (nothing to send). At most ``queue_chunks`` accepted chunks wait for the disk with their
    FILE-ACK sent; the FILE-ACKs of chunks beyond that are held back, in order, until writes
    make room, and at most ``window`` of them (FILE-READY's window: a client that sends more
    gets ERROR 429).

    :attr:`accepted` is the octets accepted in order (what FILE-ACK says), :attr:`written` and
    :attr:`hashed` what the sink has done, :attr:`failure` ``(code, reason)`` once FAILED.
    """

    def __init__(self, size: int, sha256: str, *, received: int = 0, hashed: int = 0,
                 stored: bool = False, queue_chunks: int = 8, window: int = 8) -> None:
        if not 0 <= hashed <= received <= size:
            raise ValueError(f"need 0 <= hashed ({hashed}) <= received ({received}) <= size "
                             f"({size})")
        self.size = size
        self.sha256 = sha256
        self.state = UploadState.STORED if stored else UploadState.RECEIVING
        self.accepted = self.written = received
        self.hashed = size if stored else hashed
        self.queue_chunks = queue_chunks
        self.window = window
        self.failure: tuple[int, str] | None = None
        self._lost = False  # FAILED because the partial is worth nothing: discard it
        self._unwritten: deque[int] = deque()  # ends of accepted chunks not yet written
        self._held: deque[tuple[Any, int]] = deque()  # (token, end): FILE-ACKs not yet sent
        self._done: Any = None  # the FILE-DONE being answered

    @property
    def waiting(self) -> int:
        """Replies held back: FILE-ACKs, and FILE-DONE while FINISHING."""
        return len(self._held) + (self._done is not None)

    def handle(self, event: Any) -> list[Any]:
        """Feed one event; returns the effects to carry out, in order. Raises TypeError for
        an event this machine does not know (a bug in the driver)."""
        if isinstance(event, DataReceived):
            return self._data(event)
        if isinstance(event, DoneAsked):
            return self._done_asked(event)
        if isinstance(event, Written):
            while self._unwritten and self._unwritten[0] <= event.end:
                self._unwritten.popleft()
            self.written = max(self.written, event.end)
            return self._release_acks() + self._finish()
        if isinstance(event, Hashed):
            self.hashed = max(self.hashed, event.end)
            return self._finish(catch_up=False)
        if isinstance(event, WriteFailed):
            return self._fail(ErrorCode.INTERNAL_ERROR,
                              f"the broker could not store the file: {event.reason}")
        if isinstance(event, HashFailed):
            return self._fail(ErrorCode.BAD_REQUEST, "the partial upload was lost: start again",
                              lost=True)
        if isinstance(event, Verified):
            return self._verified(event)
        raise TypeError(f"not an upload event: {event!r}")

    def _data(self, ev: DataReceived) -> list[Any]:
        if self.state is UploadState.FAILED:
            assert self.failure is not None
            code, reason = self.failure
            return [Refuse(ev.token, code, reason)] + ([Discard()] if self._lost else [])
        if self.state is UploadState.FINISHING:
            return [Refuse(ev.token, ErrorCode.BAD_REQUEST, "FILE-DONE was asked already")]
        if ev.length == 0:
            return [Refuse(ev.token, ErrorCode.BAD_REQUEST, "empty chunk")]
        if ev.offset != self.accepted:
            return [Refuse(ev.token, ErrorCode.BAD_REQUEST,
                           f"chunk at offset {ev.offset}, expected {self.accepted}")]
        end = ev.offset + ev.length
        if end > self.size:
            return [Refuse(ev.token, ErrorCode.BAD_REQUEST,
                           f"chunk ends at {end}, past the size {self.size}")]
        if len(self._held) >= self.window:
            return [Refuse(ev.token, ErrorCode.TOO_MANY,
                           f"more than {self.window} FILE-DATA without their FILE-ACK")]
        self.accepted = end
        self._unwritten.append(end)
        self._held.append((ev.token, end))
        return [Write(ev.offset, ev.length), *self._release_acks()]

    def _release_acks(self) -> list[Any]:
        """FILE-ACKs of held chunks that now fit in the write queue, oldest first."""
        out: list[Any] = []
        while self._held:
            token, end = self._held[0]
            ahead = sum(1 for e in self._unwritten if e < end)  # unwritten chunks before it
            if ahead >= self.queue_chunks:
                break
            self._held.popleft()
            out.append(Ack(token, end))
        return out

    def _done_asked(self, ev: DoneAsked) -> list[Any]:
        if self.state is UploadState.STORED:
            self.state = UploadState.VERIFIED
            return [Share(ev.token)]
        if self.state is UploadState.FAILED:
            assert self.failure is not None
            if self._lost:
                return [Refuse(ev.token, ErrorCode.BAD_REQUEST, self._mismatch()), Discard()]
            return [Refuse(ev.token, *self.failure)]
        if self.state is not UploadState.RECEIVING:
            return [Refuse(ev.token, ErrorCode.BAD_REQUEST, "FILE-DONE was asked already")]
        self.state = UploadState.FINISHING
        self._done = ev.token
        return self._finish()

    def _finish(self, *, catch_up: bool = True) -> list[Any]:
        """FINISHING: once everything is written, refuse an incomplete upload, else catch the
        hash up (``catch_up``: once all is written, and again after each write) and ask to
        verify once it reaches the end."""
        if self.state is not UploadState.FINISHING or self.written < self.accepted:
            return []
        if self.written < self.size:
            token, self._done = self._done, None
            self.state = UploadState.RECEIVING
            return [Refuse(token, ErrorCode.BAD_REQUEST,
                           f"{self.written} of {self.size} octets received: send the rest first")]
        if self.hashed < self.size:
            return [CatchUp()] if catch_up else []
        return [Verify()]

    def _verified(self, ev: Verified) -> list[Any]:
        if self.state is not UploadState.FINISHING or self.hashed < self.size:
            raise TypeError("Verified without Verify")
        token, self._done = self._done, None
        if ev.sha256 == self.sha256:
            self.state = UploadState.VERIFIED
            return [Share(token)]
        self.state = UploadState.FAILED
        self.failure = (ErrorCode.BAD_REQUEST, self._mismatch())
        self._lost = True
        return [Refuse(token, ErrorCode.BAD_REQUEST, self._mismatch()), Discard()]

    def _mismatch(self) -> str:
        return (f"the data received does not match sha256 {self.sha256[:16]}...: nothing was "
                "stored; upload it again")

    def _fail(self, code: int, reason: str, *, lost: bool = False) -> list[Any]:
        if self.state in (UploadState.VERIFIED, UploadState.FAILED):
            return []
        self.state = UploadState.FAILED
        self.failure = (code, reason)
        self._lost = lost
        out: list[Any] = [Refuse(token, code, reason) for token, _ in self._held]
        self._held.clear()
        self._unwritten.clear()
        self.accepted = self.written
        if self._done is not None:
            token, self._done = self._done, None
            out.append(Refuse(token, ErrorCode.BAD_REQUEST, self._mismatch()) if lost
                       else Refuse(token, code, reason))
            if lost:
                out.append(Discard())
        return out

    def release(self) -> list[Any]:
        """The owner is gone or cancelled and the driver keeps the upload for a resume, its
        queued chunks still to be written (it closes the sink after its queue): the held
        FILE-ACKs are sent, a FILE-DONE being answered is refused (404). A driver that drops
        the queue calls :meth:`abort` instead."""
        out: list[Any] = [Ack(token, end) for token, end in self._held]
        self._held.clear()
        if self._done is not None:
            token, self._done = self._done, None
            self.state = UploadState.RECEIVING
            out.append(Refuse(token, ErrorCode.NOT_FOUND, "the upload was cancelled"))
        return out


    def abort(self, code: int, reason: str) -> list[Any]:
        """The driver drops the upload (its queued chunks are not written) or hit a fault:
        every reply held back, the FILE-ACKs and a FILE-DONE being answered, is refused
        ``code`` (an :class:`~zmeet.protocol.ErrorCode`) with ``reason``, so that no FILE-ACK
        claims a chunk that was dropped. The machine is FAILED (unless VERIFIED) and refuses
        what comes after."""
        out: list[Any] = [Refuse(token, code, reason) for token, _ in self._held]
        self._held.clear()
        self._unwritten.clear()
        if self._done is not None:
            out.append(Refuse(self._done, code, reason))
            self._done = None
        if self.state is not UploadState.VERIFIED:
            self.state = UploadState.FAILED
            self.failure = (code, reason)
            self.accepted = self.written
        return out


# --- download (the client's side) -------------------------------------------------------------


class DownloadState(enum.Enum):
    """States of :class:`Download`.

    ``ASKING`` -(FILE-STREAM)-> ``RECEIVING`` -(all written and hashed)-> ``VERIFYING``
    -(digest matches)-> ``DONE``; ``RECEIVING`` -(a stall or a gap, attempts left)-> ``ASKING``;
    ``ASKING`` -(refused 400 at an offset above 0)-> ``ASKING`` from 0; any -(refused,
    FILE-ABORT, no attempts left, a write failed, digest mismatch)-> ``FAILED``.
    """

    ASKING = "asking"
    RECEIVING = "receiving"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class StreamOpened:
    """FILE-STREAM: ``download`` id, the file's ``size`` and the ``offset`` chunks start at."""

    download: str
    size: int
    offset: int


@dataclass(frozen=True)
class StreamRefused:
    """FILE-GET answered ERROR ``code``."""

    code: int
    reason: str


@dataclass(frozen=True)
class ChunkReceived:
    """FILE-CHUNK of ``download``: ``length`` octets at ``offset``."""

    download: str
    offset: int
    length: int


@dataclass(frozen=True)
class Stalled:
    """No chunk came for the driver's chunk time-out: ``reason`` for people."""

    reason: str = "the broker stopped sending"


@dataclass(frozen=True)
class Aborted:
    """FILE-ABORT of ``download``: ``reason`` for people."""

    download: str
    reason: str


@dataclass(frozen=True)
class Ask:
    """Send FILE-GET from ``offset`` (with the download's credit)."""

    offset: int


@dataclass(frozen=True)
class Restart:
    """The part is not this file's: cut it to 0 and start the hash over."""


@dataclass(frozen=True)
class GiveCredit:
    """Send FILE-CREDIT ``credit`` for ``download``."""

    download: str
    credit: int


@dataclass(frozen=True)
class Cancel:
    """Send FILE-CANCEL for ``download`` (quietly: its answer does not matter)."""

    download: str


@dataclass(frozen=True)
class Deliver:
    """The file matched its SHA-256: move it to its safe name."""


@dataclass(frozen=True)
class Reject:
    """The file does not match its SHA-256: set the part aside, fail (IntegrityError)."""


@dataclass(frozen=True)
class Fail:
    """The download failed: ``kind`` is ``refused`` (``code``: raise Refused),
    ``stopped`` (the broker stopped sending: TransferFailed, resumable), ``aborted``
    (FILE-ABORT) or ``io`` (a write failed)."""

    kind: str
    reason: str
    code: int = 0


class Download:
    """A download of a file, ``have`` octets of which are already in the part (written and
    ``hashed`` of them hashed), asking ``credit`` chunks at a time, ``attempts`` FILE-GETs at
    most (docs/protocol.md 3.15.3). Credit is given back in batches of ``credit // 2`` chunks
    as chunks are written (:class:`Written`), never for chunks of an earlier FILE-GET.

    :attr:`offset` is the octets received in order (FILE-GET asks from there), :attr:`size`
    the file's (known once FILE-STREAM came), :attr:`stream` the current download id,
    :attr:`expected_sha256` the file's SHA-256 (the driver sets it from FILE-STREAM's
    FileInfo; :class:`Verified` is checked against it).
    """

    def __init__(self, have: int = 0, *, hashed: int = 0, credit: int = 16,
                 attempts: int = 3, sha256: str | None = None) -> None:
        if credit < 1 or attempts < 1 or not 0 <= hashed <= have:
            raise ValueError("need credit >= 1, attempts >= 1, 0 <= hashed <= have")
        self.state = DownloadState.ASKING
        self.offset = self.written = have
        self.hashed = hashed
        self.size: int | None = None
        self.credit = credit
        self.batch = max(1, credit // 2)
        self.attempts = attempts
        self.asked = 0  # FILE-GETs made
        self.stream = ""
        self.expected_sha256 = sha256
        self.last_error = ""
        self._spent = 0
        self._unwritten: deque[tuple[int, str]] = deque()  # (end, download) not yet written

    def start(self) -> list[Any]:
        """The first effect: FILE-GET from the octets the part has."""
        self.asked = 1
        return [Ask(self.offset)]

    def handle(self, event: Any) -> list[Any]:
        """Feed one event; returns the effects to carry out, in order. Raises
        :class:`~zmeet.errors.RemoteProtocolError` for a FILE-STREAM that makes no sense,
        TypeError for an event this machine does not know."""
        if isinstance(event, StreamOpened):
            return self._opened(event)
        if isinstance(event, StreamRefused):
            if self.state is not DownloadState.ASKING:
                return []
            if event.code == ErrorCode.BAD_REQUEST and self.offset > 0 and self._may_ask():
                # our part is longer than the file: not this file's
                self.offset = self.written = self.hashed = 0
                self._unwritten.clear()
                return [Restart(), Ask(0)]
            self.state = DownloadState.FAILED
            return [Fail("refused", event.reason, event.code)]
        if isinstance(event, ChunkReceived):
            return self._chunk(event)
        if isinstance(event, Written):
            return self._written(event)
        if isinstance(event, Hashed):
            self.hashed = max(self.hashed, event.end)
            return self._check_end()
        if isinstance(event, Stalled):
            if self.state is not DownloadState.RECEIVING:
                return []
            return self._again(event.reason)
        if isinstance(event, Aborted):
            if self.state is not DownloadState.RECEIVING or event.download != self.stream:
                return []
            self.state = DownloadState.FAILED
            return [Cancel(self.stream), Fail("aborted", event.reason)]
        if isinstance(event, WriteFailed | HashFailed):
            if self.state in (DownloadState.DONE, DownloadState.FAILED):
                return []
            out: list[Any] = [Cancel(self.stream)] if self.state is DownloadState.RECEIVING else []
            self.state = DownloadState.FAILED
            return [*out, Fail("io", event.reason)]
        if isinstance(event, Verified):
            if self.state is not DownloadState.VERIFYING:
                raise TypeError("Verified without Verify")
            if self.expected_sha256 is not None and event.sha256 == self.expected_sha256:
                self.state = DownloadState.DONE
                return [Deliver()]
            self.state = DownloadState.FAILED
            return [Reject()]
        raise TypeError(f"not a download event: {event!r}")

    def _may_ask(self) -> bool:
        if self.asked >= self.attempts:
            return False
        self.asked += 1
        return True

    def _opened(self, ev: StreamOpened) -> list[Any]:
        if self.state is not DownloadState.ASKING:
            return []
        if ev.offset != self.offset or ev.size < 0:
            raise RemoteProtocolError(f"FILE-STREAM from {ev.offset}, asked from {self.offset}")
        out: list[Any] = []
        if self.offset > ev.size:  # a broker that did not refuse a part longer than the file
            self.offset = self.written = self.hashed = 0
            self._unwritten.clear()
            out.append(Restart())
        first = self.size is None
        self.size = ev.size
        self.stream = ev.download
        self._spent = 0
        self.state = DownloadState.RECEIVING
        if first and self.hashed < self.written:
            out.append(CatchUp())
        return out + self._check_end()

    def _chunk(self, ev: ChunkReceived) -> list[Any]:
        if self.state is not DownloadState.RECEIVING or ev.download != self.stream:
            return []  # a late chunk of an earlier FILE-GET
        assert self.size is not None
        if ev.offset != self.offset:
            return self._again(f"chunk at {ev.offset}, expected {self.offset}")
        if ev.length < 1 or ev.offset + ev.length > self.size:
            return self._again(f"chunk of {ev.length} octets at {ev.offset} does not fit a "
                               f"file of {self.size}")
        self.offset += ev.length
        self._unwritten.append((self.offset, ev.download))
        return [Write(ev.offset, ev.length)]

    def _written(self, ev: Written) -> list[Any]:
        out: list[Any] = []
        while self._unwritten and self._unwritten[0][0] <= ev.end:
            _, download = self._unwritten.popleft()
            if download == self.stream and self.state is DownloadState.RECEIVING:
                self._spent += 1
        self.written = max(self.written, ev.end)
        if (self._spent >= self.batch and self.size is not None and self.written < self.size
                and self.state is DownloadState.RECEIVING):
            out.append(GiveCredit(self.stream, self._spent))
            self._spent = 0
        return out + self._check_end()

    def _check_end(self) -> list[Any]:
        if (self.state is not DownloadState.RECEIVING or self.size is None
                or self.written < self.size):
            return []
        if self.hashed < self.size:
            return []  # the catch-up of a resumed part still runs: Hashed comes
        self.state = DownloadState.VERIFYING
        return [Verify()]

    def _again(self, reason: str) -> list[Any]:
        """A stall or a gap: cancel, and ask again from :attr:`offset` while attempts last."""
        self.last_error = reason
        old = self.stream
        if not self._may_ask():
            self.state = DownloadState.FAILED
            return [Cancel(old), Fail("stopped", reason)]
        self.state = DownloadState.ASKING
        return [Cancel(old), Ask(self.offset)]
