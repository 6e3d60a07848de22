"""Newest-frame-wins storage and frame-loss counting (DESIGN.md, "The lanes": media).

Video on the media lane is never queued behind itself: a consumer that falls behind gets the
newest frame of each stream, and the frames it never saw are counted, not kept. A stream is
keyed by ``(sender, kind)``.

No sockets, no clock. :class:`LatestSlot` holds a lock so that a producer greenlet and a
consumer OS thread (the viewer's) may share one; every method holds it only for a few dict
operations.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LatestSlot(Generic[K, V]):
    """One item per key, the newest: :meth:`put` replaces an item nobody took yet.

    ``superseded[key]`` counts items replaced before a consumer took them (frames the consumer
    never saw because it was behind). Thread-safe: every method takes an internal lock for a
    few dict operations only, so it may be shared between the gevent hub and one OS thread.
    """

    def __init__(self) -> None:
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()
        self.superseded: Counter[K] = Counter()
        self.puts = 0

    def put(self, key: K, item: V) -> bool:
        """Store ``item`` as ``key``'s newest. Returns True if it replaced an untaken item
        (which is then dropped and counted in :attr:`superseded`)."""
        with self._lock:
            replaced = key in self._items
            self._items[key] = item
            self.puts += 1
            if replaced:
                self.superseded[key] += 1
            return replaced

    def take(self, key: K) -> V | None:
        """Remove and return ``key``'s item, or None if there is none."""
        with self._lock:
            return self._items.pop(key, None)

    def take_all(self) -> dict[K, V]:
        """Remove and return every item, as ``{key: item}`` (in the order keys were first put)."""
        with self._lock:
            items, self._items = self._items, {}
            return items

    def peek(self, key: K) -> V | None:
        """``key``'s item without removing it, or None."""
        with self._lock:
            return self._items.get(key)

    def discard(self, key: K) -> None:
        """Forget ``key``'s item (if any) without counting it as superseded."""
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def total_superseded(self) -> int:
        """Items dropped as superseded, over every key."""
        with self._lock:
            return sum(self.superseded.values())


class SeqTracker(Generic[K]):
    """Frames lost in transit, found from gaps in each stream's ``seq`` (MediaFrame.seq).

    A sender numbers each stream's sent frames 0, 1, 2, ...; the media lane never reorders (one
    TCP path through one broker), so a jump from ``s`` to ``s + 1 + n`` means ``n`` frames were
    dropped on the way (a full queue at the broker or this receiver). The first frame seen of a
    stream starts it: frames sent before this receiver subscribed are not counted as lost. A
    ``seq`` at or below the last one seen means the sender restarted its numbering (it
    reconnected): counted in :attr:`restarts`, and the stream starts again from it.
    """

    def __init__(self) -> None:
        self._last: dict[K, int] = {}
        self.received: Counter[K] = Counter()
        self.lost: Counter[K] = Counter()
        self.restarts: Counter[K] = Counter()

    def observe(self, key: K, seq: int) -> int:
        """Record that frame ``seq`` of stream ``key`` arrived. Returns how many frames of that
        stream were lost just before it (0 when it follows the last one, or starts or restarts
        the stream). Raises ValueError for a negative ``seq``."""
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        self.received[key] += 1
        last = self._last.get(key)
        self._last[key] = seq
        if last is None:
            return 0
        if seq <= last:
            self.restarts[key] += 1
            return 0
        gap = seq - last - 1
        if gap:
            self.lost[key] += gap
        return gap

    def last_seq(self, key: K) -> int | None:
        """The last ``seq`` seen of ``key``, or None."""
        return self._last.get(key)

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())
