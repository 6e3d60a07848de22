"""``zmeet``: the command line (click). The only layer that prints for people.

Every client command takes ``--broker`` (or ``ZMEET_BROKER``) and ``--nick`` (or ``ZMEET_NICK``).
Errors print one line to stderr and exit 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import click
import gevent
import gevent.event
import gevent.socket
import zmq.green as zmq_green

from zmeet import __version__
from zmeet.broker import Broker, BrokerConfig, default_data_dir, default_services
from zmeet.client import Notice, Session
from zmeet.errors import ZmeetError
from zmeet.protocol import RoomEvent
from zmeet.protocol.limits import DEFAULT_HISTORY, DEFAULT_ROOM, HEARTBEAT_INTERVAL_MS

from .render import event_json, event_line, safe

DEFAULT_BROKER = "tcp://127.0.0.1:5555"

broker_option = click.option(
    "--broker", envvar="ZMEET_BROKER", default=DEFAULT_BROKER, show_default=True,
    help="Control endpoint of the broker (env ZMEET_BROKER).",
)
nick_option = click.option(
    "--nick", envvar="ZMEET_NICK", required=True,
    help="Your nick: 1 to 32 letters, digits, '_' or '-' (env ZMEET_NICK).",
)
timeout_option = click.option(
    "--connect-timeout", "connect_timeout_s", type=click.FloatRange(0.1, 120), default=5.0,
    show_default=True, help="Seconds to wait for the broker before giving up.",
)


def _fail(exc: BaseException) -> None:
    click.echo(f"zmeet: error: {exc}", err=True)
    sys.exit(1)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _on_signals(callback) -> list:
    """Run ``callback`` on SIGINT and SIGTERM (in the hub, as gevent delivers them)."""
    return [gevent.signal_handler(sig, callback) for sig in (signal.SIGINT, signal.SIGTERM)]


def _open_session(broker: str, nick: str, timeout_s: float) -> Session:
    session = Session(broker, nick, timeout_s=timeout_s, client=f"zmeet-cli/{__version__}")
    try:
        session.connect()
    except ZmeetError as exc:
        _fail(exc)
    return session


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmeet")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="What to log on stderr.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """zmeet: meetings, chat and games on your own machine or LAN, over ZeroMQ."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level
    ctx.call_on_close(_release_zmq)  # runs when the command ends, sys.exit included


def _release_zmq() -> None:
    """Close the sockets of the clients' shared ZeroMQ context and terminate it, before the
    interpreter's exit handlers run.

    A media frame sent without a copy is released by libzmq's reaper thread after its socket is
    closed, through pyzmq's garbage-collector thread. If that happens while pyzmq's own exit
    handler stops that thread, the handler's ``Context.term`` waits forever (seen in CI: an
    uploading ``zmeet send`` whose broker was killed never exited; pyzmq#1003). Terminating the
    context here waits for the reaper first, so nothing is left to release at exit.

    It closes every socket of that shared context: a program that calls :func:`main` in its own
    process (click's CliRunner, an embedding) loses the sockets it made there too."""
    if getattr(zmq_green.Context, "_instance", None) is not None:  # pyzmq's singleton, if made
        zmq_green.Context.instance().destroy(linger=0)


# --- broker ------------------------------------------------------------------------------------


@main.command()
@click.option("--bind", "control", default="tcp://127.0.0.1:5555", show_default=True,
              help="Control endpoint; the other lanes take the next ports (tcp://HOST:* for any).")
@click.option("--events", default=None, help="Events (PUB) endpoint [control port + 1].")
@click.option("--media-in", default=None, help="Media in (ROUTER) endpoint [control port + 2].")
@click.option("--media-out", default=None, help="Media out (PUB) endpoint [control port + 3].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the SQLite store lives [$XDG_DATA_HOME/zmeet].")
@click.option("--history", type=click.IntRange(0, 1000), default=DEFAULT_HISTORY,
              show_default=True, help="Chat messages a join gets by default.")
@click.option("--heartbeat-ms", type=click.IntRange(50, 60_000), default=HEARTBEAT_INTERVAL_MS,
              show_default=True, help="Heartbeat interval; a client silent 5 intervals is gone.")
@click.option("--log-level", "broker_log_level", default=None,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="INFO logs joins and leaves, DEBUG every message. [INFO]")
@click.option("--json", "as_json", is_flag=True, help="Print the ready line as JSON.")
@click.option("--max-file-size", default="4G", show_default=True,
              help="Largest file shared through this broker (e.g. 500M, 4G); told at HELLO.")
