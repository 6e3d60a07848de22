"""The client side: a gevent + zmq.green session with the broker, and the media lanes."""

from __future__ import annotations

from .games import GameClient
from .session import Notice, Session, resolve_endpoint

__all__ = ["GameClient", "Notice", "Session", "resolve_endpoint"]
