"""Chat domain logic, pure: rooms, nicks, sequencing, limits. No sockets; the clock is injected."""

from __future__ import annotations

from .rooms import Rooms, check_nick, check_room, check_text

__all__ = ["Rooms", "check_nick", "check_room", "check_text"]
