"""Chat domain logic, pure: rooms, nicks, sequencing, limits. No sockets; the clock is injected."""

from __future__ import annotations

from .rooms import ChatError, Rooms, check_text

__all__ = ["ChatError", "Rooms", "check_text"]
