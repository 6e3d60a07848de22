"""The client's media lane (DESIGN.md, "The lanes"): publish captured frames, receive a room's.

Sockets, driven by gevent and ``zmq.green`` (docs/protocol.md, "Media lane"):

- :class:`MediaPublisher`: a DEALER whose routing id is ``Welcome.media_token``, connected to
  the broker's ``media_in`` ROUTER. It sends ``[header, "FRAME", meta, payload]``; the broker
  forwards it to the room under the topic ``media/<room>/<sender>/<kind>``. Every send is
  ``NOBLOCK`` with a small ``SNDHWM``: a frame that does not fit is dropped and counted, so no
  backlog ever builds. A camera or video file is sent twice (simulcast): ``video`` at full
  size and ``thumb`` at most :data:`THUMB_WIDTH` pixels wide.
- :class:`MediaSubscriber`: a SUB on the broker's ``media_out`` PUB, subscribed to a whole
  room (``media/<room>/``) or to chosen streams (``media/<room>/<sender>/<kind>``: the
  broker's PUB filters, so a stream not chosen never leaves the broker). One greenlet owns it:
  it waits once on the green socket, then drains the raw socket it shadows with ``NOBLOCK``.

Newest frame wins: from each drained batch, the viewer gets only the newest frame of each
``(sender, kind)``, and its window thread only the newest of those it has not shown yet; the
frames it never showed are counted as superseded, and gaps in ``seq`` as lost. The recorder
gets every full-size frame received, through a bounded queue (a full queue drops and counts).

Blocking work never runs on the hub: capture and JPEG encoding in each source's own thread,
JPEG decoding in the viewer's window thread and the recorder's thread.

:class:`Meeting` puts it together for ``zmeet join ROOM --video/--video-file/--screen``: it
subscribes to each other member's streams (the session's member list), the thumbnail while
tiles are small, only the last-N speakers' video with ``max_streams``, and shows its own
capture as the self-view.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.queue
import zmq
import zmq.green as zmq_green

from .. import protocol as p
from ..devices import CameraSource, CaptureSource, Recorder, ScreenSource, VideoFileSource, Viewer
from ..devices.jpeg import DEFAULT_MAX_WIDTH, DEFAULT_QUALITY, check_encoding
from ..errors import DeviceError, LocalProtocolError
from ..media import FpsMeter, Pacer, SeqTracker
from ..media.audio import video_due_us
from ..media.jitter import DelayLine
from ..protocol.limits import (
    MAX_MEDIA_FRAME_BYTES,
    MAX_MEDIA_META_BYTES,
    MEDIA_SOCKET_BUFFER_BYTES,
)
from .session import Session

log = logging.getLogger("zmeet.media")

PUBLISH_SNDHWM = 8
"""Messages (video, thumb, audio and state frames) a publisher's DEALER queues before a send
is dropped (zmq.Again): at 30 fps with simulcast and 50 audio frames a second, about 70 ms."""

SUBSCRIBE_RCVHWM = 8
"""Frames a subscriber's SUB queues before libzmq drops newer ones."""

DRAIN_BATCH = 64
"""Frames taken per wake-up of the subscriber before it yields to other greenlets."""

RECORD_QUEUE_FRAMES = 32
"""Received frames waiting for the recorder before new ones are dropped and counted."""

DEFAULT_CAMERA_FPS = 15.0
"""Camera rate when neither ``fps`` nor the driver gives one."""

DEFAULT_SCREEN_FPS = 10.0
"""Screen rate when ``fps`` is not given."""

STOP_TIMEOUT_S = 5.0
"""How long stopping waits for a greenlet (and the recorder to write what it holds)."""

PUBLISHED_KINDS = ("video", "screen")
"""Kinds a capture source is published as (audio has its own lane logic)."""

VIEW_KINDS = ("video", "thumb", "screen")
"""Kinds shown in the gallery: ``thumb`` in the tile of its sender's ``video``."""

THUMB_WIDTH = 320
"""Width in pixels of a video's thumbnail, simulcast's low layer (Jitsi's lowest is 320x180)."""

LARGE_TILE_FACTOR = 1.5
"""A tile wider than this many thumbnails is shown from the full ``video`` layer."""

MAX_FRAME_AGE_MS = 120.0
"""A video frame that spent this much longer on the way than the quickest of its stream is
dropped before display (newest frame wins: a late frame is never shown as a slow replay).
Measured relative to the stream's quickest frame, so two machines' clock offset cancels out."""

DELAY_LINE_FRAMES = 16
"""Video frames per stream held at most for A/V sync."""

Key = tuple[str, str]


def _now_us() -> int:
    return time.time_ns() // 1000


