"""The audio jitter buffer of one speaker (DESIGN.md, "The lanes": media, "a jitter buffer for
audio"), and the delay line that holds video back to play in sync with it.

Pure: no sockets, no clock but the times passed in. Frames are keyed by ``MediaFrame.seq``;
each holds one block of :data:`~zmeet.media.audio.FRAME_SAMPLES` samples.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_TARGET_FRAMES = 3
"""Frames (20 ms each) buffered before playout starts: 60 ms of jitter absorbed."""

DEFAULT_MAX_FRAMES = 10
"""Frames buffered at most (200 ms); past it the oldest are dropped so latency stays bounded."""

RESTART_GAP_FRAMES = 50
"""A ``seq`` this far below the next one expected means the sender restarted its numbering."""


@dataclass
class JitterStats:
    """Counts of one buffer: frames ``played``, ``concealed`` (a gap played as silence),
    ``late`` (arrived after their turn), ``overflow`` (dropped to keep latency bounded),
    ``rebuffers`` (playout stopped and waited for ``target_frames`` again)."""

    received: int = 0
    played: int = 0
    concealed: int = 0
    late: int = 0
    overflow: int = 0
    rebuffers: int = 0


class JitterBuffer:
    """Reorders and paces one speaker's audio blocks for playout.

    :meth:`push` stores a block (``int16`` array of shape ``(n,)``) under its ``seq`` with its
    ``capture_ts_us``; :meth:`pop`, called once per block period by the playout clock, returns
    the next block in ``seq`` order, or None while buffering or for a missing block (the
    caller plays silence: concealment). Playout starts when ``target_frames`` blocks are
    buffered; more than ``max_frames`` buffered drops the oldest down to ``target_frames``
    (the newest audio wins over a growing delay); ``target_frames * 2`` missing in a row with
    nothing buffered stops playout until ``target_frames`` are buffered again.

    :attr:`played_capture_ts_us` is the capture time of the last block :meth:`pop` returned:
    the receiver compares it to its clock to know the audio delay (for A/V sync).

    Raises ValueError for ``target_frames < 1`` or ``max_frames < target_frames``.
    """

    def __init__(
        self, target_frames: int = DEFAULT_TARGET_FRAMES, max_frames: int = DEFAULT_MAX_FRAMES
    ) -> None:
        if target_frames < 1 or max_frames < target_frames:
            raise ValueError(
                f"need 1 <= target_frames <= max_frames, got {target_frames}, {max_frames}"
            )
        self.target_frames = target_frames
        self.max_frames = max_frames
        self.stats = JitterStats()
        self.played_capture_ts_us: int | None = None
        self._frames: dict[int, tuple[int, np.ndarray]] = {}
        self._next: int | None = None
        self._playing = False
        self._missing_run = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def playing(self) -> bool:
        return self._playing

    def push(self, seq: int, capture_ts_us: int, samples: np.ndarray) -> bool:
        """Store block ``seq``. Returns False if it was dropped as late (its turn passed)."""
        self.stats.received += 1
        if self._next is not None and seq < self._next:
            if self._next - seq >= RESTART_GAP_FRAMES:  # the sender restarted its numbering
                self._frames.clear()
                self._next = None
                self._playing = False
            else:
                self.stats.late += 1
                return False
        self._frames[seq] = (capture_ts_us, samples)
        if len(self._frames) > self.max_frames:
            for old in sorted(self._frames)[: len(self._frames) - self.target_frames]:
                del self._frames[old]
                self.stats.overflow += 1
            self._next = min(self._frames)
        return True

    def pop(self) -> np.ndarray | None:
        """The next block to play, or None (still buffering, or the block is missing)."""
        if not self._playing:
            if len(self._frames) < self.target_frames:
                return None
            self._playing = True
            self._missing_run = 0
            if self._next is None or self._next < min(self._frames):
                self._next = min(self._frames)
        assert self._next is not None
        item = self._frames.pop(self._next, None)
        self._next += 1
        if item is None:
            self.stats.concealed += 1
            self._missing_run += 1
            if not self._frames and self._missing_run >= 2 * self.target_frames:
                self._playing = False
                self.stats.rebuffers += 1
            return None
        self._missing_run = 0
        self.stats.played += 1
        self.played_capture_ts_us = item[0]
        return item[1]


class DelayLine(Generic[T]):
    """Items (video frames) held until their due time; the newest due item wins.

    :meth:`push` adds an item due at ``due_s``; :meth:`pop_due` returns the newest item whose
    due time has come and drops (counts in :attr:`dropped`) the older due ones, so a receiver
    that falls behind shows the newest frame, never a backlog. At most ``max_items`` wait; past
    that the oldest is dropped. Items are expected in capture order (the media lane keeps it).

    Raises ValueError for ``max_items < 1``.
    """

    def __init__(self, max_items: int = 16) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.max_items = max_items
        self.dropped = 0
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T, due_s: float) -> None:
        self._items.append((due_s, item))
        while len(self._items) > self.max_items:
            self._items.popleft()
            self.dropped += 1

    def next_due_s(self) -> float | None:
        """Due time of the oldest waiting item, or None."""
        return self._items[0][0] if self._items else None

    def pop_due(self, now_s: float) -> T | None:
        """The newest item due at ``now_s`` (older due items are dropped), or None."""
        found: T | None = None
        have = False
        while self._items and self._items[0][0] <= now_s:
            if have:
                self.dropped += 1
            found = self._items.popleft()[1]
            have = True
        return found

    def clear(self) -> None:
        self._items.clear()
