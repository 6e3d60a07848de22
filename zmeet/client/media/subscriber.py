"""The receiving side of the client's media lane (docs/protocol.md, "Media lane", 3.9.4).

:class:`MediaSubscriber` is a SUB on the broker's ``media_out`` PUB, subscribed to a whole
room (``media/<room>/``) or to chosen streams (``media/<room>/<sender>/<kind>``: the broker's
PUB filters, so a stream not chosen never leaves the broker). One greenlet owns it: it waits
once on the green socket, then drains the raw socket it shadows with ``NOBLOCK``.

Newest frame wins: from each drained batch, the viewer gets only the newest frame of each
``(sender, kind)``, and its window thread only the newest of those it has not shown yet; the
frames it never showed are counted as superseded, and gaps in ``seq`` as lost. A frame late
by more than :data:`MAX_FRAME_AGE_MS` is dropped; video is held back to its sender's audio
(A/V sync). The recorder gets every full-size frame received, through a bounded queue (a full
queue drops and counts). JPEG decoding runs in the viewer's window thread and the recorder's
thread, never on the hub.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.queue
import zmq
import zmq.green as zmq_green

from ... import protocol as p
from ...clock import SYSTEM_CLOCK, Clock
from ...devices import Recorder, Viewer
from ...errors import DeviceError, LocalProtocolError
from ...media import FpsMeter, SeqTracker
from ...media.audio import video_due_us
from ...media.jitter import DelayLine
from ...protocol.limits import (
    CURVE_OVERHEAD_BYTES,
    MAX_MEDIA_FRAME_BYTES,
    MEDIA_SOCKET_BUFFER_BYTES,
)
from ..session import Session
from ._common import STOP_TIMEOUT_S, VIEW_KINDS, Key, Progress

log = logging.getLogger("zmeet.media")

SUBSCRIBE_RCVHWM = 8
"""Frames a subscriber's SUB queues before libzmq drops newer ones."""

DRAIN_BATCH = 64
"""Frames taken per wake-up of the subscriber before it yields to other greenlets."""

RECORD_QUEUE_FRAMES = 32
"""Received frames waiting for the recorder before new ones are dropped and counted."""

MAX_FRAME_AGE_MS = 120.0
"""A video frame that spent this much longer on the way than the quickest of its stream is
dropped before display (newest frame wins: a late frame is never shown as a slow replay).
Measured relative to the stream's quickest frame, so two machines' clock offset cancels out."""

DELAY_LINE_FRAMES = 16
"""Video frames per stream held at most for A/V sync."""


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
    after giving the recorder what it already received. ``clock`` gives the wall time a
    frame's age is measured by (against its ``capture_ts_us``) and the monotonic time of A/V
    sync and the rates. Raises :class:`LocalProtocolError` if the session is not connected,
    ValueError for a bad room name.
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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if session.welcome is None or "media_out" not in session.endpoints:
            raise LocalProtocolError("connect the session before receiving media")
        self.session = session
        self.clock = clock
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
        self._progress = Progress()
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
        sock = self.session.secure(self.session.context.socket(zmq.SUB))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        sock.setsockopt(zmq.RCVBUF, MEDIA_SOCKET_BUFFER_BYTES)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MEDIA_FRAME_BYTES + CURVE_OVERHEAD_BYTES)
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

    def set_streams(self, room: str, streams: Mapping[str, Iterable[str]]) -> None:
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
        now_us = self.clock.wall_us()
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
                line.push(frame, self.clock.monotonic_s() + (due_us - now_us) / 1e6)
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
            wait_s = min(dues) - self.clock.monotonic_s()
            if wait_s > 0:
                self._release_wake.wait(wait_s)
                continue
            now_s = self.clock.monotonic_s()
            for key, line in list(self._lines.items()):
                before = line.dropped
                frame = line.pop_due(now_s)
                self._streams[key].superseded += line.dropped - before
                if frame is not None:
                    self._show(key, frame, self.clock.wall_us())

    def _accept(self, frames: list[zmq.Frame]) -> p.MediaFrame | None:
        received_ts_us = self.clock.wall_us()
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
            info = self._streams[key] = _Received(FpsMeter(self.clock.monotonic_s))
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


__all__ = [
    "DELAY_LINE_FRAMES", "DRAIN_BATCH", "MAX_FRAME_AGE_MS", "RECORD_QUEUE_FRAMES",
    "SUBSCRIBE_RCVHWM", "MediaSubscriber",
]
