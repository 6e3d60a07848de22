"""The interactive chat of ``zmeet join``: :class:`ChatTerminal` reads lines, runs commands and
prints the session's events; features extend it with :class:`Plugin` instances passed to its
constructor (the composition root, :mod:`zmeet_cli.main`, says which).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import gevent
import gevent.event
import gevent.socket

from zmeet.client import Notice, Session
from zmeet.errors import ZmeetError
from zmeet.protocol import RoomEvent

from .render import RENDERERS, Renderer, event_line, safe

log = logging.getLogger("zmeet.cli")

HELP_TEXT = """\
Commands:
  /help                 this help
  /who [ROOM]           members, room topic and message count (also !INFO)
  /join ROOM [KEY]      join ROOM (with its key, if it has one) and talk there
  /leave [ROOM]         leave ROOM (default: the current room)
  /room ROOM            talk in ROOM (one you joined)
  /topic TEXT           set the room topic
  /quit                 leave every room and exit (also !DISCONNECT, Ctrl-C, Ctrl-D)
Anything else is said in the current room."""

CommandHandler = Callable[["ChatTerminal", str], None]
"""``handler(terminal, rest)``: a command word's action; ``rest`` is the line after the word,
stripped. Raises :class:`ZmeetError` to print ``-- error: ...``."""

LineHandler = Callable[["ChatTerminal", str], bool]
"""``handler(terminal, line) -> bool``: sees a plain line (no known command) before it is said;
True when it consumed it (e.g. a move typed during a game)."""

ItemHandler = Callable[["ChatTerminal", Any], bool]
"""``handler(terminal, item) -> bool``: gets each queued item of ``Session.events`` that is not
a room event or a notice (direct messages: file chunks, challenges, game states); True when
it handled it."""

EventHandler = Callable[["ChatTerminal", RoomEvent], None]
"""``handler(terminal, event)``: acts on a room event after its line was printed."""


class Plugin:
    """What one feature adds to a :class:`ChatTerminal`, as data: ``commands`` (a lower-case
    command word such as ``/ttt`` or ``!file`` -> :data:`CommandHandler`), ``line_handlers``,
    ``item_handlers``, ``event_handlers``, ``help_lines`` (appended to ``/help``, in plugin
    order) and ``renderers`` (a room event type -> :data:`zmeet_cli.render.Renderer`).

    A feature subclasses it and passes its bound methods; one instance serves one terminal,
    so it may keep that terminal's state (the game being played, a file client).
    """

    def __init__(
        self, *,
        commands: Mapping[str, CommandHandler] | None = None,
        line_handlers: Sequence[LineHandler] = (),
        item_handlers: Sequence[ItemHandler] = (),
        event_handlers: Sequence[EventHandler] = (),
        help_lines: Sequence[str] = (),
        renderers: Mapping[str, Renderer] | None = None,
    ) -> None:
        self.commands: Mapping[str, CommandHandler] = dict(commands or {})
        self.line_handlers: Sequence[LineHandler] = tuple(line_handlers)
        self.item_handlers: Sequence[ItemHandler] = tuple(item_handlers)
        self.event_handlers: Sequence[EventHandler] = tuple(event_handlers)
        self.help_lines: Sequence[str] = tuple(help_lines)
        self.renderers: Mapping[str, Renderer] = dict(renderers or {})


@dataclass(frozen=True)
class JoinOptions:
    """What ``zmeet join`` was asked that plugins care about."""

    accept_files: bool = False


PluginFactory = Callable[[JoinOptions], Sequence[Plugin]]
"""The plugins of one ``zmeet join`` terminal, made afresh for it."""


@dataclass(frozen=True)
class ChatFeatures:
    """What the composition root gives the chat commands (in click's ``ctx.obj["chat"]``):
    ``renderers`` for every room event type (the chat's and the features'), used by
    ``zmeet tail``; ``plugins`` for each ``zmeet join`` terminal."""

    renderers: Mapping[str, Renderer] = field(default_factory=lambda: RENDERERS)
    plugins: PluginFactory = field(default=lambda options: ())


class ChatTerminal:
    """The interactive chat of ``zmeet join``: reads lines, runs commands, prints events.

    ``plugins`` extend it (see :class:`Plugin`): their commands after ``/quit`` and ``/help``
    and before the built-in ones, their line handlers before a plain line is said, their item
    handlers for queued items that are not room events or notices, their event handlers
    after a room event's line, their renderers for how an event type reads. Two plugins with
    the same command word or renderer are a mistake of the composition: ValueError.
    ``out(line)`` prints a line (default: stdout, flushed).
    """

    def __init__(self, session: Session, room: str, stop: gevent.event.Event, *,
                 plugins: Iterable[Plugin] = (),
                 out: Callable[[str], None] | None = None) -> None:
        self.session = session
        self.current = room
        self.stop = stop
        self.meeting: Any = None  # zmeet.client.media.Meeting, when media runs
        self.plugins = tuple(plugins)
        self._out = out
        self.commands: dict[str, CommandHandler] = {}
        self.renderers: dict[str, Renderer] = dict(RENDERERS)
        own_renderers: set[str] = set()
        for plugin in self.plugins:
            for word, handler in plugin.commands.items():
                if word in self.commands:
                    raise ValueError(f"two plugins have the command {word}")
                self.commands[word] = handler
            for kind, renderer in plugin.renderers.items():
                if kind in own_renderers:
                    raise ValueError(f"two plugins render {kind} events")
                own_renderers.add(kind)
                self.renderers[kind] = renderer
        self.line_handlers = [h for plugin in self.plugins for h in plugin.line_handlers]
        self.item_handlers = [h for plugin in self.plugins for h in plugin.item_handlers]
        self.event_handlers = [h for plugin in self.plugins for h in plugin.event_handlers]
        self.help_lines = [line for plugin in self.plugins for line in plugin.help_lines]

    def out(self, line: str) -> None:
        """Print ``line`` for the person at this terminal (the ``out`` given, else stdout)."""
        if self._out is not None:
            self._out(line)
            return
        click.echo(line)
        sys.stdout.flush()

    def pump_events(self) -> None:
        """Dispatch every item of ``Session.events``, forever (run it in a greenlet)."""
        while True:
            self.dispatch(self.session.events.get())

    def dispatch(self, item: Any) -> None:
        """Show or hand on one queued item: a room event or notice is printed (then the event
        handlers see the event); anything else goes to the item handlers."""
        try:
            if not isinstance(item, RoomEvent | Notice):
                if not any(handler(self, item) for handler in self.item_handlers):
                    log.debug("unhandled event %r", item)
                return
            multi = len(tuple(self.session.rooms)) > 1
            self.out(event_line(item, show_room=multi, renderers=self.renderers))
            if isinstance(item, RoomEvent):
                for handler in self.event_handlers:
                    handler(self, item)
        except ZmeetError as exc:
            self.out(f"-- error: {exc}")

    def read_input(self, keep_running_on_eof: bool) -> None:
        """Run each line of stdin (UTF-8, bad bytes replaced) through :meth:`handle` until
        :attr:`stop` is set or stdin ends; at its end, set :attr:`stop` unless
        ``keep_running_on_eof`` (``--duration`` given)."""
        fd = sys.stdin.fileno()
        buffer = b""
        while not self.stop.is_set():
            gevent.socket.wait_read(fd)
            chunk = os.read(fd, 65536)
            if not chunk:
                if buffer:
                    self.handle(buffer.decode("utf-8", "replace"))
                if not keep_running_on_eof:
                    self.stop.set()
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self.handle(line.decode("utf-8", "replace").rstrip("\r"))

    def handle(self, line: str) -> None:
        """Run one typed line; a :class:`ZmeetError` prints ``-- error: ...``."""
        try:
            self._handle(line)
        except ZmeetError as exc:
            self.out(f"-- error: {exc}")

    def _handle(self, line: str) -> None:
        if not line.strip():
            return
        word, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        command = word.lower()
        if command in ("/quit", "!disconnect", "/exit"):
            self.stop.set()
        elif command in ("/help", "/?"):
            self.out("\n".join([HELP_TEXT, *self.help_lines]))
        elif command in self.commands:
            self.commands[command](self, rest)
        elif command in ("/who", "!info", "/info"):
            info = self.session.info(rest or self.current)
            self.out(f"-- #{info.room}: {len(info.members)} here: {', '.join(info.members)}; "
                     f"topic: {safe(info.topic) or '(none)'}; {info.message_count} messages")
        elif command == "/join":
            if not rest:
                self.out("-- usage: /join ROOM [KEY]")
                return
            room, _, key = rest.partition(" ")
            joined = self.session.join(room, key=key.strip())
            self.current = joined.room
            self.out(f"-- joined #{joined.room} ({len(joined.members)} here: "
                     f"{', '.join(joined.members)})"
                     + (f"; topic: {safe(joined.topic)}" if joined.topic else ""))
        elif command == "/leave":
            room = rest or self.current
            self.session.leave(room)
            self.out(f"-- left #{room}")
            if room == self.current:
                rooms = tuple(self.session.rooms)
                self.current = rooms[-1] if rooms else ""
                self.out(f"-- now talking in #{self.current}" if self.current
                         else "-- in no room: /join ROOM")
        elif command == "/room":
            if rest not in tuple(self.session.rooms):
                self.out(f"-- not in #{rest}: /join it first")
            else:
                self.current = rest
        elif command == "/topic":
            self.session.set_topic(self.current, rest)
        elif any(handler(self, line) for handler in self.line_handlers):
            pass
        elif command.startswith("/"):
            self.out(f"-- unknown command {word}: /help lists them")
        elif not self.current:
            self.out("-- in no room: /join ROOM")
        else:
            self.session.say(self.current, line)
