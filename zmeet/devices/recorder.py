"""Recording what a receiver gets: one video file and one sidecar per sender and kind.

``DIR/<sender>-<kind>.avi`` is Motion JPEG in AVI, written by OpenCV's own MJPEG writer
(``cv2.CAP_OPENCV_MJPEG``) at quality :data:`RECORD_QUALITY`, at the frame rate the first
frame's metadata gives (``MediaFrame.fps``). ``DIR/<sender>-<kind>.jsonl`` has one JSON object
per written frame, in file order::

    {"index": 0, "seq": 12, "pts_ms": 1200, "capture_ts_us": ..., "received_ts_us": ...,
     "width": 768, "height": 576}

``index`` is the frame's position in the video file; ``width``/``height`` the size received
(a frame of another size than the file's first is resized to it). Times are microseconds
since the Unix epoch: ``capture_ts_us`` on the sender's clock, ``received_ts_us`` on this one.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from ..errors import DeviceError, RemoteProtocolError
from ..media.tiling import resize_to
from ..protocol import MEDIA_KINDS, MediaFrame, is_valid_nick
from ._thread import DeviceThread
from .jpeg import decode_jpeg

log = logging.getLogger("zmeet.devices")

RECORD_QUALITY = 95
"""``cv2.VIDEOWRITER_PROP_QUALITY`` of the MJPEG files (0 to 100)."""

RECORD_FALLBACK_FPS = 10.0
"""Frame rate of a file whose first frame's metadata gives none."""

VIDEO_SUFFIX = ".avi"
SIDECAR_SUFFIX = ".jsonl"


@dataclass
class _Track:
    writer: cv2.VideoWriter
    sidecar: IO[str]
    video_path: Path
    sidecar_path: Path
    width: int
    height: int
    fps: float
    frames: int = 0
    resized: int = 0


