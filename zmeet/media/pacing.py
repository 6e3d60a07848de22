"""Frame pacing and rate measurement on an injected clock (STYLE.md: aiortc's ``clock.py``).

``clock`` is any callable returning seconds as a float that never goes backwards
(``time.monotonic`` in production, a fake in tests).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds, monotonic (``time.monotonic``)."""


class Pacer:
    """Capture deadlines at ``fps`` frames per second on ``clock``.

    The first deadline is the moment of the first call; deadline ``k`` is ``t0 + k / fps``, so
    a capture that takes a little longer does not make the rate drift. A loop that falls more
    than one interval behind never bursts to catch up: the schedule restarts from now and the
    deadlines it jumped over are counted in :attr:`skipped` (newest frame wins, at the sender
    too).

    Raises ValueError for an ``fps`` that is not a finite number above 0.
    """

    def __init__(self, fps: float, clock: Clock) -> None:
        if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a finite number above 0, got {fps!r}")
        self.fps = float(fps)
        self.interval_s = 1.0 / self.fps
        self.clock = clock
        self.skipped = 0
        self._next_s: float | None = None

    def next_deadline(self) -> float:
        """The clock time (seconds) of the next capture; each call moves on one interval."""
        return self._advance(self.clock())

    def _advance(self, now: float) -> float:
        if self._next_s is None:
            self._next_s = now
            return now
        self._next_s += self.interval_s
        behind_s = now - self._next_s
        if behind_s > self.interval_s:
            self.skipped += int(behind_s / self.interval_s)
            self._next_s = now
        return self._next_s

    def delay_s(self) -> float:
        """Seconds to wait from now until the next deadline (0.0 if it is already due); each
        call moves on one interval, like :meth:`next_deadline`."""
        now = self.clock()
        return max(0.0, self._advance(now) - now)


class FpsMeter:
    """Frames per second over the last ``window_s`` seconds, and over the whole run.

    Call :meth:`tick` once per frame. :meth:`fps` is ``(n - 1) / (t_last - t_first)`` over the
    ticks in the window ending now (0.0 with fewer than two, so a stream that stopped decays to
    0 after ``window_s``); :meth:`mean_fps` the same over every tick since the first. Memory is
    bounded by ``max_ticks``.
    """

    def __init__(self, clock: Clock, window_s: float = 2.0, max_ticks: int = 1024) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be above 0, got {window_s!r}")
        self.clock = clock
        self.window_s = window_s
        self.count = 0
        self.first_s: float | None = None
        self.last_s: float | None = None
        self._ticks: deque[float] = deque(maxlen=max_ticks)

    def tick(self, now_s: float | None = None) -> None:
        """Count one frame at ``now_s`` (default: the clock's now)."""
        now = self.clock() if now_s is None else now_s
        self.count += 1
        if self.first_s is None:
            self.first_s = now
        self.last_s = now
        self._ticks.append(now)

    def fps(self) -> float:
        """Frames per second in the last ``window_s`` seconds."""
        horizon = self.clock() - self.window_s
        ticks = self._ticks
        while ticks and ticks[0] < horizon:
            ticks.popleft()
        if len(ticks) < 2 or ticks[-1] <= ticks[0]:
            return 0.0
        return (len(ticks) - 1) / (ticks[-1] - ticks[0])

    def mean_fps(self) -> float:
        """Frames per second from the first tick to the last."""
        if self.first_s is None or self.last_s is None or self.last_s <= self.first_s:
            return 0.0
        return (self.count - 1) / (self.last_s - self.first_s)
