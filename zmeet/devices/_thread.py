"""One OS thread per device, driven from greenlets (DESIGN.md, "Rules of the gevent hub")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent.threadpool import ThreadPool

log = logging.getLogger("zmeet.devices")

T = TypeVar("T")

CLOSE_TIMEOUT_S = 5.0
"""How long closing waits for the device's thread to finish its current call."""


class DeviceThread:
    """A gevent ``ThreadPool(1)``: every call runs in the same OS thread, one at a time, while
    the calling greenlet waits cooperatively (the hub keeps serving other greenlets).

    The same thread always drives the device, which some drivers need (a V4L camera, an X
    connection held by ``mss``). Create it in the thread whose hub will wait on it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPool | None = ThreadPool(1)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the device's thread and return its result; an exception it
        raises is raised here. Raises RuntimeError if the thread was closed."""
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"{self.name}: its thread is closed")
        return pool.apply(fn, args)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the thread once its current call returns, waiting at most ``timeout_s``
        (a driver stuck in a call is left to finish on its own). Idempotent."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            with gevent.Timeout(timeout_s):
                pool.kill()
        except gevent.Timeout:
            log.warning("%s: its thread did not stop within %g s", self.name, timeout_s)

    @property
    def closed(self) -> bool:
        return self._pool is None
