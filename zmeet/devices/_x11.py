"""Check for an X display before a library that aborts without one (Qt) is asked to use it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from ..errors import DeviceError


def check_x_display() -> str:
    """Return ``$DISPLAY`` after checking that an X server answers there.

    On Linux, OpenCV's Qt windows abort the whole process when there is no display, so this
    opens (and closes) one connection with Xlib first. On other systems it returns ``""``
    without checking. Raises :class:`DeviceError` when ``DISPLAY`` is unset or nothing answers.
    """
    if not sys.platform.startswith("linux"):
        return ""
    display = os.environ.get("DISPLAY", "")
    if not display:
        raise DeviceError(
            "no screen: DISPLAY is not set (run under X, or start Xvfb and set DISPLAY)"
        )
    name = ctypes.util.find_library("X11")
    if name is None:
        raise DeviceError("libX11 is not installed, so no X display can be opened")
    xlib = ctypes.cdll.LoadLibrary(name)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    conn = xlib.XOpenDisplay(display.encode())
    if not conn:
        raise DeviceError(f"cannot open X display {display!r}: is the X server (or Xvfb) running?")
    xlib.XCloseDisplay(conn)
    return display