class _Progress:
    """Something that moves on (frames sent, received, recorded): :meth:`notify` on each step,
    :meth:`wait_until` re-checks a predicate after each, cooperatively."""

    def __init__(self) -> None:
        self._event = gevent.event.Event()

    def notify(self) -> None:
        event, self._event = self._event, gevent.event.Event()
        event.set()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float,
                   ended: Callable[[], bool]) -> bool:
        """Wait until ``predicate()`` is true, for at most ``timeout_s``, or until ``ended()``.
        Returns the predicate's last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = self._event
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or ended():
                return bool(predicate())
            event.wait(remaining)


# --- publishing --------------------------------------------------------------------------------


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
    joined ``room`` (the broker drops frames for a room the sender is not in). Raises
    :class:`LocalProtocolError` if the session is not connected.
    """

    def __init__(self, session: Session, room: str, *, sndhwm: int = PUBLISH_SNDHWM) -> None:
        welcome = session.welcome
        if welcome is None or "media_in" not in session.endpoints:
            raise LocalProtocolError("connect the session before publishing media")
        if not p.is_valid_room(room):
            raise ValueError(f"invalid room name {room!r}")
        self.session = session
        self.room = room
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
        self._progress = _Progress()
        session.welcome_listeners.append(self._on_welcome)
        session.direct_handlers[p.MediaDemand] = self._on_demand

    def _open_socket(self, media_token: bytes) -> None:
        sock = self.session.context.socket(zmq.DEALER)
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
        pacer = Pacer(rate, time.monotonic)
        stream = PublishedStream(kind, source.name, pacer.fps, FpsMeter(time.monotonic))
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


# --- receiving ---------------------------------------------------------------------------------


@dataclass
class _Received:
    meter: FpsMeter
    superseded: int = 0
    record_dropped: int = 0
    record_bad: int = 0
    last_pts_ms: int = 0
    last_age_ms: float = 0.0
    min_age_ms: float | None = None
    stale: int = 0
    shown: int = 0
    shown_age_ms: float = 0.0
    max_shown_age_ms: float = 0.0
    width: int = 0
    height: int = 0


@dataclass
class _Drops:
    own: int = 0
    foreign_room: int = 0
    bad: int = 0
    other_codec: int = 0


