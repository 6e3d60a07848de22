"""The viewer: one OpenCV window, one tile per participant and kind.

One dedicated OS thread (``threading.Thread``, daemon) owns every ``cv2`` window call
(``namedWindow``, ``imshow``, ``waitKey``, ``destroyWindow``): it takes the newest frame of each
tile from a lock-protected :class:`~zmeet.media.LatestSlot`, decodes JPEG there, composes the
mosaic (:func:`~zmeet.media.render_gallery`) and shows it. Greenlets only call :meth:`Viewer.show`,
which stores a reference under the lock and returns: the gevent hub never waits on the window.

OpenCV's Qt backend binds its windows to the first thread that opened one, for the life of the
process: a second viewer in another thread would hang in ``namedWindow``. So a process gets one
viewer; starting another after it raises :class:`DeviceError` instead of hanging.

The window thread must be a real OS thread: a program that monkey-patches with gevent must
leave threads alone (``gevent.monkey.patch_all(thread=False)``), or ``waitKey`` would block
the hub.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from ..errors import DeviceError, RemoteProtocolError
from ..media import LatestSlot, Tile, render_gallery
from ..media.tiling import (
    Participant,
    decode_reduction,
    gallery_layout,
    meeting_layout,
    render_meeting,
)
from ._x11 import check_x_display
from .jpeg import decode_jpeg

log = logging.getLogger("zmeet.devices")

DEFAULT_CANVAS_W = 1280
DEFAULT_CANVAS_H = 720
DEFAULT_REFRESH_MS = 30
"""``cv2.waitKey`` delay of the window thread: how often it looks for new frames and keys."""

CLOSE_KEYS = (27, ord("q"))
"""Esc and q close the window."""

CLOSE_TIMEOUT_S = 5.0

_FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts")

_gui_lock = threading.Lock()
_gui_thread: threading.Thread | None = None

Key = tuple[str, str]


class Viewer:
    """An OpenCV window showing one tile per ``(sender, kind)``, labelled ``"<sender> <kind>"``.

    ``canvas_w`` x ``canvas_h`` is the window's size in pixels; ``refresh_ms`` how often the
    window thread looks for new frames. After :meth:`start`, call :meth:`show` from anywhere
    (greenlet or thread) with a BGR uint8 HxWx3 array or the JPEG bytes of a frame; the window
    shows the newest of each tile (older ones are counted in :attr:`superseded`).
    The window opens with the first :meth:`show`, so a meeting where nobody sends video opens
    none. :meth:`close` stops the thread and destroys the window. A person may close the window
    (its close button, Esc or q): :attr:`user_closed` is then True and the thread ends.
    """

    def __init__(
        self,
        title: str = "zmeet",
        *,
        canvas_w: int = DEFAULT_CANVAS_W,
        canvas_h: int = DEFAULT_CANVAS_H,
        refresh_ms: int = DEFAULT_REFRESH_MS,
        position: tuple[int, int] = (0, 0),
    ) -> None:
        if canvas_w < 16 or canvas_h < 16:
            raise ValueError(f"canvas must be at least 16x16 pixels, got {canvas_w}x{canvas_h}")
        if refresh_ms < 1:
            raise ValueError(f"refresh_ms must be at least 1, got {refresh_ms}")
        self.title = title
        self.canvas_w = canvas_w
        self.canvas_h = canvas_h
        self.refresh_ms = refresh_ms
        self.position = position
        self._slot: LatestSlot[Key, Any] = LatestSlot()
        self._stop = threading.Event()
        self._wanted = threading.Event()  # set by the first show(): the window opens then
        self._window_open = False
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self.presented = 0
        """Mosaics shown so far (each time a tile changed)."""
        self.ticks = 0
        """Window-loop turns so far (each a ``waitKey`` that let the window paint)."""
        self.shown_tiles: tuple[Key, ...] = ()
        """The tiles that had an image in the last mosaic shown."""
        self.bad_frames: Counter[Key] = Counter()
        self.user_closed = False
        self.error: BaseException | None = None
        """The exception that ended the window thread, if one did."""
        self._boxes: dict[Key, tuple[int, int]] = {}  # each tile's size in the last mosaic
        self._source_sizes: dict[Key, tuple[int, int]] = {}  # each stream's full picture size
        self.decoded_reduced = 0
        """JPEGs decoded at a fraction of their size, because their tile is that small."""
        self.meeting_view: Any = None
        """``f() -> dict`` (``Meeting.view``): with it the window shows the meeting gallery,
        one tile per participant with states, the active speaker, a screen share on stage."""

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Check the display and start the window thread. Raises :class:`DeviceError` if there
        is no usable display, or if this process already ran a viewer (see the module
        docstring). Idempotent while running."""
        global _gui_thread
        if self._thread is not None:
            return
        check_x_display()
        for font_dir in _FONT_DIRS:  # Qt wheels ship no fonts; this quiets its warnings
            if os.path.isdir(font_dir):
                os.environ.setdefault("QT_QPA_FONTDIR", font_dir)
                break
        thread = threading.Thread(target=self._run, name=f"zmeet viewer {self.title}", daemon=True)
        with _gui_lock:
            if _gui_thread is not None:
                raise DeviceError(
                    "this process already opened a viewer window; OpenCV's Qt windows work "
                    "from one thread per process, so run one viewer per process"
                )
            _gui_thread = thread
        self._thread = thread
        thread.start()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the window thread and destroy the window, waiting at most ``timeout_s``. From a
        greenlet, the wait runs in the hub's threadpool so other greenlets go on. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        try:
            import gevent

            gevent.get_hub().threadpool.apply(thread.join, (timeout_s,))
        except ImportError:
            thread.join(timeout_s)
        if thread.is_alive():
            log.warning("viewer: the window thread did not stop within %g s", timeout_s)

    @property
    def running(self) -> bool:
        """True while the window thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # feeding ------------------------------------------------------------------------------------

    def show(
        self, sender: str, kind: str, image: np.ndarray | bytes | bytearray | memoryview
    ) -> None:
        """Make ``image`` the newest frame of tile ``(sender, kind)``: a BGR uint8 HxWx3 array,
        or a JPEG (decoded in the window thread; one that does not decode is counted in
        :attr:`bad_frames`). Thread-safe and non-blocking; never raises for a closed viewer."""
        self._slot.put((sender, kind), image)
        self._wanted.set()

    def set_meeting(self, meeting: Any) -> None:
        """Show ``meeting``'s gallery (:meth:`zmeet.client.media.Meeting.view`)."""
        self.meeting_view = meeting.view
        self._wanted.set()  # the gallery shows this participant's own tile at once

    def remove(self, sender: str, kind: str) -> None:
        """Drop tile ``(sender, kind)`` (its sender left or stopped sending)."""
        key = (sender, kind)
        self._slot.discard(key)
        self._slot.put(key, None)

    @property
    def superseded(self) -> Counter[Key]:
        """Frames per tile replaced before the window thread showed them."""
        return self._slot.superseded

    def wait_shown(self, keys: Iterable[Key], timeout_s: float) -> bool:
        """Block the calling thread until the window shows an image in every tile of ``keys``
        (``(sender, kind)`` pairs) and its loop turned once more after that (so it was painted),
        or ``timeout_s`` passes. Returns whether it happened. For tests and non-gevent
        callers: it blocks the thread (and the gevent hub, if called from a greenlet)."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout_s
        with self._progress:
            ok = self._progress.wait_for(
                lambda: wanted <= set(self.shown_tiles) or not self.running, timeout_s
            )
            if not ok or not wanted <= set(self.shown_tiles):
                return False
            ticks = self.ticks
            return self._progress.wait_for(
                lambda: self.ticks > ticks or not self.running,
                max(0.0, deadline - time.monotonic()),
            ) and self.running

    def wait_turn(self, timeout_s: float) -> bool:
        """Block the calling thread until the window loop turns once more (one ``waitKey``, in
        which Qt paints), or ``timeout_s`` passes, or the thread ends. Returns whether it turned.
        For tests and non-gevent callers, like :meth:`wait_shown`."""
        with self._progress:
            ticks = self.ticks
            return self._progress.wait_for(
                lambda: self.ticks > ticks or not self.running, timeout_s
            ) and self.ticks > ticks

    def stats(self) -> dict[str, Any]:
        """JSON-able: mosaics presented, tiles, frames superseded and bad per ``"sender/kind"``."""
        return {
            "presented": self.presented,
            "decoded_reduced": self.decoded_reduced,
            "superseded": {f"{s}/{k}": n for (s, k), n in self._slot.superseded.items()},
            "bad": {f"{s}/{k}": n for (s, k), n in self.bad_frames.items()},
            "user_closed": self.user_closed,
            "error": None if self.error is None else str(self.error),
        }

    # the window thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # end the thread, keep the reason for stats() and logs
            self.error = exc
            log.exception("viewer: the window thread failed")
        finally:
            try:
                if self._window_open:
                    cv2.destroyWindow(self.title)
                for _ in range(3):  # let Qt run the destruction and flush it to the X server
                    cv2.waitKey(1)
            except cv2.error as exc:
                log.debug("viewer: destroying the window: %s", exc)
            with self._progress:
                self._progress.notify_all()

    def _gallery(self, images: dict[Key, np.ndarray | None], view: dict[str, Any]) -> np.ndarray:
        """One tile per participant (this one first, with the self-view), the first screen
        share on stage."""
        states, active, me = view["states"], view["active"], view["nick"]
        own = view["own"]
        people = [Participant(f"{me} (you)", images.get((me, "video")), own.muted,
                              not own.video, active == me)]
        keys: list[Key] = [(me, "video")]  # the image each tile shows, in tile order
        others = sorted(({s for (s, k) in images if k == "video"} | set(states)) - {me})
        for nick in others:
            state = states.get(nick)
            people.append(Participant(
                nick, images.get((nick, "video")),
                muted=bool(state and state.muted),
                video_off=state is not None and not state.video,
                active=active == nick,
            ))
            keys.append((nick, "video"))
        for (sender, kind), img in sorted(images.items()):
            if kind == "image" and img is not None:  # a shared image's preview (cli/files.py)
                people.append(Participant(f"{sender}: image", img))
                keys.append((sender, kind))
        screens = sorted((s, img) for (s, k), img in images.items()
                         if k == "screen" and img is not None)
        stage = (f"{screens[0][0]} screen", screens[0][1]) if screens else None
        stage_rect, rects = meeting_layout(len(people), self.canvas_w, self.canvas_h,
                                           stage=stage is not None)
        self._boxes = {key: (r.w, r.h) for key, r in zip(keys, rects, strict=False)}
        if stage is not None and stage_rect is not None:
            self._boxes[(screens[0][0], "screen")] = (stage_rect.w, stage_rect.h)
        return render_meeting(people, self.canvas_w, self.canvas_h, stage=stage)

    def _decode(self, key: Key, data: Any) -> np.ndarray:
        """Decode a tile's JPEG, reduced (in libjpeg) when its tile in the last mosaic is at
        most half its size or smaller (:func:`~zmeet.media.tiling.decode_reduction`); the
        first frame of a stream, whose size is not known yet, at full size."""
        box, source = self._boxes.get(key), self._source_sizes.get(key)
        reduce = decode_reduction(*source, *box) if box and source else 1
        image = decode_jpeg(data, reduce=reduce)
        self._source_sizes[key] = (image.shape[1] * reduce, image.shape[0] * reduce)
        if reduce > 1:
            self.decoded_reduced += 1
        return image

    def _loop(self) -> None:
        title = self.title
        # no window until there is something to show: a chat-only meeting opens none
        while not self._wanted.wait(self.refresh_ms / 1000):
            if self._stop.is_set():
                return
        if self._stop.is_set():
            return
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)  # no toolbar
        self._window_open = True
        cv2.moveWindow(title, *self.position)
        images: dict[Key, np.ndarray | None] = {}
        last_view: Any = None
        dirty = True
        while not self._stop.is_set():
            for key, item in self._slot.take_all().items():
                dirty = True
                if item is None:
                    images.pop(key, None)
                    continue
                if isinstance(item, np.ndarray):
                    images[key] = item
                    continue
                try:
                    images[key] = self._decode(key, item)
                except RemoteProtocolError as exc:
                    self.bad_frames[key] += 1
                    log.debug("viewer: frame of %s/%s dropped: %s", *key, exc)
            view = self.meeting_view() if self.meeting_view is not None else None
            if view is not None and view != last_view:  # states and speaker change too
                dirty, last_view = True, view
            if dirty:
                if view is not None:
                    cv2.imshow(title, self._gallery(images, view))
                else:
                    keys = sorted(images)
                    tiles = [Tile(f"{s} {k}", k, images[(s, k)]) for s, k in keys]
                    rects = gallery_layout(len(keys), self.canvas_w, self.canvas_h)
                    self._boxes = {key: (r.w, r.h) for key, r in zip(keys, rects, strict=True)}
                    cv2.imshow(title, render_gallery(tiles, self.canvas_w, self.canvas_h))
                dirty = False
                with self._progress:
                    self.presented += 1
                    self.shown_tiles = tuple(sorted(k for k, img in images.items()
                                                    if img is not None))
                    self._progress.notify_all()
            pressed = cv2.waitKey(self.refresh_ms)
            with self._progress:
                self.ticks += 1
                self._progress.notify_all()
            if pressed in CLOSE_KEYS or cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
                self.user_closed = True
                log.info("viewer: the window was closed")
                return
