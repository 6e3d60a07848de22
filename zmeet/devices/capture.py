"""Capture sources: a camera, a video file, a screen. Each gives BGR frames off the gevent hub.

Every source owns a :class:`~zmeet.devices._thread.DeviceThread` (a gevent ``ThreadPool(1)``):
opening, reading, encoding and releasing all run in that one OS thread, so a blocking driver
call never stalls the hub, and the same thread always drives the device. The public methods
are called from greenlets and wait cooperatively.

Frames are numpy arrays of shape ``(height, width, 3)``, dtype ``uint8``, BGR (OpenCV's layout).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from ..clock import now_us as _now_us
from ..errors import DeviceError
from ._thread import DeviceThread
from ._x11 import check_x_display
from .jpeg import DEFAULT_MAX_WIDTH, DEFAULT_QUALITY, check_encoding, encode_jpeg

log = logging.getLogger("zmeet.devices")

FALLBACK_FPS = 25.0
"""Frame rate assumed for a video file whose container does not tell a sane one."""

MAX_SANE_FPS = 240.0


def _sane_fps(value: float) -> float | None:
    return value if math.isfinite(value) and 0 < value <= MAX_SANE_FPS else None


@dataclass(frozen=True, slots=True)
class CapturedImage:
    """One captured frame: ``image`` BGR uint8 ``(height, width, 3)``; ``pts_ms`` its position
    in the source (a file's timeline, else ms since the source opened); ``capture_ts_us`` the
    wall clock when it was read, in microseconds since the Unix epoch."""

    image: np.ndarray
    pts_ms: int
    capture_ts_us: int


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """One captured and JPEG-encoded frame: ``data`` the JPEG, ``width`` x ``height`` its size
    in pixels (after ``max_width`` scaling), ``pts_ms`` and ``capture_ts_us`` as in
    :class:`CapturedImage`, ``capture_ms`` and ``encode_ms`` the time each step took (the
    thumbnail's encoding included). ``thumb`` is the same picture at most ``thumb_width``
    pixels wide (``thumb_width`` x ``thumb_height``), when one was asked for: simulcast's low
    layer; ``data`` itself when the picture is no wider than that."""

    data: bytes
    width: int
    height: int
    pts_ms: int
    capture_ts_us: int
    capture_ms: float
    encode_ms: float
    thumb: bytes | None = None
    thumb_width: int = 0
    thumb_height: int = 0


class CaptureSource:
    """Base of the capture sources. Use as a context manager, or :meth:`open` then :meth:`close`.

    ``native_fps`` is the rate the device or file runs at when it says (else None); ``width``
    and ``height`` the size of its frames in pixels, known after :meth:`open`.
    """

    kind: ClassVar[str] = "video"
    """The ``MediaFrame.kind`` this source is published as by default."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.native_fps: float | None = None
        self.width = 0
        self.height = 0
        self.frames_read = 0
        self._thread = DeviceThread(name)
        self._opened = False
        self._pending: CapturedImage | None = None

    # called from greenlets ----------------------------------------------------------------------

    def open(self) -> None:
        """Open the device in its thread and read a first frame, so that a source that cannot
        give frames fails here. Idempotent. Raises :class:`DeviceError` with the reason."""
        if self._opened:
            return
        if self._thread.closed:
            raise DeviceError(f"{self.name} is closed")
        self._thread.call(self._open_checked)
        self._opened = True

    def read(self) -> CapturedImage | None:
        """The next frame, or None at the end of a video file that does not loop.

        Raises :class:`DeviceError` if the device stops giving frames, RuntimeError if the
        source was not opened or is closed.
        """
        self._check_open()
        return self._thread.call(self._read_counted)

    def read_jpeg(
        self, *, quality: int = DEFAULT_QUALITY, max_width: int = DEFAULT_MAX_WIDTH,
        thumb_width: int | None = None,
    ) -> EncodedImage | None:
        """The next frame read and JPEG-encoded (see :func:`~zmeet.devices.jpeg.encode_jpeg`)
        in one trip to the device's thread; None at the end of a file that does not loop.
        With ``thumb_width`` (pixels) a thumbnail at most that wide is encoded too, from the
        captured picture, at the same ``quality``.

        Raises ValueError for a bad ``quality``/``max_width``/``thumb_width``, otherwise as
        :meth:`read`.
        """
        check_encoding(quality, max_width)
        if thumb_width is not None:
            check_encoding(quality, thumb_width)
        self._check_open()
        return self._thread.call(self._read_jpeg, quality, max_width, thumb_width)

    def close(self) -> None:
        """Release the device (in its thread) and stop the thread. Idempotent; logs, never
        raises, if releasing fails."""
        if self._thread.closed:
            return
        try:
            if self._opened:
                self._thread.call(self._release)
        except Exception:
            log.exception("%s: releasing failed", self.name)
        finally:
            self._opened = False
            self._thread.close()

    def __enter__(self) -> CaptureSource:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def _check_open(self) -> None:
        if not self._opened or self._thread.closed:
            raise RuntimeError(f"{self.name} is not open")

    # run in the device's thread ---------------------------------------------------------------

    def _open_checked(self) -> None:
        try:
            self._open()
        except DeviceError:
            self._release_quietly()
            raise
        except Exception as exc:  # a driver's own exception: say which device failed
            self._release_quietly()
            raise DeviceError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

    def _release_quietly(self) -> None:
        try:
            self._release()
        except Exception:
            log.exception("%s: releasing after a failed open failed", self.name)

    def _read_counted(self) -> CapturedImage | None:
        frame: CapturedImage | None = self._pending
        if frame is not None:
            self._pending = None
        else:
            frame = self._read()
        if frame is not None:
            self.frames_read += 1
        return frame

    def _read_jpeg(
        self, quality: int, max_width: int, thumb_width: int | None = None
    ) -> EncodedImage | None:
        t0 = time.perf_counter()
        frame = self._read_counted()
        if frame is None:
            return None
        t1 = time.perf_counter()
        data, width, height = encode_jpeg(frame.image, quality=quality, max_width=max_width)
        thumb, thumb_w, thumb_h = None, 0, 0
        if thumb_width is not None:
            if width <= thumb_width:
                thumb, thumb_w, thumb_h = data, width, height
            else:
                thumb, thumb_w, thumb_h = encode_jpeg(
                    frame.image, quality=quality, max_width=thumb_width)
        t2 = time.perf_counter()
        return EncodedImage(
            data, width, height, frame.pts_ms, frame.capture_ts_us,
            capture_ms=(t1 - t0) * 1000, encode_ms=(t2 - t1) * 1000,
            thumb=thumb, thumb_width=thumb_w, thumb_height=thumb_h,
        )

    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> CapturedImage | None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


class VideoFileSource(CaptureSource):
    """Frames of any video file OpenCV opens (``cv2.VideoCapture(path)``), as a stand-in camera.

    ``native_fps`` is the file's own frame rate (:data:`FALLBACK_FPS` if it does not tell
    one); the publisher paces at it. ``pts_ms`` is the frame's position in the file
    (``CAP_PROP_POS_MSEC``), so frame ``i`` of a constant-rate file has
    ``pts_ms == round(i * 1000 / native_fps)``; with ``loop`` the file starts again at its end
    (``pts_ms`` back to 0, :attr:`loops` counts the restarts), else :meth:`read` returns None.

    :meth:`open` raises :class:`DeviceError` if the file is missing, OpenCV cannot open it, or
    it has no frame.
    """

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        super().__init__(f"video file {path}")
        self.path = Path(path)
        self.loop = loop
        self.loops = 0
        self._cap: cv2.VideoCapture | None = None

    def _open(self) -> None:
        if not self.path.is_file():
            raise DeviceError(f"video file {self.path} does not exist (or is not a file)")
        self._cap = self._capture()
        fps = _sane_fps(self._cap.get(cv2.CAP_PROP_FPS))
        if fps is None:
            log.warning("%s tells no frame rate; playing at %g fps", self.path, FALLBACK_FPS)
        self.native_fps = fps or FALLBACK_FPS
        first = self._read()
        if first is None:
            raise DeviceError(f"video file {self.path}: OpenCV opened it but read no frame")
        self.height, self.width = first.image.shape[:2]
        self._pending = first

    def _capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DeviceError(f"OpenCV cannot open {self.path} as a video")
        return cap

    def _read(self) -> CapturedImage | None:
        assert self._cap is not None
        ok, image = self._cap.read()
        if not ok:
            if not self.loop or self.frames_read == 0:
                return None
            self._cap.release()
            self._cap = self._capture()
            ok, image = self._cap.read()
            if not ok:
                raise DeviceError(f"video file {self.path}: no frame after starting it again")
            self.loops += 1
        capture_ts_us = _now_us()
        pos_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if not (math.isfinite(pos_ms) and pos_ms >= 0):
            index = self._cap.get(cv2.CAP_PROP_POS_FRAMES) - 1
            pos_ms = max(0.0, index) * 1000 / (self.native_fps or FALLBACK_FPS)
        return CapturedImage(image, round(pos_ms), capture_ts_us)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class CameraSource(CaptureSource):
    """A webcam through ``cv2.VideoCapture(index)`` (``/dev/video<index>`` on Linux).

    ``width``/``height`` ask the camera for a size (it may choose another). ``native_fps`` is
    the rate the driver reports, or None. ``pts_ms`` is ms since :meth:`open`.

    :meth:`open` raises :class:`DeviceError` if there is no such camera or it gives no frame;
    :meth:`read` raises it if the camera stops giving frames (unplugged).
    """

    def __init__(
        self, index: int = 0, *, width: int | None = None, height: int | None = None
    ) -> None:
        super().__init__(f"camera {index}")
        if type(index) is not int or index < 0:
            raise ValueError(f"camera index must be an integer >= 0, got {index!r}")
        self.index = index
        self._want = (width, height)
        self._cap: cv2.VideoCapture | None = None
        self._t0 = 0.0

    def _open(self) -> None:
        cap = cv2.VideoCapture(self.index)
        self._cap = cap
        if not cap.isOpened():
            raise DeviceError(
                f"no camera at index {self.index}: is /dev/video{self.index} there, and may "
                "this user open it? (--video-file PATH publishes a file instead)"
            )
        want_w, want_h = self._want
        if want_w:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, want_w)
        if want_h:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, want_h)
        self.native_fps = _sane_fps(cap.get(cv2.CAP_PROP_FPS))
        self._t0 = time.monotonic()
        ok, image = cap.read()
        if not ok:
            raise DeviceError(f"camera {self.index} opened but gave no frame")
        self.height, self.width = image.shape[:2]
        self._pending = CapturedImage(image, 0, _now_us())

    def _read(self) -> CapturedImage | None:
        assert self._cap is not None
        ok, image = self._cap.read()
        if not ok:
            raise DeviceError(f"camera {self.index} stopped giving frames (unplugged?)")
        return CapturedImage(image, round((time.monotonic() - self._t0) * 1000), _now_us())

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ScreenSource(CaptureSource):
    """The screen, grabbed with ``mss`` (10.x: ``mss.MSS()``, created in the source's own
    thread because an MSS object belongs to the thread that made it).

    ``monitor`` indexes ``MSS().monitors``: 1 is the first monitor, 2 the second, ..., 0 all
    of them together. ``pts_ms`` is ms since :meth:`open`. The BGRA grab is converted to BGR.

    :meth:`open` raises :class:`DeviceError` when there is no display (``DISPLAY`` unset or no
    X server there) or no such monitor; :meth:`read` when a grab fails.
    """

    kind: ClassVar[str] = "screen"

    def __init__(self, monitor: int = 1) -> None:
        super().__init__(f"screen {monitor}")
        if type(monitor) is not int or monitor < 0:
            raise ValueError(f"monitor must be an integer >= 0, got {monitor!r}")
        self.monitor = monitor
        self._sct: Any = None
        self._region: dict[str, int] | None = None
        self._t0 = 0.0

    def _open(self) -> None:
        import mss  # imported here: it loads Xlib, which only the screen needs

        check_x_display()
        try:
            self._sct = mss.MSS()
            monitors = self._sct.monitors
        except mss.ScreenShotError as exc:
            raise DeviceError(f"cannot grab the screen: {exc}") from None
        if self.monitor >= len(monitors):
            raise DeviceError(
                f"no monitor {self.monitor}: this display has monitors 1 to {len(monitors) - 1} "
                "(0 is all of them)"
            )
        self._region = dict(monitors[self.monitor])
        self._t0 = time.monotonic()
        first = self._read()
        assert first is not None
        self.height, self.width = first.image.shape[:2]
        self._pending = first

    def _read(self) -> CapturedImage | None:
        import mss

        assert self._sct is not None and self._region is not None
        try:
            shot = self._sct.grab(self._region)
        except mss.ScreenShotError as exc:
            raise DeviceError(f"screen grab failed: {exc}") from None
        capture_ts_us = _now_us()
        image = cv2.cvtColor(np.asarray(shot), cv2.COLOR_BGRA2BGR)
        return CapturedImage(image, round((time.monotonic() - self._t0) * 1000), capture_ts_us)

    def _release(self) -> None:
        if self._sct is not None:
            self._sct.close()
            self._sct = None
