"""Progress, rate and time left of a transfer; sizes for people; a rate limiter. Pure: the clock
is injected (``time.monotonic`` in the drivers, a fake in tests)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

RATE_WINDOW_S = 3.0
"""The rate is measured over about this many recent seconds."""

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def format_size(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``12`` -> ``"12 B"`` (binary units)."""
    value = float(n)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def parse_size(text: str) -> int:
    """``"4G"``, ``"4GiB"``, ``"500M"``, ``"1.5k"``, ``"1024"`` -> octets. K, M, G and T are
    binary (1024-based), with or without ``i`` and ``B``. Raises ValueError otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: use e.g. 1048576, 500M, 4G")
    number, unit, _ = match.groups()
    factor = 1024 ** ("kmgt".index(unit.lower()) + 1) if unit else 1
    return int(float(number) * factor)


class Progress:
    """Octets done of ``total``, with a rate (octets per second over about RATE_WINDOW_S) and
    the time left. ``start`` octets were done before (a resumed transfer): they count in
    :attr:`done` but not in the rate."""

    def __init__(self, total: int, *, start: int = 0, clock: Callable[[], float]) -> None:
        self.total = total
        self.start = start
        self.done = start
        self._clock = clock
        self.started_s = clock()
        self._samples: deque[tuple[float, int]] = deque([(self.started_s, start)])
        self._last_report_s: float | None = None

    def update(self, done: int) -> None:
        """Set the octets done so far."""
        self.done = done
        now = self._clock()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW_S:
            self._samples.popleft()

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self.started_s

    @property
    def rate_bps(self) -> float:
        """Octets per second lately (0.0 until some time has passed)."""
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def average_bps(self) -> float:
        """Octets per second since the start (resumed octets not counted)."""
        elapsed = self.elapsed_s
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, or None while the rate is unknown."""
        rate = self.rate_bps
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / rate if rate > 0 else None

    def due(self, interval_s: float) -> bool:
        """True at most once per ``interval_s`` (the first call included), and at the end:
        throttles progress events."""
        now = self._clock()
        if (self._last_report_s is None or now - self._last_report_s >= interval_s
                or self.done >= self.total):
            self._last_report_s = now
            return True
        return False


class RateLimiter:
    """A token bucket: :meth:`delay_s` says how long to wait before sending ``n`` more octets to
    keep to ``rate_bps`` on average (bursts up to ``burst`` octets)."""

    def __init__(self, rate_bps: float, *, burst: int, clock: Callable[[], float]) -> None:
        if rate_bps <= 0:
            raise ValueError("rate must be above 0")
        self.rate_bps = rate_bps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def delay_s(self, n: int) -> float:
        """Take ``n`` octets from the bucket; the seconds to wait before sending them."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_bps)
        self._last = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_bps
