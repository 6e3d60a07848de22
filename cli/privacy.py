"""Private rooms and direct messages in the ``zmeet join`` terminal (docs/protocol.md 3.16):
``/msg NICK TEXT``, and for a room's owners ``/lock``, ``/unlock``, ``/key``, ``/invite``,
``/kick``, ``/ban``, ``/unban``, ``/owner``, in the style of IRC's commands.

:class:`PrivacyChat` is the terminal :class:`~zmeet_cli.terminal.Plugin`: its commands, the
lines for a direct message, an invitation and a kick, and the renderer of ``kick`` events.
"""

from __future__ import annotations

import time
from typing import Any

from zmeet.errors import LocalProtocolError
from zmeet.protocol import RoomEvent
from zmeet.protocol import privacy as pp

from .render import safe
from .terminal import ChatTerminal, Plugin

HELP_LINES = [
    "  /msg NICK TEXT        say TEXT to NICK alone (kept for NICK while offline)",
    "  /lock, /unlock        (owners) make the current room invite-only, or open it again",
    "  /key SECRET           (owners) ask SECRET at /join; /key with nothing removes it",
    "  /invite NICK          (owners) let NICK join although the room is locked or keyed",
    "  /kick NICK [REASON]   (owners) remove NICK from the room",
    "  /ban NICK, /unban NICK  (owners) keep NICK out of the room, or let them back",
    "  /owner NICK           (owners) make NICK an owner of the room too",
]


def render_kick(event: RoomEvent) -> str:
    return f"* {event.sender} was removed ({safe(event.text)})"


RENDERERS = {pp.KICK_EVENT_TYPE: render_kick}
"""For ``zmeet tail`` too."""


def _one_nick(rest: str, usage: str) -> tuple[str, str]:
    nick, _, more = rest.partition(" ")
    if not nick:
        raise LocalProtocolError(f"usage: {usage}")
    return nick, more.strip()


def _room(terminal: ChatTerminal) -> str:
    if not terminal.current:
        raise LocalProtocolError("in no room: /join ROOM")
    return terminal.current


class PrivacyChat(Plugin):
    """Direct messages and the owners' commands of the current room."""

    def __init__(self) -> None:
        super().__init__(
            commands={"/msg": self.msg, "/lock": self.lock, "/unlock": self.unlock,
                      "/key": self.key, "/invite": self.invite, "/kick": self.kick,
                      "/ban": self.ban, "/unban": self.unban, "/owner": self.owner},
            item_handlers=[self.on_item],
            help_lines=HELP_LINES,
            renderers=RENDERERS,
        )

    def msg(self, terminal: ChatTerminal, rest: str) -> None:
        nick, text = _one_nick(rest, "/msg NICK TEXT")
        if not text:
            raise LocalProtocolError("usage: /msg NICK TEXT")
        sent = terminal.session.send_direct(nick, text)
        terminal.out(f"-> *{nick}* {safe(text)}" + (" (kept until they connect)"
                                                     if sent.stored else ""))

    def lock(self, terminal: ChatTerminal, rest: str) -> None:
        room = _room(terminal)
        terminal.session.lock(room, True)
        terminal.out(f"-- #{room} is invite-only now (/invite NICK)")

    def unlock(self, terminal: ChatTerminal, rest: str) -> None:
        room = _room(terminal)
        terminal.session.lock(room, False)
        terminal.out(f"-- #{room} is open again")

    def key(self, terminal: ChatTerminal, rest: str) -> None:
        room = _room(terminal)
        terminal.session.set_key(room, rest)
        terminal.out(f"-- #{room} asks its key at /join now" if rest
                     else f"-- #{room} has no key now")

    def invite(self, terminal: ChatTerminal, rest: str) -> None:
        nick, _ = _one_nick(rest, "/invite NICK")
        terminal.session.invite(_room(terminal), nick)
        terminal.out(f"-- invited {nick} to #{_room(terminal)}")

    def kick(self, terminal: ChatTerminal, rest: str) -> None:
        nick, reason = _one_nick(rest, "/kick NICK [REASON]")
        terminal.session.kick(_room(terminal), nick, reason)

    def ban(self, terminal: ChatTerminal, rest: str) -> None:
        nick, _ = _one_nick(rest, "/ban NICK")
        terminal.session.ban(_room(terminal), nick, True)
        terminal.out(f"-- {nick} is banned from #{_room(terminal)}")

    def unban(self, terminal: ChatTerminal, rest: str) -> None:
        nick, _ = _one_nick(rest, "/unban NICK")
        terminal.session.ban(_room(terminal), nick, False)
        terminal.out(f"-- {nick} may join #{_room(terminal)} again")

    def owner(self, terminal: ChatTerminal, rest: str) -> None:
        nick, _ = _one_nick(rest, "/owner NICK")
        terminal.session.add_owner(_room(terminal), nick)
        terminal.out(f"-- {nick} owns #{_room(terminal)} too")

    def on_item(self, terminal: ChatTerminal, item: Any) -> bool:
        clock = time.strftime("%H:%M:%S")
        if isinstance(item, pp.DirectMessage):
            at = time.strftime("%H:%M:%S", time.localtime(item.ts_ms / 1000))
            terminal.out(f"[{at}] *{item.sender}* {safe(item.text)}")
        elif isinstance(item, pp.Invited):
            terminal.out(f"[{clock}] -- {item.by} invites you to #{item.room}: /join "
                         f"{item.room}")
        elif isinstance(item, pp.Kicked):
            why = f": {safe(item.reason)}" if item.reason else ""
            terminal.out(f"[{clock}] -- {item.by} "
                         f"{'banned' if item.banned else 'removed'} you from #{item.room}{why}")
            if terminal.current == item.room:
                rooms = tuple(terminal.session.rooms)
                terminal.current = rooms[-1] if rooms else ""
        else:
            return False
        return True
