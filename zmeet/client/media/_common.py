"""What the publisher, the subscriber and the meeting share: the media kinds they handle, how
long stopping waits, and :class:`Progress`, the cooperative wait of their ``wait_until``."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent.event

STOP_TIMEOUT_S = 5.0
"""How long stopping waits for a greenlet (and the recorder to write what it holds)."""

PUBLISHED_KINDS = ("video", "screen")
"""Kinds a capture source is published as (audio has its own lane logic)."""

VIEW_KINDS = ("video", "thumb", "screen")
"""Kinds shown in the gallery: ``thumb`` in the tile of its sender's ``video``."""

THUMB_WIDTH = 320
"""Width in pixels of a video's thumbnail, simulcast's low layer (Jitsi's lowest is 320x180)."""

Key = tuple[str, str]
"""``(sender, kind)`` of a stream."""


class Progress:
    """Something that moves on (frames sent, received, recorded): :meth:`notify` on each step,
    :meth:`wait_until` re-checks a predicate after each, cooperatively.

    The time-out is real time (``time.monotonic``), like gevent's own waits: it bounds how long
    a greenlet parks, whatever clock the media timestamps come from."""

    def __init__(self) -> None:
        self._event = gevent.event.Event()

    def notify(self) -> None:
        event, self._event = self._event, gevent.event.Event()
        event.set()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float,
                   ended: Callable[[], bool]) -> bool:
        """Wait until ``predicate()`` is true, for at most ``timeout_s``, or until ``ended()``.
        Returns the predicate's last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = self._event
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or ended():
                return bool(predicate())
            event.wait(remaining)