@click.option("--media-forwarder", type=click.Choice(["auto", "native", "python"]),
              default="auto", show_default=True,
              help="Media forwarding loop: native (compiled at install) or python; auto takes "
                   "native if it was built.")
@click.pass_context
def broker(ctx, control, events, media_in, media_out, data_dir, history, heartbeat_ms,
           broker_log_level, as_json, max_file_size="4G", media_forwarder="auto") -> None:
    """Run a broker until Ctrl-C or SIGTERM.

    Prints one line when every lane is bound, with the endpoints clients use.
    """
    _setup_logging(broker_log_level or "INFO")
    from zmeet.files import parse_size

    try:
        max_file_bytes = parse_size(max_file_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-file-size") from None
    config = BrokerConfig(
        control=control, events=events, media_in=media_in, media_out=media_out,
        data_dir=data_dir or default_data_dir(), history=history,
        heartbeat_interval_ms=heartbeat_ms, max_file_size=max_file_bytes,
        media_forwarder=media_forwarder,
        services=default_services(ctx.meta.get("zmeet.arena_settings")),
    )
    try:
        config.endpoints()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bind") from None
    server = Broker(config)
    try:
        server.start()
    except Exception as exc:  # zmq.ZMQError (address in use), sqlite3.Error (bad store),
        _fail(f"cannot start the broker: {exc}")  # RuntimeError (native forwarder not built)
    handlers = _on_signals(server.stop)
    if as_json:
        click.echo(json.dumps({"type": "ready", "endpoints": server.endpoints,
                               "epoch": server.epoch, "data_dir": str(config.data_dir),
                               "media_forwarder": server.media_forwarder}))
    else:
        e = server.endpoints
        click.echo(f"zmeet broker ready: control {e['control']} events {e['events']} "
                   f"media-in {e['media_in']} media-out {e['media_out']} "
                   f"data {config.data_dir} ({server.media_forwarder} media forwarder)")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        for h in handlers:
            h.cancel()
        server.stop()
    if server.crashed:
        _fail("the broker stopped after an internal error (see the log above)")


# --- say ---------------------------------------------------------------------------------------


@main.command()
@click.argument("room")
@click.argument("text")
@nick_option
@broker_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print the broker's receipt as JSON.")
@click.pass_context
def say(ctx, room, text, nick, broker, connect_timeout_s, as_json) -> None:
    """Say TEXT in ROOM and exit 0 once the broker stored it."""
    _setup_logging(ctx.obj["log_level"])
    session = _open_session(broker, nick, connect_timeout_s)
    try:
        session.join(room, history=0)
        posted = session.say(room, text)
    except ZmeetError as exc:
        session.close()
        _fail(exc)
    session.close()
    if as_json:
        click.echo(json.dumps({"type": "posted", "room": posted.room, "seq": posted.seq,
                               "id": posted.id, "ts_ms": posted.ts_ms}))


# --- tail --------------------------------------------------------------------------------------


@main.command()
@click.argument("room")
@nick_option
@broker_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--history", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Print the room's last N chat messages first.")
@click.option("--count", type=click.IntRange(1), default=None,
              help="Exit 0 after K events (history included).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Exit after S seconds (1 if --count was not reached).")
@click.pass_context
def tail(ctx, room, nick, broker, connect_timeout_s, as_json, history, count, timeout_s) -> None:
    """Print ROOM's events as they arrive, one per line."""
    _setup_logging(ctx.obj["log_level"])
    session = _open_session(broker, nick, connect_timeout_s)
    stop = gevent.event.Event()
    handlers = _on_signals(stop.set)
    printed = 0
    status = 0

    def emit(event, is_history=False) -> None:
        nonlocal printed
        if not isinstance(event, RoomEvent | Notice):
            return  # a challenge or file offer to this nick: not the room's, not tail's
        if as_json:
            click.echo(event_json(event, history=is_history))
        else:
            click.echo(event_line(event, show_room=False))
        sys.stdout.flush()
        if isinstance(event, RoomEvent):
            printed += 1
            if count is not None and printed >= count:
                stop.set()

    def pump() -> None:
        while True:
            emit(session.events.get())

    try:
        joined = session.join(room, history=history)
    except ZmeetError as exc:
        session.close()
        _fail(exc)
    # join() queued the history first: print it marked as history
    for _ in range(len(joined.history)):
        if stop.is_set():
            break
        emit(session.events.get(), is_history=True)
    pumper = gevent.spawn(pump) if not stop.is_set() else None
    stop.wait(timeout=timeout_s)
    if count is not None and printed < count:
        click.echo(f"zmeet: tail: timed out with {printed} of {count} events", err=True)
        status = 1
    if pumper is not None:
        pumper.kill()
    for h in handlers:
        h.cancel()
    session.close()
    sys.exit(status)


