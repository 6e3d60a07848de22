"""Chat on the command line: ``zmeet say``, ``zmeet tail`` and ``zmeet join`` (the interactive
chat, with media).

What the features add (renderers of their event types for ``tail``, plugins of the ``join``
terminal) comes from the composition root in click's ``ctx.obj["chat"]``
(:class:`~zmeet_cli.terminal.ChatFeatures`); without it, plain chat.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
import gevent
import gevent.event

from zmeet.client import Notice
from zmeet.errors import ZmeetError
from zmeet.protocol import RoomEvent
from zmeet.protocol.limits import DEFAULT_ROOM

from .common import (
    _fail,
    _on_signals,
    _open_session,
    _setup_logging,
    broker_option,
    nick_option,
    timeout_option,
)
from .render import event_json, event_line, safe
from .terminal import ChatFeatures, ChatTerminal, JoinOptions


def _features(ctx: click.Context) -> ChatFeatures:
    obj = ctx.find_object(dict) or {}
    features = obj.get("chat")
    return features if isinstance(features, ChatFeatures) else ChatFeatures()


@click.command()
@click.argument("room_or_text", metavar="ROOM TEXT | --to NICK TEXT")
@click.argument("text", required=False)
@click.option("--to", "to", default=None, metavar="NICK",
              help="Send TEXT to NICK alone (a direct message, kept for NICK while offline).")
@nick_option
@broker_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print the broker's receipt as JSON.")
@click.pass_context
def say(ctx, room_or_text, text, to, nick, broker, connect_timeout_s, as_json) -> None:
    """Say TEXT in ROOM (or to NICK alone, with --to NICK TEXT) and exit 0 once the broker
    took it."""
    _setup_logging(ctx.obj["log_level"])
    if to is None and text is None:
        raise click.UsageError("give ROOM and TEXT, or --to NICK and TEXT")
    if to is not None and text is not None:
        raise click.UsageError("with --to NICK, give only TEXT")
    session = _open_session(broker, nick, connect_timeout_s)
    try:
        if to is not None:
            sent = session.send_direct(to, room_or_text)
        else:
            session.join(room_or_text, history=0)
            posted = session.say(room_or_text, text)
    except ZmeetError as exc:
        session.close()
        _fail(exc)
    session.close()
    if not as_json:
        return
    if to is not None:
        click.echo(json.dumps({"type": "sent", "to": to, "id": sent.id, "ts_ms": sent.ts_ms,
                               "stored": sent.stored}))
    else:
        click.echo(json.dumps({"type": "posted", "room": posted.room, "seq": posted.seq,
                               "id": posted.id, "ts_ms": posted.ts_ms}))


@click.command()
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
    renderers = _features(ctx).renderers
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
            click.echo(event_line(event, show_room=False, renderers=renderers))
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


def _device(name: str | None) -> int | str | None:
    """A PortAudio device from ``--input-device``/``--output-device``: an index or a name."""
    return int(name) if name is not None and name.isdigit() else name


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY"))  # the window is X11 (Qt xcb); XWayland sets it
    return True


@click.command()
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
    plugins = _features(ctx).plugins(JoinOptions(accept_files=accept_files))
    term = ChatTerminal(session, room, stop, plugins=plugins)
    meeting: Any = None
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
            from zmeet.client.media import Meeting, MeetingOptions

            meeting = Meeting(session, room, MeetingOptions(
                camera=camera if (video and not video_file) else None,
                video_file=video_file, screen=screen, monitor=monitor, quality=quality,
                max_width=max_width, fps=fps, display=display, record_dir=record_dir,
                audio=audio, listen=listen, input_device=_device(input_device),
                output_device=_device(output_device), max_streams=max_streams,
            ))
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
