"""Chunking and credit accounting for file transfers (docs/protocol.md, "Files", "Flow control").

After the ZeroMQ Guide's ``fileio3`` (chapter 7): the receiving side gives credit, the sending
side never has more chunks in flight than that. These classes only count; the drivers in
:mod:`zmeet.client.files` and :mod:`zmeet.broker.files` send and wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..errors import RemoteProtocolError


def chunk_spans(size: int, chunk_bytes: int, start: int = 0) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of each chunk of a ``size``-octet file from ``start``: every chunk
    ``chunk_bytes`` long but the last. A file of 0 octets (or ``start == size``) has none.

    Raises ValueError for ``chunk_bytes < 1`` or ``start`` outside ``0..size``.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    if not 0 <= start <= size:
        raise ValueError(f"start {start} is outside 0..{size}")
    offset = start
    while offset < size:
        length = min(chunk_bytes, size - offset)
        yield offset, length
        offset += length


class UploadWindow:
    """The sender's side of an upload: at most ``window`` chunks without their ack.

    Call :meth:`sent` for each chunk sent (in offset order) and :meth:`acked` with each ack's
    ``received`` (in the same order: acks come back in order on one DEALER). :attr:`confirmed`
    is the octets the receiver has confirmed.
    """

    def __init__(self, window: int, start: int = 0) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.confirmed = start
        self._next = start
        self._in_flight: deque[tuple[int, int]] = deque()

    @property
    def in_flight(self) -> int:
        """Chunks sent and not yet acked."""
        return len(self._in_flight)

    def can_send(self) -> bool:
        return len(self._in_flight) < self.window

    def sent(self, offset: int, length: int) -> None:
        """Chunk ``(offset, length)`` went out. Raises ValueError if the window is full or the
        chunk does not follow the previous one."""
        if not self.can_send():
            raise ValueError("the window is full: wait for an ack")
        if offset != self._next or length < 1:
            raise ValueError(f"chunk at {offset} does not follow the one before ({self._next})")
        self._in_flight.append((offset, length))
        self._next = offset + length

    def acked(self, received: int) -> None:
        """The oldest chunk in flight is acked with ``received`` octets in order on the other
        side. Raises :class:`RemoteProtocolError` if that is not the end of that chunk."""
        if not self._in_flight:
            raise RemoteProtocolError(f"an ack ({received}) for no chunk in flight")
        offset, length = self._in_flight.popleft()
        if received != offset + length:
            raise RemoteProtocolError(
                f"the broker acked {received} octets, expected {offset + length}"
            )
        self.confirmed = received


class DownloadCredit:
    """The receiver's side of a download: what credit to give back, and which offset is next.

    ``credit`` chunks were granted with FILE-GET. Each chunk written is one credit spent; once
    ``batch`` of them (default half the credit) were written, :meth:`written` returns that
    many to grant again with FILE-CREDIT, so the sender always has work while the receiver
    never holds more than ``credit`` chunks.
    """

    def __init__(self, credit: int, offset: int, size: int, batch: int | None = None) -> None:
        if credit < 1:
            raise ValueError(f"credit must be at least 1, got {credit}")
        self.credit = credit
        self.batch = max(1, batch if batch is not None else credit // 2)
        self.offset = offset
        self.size = size
        self._spent = 0

    @property
    def done(self) -> bool:
        return self.offset >= self.size

    def check(self, offset: int, length: int) -> None:
        """Raise :class:`RemoteProtocolError` unless a chunk at ``offset`` of ``length`` octets
        is the next one (in order, not empty, not past the end)."""
        if offset != self.offset:
            raise RemoteProtocolError(f"chunk at {offset}, expected {self.offset}")
        if length < 1 or offset + length > self.size:
            raise RemoteProtocolError(
                f"chunk of {length} octets at {offset} does not fit a file of {self.size}"
            )

    def written(self, length: int) -> int:
        """The next chunk (``length`` octets) is written. Returns the credit to give back now
        (0 most of the time)."""
        self.offset += length
        self._spent += 1
        if self._spent >= self.batch and not self.done:
            grant, self._spent = self._spent, 0
            return grant
        return 0
