"""Meeting controls typed in the ``zmeet join`` terminal: ``/video on|off``, ``/screen on|off``,
``/mute``, ``/unmute``. Others learn the change from the media state the meeting sends
(:class:`zmeet.protocol.MediaState`): a muted badge, a dark tile, the stage view ending.

:class:`MeetingControls` is the terminal :class:`~zmeet_cli.terminal.Plugin` of the meeting: its
commands, and the tiles, state and audio of someone who left the meeting's room going with them.
"""

from __future__ import annotations

from typing import Any

from zmeet.errors import LocalProtocolError
from zmeet.protocol import RoomEvent

from .terminal import ChatTerminal, Plugin

HELP_LINES = [
    "  /video on|off         start or stop sending your camera (or video file)",
    "  /screen on|off        start or stop sharing your screen (shown large to the others)",
    "  /mute, /unmute        stop or resume sending your microphone (--audio)",
]


def _meeting(terminal: ChatTerminal) -> Any:
    meeting = terminal.meeting
    if meeting is None:
        raise LocalProtocolError("no media in this session: join with --video, --screen or --audio")
    return meeting


def _on_off(rest: str, usage: str) -> bool:
    word = rest.strip().lower()
    if word not in ("on", "off"):
        raise LocalProtocolError(f"usage: {usage} on|off")
    return word == "on"


class MeetingControls(Plugin):
    """``/video``, ``/screen``, ``/mute``, ``/unmute`` on the terminal's ``meeting`` (a
    :class:`zmeet.client.media.Meeting`, or None without media: then they answer with an
    error line); a ``leave`` or ``gone`` in the meeting's room makes the meeting forget that
    nick."""

    def __init__(self) -> None:
        super().__init__(
            commands={"/video": self.video, "/screen": self.screen, "/mute": self.mute,
                      "/unmute": self.unmute},
            event_handlers=[self.on_event],
            help_lines=HELP_LINES,
        )

    def video(self, terminal: ChatTerminal, rest: str) -> None:
        on = _on_off(rest, "/video")
        _meeting(terminal).set_video(on)
        terminal.out(f"-- video {'on' if on else 'off'}")

    def screen(self, terminal: ChatTerminal, rest: str) -> None:
        on = _on_off(rest, "/screen")
        _meeting(terminal).set_screen(on)
        terminal.out(f"-- screen sharing {'on' if on else 'off'}")

    def mute(self, terminal: ChatTerminal, rest: str) -> None:
        _meeting(terminal).set_muted(True)
        terminal.out("-- muted")

    def unmute(self, terminal: ChatTerminal, rest: str) -> None:
        _meeting(terminal).set_muted(False)
        terminal.out("-- unmuted")

    def on_event(self, terminal: ChatTerminal, event: RoomEvent) -> None:
        meeting = terminal.meeting
        if (
            meeting is not None and meeting.viewer is not None
            and event.room == meeting.room and event.type in ("leave", "gone", "kick")
        ):
            meeting.forget(event.sender)  # their tiles, state and audio go with them
