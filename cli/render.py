"""How room events look to people and to scripts (``--json``): pure functions, one renderer per
event type."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType

from zmeet.client import Notice
from zmeet.protocol import RoomEvent

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}
_CONTROL[0x09] = " "
_CONTROL[0x0A] = " \u21b5 "  # a newline shows as a return arrow: no line can pose as another
for _c in (0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069):
    _CONTROL[_c] = f"\\u{_c:04x}"  # bidirectional overrides ("Trojan Source", CVE-2021-42574)


def safe(text: str) -> str:
    """``text`` with terminal control characters (escape sequences, carriage returns, bidi
    overrides) made visible, so that a peer cannot fake lines or colours on our terminal."""
    return text.translate(_CONTROL)


def event_dict(event: RoomEvent, *, history: bool = False) -> dict:
    """The JSON object of a room event: ``type``, ``room``, ``seq``, ``id``, ``from``, ``text``,
    ``ts`` (ISO 8601, UTC, milliseconds), ``ts_ms`` (ms since the Unix epoch), ``history``."""
    ts = datetime.fromtimestamp(event.ts_ms / 1000, tz=timezone.utc)
    return {
        "type": event.type,
        "room": event.room,
        "seq": event.seq,
        "id": event.id,
        "from": event.sender,
        "text": event.text,
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "ts_ms": event.ts_ms,
        "history": history,
    }


def event_json(event: RoomEvent | Notice, *, history: bool = False) -> str:
    """One JSON line for ``event`` (a notice is ``{"type": "notice", "kind", "text"}``)."""
    if isinstance(event, Notice):
        return json.dumps({"type": "notice", "kind": event.kind, "text": event.text})
    return json.dumps(event_dict(event, history=history), ensure_ascii=False)


Renderer = Callable[[RoomEvent], str]
"""How one type of room event reads: ``event`` -> the words after ``[12:34:56] #room ``, with
no side effects (a feature's renderer for its own event type, e.g. ``file``, is passed to
:func:`event_line` as data)."""


def render_chat(event: RoomEvent) -> str:
    return f"<{event.sender}> {safe(event.text)}"  # a nick is [A-Za-z0-9_-]: nothing to escape


def render_join(event: RoomEvent) -> str:
    return f"* {event.sender} joined"


def render_leave(event: RoomEvent) -> str:
    reason = f" ({safe(event.text)})" if event.text else ""
    return f"* {event.sender} left{reason}"


def render_gone(event: RoomEvent) -> str:
    return f"* {event.sender} is gone ({safe(event.text) or 'no heartbeat'})"


def render_topic(event: RoomEvent) -> str:
    return f"* {event.sender} set the room topic: {safe(event.text)}"


def render_other(event: RoomEvent) -> str:
    """An event type nobody gave a renderer for: ``* alice <type> <text>``."""
    return f"* {event.sender} {event.type} {safe(event.text)}"


RENDERERS: Mapping[str, Renderer] = MappingProxyType({
    "chat": render_chat, "join": render_join, "leave": render_leave, "gone": render_gone,
    "topic": render_topic,
})
"""The renderers of the chat's own event types, by ``RoomEvent.type``."""


def event_line(event: RoomEvent | Notice, *, show_room: bool = True,
               renderers: Mapping[str, Renderer] = RENDERERS) -> str:
    """One line for people: ``[12:34:56] #lobby <alice> hello``; a notice is ``-- <text>``.

    ``renderers`` maps an event type to its :data:`Renderer`; a type it lacks reads as
    :func:`render_other`. Pure: it only returns the line."""
    if isinstance(event, Notice):
        return f"-- {safe(event.text)}"
    clock = time.strftime("%H:%M:%S", time.localtime(event.ts_ms / 1000))
    where = f"#{event.room} " if show_room else ""
    return f"[{clock}] {where}{renderers.get(event.type, render_other)(event)}"