# --- join --------------------------------------------------------------------------------------

HELP_TEXT = """\
Commands:
  /help                 this help
  /who [ROOM]           members, room topic and message count (also !INFO)
  /join ROOM            join ROOM and talk there
  /leave [ROOM]         leave ROOM (default: the current room)
  /room ROOM            talk in ROOM (one you joined)
  /topic TEXT           set the room topic
  /quit                 leave every room and exit (also !DISCONNECT, Ctrl-C, Ctrl-D)
Anything else is said in the current room."""


def _device(name: str | None) -> int | str | None:
    """A PortAudio device from ``--input-device``/``--output-device``: an index or a name."""
    return int(name) if name is not None and name.isdigit() else name


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY"))  # the window is X11 (Qt xcb); XWayland sets it
    return True


class ChatTerminal:
    """The interactive chat of ``zmeet join``: reads lines, runs commands, prints events.

    Feature modules (games, files) extend it through three class-level registries:
    ``COMMANDS`` maps a lower-case command word (``/ttt``, ``!file``) to
    ``handler(terminal, rest)``; ``EVENT_HANDLERS`` get every queued item that is not a room
    event or a notice (``handler(terminal, item) -> bool``, True when handled);
    ``LINE_HANDLERS`` see each plain line first (``handler(terminal, line) -> bool``, True
    when consumed, e.g. a move typed during a game). Handlers raise ZmeetError for errors.
    """

    COMMANDS: dict = {}
    EVENT_HANDLERS: list = []
    LINE_HANDLERS: list = []
    HELP_LINES: list[str] = []

    def __init__(self, session: Session, room: str, stop: gevent.event.Event) -> None:
        self.session = session
        self.current = room
        self.stop = stop
        self.meeting = None  # zmeet.client.media.Meeting, when media runs

    def out(self, line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    def pump_events(self) -> None:
        while True:
            event = self.session.events.get()
            if not isinstance(event, RoomEvent | Notice):
                try:
                    if not any(handler(self, event) for handler in self.EVENT_HANDLERS):
                        logging.getLogger("zmeet.cli").debug("unhandled event %r", event)
                except ZmeetError as exc:
                    self.out(f"-- error: {exc}")
                continue
            multi = len(tuple(self.session.rooms)) > 1
            self.out(event_line(event, show_room=multi))
            meeting = self.meeting
            if (
                meeting is not None and meeting.viewer is not None
                and isinstance(event, RoomEvent) and event.room == meeting.room
                and event.type in ("leave", "gone")
            ):
                meeting.forget(event.sender)  # their tiles, state and audio go with them

    def read_input(self, keep_running_on_eof: bool) -> None:
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
            self.out("\n".join([HELP_TEXT, *self.HELP_LINES]))
        elif command in self.COMMANDS:
            self.COMMANDS[command](self, rest)
        elif command in ("/who", "!info", "/info"):
            info = self.session.info(rest or self.current)
            self.out(f"-- #{info.room}: {len(info.members)} here: {', '.join(info.members)}; "
                     f"topic: {safe(info.topic) or '(none)'}; {info.message_count} messages")
        elif command == "/join":
            if not rest:
                self.out("-- usage: /join ROOM")
                return
            joined = self.session.join(rest)
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
        elif any(handler(self, line) for handler in self.LINE_HANDLERS):
            pass
        elif command.startswith("/"):
            self.out(f"-- unknown command {word}: /help lists them")
        elif not self.current:
            self.out("-- in no room: /join ROOM")
        else:
            self.session.say(self.current, line)


@main.command()
@click.argument("room", default=DEFAULT_ROOM)
@nick_option
@broker_option
@timeout_option
@click.option("--history", type=click.IntRange(-1, 1000), default=-1,
              help="Chat messages to show on joining [the broker's default, 50].")
@click.option("--duration", "duration_s", type=click.FloatRange(0, min_open=True), default=None,
              help="Leave by itself after S seconds (for scripts and tests).")
@click.option("--video", is_flag=True, help="Publish the webcam (--camera).")
@click.option("--camera", type=click.IntRange(0), default=0, show_default=True,
              help="Webcam index for --video.")
@click.option("--video-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Publish this video file instead of a webcam, at its own frame rate.")
@click.option("--screen", is_flag=True, help="Publish the screen (mss).")
@click.option("--monitor", type=click.IntRange(0), default=1, show_default=True,
              help="Monitor for --screen (0: all monitors as one).")
@click.option("--quality", type=click.IntRange(1, 100), default=80, show_default=True,
              help="JPEG quality of published frames.")
@click.option("--max-width", type=click.IntRange(16, 7680), default=1280, show_default=True,
              help="Frames wider than this are scaled down.")
@click.option("--fps", type=click.FloatRange(0.1, 120), default=None,
              help="Capture rate [a file's own; the webcam's own, else 15; the screen 10].")
@click.option("--no-display", is_flag=True, help="Do not open the video window.")
@click.option("--record", "record_dir", type=click.Path(file_okay=False), default=None,
              help="Write received video to files in DIR, one per sender and kind.")
@click.option("--audio", is_flag=True,
              help="Send the microphone and play the others' mixed audio (sounddevice).")
@click.option("--input-device", default=None,
              help="Microphone for --audio: a PortAudio device index or name [the default].")
@click.option("--listen", is_flag=True,
              help="Play the others' mixed audio without sending a microphone.")
@click.option("--output-device", default=None,
              help="Speaker for --audio and --listen: a PortAudio device index or name "
                   "[the default].")
@click.option("--max-streams", type=click.IntRange(0), default=None,
              help="Receive video of only the N most recent speakers (screen shares always).")
@click.option("--stats", "stats_json", is_flag=True,
              help="On leaving, print media statistics as one JSON line on stderr.")
@click.option("--accept-files", is_flag=True,
              help="Save every file offered to you into the current folder, unasked.")
@click.pass_context
def join(ctx, room, nick, broker, connect_timeout_s, history, duration_s, video, camera,
         video_file, screen, monitor, quality, max_width, fps, no_display, record_dir,
         stats_json, audio=False, input_device=None, output_device=None,
         max_streams=None, accept_files=False, listen=False) -> None:
    """Join ROOM (default: lobby) and chat; optionally share video and screen.

    Type a line to say it; /help lists the commands. Ctrl-C or Ctrl-D leave.
    """
    _setup_logging(ctx.obj["log_level"])
    session = _open_session(broker, nick, connect_timeout_s)
    stop = gevent.event.Event()
    handlers = _on_signals(stop.set)
    term = ChatTerminal(session, room, stop)
    _files.attach(term, accept_files=accept_files)  # offers, --accept-files, image previews
    meeting = None
    greenlets: list[gevent.Greenlet] = []
    try:
        joined = session.join(room, history=history)
        term.out(f"-- joined #{joined.room} as {nick} ({len(joined.members)} here: "
                 f"{', '.join(joined.members)})"
                 + (f"; topic: {safe(joined.topic)}" if joined.topic else "")
                 + "; /help for commands")
        display = not no_display and _has_display()
        wants_media = video or video_file or screen or display or record_dir or audio or listen
        if wants_media:
            from zmeet.client.media import Meeting

            meeting = Meeting(
                session, room,
                camera=camera if (video and not video_file) else None,
                video_file=video_file, screen=screen, monitor=monitor, quality=quality,
                max_width=max_width, fps=fps, display=display, record_dir=record_dir,
                audio=audio, listen=listen, input_device=_device(input_device),
                output_device=_device(output_device), max_streams=max_streams,
            )
            meeting.start()
            term.meeting = meeting
        greenlets.append(gevent.spawn(term.pump_events))
        greenlets.append(gevent.spawn(term.read_input, duration_s is not None))
        stop.wait(timeout=duration_s)
    except ZmeetError as exc:
        click.echo(f"zmeet: error: {exc}", err=True)
        stop.set()
        status = 1
    else:
        status = 0
    finally:
        gevent.killall(greenlets, timeout=1)
        if meeting is not None:
            meeting.stop()
            if stats_json:
                click.echo(json.dumps({"type": "stats", **meeting.stats()}), err=True)
        for h in handlers:
            h.cancel()
        session.close()
    sys.exit(status)


# Feature modules add their commands to `main` and to ChatTerminal when imported:
# (keep one import per line)
from .meeting_controls import install as _install_meeting_controls  # noqa: E402

_install_meeting_controls(ChatTerminal)  # /video, /screen, /mute, /unmute
from . import bench as _bench  # noqa: E402,F401
from . import files as _files  # noqa: E402,F401
from . import games as _games  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