class Recorder:
    """Writes received frames to ``directory`` (see the module docstring for the files).

    :meth:`open` creates the directory; :meth:`write` decodes and writes one frame;
    :meth:`close` flushes and releases every file. All file and codec work runs in the
    recorder's own OS thread (a gevent ``ThreadPool(1)``); the methods are called from
    greenlets and wait cooperatively.
    """

    def __init__(self, directory: str | Path, *, quality: int = RECORD_QUALITY) -> None:
        self.directory = Path(directory)
        self.quality = quality
        self.frames_written: Counter[tuple[str, str]] = Counter()
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._thread = DeviceThread(f"recorder {directory}")
        self._opened = False

    def open(self) -> None:
        """Create the directory (and its parents). Raises :class:`DeviceError` if it cannot be
        created or is not writable."""
        if self._opened:
            return
        self._thread.call(self._open)
        self._opened = True

    def write(self, frame: MediaFrame, received_ts_us: int | None = None) -> None:
        """Decode ``frame.payload`` (JPEG) and append it to ``<sender>-<kind>.avi``, and its
        line to the sidecar; the files are created on a stream's first frame.

        ``received_ts_us`` is when it arrived (default: now), microseconds since the Unix
        epoch. Raises :class:`RemoteProtocolError` for a frame that cannot be recorded (a
        payload that is not a JPEG, a sender or kind that cannot name a file; drop it and go
        on), :class:`DeviceError` if the file cannot be created or written, RuntimeError if
        the recorder is not open.
        """
        if not self._opened or self._thread.closed:
            raise RuntimeError("the recorder is not open")
        if received_ts_us is None:
            received_ts_us = time.time_ns() // 1000
        self._thread.call(self._write, frame, received_ts_us)

    def close(self) -> None:
        """Flush and close every sidecar, release every video writer, stop the thread.
        Idempotent; logs, never raises."""
        if self._thread.closed:
            return
        try:
            self._thread.call(self._release_all)
        except Exception:
            log.exception("recorder: closing the files failed")
        finally:
            self._opened = False
            self._thread.close()

    def files(self) -> dict[tuple[str, str], tuple[Path, Path]]:
        """``{(sender, kind): (video_path, sidecar_path)}`` of every stream recorded."""
        return {k: (t.video_path, t.sidecar_path) for k, t in self._tracks.items()}

    def stats(self) -> dict[str, Any]:
        """JSON-able: the directory and, per ``"sender/kind"``, frames written and resized."""
        return {
            "dir": str(self.directory),
            "streams": {
                f"{s}/{k}": {"frames": t.frames, "resized": t.resized, "fps": t.fps,
                             "width": t.width, "height": t.height}
                for (s, k), t in self._tracks.items()
            },
        }

    # in the recorder's thread -----------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(
                f"cannot create the recording folder {self.directory}: {exc}"
            ) from None
        if not self.directory.is_dir():
            raise DeviceError(f"{self.directory} is not a folder")

    def _paths(self, sender: str, kind: str) -> tuple[Path, Path]:
        # names from the network: allow only what a nick and a kind can be, and check that
        # the result stays in the folder (STYLE.md, "Errors": file names from the network)
        if not is_valid_nick(sender) or kind not in MEDIA_KINDS:
            raise RemoteProtocolError(f"cannot record sender {sender[:40]!r} kind {kind[:20]!r}")
        base = self.directory.resolve()
        video = (base / f"{sender}-{kind}{VIDEO_SUFFIX}").resolve()
        sidecar = (base / f"{sender}-{kind}{SIDECAR_SUFFIX}").resolve()
        if video.parent != base or sidecar.parent != base:
            raise RemoteProtocolError(f"sender {sender!r} does not name a file in {base}")
        return video, sidecar

    def _track(self, key: tuple[str, str], frame: MediaFrame, image: np.ndarray) -> _Track:
        track = self._tracks.get(key)
        if track is not None:
            return track
        video_path, sidecar_path = self._paths(*key)
        height, width = image.shape[:2]
        fps = frame.fps if 0 < frame.fps <= 240 else RECORD_FALLBACK_FPS
        writer = cv2.VideoWriter(
            str(video_path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"), fps,
            (width, height),
        )
        if not writer.isOpened():
            raise DeviceError(f"cannot write video file {video_path}")
        if not writer.set(cv2.VIDEOWRITER_PROP_QUALITY, self.quality):
            log.warning("recorder: the writer ignored quality %d for %s", self.quality, video_path)
        try:
            sidecar = open(sidecar_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            writer.release()
            raise DeviceError(f"cannot write {sidecar_path}: {exc}") from None
        track = _Track(writer, sidecar, video_path, sidecar_path, width, height, fps)
        self._tracks[key] = track
        log.info("recording %s/%s to %s at %g fps", *key, video_path, fps)
        return track

    def _write(self, frame: MediaFrame, received_ts_us: int) -> None:
        if frame.codec != "jpeg":
            raise RemoteProtocolError(f"cannot record codec {frame.codec[:20]!r}")
        image = decode_jpeg(frame.payload)
        key = (frame.sender, frame.kind)
        track = self._track(key, frame, image)
        h, w = image.shape[:2]
        if (w, h) != (track.width, track.height):
            image = resize_to(image, track.width, track.height)
            track.resized += 1
        track.writer.write(image)
        line = {
            "index": track.frames,
            "seq": frame.seq,
            "pts_ms": frame.pts_ms,
            "capture_ts_us": frame.capture_ts_us,
            "received_ts_us": received_ts_us,
            "width": w,
            "height": h,
        }
        try:
            track.sidecar.write(json.dumps(line, separators=(",", ":")) + "\n")
        except OSError as exc:
            raise DeviceError(f"cannot write {track.sidecar_path}: {exc}") from None
        track.frames += 1
        self.frames_written[key] += 1

    def _release_all(self) -> None:
        for track in self._tracks.values():
            try:
                track.sidecar.close()
            except OSError:
                log.exception("recorder: closing %s failed", track.sidecar_path)
            track.writer.release()
