"""The sending side of the client's media lane (docs/protocol.md, "Media lane").

:class:`MediaPublisher` is a DEALER whose routing id is ``Welcome.media_token``, connected to
the broker's ``media_in`` ROUTER. It sends ``[header, "FRAME", meta, payload]``; the broker
forwards it to the room under the topic ``media/<room>/<sender>/<kind>``. Every send is
``NOBLOCK`` with a small ``SNDHWM``: a frame that does not fit is dropped and counted, so no
backlog ever builds. A camera or video file is sent twice (simulcast): ``video`` at full size
and ``thumb`` at most :data:`THUMB_WIDTH` pixels wide; a layer no one receives (MEDIA-DEMAND)
is suspended. Capture and JPEG encoding run in each source's own thread, never on the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import zmq
import zmq.green as zmq_green

from ... import protocol as p
from ...clock import SYSTEM_CLOCK, Clock
from ...devices import CaptureSource
from ...devices.jpeg import DEFAULT_MAX_WIDTH, DEFAULT_QUALITY, check_encoding
from ...errors import DeviceError, LocalProtocolError
from ...media import FpsMeter, Pacer
from ...protocol.limits import MAX_MEDIA_FRAME_BYTES, MEDIA_SOCKET_BUFFER_BYTES
from ..session import Session
from ._common import PUBLISHED_KINDS, STOP_TIMEOUT_S, THUMB_WIDTH, Progress

log = logging.getLogger("zmeet.media")

PUBLISH_SNDHWM = 8
"""Messages (video, thumb, audio and state frames) a publisher's DEALER queues before a send
is dropped (zmq.Again): at 30 fps with simulcast and 50 audio frames a second, about 70 ms."""


@dataclass
class PublishedStream:
    """What a publisher did with one kind: frames ``sent``, ``dropped`` on a full queue
    (zmq.Again), ``oversize`` (over the broker's limit), ``bytes`` sent, capture and encode
    time in ms, the pacer's ``skipped`` deadlines, and ``error`` if the source failed."""

    kind: str
    source: str
    target_fps: float
    meter: FpsMeter
    sent: int = 0
    dropped: int = 0
    oversize: int = 0
    bytes: int = 0
    thumb_sent: int = 0
    thumb_dropped: int = 0
    thumb_bytes: int = 0
    suspended: int = 0
    thumb_suspended: int = 0
    capture_ms_total: float = 0.0
    encode_ms_total: float = 0.0
    captured: int = 0
    skipped: int = 0
    ended: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        n = max(1, self.captured)
        return {
            "source": self.source,
            "target_fps": self.target_fps,
            "sent": self.sent,
            "dropped": self.dropped,
            "oversize": self.oversize,
            "bytes": self.bytes,
            "thumb_sent": self.thumb_sent,
            "thumb_dropped": self.thumb_dropped,
            "thumb_bytes": self.thumb_bytes,
            "suspended": self.suspended,
            "thumb_suspended": self.thumb_suspended,
            "fps": round(self.meter.fps(), 2),
            "mean_fps": round(self.meter.mean_fps(), 2),
            "capture_ms": round(self.capture_ms_total / n, 3),
            "encode_ms": round(self.encode_ms_total / n, 3),
            "skipped": self.skipped,
            "ended": self.ended,
            "error": self.error,
        }


class MediaPublisher:
    """Sends captured frames of ``room`` to the broker's media lane, one greenlet per source.

    ``session`` must be connected (its WELCOME gives the media token and endpoints) and have
    joined ``room`` (the broker drops frames for a room the sender is not in). ``sndhwm`` is
    the DEALER's send high-water mark (messages); ``clock`` paces the captures and measures
    the rates (its monotonic time). Raises :class:`LocalProtocolError` if the session is not
    connected, ValueError for a bad room name.
    """

    def __init__(self, session: Session, room: str, *, sndhwm: int = PUBLISH_SNDHWM,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        welcome = session.welcome
        if welcome is None or "media_in" not in session.endpoints:
            raise LocalProtocolError("connect the session before publishing media")
        if not p.is_valid_room(room):
            raise ValueError(f"invalid room name {room!r}")
        self.session = session
        self.room = room
        self.clock = clock
        self.max_frame_bytes = welcome.limits.get("max_media_frame_bytes", MAX_MEDIA_FRAME_BYTES)
        self._sndhwm = sndhwm
        self._sock: zmq_green.Socket | None = None
        self._open_socket(welcome.media_token)
        self._streams: dict[str, PublishedStream] = {}
        self._greenlets: dict[str, gevent.Greenlet] = {}
        self.on_encoded: Callable[[str, Any], None] | None = None
        """Called on the hub with ``(kind, EncodedImage)`` for each frame captured, sent or
        not (the self-view); it must not block."""
        self.demand: frozenset[str] | None = None
        """The kinds anyone receives from this sender in ``room`` (MEDIA-DEMAND), or None
        until the broker tells: ``video`` and ``thumb`` frames no one receives are not sent
        (nor encoded, for the thumbnail) and are counted as suspended."""
        self._progress = Progress()
        session.welcome_listeners.append(self._on_welcome)
        session.direct_handlers[p.MediaDemand] = self._on_demand

    def _open_socket(self, media_token: bytes) -> None:
        sock = self.session.secure(self.session.context.socket(zmq.DEALER))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._sndhwm)
        sock.setsockopt(zmq.SNDBUF, MEDIA_SOCKET_BUFFER_BYTES)
        sock.setsockopt(zmq.IDENTITY, media_token)  # the broker knows the sender by it
        sock.connect(self.session.endpoints["media_in"])
        self._token = media_token
        self._sock = sock
        self._raw: zmq.Socket = zmq.Socket.shadow(sock.underlying)

    def _on_demand(self, message: p.Message) -> None:
        assert isinstance(message, p.MediaDemand)
        if message.room == self.room:
            self.demand = frozenset(message.kinds)
            self._progress.notify()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (cooperatively) until ``predicate()`` is true, re-checking it after each frame
        captured and each MEDIA-DEMAND, for at most ``timeout_s``. Returns its last value."""
        return self._progress.wait_until(predicate, timeout_s, lambda: self._sock is None)

    def wanted(self, kind: str) -> bool:
        """Whether to send ``kind`` now: always until the broker told the demand."""
        return self.demand is None or kind in self.demand

    def _on_welcome(self, welcome: p.Welcome) -> None:
        """After a reconnect the broker gives a new media token (and maybe new endpoints):
        open a new DEALER with it. Sending greenlets pick the new socket at their next frame."""
        if self._sock is None or welcome.media_token == self._token:
            return
        self.demand = None  # a new session: the broker tells again after the first frame
        old = self._sock
        self._open_socket(welcome.media_token)
        old.close(linger=0)

    def publish_source(
        self,
        source: CaptureSource,
        kind: str | None = None,
        fps: float | None = None,
        quality: int = DEFAULT_QUALITY,
        max_width: int = DEFAULT_MAX_WIDTH,
        thumb_width: int | None = None,
    ) -> gevent.Greenlet:
        """Open ``source`` (if it is not) and spawn a greenlet that, every ``1/fps`` s, reads
        and JPEG-encodes a frame in the source's thread and sends it as a
        :class:`~zmeet.protocol.MediaFrame` of ``kind`` (default ``source.kind``).

        ``fps`` defaults to the source's ``native_fps`` (a video file's own rate). ``quality``
        (1 to 100) and ``max_width`` (pixels) are the JPEG settings. With ``thumb_width``
        (pixels; ``video`` only) each frame is also sent as a ``thumb`` at most that wide
        (simulcast: receivers with small tiles subscribe to it instead). The greenlet ends at
        the end of a file that does not loop, or when the source fails (``stats()`` says why).
        Returns the greenlet. Raises ValueError for a bad kind, fps, quality, max_width or
        thumb_width, a thumb for another kind than video, or a kind already published;
        :class:`DeviceError` if the source cannot be opened; RuntimeError if the publisher is
        closed.
        """
        if self._sock is None:
            raise RuntimeError("the publisher is closed")
        kind = kind or source.kind
        if kind not in PUBLISHED_KINDS:
            raise ValueError(f"kind must be one of {', '.join(PUBLISHED_KINDS)}, got {kind!r}")
        running = self._greenlets.get(kind)
        if running is not None and not running.dead:
            raise ValueError(f"{kind} is already being published")
        check_encoding(quality, max_width)
        if thumb_width is not None:
            if kind != "video":
                raise ValueError(f"only video is sent with a thumb, not {kind}")
            check_encoding(quality, thumb_width)
        source.open()
        rate = fps if fps is not None else source.native_fps
        if rate is None:
            raise ValueError(f"{source.name} has no frame rate of its own: give fps")
        pacer = Pacer(rate, self.clock.monotonic_s)
        stream = PublishedStream(kind, source.name, pacer.fps, FpsMeter(self.clock.monotonic_s))
        self._streams[kind] = stream
        greenlet = gevent.spawn(self._run, source, stream, pacer, quality, max_width, thumb_width)
        self._greenlets[kind] = greenlet
        return greenlet

    def _run(
        self, source: CaptureSource, stream: PublishedStream, pacer: Pacer, quality: int,
        max_width: int, thumb_width: int | None,
    ) -> None:
        seq = thumb_seq = 0
        while True:
            delay_s = pacer.delay_s()
            stream.skipped = pacer.skipped
            if delay_s > 0:
                gevent.sleep(delay_s)  # pacing: wait for the next capture deadline
            thumb_wanted = thumb_width is not None and self.wanted("thumb")
            try:
                encoded = source.read_jpeg(
                    quality=quality, max_width=max_width,
                    thumb_width=thumb_width if thumb_wanted else None)
            except DeviceError as exc:
                stream.error = str(exc)
                log.error("%s stopped: %s", source.name, exc)
                return
            if encoded is None:
                stream.ended = True
                log.info("%s ended", source.name)
                return
            self._progress.notify()
            stream.captured += 1
            stream.capture_ms_total += encoded.capture_ms
            stream.encode_ms_total += encoded.encode_ms
            if self.on_encoded is not None:
                try:
                    self.on_encoded(stream.kind, encoded)
                except Exception:
                    log.exception("on_encoded failed")
            thumb_wanted = thumb_wanted and self.wanted("thumb")  # the demand may have changed
            if thumb_width is not None and not thumb_wanted:
                stream.thumb_suspended += 1
            elif encoded.thumb is not None and len(encoded.thumb) <= self.max_frame_bytes:
                thumb = p.MediaFrame(
                    room=self.room, kind="thumb", seq=thumb_seq,
                    capture_ts_us=encoded.capture_ts_us, pts_ms=encoded.pts_ms,
                    width=encoded.thumb_width, height=encoded.thumb_height, fps=pacer.fps,
                    codec="jpeg", payload=encoded.thumb,
                )
                sent = self._send_captured(thumb, stream, source.name)
                if sent is None:
                    return
                if sent:
                    thumb_seq += 1
                    stream.thumb_sent += 1
                    stream.thumb_bytes += len(encoded.thumb)
                else:
                    stream.thumb_dropped += 1
            if len(encoded.data) > self.max_frame_bytes:
                stream.oversize += 1
                continue
            if not self.wanted(stream.kind):  # no one receives it: suspended, not sent
                stream.suspended += 1
                continue
            frame = p.MediaFrame(
                room=self.room, kind=stream.kind, seq=seq, capture_ts_us=encoded.capture_ts_us,
                pts_ms=encoded.pts_ms, width=encoded.width, height=encoded.height,
                fps=pacer.fps, codec="jpeg", payload=encoded.data,
            )
            sent = self._send_captured(frame, stream, source.name)
            if sent is None:
                return
            if not sent:
                stream.dropped += 1
                continue
            seq += 1
            stream.sent += 1
            stream.bytes += len(encoded.data)
            stream.meter.tick()

    def _send_captured(self, frame: p.MediaFrame, stream: Any, name: str) -> bool | None:
        """Send a captured frame ``NOBLOCK``: True if sent, False if dropped (the queue to the
        broker is full: never a backlog), None if the socket failed (``stream.error`` says
        why, and the capture loop ends)."""
        try:
            self._raw.send_multipart(p.encode(frame), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            stream.error = f"media socket: {exc}"
            log.error("%s: cannot send: %s", name, exc)
            return None
        return True

    def send_frame(self, frame: p.MediaFrame) -> bool:
        """Send one ready frame (audio, state) ``NOBLOCK``. Returns False if it was dropped
        because the queue to the broker is full (or the publisher is closed): never a backlog."""
        if self._sock is None:
            return False
        try:
            self._raw.send_multipart(p.encode(frame), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            log.debug("media socket: cannot send: %s", exc)
            return False
        return True

    def stop_kind(self, kind: str) -> None:
        """Stop publishing ``kind`` (``/video off``); its source stays open."""
        greenlet = self._greenlets.pop(kind, None)
        if greenlet is not None:
            greenlet.kill(block=True, timeout=STOP_TIMEOUT_S)

    def publishing(self, kind: str) -> bool:
        """True while a greenlet publishes ``kind``."""
        greenlet = self._greenlets.get(kind)
        return greenlet is not None and not greenlet.dead

    def stop(self) -> None:
        """Stop every publishing greenlet (the sources stay open; their owner closes them)."""
        greenlets = list(self._greenlets.values())
        gevent.killall(greenlets, block=True, timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        """:meth:`stop`, then close the socket. Idempotent."""
        self.stop()
        if self._on_welcome in self.session.welcome_listeners:
            self.session.welcome_listeners.remove(self._on_welcome)
        if self.session.direct_handlers.get(p.MediaDemand) == self._on_demand:
            del self.session.direct_handlers[p.MediaDemand]
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close(linger=0)

    def stats(self) -> dict[str, dict[str, Any]]:
        """JSON-able, per kind: see :class:`PublishedStream`."""
        return {kind: stream.as_dict() for kind, stream in self._streams.items()}


__all__ = ["PUBLISH_SNDHWM", "THUMB_WIDTH", "MediaPublisher", "PublishedStream"]