class MediaSubscriber:
    """Receives the media frames of ``rooms`` and hands them to consumers.

    For each frame received (and not from ``session.nick`` itself, and in one of ``rooms``):
    ``on_frame(frame)`` is called on the hub with the :class:`~zmeet.protocol.MediaFrame`
    (``payload`` a memoryview of the received JPEG; the callback must not block, and an
    exception it raises is logged); ``recorder``, if given, gets it through a bounded queue;
    ``viewer``, if given, gets the newest frame of each ``(sender, kind)`` of each drained
    batch. The subscriber neither starts nor closes the viewer and recorder: their owner does.

    ``session`` must be connected. :meth:`start` opens the socket; :meth:`stop` closes it,
    after giving the recorder what it already received.
    """

    def __init__(
        self,
        session: Session,
        rooms: Iterable[str],
        *,
        on_frame: Callable[[p.MediaFrame], None] | None = None,
        viewer: Viewer | None = None,
        recorder: Recorder | None = None,
        rcvhwm: int = SUBSCRIBE_RCVHWM,
        record_queue_frames: int = RECORD_QUEUE_FRAMES,
        handlers: dict[str, Callable[[p.MediaFrame], None]] | None = None,
        video_delay_ms: Callable[[str], float | None] | None = None,
        max_age_ms: float | None = MAX_FRAME_AGE_MS,
    ) -> None:
        if session.welcome is None or "media_out" not in session.endpoints:
            raise LocalProtocolError("connect the session before receiving media")
        self.session = session
        self.rooms: set[str] = set()
        self._topics: dict[str, set[bytes]] = {}
        self._initial_rooms = list(rooms)
        for room in self._initial_rooms:
            if not p.is_valid_room(room):
                raise ValueError(f"invalid room name {room!r}")
        self.on_frame = on_frame
        self.viewer = viewer
        self.recorder = recorder
        self.rcvhwm = rcvhwm
        self.handlers = dict(handlers or {})
        """``{kind: handler(frame)}`` for kinds other than video and screen (audio, state):
        called on the hub for every such frame received; they never reach viewer or recorder."""
        self.video_delay_ms = video_delay_ms
        """``f(sender) -> ms or None``: how long after capture ``sender``'s audio is heard;
        video is held back to match (A/V sync, :func:`~zmeet.media.audio.video_due_us`)."""
        self.max_age_ms = max_age_ms
        self.on_shown: Callable[[p.MediaFrame, int], None] | None = None
        """Called with each frame handed to the viewer and the wall clock then (µs)."""
        self._lines: dict[Key, DelayLine[p.MediaFrame]] = {}
        self._release_wake = gevent.event.Event()
        self._release_greenlet: gevent.Greenlet | None = None
        self.seqs: SeqTracker[Key] = SeqTracker()
        self.first_frame = gevent.event.Event()
        """Set when the first frame from another participant arrives."""
        self.drops = _Drops()
        self._streams: dict[Key, _Received] = {}
        self._record_queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=record_queue_frames)
        self._progress = _Progress()
        self._sock: zmq_green.Socket | None = None
        self._endpoint = ""
        self._recv_greenlet: gevent.Greenlet | None = None
        self._record_greenlet: gevent.Greenlet | None = None
        self._stopped = False

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the SUB, subscribe to each room, and start receiving. Idempotent."""
        if self._sock is not None or self._stopped:
            return
        sock = self.session.context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        sock.setsockopt(zmq.RCVBUF, MEDIA_SOCKET_BUFFER_BYTES)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MEDIA_FRAME_BYTES + MAX_MEDIA_META_BYTES)
        self._endpoint = self.session.endpoints["media_out"]
        sock.connect(self._endpoint)
        self._sock = sock
        self.session.welcome_listeners.append(self._on_welcome)
        for topic in set().union(*self._topics.values()):  # chosen before start
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        for room in self._initial_rooms:
            if room not in self._topics:
                self.subscribe(room)
        raw: zmq.Socket = zmq.Socket.shadow(sock.underlying)
        self._recv_greenlet = gevent.spawn(self._recv_loop, sock, raw)
        if self.viewer is not None and self.video_delay_ms is not None:
            self._release_greenlet = gevent.spawn(self._release_loop)
        if self.recorder is not None:
            self._record_greenlet = gevent.spawn(self._record_loop, self.recorder)

    def subscribe(self, room: str) -> None:
        """Receive every frame of ``room``: every sender's every kind, this session's own
        included (they are dropped and counted here). Raises ValueError for a bad name."""
        if not p.is_valid_room(room):
            raise ValueError(f"invalid room name {room!r}")
        self.rooms.add(room)
        self._set_topics(room, {p.media_room_topic(room)})

    def set_streams(self, room: str, streams: dict[str, Iterable[str]]) -> None:
        """Receive exactly ``streams`` of ``room``: ``{sender: kinds}``, one SUB prefix
        ``media/<room>/<sender>/<kind>`` each, in place of what was subscribed in ``room``
        before. The broker's PUB filters by these prefixes, so a stream not chosen costs this
        receiver no bandwidth at all (last-N, thumbs for small tiles). Raises ValueError for a
        bad room, nick or kind."""
        if not p.is_valid_room(room):
            raise ValueError(f"invalid room name {room!r}")
        topics = set()
        for sender, kinds in streams.items():
            if not p.is_valid_nick(sender):
                raise ValueError(f"invalid nick {sender!r}")
            for kind in kinds:
                if kind not in p.MEDIA_KINDS:
                    raise ValueError(f"kind must be one of {', '.join(p.MEDIA_KINDS)}")
                topics.add(p.media_topic(room, sender, kind))
        self.rooms.add(room)
        self._set_topics(room, topics)

    def unsubscribe(self, room: str) -> None:
        """Stop receiving ``room``'s frames."""
        self.rooms.discard(room)
        self._set_topics(room, set())

    def topics(self, room: str) -> frozenset[bytes]:
        """The SUB prefixes subscribed for ``room`` now."""
        return frozenset(self._topics.get(room, ()))

    def _set_topics(self, room: str, topics: set[bytes]) -> None:
        old = self._topics.get(room, set())
        if self._sock is not None:
            for topic in old - topics:
                self._sock.setsockopt(zmq.UNSUBSCRIBE, topic)
            for topic in topics - old:
                self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        if topics:
            self._topics[room] = topics
        else:
            self._topics.pop(room, None)

    def _on_welcome(self, welcome: p.Welcome) -> None:
        """A broker that restarted on other ports: follow its ``media_out`` (the SUB keeps
        its subscriptions across the reconnect)."""
        endpoint = self.session.endpoints.get("media_out")
        if self._sock is None or not endpoint or endpoint == self._endpoint:
            return
        self._sock.disconnect(self._endpoint)
        self._sock.connect(endpoint)
        self._endpoint = endpoint

    def stop(self) -> None:
        """Stop receiving, let the recorder write what is queued (at most
        :data:`STOP_TIMEOUT_S`), close the socket. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._on_welcome in self.session.welcome_listeners:
            self.session.welcome_listeners.remove(self._on_welcome)
        if self._recv_greenlet is not None:
            self._recv_greenlet.kill(block=True, timeout=STOP_TIMEOUT_S)
        if self._release_greenlet is not None:
            self._release_greenlet.kill(block=True, timeout=STOP_TIMEOUT_S)
        if self._record_greenlet is not None and not self._record_greenlet.dead:
            try:
                self._record_queue.put(None, timeout=STOP_TIMEOUT_S)
                self._record_greenlet.join(timeout=STOP_TIMEOUT_S)
            except gevent.queue.Full:
                log.warning("recorder: the queue did not drain within %g s", STOP_TIMEOUT_S)
            self._record_greenlet.kill(block=True, timeout=STOP_TIMEOUT_S)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close(linger=0)
        self._progress.notify()

    close = stop

    # waiting ------------------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (cooperatively) until ``predicate()`` is true, re-checking it each time frames
        are received or recorded, for at most ``timeout_s``. Returns its last value."""
        return self._progress.wait_until(predicate, timeout_s, lambda: self._stopped)

    # counts -------------------------------------------------------------------------------------

    def received(self, sender: str, kind: str) -> int:
        """Frames of ``sender``'s ``kind`` received so far."""
        return self.seqs.received[(sender, kind)]

    def recorded(self, sender: str, kind: str) -> int:
        """Frames of ``sender``'s ``kind`` written by the recorder so far."""
        return 0 if self.recorder is None else self.recorder.frames_written[(sender, kind)]

    def stats(self) -> dict[str, Any]:
        """JSON-able: ``streams`` as ``{sender: {kind: {...}}}`` with frames received, lost (by
        seq), superseded (never shown), fps (last 2 s and mean), recorded, dropped by the
        record queue, the last frame's size and age (receive time minus capture time, ms,
        across two clocks); and ``dropped``: own frames, other rooms', bad, other codecs."""
        viewer_superseded = self.viewer.superseded if self.viewer is not None else Counter()
        streams: dict[str, dict[str, Any]] = {}
        for (sender, kind), info in sorted(self._streams.items()):
            key = (sender, kind)
            streams.setdefault(sender, {})[kind] = {
                "frames": self.seqs.received[key],
                "lost": self.seqs.lost[key],
                "restarts": self.seqs.restarts[key],
                "superseded": info.superseded + viewer_superseded[key],
                "fps": round(info.meter.fps(), 2),
                "mean_fps": round(info.meter.mean_fps(), 2),
                "recorded": self.recorded(sender, kind),
                "record_dropped": info.record_dropped,
                "record_bad": info.record_bad,
                "width": info.width,
                "height": info.height,
                "last_pts_ms": info.last_pts_ms,
                "last_age_ms": round(info.last_age_ms, 1),
                "stale": info.stale,
                "shown": info.shown,
                "max_shown_age_ms": round(info.max_shown_age_ms, 1),
            }
        return {
            "rooms": sorted(self.rooms),
            "streams": streams,
            "dropped": {
                "own": self.drops.own,
                "foreign_room": self.drops.foreign_room,
                "bad": self.drops.bad,
                "other_codec": self.drops.other_codec,
            },
        }

    # loops --------------------------------------------------------------------------------------

    def _recv_loop(self, green: zmq_green.Socket, raw: zmq.Socket) -> None:
        while True:
            batch = [green.recv_multipart(copy=False)]
            for _ in range(DRAIN_BATCH - 1):
                try:
                    batch.append(raw.recv_multipart(zmq.NOBLOCK, copy=False))
                except zmq.Again:
                    break
            newest: dict[Key, p.MediaFrame] = {}
            for frames in batch:
                frame = self._accept(frames)
                if frame is None:
                    continue
                key = (frame.sender, frame.kind)
                if key in newest:
                    self._streams[key].superseded += 1
                newest[key] = frame
            if self.viewer is not None:
                for key, frame in newest.items():
                    self._present(key, frame)
            if newest:
                self.first_frame.set()
            self._progress.notify()
            gevent.sleep(0)

    def _present(self, key: Key, frame: p.MediaFrame) -> None:
        """Hand a video frame to the viewer now, or later for A/V sync; drop it if it is late
        (newest frame wins)."""
        info = self._streams[key]
        now_us = _now_us()
        age_ms = (now_us - frame.capture_ts_us) / 1000
        if info.min_age_ms is None or age_ms < info.min_age_ms:
            info.min_age_ms = age_ms
        if self.max_age_ms is not None and age_ms - info.min_age_ms > self.max_age_ms:
            info.stale += 1
            return
        if self.video_delay_ms is not None:
            due_us = video_due_us(frame.capture_ts_us, self.video_delay_ms(key[0]), now_us)
            if due_us > now_us:
                line = self._lines.get(key)
                if line is None:
                    line = self._lines[key] = DelayLine(DELAY_LINE_FRAMES)
                line.push(frame, time.monotonic() + (due_us - now_us) / 1e6)
                self._release_wake.set()
                return
            line = self._lines.get(key)
            if line is not None and len(line):  # keep capture order: what waits is older
                info.superseded += len(line)
                line.clear()
        self._show(key, frame, now_us)

    def _show(self, key: Key, frame: p.MediaFrame, now_us: int) -> None:
        assert self.viewer is not None
        info = self._streams[key]
        info.shown += 1
        info.shown_age_ms = (now_us - frame.capture_ts_us) / 1000
        info.max_shown_age_ms = max(info.max_shown_age_ms, info.shown_age_ms)
        self.viewer.show(key[0], "video" if key[1] == "thumb" else key[1], frame.payload)
        if self.on_shown is not None:
            self.on_shown(frame, now_us)

    def _release_loop(self) -> None:
        while True:
            self._release_wake.clear()
            dues = [d for d in (line.next_due_s() for line in self._lines.values()) if d]
            if not dues:
                self._release_wake.wait()
                continue
            wait_s = min(dues) - time.monotonic()
            if wait_s > 0:
                self._release_wake.wait(wait_s)
                continue
            now_s = time.monotonic()
            for key, line in list(self._lines.items()):
                before = line.dropped
                frame = line.pop_due(now_s)
                self._streams[key].superseded += line.dropped - before
                if frame is not None:
                    self._show(key, frame, _now_us())

    def _accept(self, frames: list[zmq.Frame]) -> p.MediaFrame | None:
        received_ts_us = _now_us()
        try:
            _topic, frame = p.decode_published([f.buffer for f in frames])
        except p.RemoteProtocolError as exc:
            self.drops.bad += 1
            log.debug("bad media frame dropped: %s", exc.reason)
            return None
        if not isinstance(frame, p.MediaFrame):
            self.drops.bad += 1
            return None
        if frame.room not in self.rooms:  # a late frame after unsubscribe, or a broker bug
            self.drops.foreign_room += 1
            return None
        if frame.sender == self.session.nick:
            self.drops.own += 1
            return None
        handler = self.handlers.get(frame.kind) if frame.kind not in VIEW_KINDS else None
        if handler is None and (frame.codec != "jpeg" or frame.kind not in VIEW_KINDS):
            self.drops.other_codec += 1
            return None
        key = (frame.sender, frame.kind)
        info = self._streams.get(key)
        if info is None:
            info = self._streams[key] = _Received(FpsMeter(time.monotonic))
        self.seqs.observe(key, frame.seq)
        if handler is not None:
            info.meter.tick()
            info.last_age_ms = (received_ts_us - frame.capture_ts_us) / 1000
            try:
                handler(frame)
            except Exception:
                log.exception("handler failed for a frame of %s/%s", *key)
            return None
        info.meter.tick()
        info.last_pts_ms = frame.pts_ms
        info.last_age_ms = (received_ts_us - frame.capture_ts_us) / 1000
        info.width, info.height = frame.width, frame.height
        if self.on_frame is not None:
            try:
                self.on_frame(frame)
            except Exception:
                log.exception("on_frame failed for a frame of %s/%s", *key)
        if self.recorder is not None and frame.kind != "thumb":  # records the full layer
            try:
                self._record_queue.put_nowait((frame, received_ts_us))
            except gevent.queue.Full:
                info.record_dropped += 1
        return frame

    def _record_loop(self, recorder: Recorder) -> None:
        while True:
            item = self._record_queue.get()
            if item is None:
                return
            frame, received_ts_us = item
            try:
                recorder.write(frame, received_ts_us)
            except p.RemoteProtocolError as exc:
                self._streams[(frame.sender, frame.kind)].record_bad += 1
                log.debug("frame of %s/%s not recorded: %s", frame.sender, frame.kind, exc)
            except DeviceError as exc:
                log.error("recording stopped: %s", exc)
                return
            self._progress.notify()


