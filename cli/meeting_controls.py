"""Meeting controls typed in the ``zmeet join`` terminal: ``/video on|off``, ``/screen on|off``,
``/mute``, ``/unmute``. Others learn the change from the media state the meeting sends
(:class:`zmeet.client.audio.MediaState`): a muted badge, a dark tile, the stage view ending.

:func:`install` registers them in ``ChatTerminal.COMMANDS`` and ``HELP_LINES`` (it takes the
class, so it works whether ``main`` runs as ``__main__`` or is imported).
"""

from __future__ import annotations

from zmeet.errors import LocalProtocolError, ZmeetError

HELP_LINES = [
    "  /video on|off         start or stop sending your camera (or video file)",
    "  /screen on|off        start or stop sharing your screen (shown large to the others)",
    "  /mute, /unmute        stop or resume sending your microphone (--audio)",
]


def _meeting(terminal):
    meeting = terminal.meeting
    if meeting is None:
        raise LocalProtocolError("no media in this session: join with --video, --screen or --audio")
    return meeting


def _on_off(rest: str, usage: str) -> bool:
    word = rest.strip().lower()
    if word not in ("on", "off"):
        raise LocalProtocolError(f"usage: {usage} on|off")
    return word == "on"


def _video(terminal, rest: str) -> None:
    on = _on_off(rest, "/video")
    _meeting(terminal).set_video(on)
    terminal.out(f"-- video {'on' if on else 'off'}")


def _screen(terminal, rest: str) -> None:
    on = _on_off(rest, "/screen")
    try:
        _meeting(terminal).set_screen(on)
    except ZmeetError:
        raise
    terminal.out(f"-- screen sharing {'on' if on else 'off'}")


def _mute(terminal, rest: str) -> None:
    _meeting(terminal).set_muted(True)
    terminal.out("-- muted")


def _unmute(terminal, rest: str) -> None:
    _meeting(terminal).set_muted(False)
    terminal.out("-- unmuted")


def install(terminal_cls) -> None:
    """Register the controls in ``terminal_cls`` (``ChatTerminal``). Idempotent."""
    terminal_cls.COMMANDS.update({"/video": _video, "/screen": _screen, "/mute": _mute,
                                  "/unmute": _unmute})
    for line in HELP_LINES:
        if line not in terminal_cls.HELP_LINES:
            terminal_cls.HELP_LINES.append(line)
