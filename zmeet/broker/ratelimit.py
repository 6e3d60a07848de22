"""Flood limits: token buckets per identity and request class, with no I/O (docs/protocol.md,
"Rate limits"; DESIGN.md, "Trust").

A :class:`TokenBucket` holds at most ``burst`` tokens and gains ``count`` tokens every
``period_ms``; each request takes one, and a request that finds none is refused with the exact
time after which it would be admitted. It is the generic cell rate algorithm (GCRA, ITU-T
I.371, the "virtual scheduling" form) on integers: one number, the theoretical arrival time,
in units of ``1 / count`` microseconds, so that no rounding ever accumulates (no drift).

:class:`RateLimiter` is the broker's table of buckets, one per ``(request class, identity)``,
the identity an opaque hashable the broker core passes in (today a session's nick, or the
routing id of a HELLO; a CURVE public key and the peer address when keys name people). The
table is bounded (:data:`MAX_RATE_BUCKETS`): the least recently used buckets are forgotten
first, and a bucket that has refilled to ``burst`` is dropped when it reaches the old end,
since a full bucket is the same as none.

Time is the injected clock's ``monotonic_s`` (:mod:`zmeet.clock`), read once per check and
turned into integer microseconds.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from .. import protocol as p
from ..clock import Clock
from ..protocol import files as pf
from ..protocol import games as pg

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "MAX_RATE_BUCKETS",
    "REQUEST_CLASSES",
    "Rate",
    "RateLimiter",
    "TokenBucket",
    "limits_of",
    "parse_rate",
]

MAX_RATE_BUCKETS = 65_536
"""Most buckets the broker's table holds (about 150 bytes each): past it, the least recently
used bucket is forgotten (its identity starts again with a full bucket)."""

_US_PER_MS = 1000
_US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``period_ms`` milliseconds, sustained, with bursts of up to
    ``burst`` at once (the bucket's capacity). All three are positive ints; ValueError
    otherwise. ``Rate(10, 5000, 30)``: 30 at once, then 10 every 5 s (one every 500 ms)."""

    count: int
    period_ms: int
    burst: int

    def __post_init__(self) -> None:
        for name in ("count", "period_ms", "burst"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")

    def __str__(self) -> str:
        seconds = self.period_ms / 1000
        return f"{self.count}/{seconds:g}s burst {self.burst}"


REQUEST_CLASSES: dict[str, tuple[type[p.Request], ...]] = {
    "chat": (p.Say, p.SetTopic),
    "join": (p.Join, p.Leave, p.Info),
    "history": (p.History,),
    "files": (pf.FilePut, pf.FileGet, pf.FileList, pf.FileCancel),
    "games": (pg.Challenge, pg.Accept, pg.Decline, pg.MakeMove, pg.Resign, pg.Claim,
              pg.Rematch, pg.Watch, pg.ListGames, pg.GameHistory),
    "hello": (p.Hello,),
}
"""Which requests each bucket class counts. Not counted: PING and BYE (a session's own
liveness and end), and a transfer's FILE-DATA, FILE-DONE and FILE-CREDIT, which the files
service bounds by its transfer window and upload limits; a bucket per transfer request
would cap a file's throughput, not the broker's work."""

DEFAULT_RATE_LIMITS: dict[str, Rate] = {
    "chat": Rate(10, 5_000, 30),
    "join": Rate(20, 10_000, 80),
    "history": Rate(50, 10_000, 100),
    "files": Rate(10, 10_000, 30),
    "games": Rate(20, 5_000, 60),
    "hello": Rate(60, 10_000, 120),
}
"""The broker's default limits, per identity.

- chat: a person pasting 30 lines at once is served; past that, 2 lines a second (a bot
  flooding 50,000 is refused after its first 30 and then gets 2 a second).
- join: 80 at once, so that a client reconnecting rejoins all its MAX_ROOMS_PER_SESSION (64)
  rooms; then 2 a second.
- history: gap fills after a reconnect; 100 at once, then 5 a second.
- files: 30 offers or downloads at once, then 1 a second.
- games: 60 at once (a game's moves, challenges, lists), then 4 a second.
- hello: counted per peer address (a classroom behind one NAT address shares it): 120
  HELLOs at once, so that a whole lab can connect or reconnect after a broker restart, then 6
  a second. New keys cost nothing to make; an address does: this is what bounds how fast one
  machine can open sessions or try nicks."""


class TokenBucket:
    """One token bucket (GCRA): ``rate.burst`` tokens at most, ``rate.count`` more every
    ``rate.period_ms``; starts full.

    Times are integer microseconds of a monotonic clock (``now_us``); the state is one int,
    ``tat``, the theoretical arrival time in units of ``1 / rate.count`` microseconds, so every
    step is exact integer arithmetic. In any window of ``t`` microseconds it admits at most
    ``burst + floor(t * count / (period_ms * 1000))`` requests.
    """

    __slots__ = ("_interval", "_tolerance", "_scale", "tat")

    def __init__(self, rate: Rate, now_us: int) -> None:
        self._scale = rate.count
        self._interval = rate.period_ms * _US_PER_MS  # one token, in units of 1/count µs
        self._tolerance = (rate.burst - 1) * self._interval
        self.tat = now_us * self._scale

    def take(self, now_us: int) -> int:
        """Take a token at ``now_us``: 0 if admitted, else the microseconds (> 0) after
        which a token is there. A refused request takes nothing."""
        now = now_us * self._scale
        tat = max(self.tat, now)
        wait = tat - now - self._tolerance
        if wait > 0:
            return -(-wait // self._scale)  # ceil: at now_us + that, take() admits
        self.tat = tat + self._interval
        return 0

    def is_full(self, now_us: int) -> bool:
        """Whether the bucket holds ``burst`` tokens at ``now_us`` (the same as no bucket)."""
        return self.tat <= now_us * self._scale

    def tokens(self, now_us: int) -> int:
        """Whole tokens the bucket holds at ``now_us`` (0 to ``burst``)."""
        now = now_us * self._scale
        spare = self._tolerance + self._interval - max(self.tat - now, 0)
        return max(spare, 0) // self._interval


class RateLimiter:
    """The broker's buckets: one per ``(request class, identity)`` for the classes ``limits``
    names (:data:`REQUEST_CLASSES`), at most ``max_buckets`` of them.

    ``limits`` maps a class name (``chat``, ``join``, ``history``, ``files``, ``games``,
    ``hello``) to its :class:`Rate`; a class it leaves out is not limited. ``clock`` is read
    (``monotonic_s``) once per :meth:`check`. Raises ValueError for a class name it does not
    know.
    """

    def __init__(self, limits: Mapping[str, Rate], clock: Clock,
                 max_buckets: int = MAX_RATE_BUCKETS) -> None:
        unknown = set(limits) - set(REQUEST_CLASSES)
        if unknown:
            raise ValueError(f"no request class {', '.join(sorted(unknown))}: "
                             f"choose from {', '.join(REQUEST_CLASSES)}")
        self.limits = dict(limits)
        self.clock = clock
        self.max_buckets = max_buckets
        self._class_of: dict[type, str] = {
            cls: name for name, classes in REQUEST_CLASSES.items() if name in limits
            for cls in classes
        }
        self._buckets: OrderedDict[tuple[str, Hashable], TokenBucket] = OrderedDict()
        self._reasons = {cls: f"rate limited: {name} requests at most {self.limits[name]}"
                         for cls, name in self._class_of.items()}
        self.refused = 0
        """Requests refused so far."""

    def class_of(self, request_type: type) -> str | None:
        """The bucket class that counts ``request_type``, or None if it is not limited."""
        return self._class_of.get(request_type)

    def reason(self, request_type: type) -> str:
        """ERROR RATE_LIMITED's reason for ``request_type``: its class and rate, for people
        (made once: a refusal must cost little)."""
        return self._reasons.get(request_type, "rate limited")

    def check(self, request_type: type, identity: Hashable) -> int:
        """Count one request of ``request_type`` by ``identity``: 0 if admitted (or not
        limited), else the milliseconds (>= 1) after which the same request is admitted
        (ERROR RATE_LIMITED's ``retry_after_ms``). O(1)."""
        name = self._class_of.get(request_type)
        if name is None:
            return 0
        return self.take(name, identity)

    def take(self, name: str, identity: Hashable) -> int:
        """Take a token of class ``name`` for ``identity``: as :meth:`check`."""
        now_us = round(self.clock.monotonic_s() * _US_PER_S)
        key = (name, identity)
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(self.limits[name], now_us)
            self._trim(now_us)
        else:
            buckets.move_to_end(key)
        wait_us = bucket.take(now_us)
        if wait_us == 0:
            return 0
        self.refused += 1
        return -(-wait_us // _US_PER_MS)

    def _trim(self, now_us: int) -> None:
        """Forget the least recently used buckets past ``max_buckets``, and up to two more
        at the old end that are full again (amortised O(1) per new bucket)."""
        buckets = self._buckets
        while len(buckets) > self.max_buckets:
            buckets.popitem(last=False)
        for _ in range(2):
            if len(buckets) <= 1:
                break
            key, oldest = next(iter(buckets.items()))
            if not oldest.is_full(now_us):
                break
            del buckets[key]

    def __len__(self) -> int:
        """Buckets held now."""
        return len(self._buckets)

    def advertised(self) -> dict[str, int]:
        """The limits as WELCOME.limits entries: ``rate_<class>_count``,
        ``rate_<class>_period_ms`` and ``rate_<class>_burst`` for each limited class
        (docs/protocol.md, "Rate limits")."""
        return limits_of(self.limits)


def limits_of(limits: Mapping[str, Rate]) -> dict[str, int]:
    """WELCOME.limits entries for ``limits`` (see :meth:`RateLimiter.advertised`)."""
    out: dict[str, int] = {}
    for name, rate in limits.items():
        out[f"rate_{name}_count"] = rate.count
        out[f"rate_{name}_period_ms"] = rate.period_ms
        out[f"rate_{name}_burst"] = rate.burst
    return out


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*(?::\s*(\d+))?\s*$")


def parse_rate(text: str) -> Rate:
    """A :class:`Rate` from ``COUNT/PERIOD[:BURST]``, the period in seconds (``10/5``,
    ``10/0.5``) or with a unit (``10/500ms``, ``10/5s``); the burst defaults to ``COUNT``.
    Raises ValueError for anything else."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not COUNT/SECONDS[:BURST] (e.g. 10/5:30)")
    count, period, unit, burst = match.groups()
    period_ms = float(period) if unit == "ms" else float(period) * 1000
    if period_ms != int(period_ms):
        raise ValueError(f"{text!r}: the period must be whole milliseconds")
    return Rate(int(count), int(period_ms), int(burst) if burst else int(count))
