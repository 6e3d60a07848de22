"""The client side: a gevent + zmq.green session with the broker, and the media lanes."""

from __future__ import annotations

from ..protocol.clone import LinkState, Notice
from .games import GameClient
from .session import Session, resolve_endpoint

__all__ = ["GameClient", "LinkState", "Notice", "Session", "resolve_endpoint"]
