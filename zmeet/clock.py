"""The one clock seam of zmeet (aiortc routes time through ``clock.py`` the same way).

Everything that reads the time, the broker, its services, :class:`~zmeet.client.Session`, the
media lanes, takes a :class:`Clock` (default :data:`SYSTEM_CLOCK`) instead of calling
:mod:`time` itself, so that tests can drive time by hand (:class:`ManualClock`) and the
pure state machines never read a clock at all.

Two kinds of time, never mixed:

* **wall** time: microseconds (or milliseconds) since the Unix epoch, UTC. It is what travels
  on the wire (``ts_ms`` of room events, ``capture_us`` of media frames) and what people read.
  It can jump (NTP, a user setting the clock).
* **monotonic** time: seconds from an arbitrary origin that never goes back. Time-outs,
  liveness, rates and intervals use it, and it never leaves the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "now_ms", "now_us"]


def now_us() -> int:
    """Wall time in integer microseconds since the Unix epoch (``time.time_ns() // 1000``)."""
    return time.time_ns() // 1000


def now_ms() -> int:
    """Wall time in integer milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


class Clock:
    """The system's clocks. Subclass (or use :class:`ManualClock`) to drive time in tests."""

    def wall_us(self) -> int:
        """Wall time, integer microseconds since the Unix epoch (UTC)."""
        return time.time_ns() // 1000

    def wall_ms(self) -> int:
        """Wall time, integer milliseconds since the Unix epoch (UTC)."""
        return time.time_ns() // 1_000_000

    def wall_s(self) -> float:
        """Wall time, float seconds since the Unix epoch (UTC)."""
        return time.time()  # one C call: the broker stamps every room event with it

    def monotonic_s(self) -> float:
        """Monotonic time in float seconds from an arbitrary origin (``time.monotonic``)."""
        return time.monotonic()


SYSTEM_CLOCK = Clock()
"""The clock every component uses unless it is given another."""


@dataclass
class ManualClock(Clock):
    """A clock that moves only when told: ``advance(seconds)`` moves both kinds of time.

    ``wall_us_`` and ``monotonic_s_`` are the current readings (integer microseconds since the
    epoch, float seconds from any origin)."""

    wall_us_: int = 1_700_000_000_000_000
    monotonic_s_: float = 1000.0

    def wall_us(self) -> int:
        return self.wall_us_

    def wall_ms(self) -> int:
        return self.wall_us_ // 1000

    def wall_s(self) -> float:
        return self.wall_us_ / 1e6

    def monotonic_s(self) -> float:
        return self.monotonic_s_

    def advance(self, seconds: float) -> None:
        """Move wall and monotonic time forward by ``seconds`` (>= 0; ValueError otherwise)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.wall_us_ += round(seconds * 1e6)
        self.monotonic_s_ += seconds
