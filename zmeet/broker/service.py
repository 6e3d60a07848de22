"""Features of the broker beyond chat (games, files) plug in as services.

A service gets requests of its own message classes, may send one client a
:class:`~zmeet.protocol.Direct` message or publish on the events lane, hears when a session
ends, and is ticked on a timer for its time-outs. It runs on the hub with the broker: it must
not block (DESIGN.md, "Rules of the gevent hub"); slow work goes to gevent's threadpool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Broker, ClientSession

TICK_INTERVAL_S = 0.1
"""How often :meth:`Service.tick` runs."""


class Service:
    """Base of a broker feature. Subclasses override what they need."""

    name = "service"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def handlers(self) -> dict[type, Callable[[ClientSession, Any], Any]]:
        """Request class -> ``handler(session, request) -> reply``. A handler raises
        :class:`zmeet.chat.ChatError` (code, reason) to answer ERROR."""
        return {}

    def on_session_end(self, session: ClientSession, reason: str) -> None:
        """``session`` is ending (BYE, heartbeats stopped, nick changed): ``reason`` says which."""

    def tick(self, now_s: float) -> None:
        """Called every TICK_INTERVAL_S with ``time.monotonic()``."""

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """The broker is stopping."""


ServiceFactory = Callable[["Broker"], Service]

DEFAULT_SERVICES: list[ServiceFactory] = []
"""The services every broker runs, appended by the feature modules below."""