# --- the meeting -------------------------------------------------------------------------------


@dataclass
class _Publishing:
    source: CaptureSource
    kind: str
    fps: float | None


class Meeting:
    """The media side of ``zmeet join ROOM``: publish a camera or a video file and/or the
    screen, show what the others send, record it.

    ``session`` must be connected; :meth:`start` joins ``room`` if the session has not.
    ``camera`` is a camera index and ``video_file`` a path (published as kind ``video``; give
    at most one); ``screen`` publishes monitor ``monitor`` (1 = first; kind ``screen``).
    ``quality`` (1 to 100) and ``max_width`` (pixels) are the JPEG settings. ``fps`` is the rate
    of the camera and the screen (default: the camera's own, else 15; the screen 10); a video
    file always plays at its own rate. ``display`` opens the viewer window; ``record_dir``
    records what is received there (see :class:`~zmeet.devices.Recorder`); ``loop_video``
    starts the file again at its end.

    ``audio`` sends the microphone (``input_device``) and plays the others' mix
    (``output_device``; False: a playout clock without a sound card); ``listen`` plays it
    without sending. ``max_streams`` N receives the video of only the N most recent speakers
    (last-N). ``thumb_width`` (pixels; None: no simulcast) is the width of the thumbnail sent
    beside the video and received for small tiles.

    Raises ValueError at construction for camera and video_file together, or a bad quality,
    max_width, thumb_width, fps, monitor or max_streams.
    """

    def __init__(
        self,
        session: Session,
        room: str,
        *,
        camera: int | None = None,
        video_file: str | None = None,
        screen: bool = False,
        monitor: int = 1,
        quality: int = 80,
        max_width: int = 1280,
        fps: float | None = None,
        display: bool = True,
        record_dir: str | None = None,
        loop_video: bool = True,
        audio: bool = False,
        listen: bool = False,
        input_device: int | str | None = None,
        output_device: int | str | None | bool = None,
        audio_codec: str | None = None,
        max_streams: int | None = None,
        av_sync: bool = True,
        thumb_width: int | None = THUMB_WIDTH,
    ) -> None:
        if camera is not None and video_file is not None:
            raise ValueError("give a camera or a video file, not both")
        check_encoding(quality, max_width)
        if fps is not None and not (isinstance(fps, int | float) and 0 < fps <= 240):
            raise ValueError(f"fps must be above 0 and at most 240, got {fps!r}")
        if type(monitor) is not int or monitor < 0:
            raise ValueError(f"monitor must be an integer >= 0, got {monitor!r}")
        if camera is not None and (type(camera) is not int or camera < 0):
            raise ValueError(f"camera must be an integer >= 0, got {camera!r}")
        if not p.is_valid_room(room):
            raise ValueError(f"invalid room name {room!r}")
        self.session = session
        self.room = room
        self.camera = camera
        self.video_file = video_file
        self.screen = screen
        self.monitor = monitor
        self.quality = quality
        self.max_width = max_width
        self.fps = fps
        self.display = display
        self.record_dir = record_dir
        self.loop_video = loop_video
        self.audio = audio
        self.listen = listen
        self.input_device = input_device
        self.output_device = output_device
        self.audio_codec = audio_codec
        if max_streams is not None and (type(max_streams) is not int or max_streams < 0):
            raise ValueError(f"max_streams must be an integer >= 0, got {max_streams!r}")
        self.max_streams = max_streams
        self.av_sync = av_sync
        if thumb_width is not None:
            check_encoding(quality, thumb_width)
        self.thumb_width = thumb_width
        self.audio_lane: Any = None  # zmeet.client.audio.AudioLane
        self.muted = False
        self.states: dict[str, Any] = {}
        """``{sender: MediaState}`` as the others last told it."""
        self._state_greenlet: gevent.Greenlet | None = None
        self._state_seq = 0
        self.publisher: MediaPublisher | None = None
        self.subscriber: MediaSubscriber | None = None
        self._video_shown: set[str] = set()
        self._layer = "video"  # the video layer the tiles take now (update_streams)
        self.viewer: Viewer | None = None
        self.recorder: Recorder | None = None
        self._publishing: list[_Publishing] = []
        self._started = False
        self._stopped = False

    def start(self) -> None:
        """Open every source (so a missing camera, file or display fails first, with nothing
        sent), the viewer and the recorder, then start receiving and publishing.

        Raises :class:`DeviceError` if a source, the display or the recording folder cannot be
        opened (everything opened so far is closed again), the session's errors
        (:class:`~zmeet.errors.BrokerUnavailable`, :class:`~zmeet.errors.RequestRefused`) if
        joining the room fails, RuntimeError if the meeting was stopped.
        """
        if self._stopped:
            raise RuntimeError("this meeting was stopped; make a new one")
        if self._started:
            return
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if self.video_file is not None:
            self._publishing.append(
                _Publishing(VideoFileSource(self.video_file, loop=self.loop_video), "video", None)
            )
        elif self.camera is not None:
            self._publishing.append(_Publishing(CameraSource(self.camera), "video", self.fps))
        if self.screen:
            self._publishing.append(
                _Publishing(ScreenSource(self.monitor), "screen", self.fps or DEFAULT_SCREEN_FPS)
            )
        for item in self._publishing:
            item.source.open()
            if isinstance(item.source, CameraSource) and item.fps is None:
                item.fps = item.source.native_fps or DEFAULT_CAMERA_FPS
        if self.display:
            self.viewer = Viewer(f"zmeet {self.room} ({self.session.nick})")
            self.viewer.start()
        if self.record_dir is not None:
            self.recorder = Recorder(self.record_dir)
            self.recorder.open()
        if self.room not in self.session.rooms:
            self.session.join(self.room, history=0)
        from .audio import AudioLane

        self.publisher = MediaPublisher(self.session, self.room)
        if self.audio or self.listen or self.record_dir is not None:
            self.audio_lane = AudioLane(
                self.room, self.publisher, capture=self.audio,
                input_device=self.input_device,
                output_device=self.output_device if (self.audio or self.listen) else False,
                codec=self.audio_codec, record_dir=self.record_dir,
            )
            self.audio_lane.start()
        lane = self.audio_lane
        self.subscriber = MediaSubscriber(
            self.session, [], viewer=self.viewer, recorder=self.recorder,
            handlers={"state": self._on_state, **({"audio": lane.on_frame} if lane else {})},
            video_delay_ms=lane.mixer.audio_delay_ms if (lane and self.av_sync) else None,
        )
        self.update_streams()
        self.session.member_listeners.append(self._on_members)
        self.subscriber.start()
        if self.viewer is not None and hasattr(self.viewer, "set_meeting"):
            self.viewer.set_meeting(self)
            self.publisher.on_encoded = self._on_encoded
        for item in self._publishing:
            self._publish(item)
        self._state_greenlet = gevent.spawn(self._state_loop)

    def _publish(self, item: _Publishing) -> None:
        assert self.publisher is not None
        self.publisher.publish_source(
            item.source, item.kind, item.fps, self.quality, self.max_width,
            thumb_width=self.thumb_width if item.kind == "video" else None,
        )

    # what this participant receives: one SUB prefix per stream -----------------------------------

    def wanted_streams(self) -> dict[str, set[str]]:
        """``{sender: kinds}`` this participant subscribes to, for every other member of the
        room (:meth:`Session.members`): ``state`` and ``screen`` always; ``audio`` when it
        plays or records audio; a video layer for the senders the gallery shows
        (:meth:`video_senders`), ``thumb`` while tiles are small (:meth:`video_layer`); and the
        full ``video`` of everyone when recording."""
        others = self._others()
        return self._wanted_streams(others, self.video_layer(len(others)))

    def _others(self) -> list[str]:
        """The room's other members, in join order."""
        me = self.session.nick
        return [m for m in self.session.members(self.room) if m != me]

    def _wanted_streams(self, others: list[str], layer: str) -> dict[str, set[str]]:
        shown = set(self.video_senders(others))
        wanted: dict[str, set[str]] = {}
        for sender in others:
            kinds = {"state", "screen"}
            if self.audio_lane is not None:
                kinds.add("audio")
            if self.recorder is not None:
                kinds.add("video")
            if sender in shown:
                kinds.add(layer)
            wanted[sender] = kinds
        return wanted

    def video_senders(self, others: list[str]) -> list[str]:
        """Whose video the gallery shows, of ``others`` (in join order): everyone's, or with
        ``max_streams`` N only the N who spoke most recently (Jitsi's last-N; those who never
        spoke come after, in join order)."""
        if self.max_streams is None:
            return list(others)
        order = {nick: i for i, nick in enumerate(others)}
        ranked = sorted(others, key=lambda s: (-(self._last_spoke(s) or 0.0), order[s]))
        return ranked[: self.max_streams]

    def video_layer(self, others: int) -> str:
        """``"video"`` if a participant's tile is wide enough for the full layer (more than
        :data:`LARGE_TILE_FACTOR` thumbnails), else ``"thumb"``; always ``"video"`` without
        simulcast or a window. The tiles are those of :func:`~zmeet.media.meeting_layout` for
        this participant and ``others``, beside the stage while someone shares a screen."""
        if self.thumb_width is None or self.viewer is None:
            return "video"
        from ..media.tiling import TILE_GAP_PX, meeting_layout

        stage = any(getattr(st, "screen", False) for st in self.states.values())
        _, rects = meeting_layout(1 + others, self.viewer.canvas_w, self.viewer.canvas_h,
                                  stage=stage)
        tile_w = min(r.w for r in rects) - 2 * TILE_GAP_PX
        return "video" if tile_w > self.thumb_width * LARGE_TILE_FACTOR else "thumb"

    def update_streams(self) -> None:
        """Subscribe to :meth:`wanted_streams` (only what changed is (un)subscribed), and
        clear the tiles of senders whose video is no longer received (no frozen pictures)."""
        if self.subscriber is None:
            return
        others = self._others()
        self._layer = self.video_layer(len(others))
        wanted = self._wanted_streams(others, self._layer)
        before = self._video_shown
        self._video_shown = {s for s, kinds in wanted.items() if kinds & {"video", "thumb"}}
        self.subscriber.set_streams(self.room, wanted)
        if self.viewer is not None:
            for sender in before - self._video_shown:
                self.viewer.remove(sender, "video")

    def _on_members(self, room: str) -> None:
        if room == self.room and not self._stopped:
            self.update_streams()

    def _on_encoded(self, kind: str, encoded: Any) -> None:
        """The self-view: this participant's own video in its own tile, from the capture
        (never a round trip through the broker)."""
        if kind == "video" and self.viewer is not None:
            large = self._layer == "video" or encoded.thumb is None
            self.viewer.show(self.session.nick, "video", encoded.data if large else encoded.thumb)

    # media state and controls -------------------------------------------------------------------

    def state(self) -> Any:
        """This participant's :class:`~zmeet.client.audio.MediaState` now."""
        from .audio import MediaState

        pub = self.publisher
        return MediaState(
            audio=self.audio_lane is not None and self.audio_lane.mic is not None,
            muted=self.muted,
            video=pub is not None and pub.publishing("video"),
            screen=pub is not None and pub.publishing("screen"),
        )

    def _send_state(self) -> None:
        if self.publisher is None:
            return
        frame = p.MediaFrame(
            room=self.room, kind="state", seq=self._state_seq, capture_ts_us=_now_us(),
            pts_ms=0, width=0, height=0, fps=0.0, codec="json", payload=self.state().encode(),
        )
        if self.publisher.send_frame(frame):
            self._state_seq += 1

    def _state_loop(self) -> None:
        from .audio import STATE_INTERVAL_S

        while True:
            self._send_state()
            self.update_streams()  # last-N follows the active speakers
            gevent.sleep(STATE_INTERVAL_S)  # the state is repeated: late joiners learn it

    def _on_state(self, frame: p.MediaFrame) -> None:
        from .audio import MediaState

        try:
            state = MediaState.decode(frame.payload)
        except p.RemoteProtocolError:
            return
        old = self.states.get(frame.sender)
        self.states[frame.sender] = state
        if self.viewer is not None and old is not None:
            if old.video and not state.video:
                self.viewer.remove(frame.sender, "video")
            if old.screen and not state.screen:
                self.viewer.remove(frame.sender, "screen")
        if old is None or old.screen != state.screen:
            self.update_streams()  # a stage appears or goes: the tiles change size

    def forget(self, sender: str) -> None:
        """``sender`` left the room: drop their tiles, state and audio."""
        self.states.pop(sender, None)
        if self.audio_lane is not None:
            self.audio_lane.remove(sender)
        if self.viewer is not None:
            for kind in PUBLISHED_KINDS:
                self.viewer.remove(sender, kind)

    def set_muted(self, muted: bool) -> None:
        """``/mute``, ``/unmute``: stop or resume sending audio; others see a muted badge."""
        if self.audio_lane is None or self.audio_lane.mic is None:
            raise LocalProtocolError("audio is off: join with --audio")
        self.muted = self.audio_lane.muted = muted
        self._send_state()

    def set_video(self, on: bool) -> None:
        """``/video on|off``. Raises :class:`LocalProtocolError` without a camera or file."""
        self._set_kind("video", on)

    def set_screen(self, on: bool) -> None:
        """``/screen on|off`` (opens the screen on first use). Raises :class:`DeviceError` if
        the screen cannot be grabbed."""
        if on and not any(i.kind == "screen" for i in self._publishing):
            source = ScreenSource(self.monitor)
            source.open()
            self._publishing.append(_Publishing(source, "screen", self.fps or DEFAULT_SCREEN_FPS))
        self._set_kind("screen", on)

    def _set_kind(self, kind: str, on: bool) -> None:
        item = next((i for i in self._publishing if i.kind == kind), None)
        if item is None or self.publisher is None:
            raise LocalProtocolError(f"no {kind} source: join with --{kind}")
        if on and not self.publisher.publishing(kind):
            self._publish(item)
        elif not on:
            self.publisher.stop_kind(kind)
            if self.viewer is not None:
                self.viewer.remove(self.session.nick, kind)  # the self-view goes dark
        self._send_state()

    def _last_spoke(self, sender: str) -> float | None:
        return None if self.audio_lane is None else self.audio_lane.mixer.last_spoke_s(sender)

    def view(self) -> dict[str, Any]:
        """What the gallery shows besides frames (called from the viewer's thread): ``nick``,
        ``own`` state, the others' ``states``, the ``active`` speaker. Compared by value."""
        return {"nick": self.session.nick, "own": self.state(), "states": dict(self.states),
                "active": self.active_speaker()}

    def active_speaker(self) -> str | None:
        """The loudest recent speaker (None without audio)."""
        if self.audio_lane is None:
            return None
        return self.audio_lane.mixer.active_speaker(time.monotonic())

    def stop(self) -> None:
        """Stop publishing, close the sources, stop receiving (the recorder first writes what
        was received), close the recordings and the window. Idempotent; never raises for a
        device that fails to close (it is logged)."""
        if self._stopped:
            return
        self._stopped = True
        if self._on_members in self.session.member_listeners:
            self.session.member_listeners.remove(self._on_members)
        if self._state_greenlet is not None:
            self._state_greenlet.kill(block=True, timeout=STOP_TIMEOUT_S)
        if self.audio_lane is not None:
            self.audio_lane.stop()
        if self.publisher is not None:
            self.publisher.close()
        for item in self._publishing:
            item.source.close()
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.recorder is not None:
            self.recorder.close()
        if self.viewer is not None:
            self.viewer.close()

    @property
    def closed_by_user(self) -> bool:
        """True once a person closed the viewer window (the CLI may then leave)."""
        return self.viewer is not None and self.viewer.user_closed

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """:meth:`MediaSubscriber.wait_until` of this meeting (False if it is not started)."""
        if self.subscriber is None:
            return False
        return self.subscriber.wait_until(predicate, timeout_s)

    def stats(self) -> dict[str, Any]:
        """JSON-able: ``sent`` per kind (frames sent, dropped, fps, capture and encode ms),
        ``received`` as ``{sender: {kind: {frames, lost, superseded, fps, recorded, ...}}}``,
        ``dropped`` (own, other rooms', bad), ``recording`` and ``viewer`` (or None)."""
        sub = self.subscriber.stats() if self.subscriber is not None else None
        return {
            "room": self.room,
            "nick": self.session.nick,
            "sent": self.publisher.stats() if self.publisher is not None else {},
            "received": sub["streams"] if sub is not None else {},
            "dropped": sub["dropped"] if sub is not None else {},
            "recording": self.recorder.stats() if self.recorder is not None else None,
            "audio": self.audio_lane.stats() if self.audio_lane is not None else None,
            "states": {s: vars(st) if hasattr(st, "__dict__") else dict(
                audio=st.audio, muted=st.muted, video=st.video, screen=st.screen)
                for s, st in self.states.items()},
            "viewer": self.viewer.stats() if self.viewer is not None else None,
        }


__all__ = [
    "DEFAULT_CAMERA_FPS", "DEFAULT_SCREEN_FPS", "MediaPublisher", "MediaSubscriber", "Meeting",
    "PublishedStream", "THUMB_WIDTH",
]
