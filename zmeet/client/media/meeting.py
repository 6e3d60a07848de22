"""The media side of ``zmeet join ROOM``: :class:`Meeting` puts the publisher, the subscriber,
the audio lane, the viewer and the recorder together (docs/protocol.md, "Media lane").

It publishes a camera or video file and/or the screen, sends its media state, shows what the
others send and its own capture as the self-view, and records what it receives. Which streams
it receives is decided by a :class:`~zmeet.media.selection.StreamSelector` (the thumbnail
while tiles are small, only the last-N speakers' video with ``max_streams``); the meeting
feeds it and turns its changes into SUB subscriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gevent

from ... import protocol as p
from ...clock import SYSTEM_CLOCK, Clock
from ...devices import CameraSource, CaptureSource, Recorder, ScreenSource, VideoFileSource, Viewer
from ...devices.jpeg import DEFAULT_MAX_WIDTH, DEFAULT_QUALITY, check_encoding
from ...errors import LocalProtocolError
from ...media.selection import StreamSelector
from ...protocol.media import STATE_INTERVAL_S, MediaState
from ..audio import AudioLane
from ..session import Session
from ._common import PUBLISHED_KINDS, STOP_TIMEOUT_S, THUMB_WIDTH
from .publisher import MediaPublisher
from .subscriber import MediaSubscriber

log = logging.getLogger("zmeet.media")

DEFAULT_CAMERA_FPS = 15.0
"""Camera rate when neither ``fps`` nor the driver gives one."""

DEFAULT_SCREEN_FPS = 10.0
"""Screen rate when ``fps`` is not given."""


@dataclass(frozen=True)
class MeetingOptions:
    """What a :class:`Meeting` sends, shows, plays and records (``zmeet join``'s options).

    Sources (give at most one of ``camera`` and ``video_file``; both are kind ``video``):

    - ``camera``: a camera index (>= 0), or None.
    - ``video_file``: a path of a video file, played at its own rate; ``loop_video`` starts it
      again at its end.
    - ``screen``: publish monitor ``monitor`` (1 = the first, 0 = all of them) as ``screen``.

    Encoding: ``quality`` JPEG quality (1 to 100); ``max_width`` the widest frame sent, pixels
    (wider ones are scaled down, aspect kept); ``fps`` frames per second of the camera and the
    screen (None: the camera's own, else :data:`DEFAULT_CAMERA_FPS`; the screen
    :data:`DEFAULT_SCREEN_FPS`; 0 < fps <= 240); ``thumb_width`` the width in pixels of the
    thumbnail sent beside the video and received for small tiles (None: no simulcast).

    Receiving: ``display`` opens the viewer window; ``record_dir`` records what is received
    into that folder (:class:`~zmeet.devices.Recorder`, and the mixed audio); ``max_streams``
    N receives the video of only the N most recent speakers (last-N; N >= 0, None: all).

    Audio: ``audio`` sends the microphone (``input_device``: a PortAudio index or name, None
    the default) and plays the others' mix (``output_device``: likewise; False: a playout
    clock without a sound card); ``listen`` plays it without sending; ``audio_codec``
    ``"opus"`` or ``"pcm"`` (None: opus if PyAV is there); ``av_sync`` holds video back to
    its sender's audio.

    Raises ValueError for camera and video_file together, or a bad quality, max_width,
    thumb_width, fps, monitor, camera or max_streams.
    """

    camera: int | None = None
    video_file: str | None = None
    screen: bool = False
    monitor: int = 1
    quality: int = DEFAULT_QUALITY
    max_width: int = DEFAULT_MAX_WIDTH
    fps: float | None = None
    display: bool = True
    record_dir: str | None = None
    loop_video: bool = True
    audio: bool = False
    listen: bool = False
    input_device: int | str | None = None
    output_device: int | str | None | bool = None
    audio_codec: str | None = None
    max_streams: int | None = None
    av_sync: bool = True
    thumb_width: int | None = THUMB_WIDTH

    def __post_init__(self) -> None:
        if self.camera is not None and self.video_file is not None:
            raise ValueError("give a camera or a video file, not both")
        check_encoding(self.quality, self.max_width)
        fps = self.fps
        if fps is not None and not (isinstance(fps, int | float) and 0 < fps <= 240):
            raise ValueError(f"fps must be above 0 and at most 240, got {fps!r}")
        if type(self.monitor) is not int or self.monitor < 0:
            raise ValueError(f"monitor must be an integer >= 0, got {self.monitor!r}")
        if self.camera is not None and (type(self.camera) is not int or self.camera < 0):
            raise ValueError(f"camera must be an integer >= 0, got {self.camera!r}")
        if self.max_streams is not None and (
            type(self.max_streams) is not int or self.max_streams < 0
        ):
            raise ValueError(f"max_streams must be an integer >= 0, got {self.max_streams!r}")
        if self.thumb_width is not None:
            check_encoding(self.quality, self.thumb_width)

    @property
    def receives_audio(self) -> bool:
        """Whether the meeting runs an audio lane: to send, to play or to record audio."""
        return self.audio or self.listen or self.record_dir is not None


@dataclass
class _Publishing:
    source: CaptureSource
    kind: str
    fps: float | None


class Meeting:
    """The media side of ``zmeet join ROOM``, set up by ``options`` (:class:`MeetingOptions`).

    ``session`` must be connected; :meth:`start` joins ``room`` if the session has not.
    ``clock`` (default the system's) stamps the state frames and is handed to the publisher,
    the subscriber and the audio lane. Raises ValueError for a bad room name.
    """

    def __init__(self, session: Session, room: str, options: MeetingOptions | None = None,
                 *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not p.is_valid_room(room):
            raise ValueError(f"invalid room name {room!r}")
        self.options = options if options is not None else MeetingOptions()
        self.session = session
        self.room = room
        self.clock = clock
        self.audio_lane: AudioLane | None = None
        self.muted = False
        self.selection = StreamSelector(
            session.nick, receive_audio=self.options.receives_audio,
            record=self.options.record_dir is not None, max_streams=self.options.max_streams,
            thumb_width=self.options.thumb_width,
        )
        """Which streams this participant receives (fed here, turned into SUB prefixes)."""
        self._state_greenlet: gevent.Greenlet | None = None
        self._state_seq = 0
        self.publisher: MediaPublisher | None = None
        self.subscriber: MediaSubscriber | None = None
        self.viewer: Viewer | None = None
        self.recorder: Recorder | None = None
        self._publishing: list[_Publishing] = []
        self._started = False
        self._stopped = False

    @property
    def states(self) -> Mapping[str, MediaState]:
        """``{sender: MediaState}`` as the others last told it."""
        return self.selection.states

    def start(self) -> None:
        """Open every source (so a missing camera, file or display fails first, with nothing
        sent), the viewer and the recorder, then start receiving and publishing.

        Raises :class:`DeviceError` if a source, the display or the recording folder cannot be
        opened (everything opened so far is closed again), the session's errors
        (:class:`~zmeet.errors.BrokerUnavailable`, :class:`~zmeet.errors.Refused`) if
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
        o = self.options
        if o.video_file is not None:
            self._publishing.append(
                _Publishing(VideoFileSource(o.video_file, loop=o.loop_video), "video", None)
            )
        elif o.camera is not None:
            self._publishing.append(_Publishing(CameraSource(o.camera), "video", o.fps))
        if o.screen:
            self._publishing.append(
                _Publishing(ScreenSource(o.monitor), "screen", o.fps or DEFAULT_SCREEN_FPS)
            )
        for item in self._publishing:
            item.source.open()
            if isinstance(item.source, CameraSource) and item.fps is None:
                item.fps = item.source.native_fps or DEFAULT_CAMERA_FPS
        if o.display:
            self.viewer = Viewer(f"zmeet {self.room} ({self.session.nick})")
            self.viewer.start()
            self.selection.canvas = (self.viewer.canvas_w, self.viewer.canvas_h)
        if o.record_dir is not None:
            self.recorder = Recorder(o.record_dir)
            self.recorder.open()
        if self.room not in self.session.rooms:
            self.session.join(self.room, history=0)
        self.publisher = MediaPublisher(self.session, self.room, clock=self.clock)
        if o.receives_audio:
            self.audio_lane = AudioLane(
                self.room, self.publisher, capture=o.audio,
                input_device=o.input_device,
                output_device=o.output_device if (o.audio or o.listen) else False,
                codec=o.audio_codec, record_dir=o.record_dir, clock=self.clock,
            )
            self.audio_lane.start()
        lane = self.audio_lane
        self.subscriber = MediaSubscriber(
            self.session, [], viewer=self.viewer, recorder=self.recorder,
            handlers={"state": self._on_state, **({"audio": lane.on_frame} if lane else {})},
            video_delay_ms=lane.mixer.audio_delay_ms if (lane and o.av_sync) else None,
            clock=self.clock,
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
        o = self.options
        self.publisher.publish_source(
            item.source, item.kind, item.fps, o.quality, o.max_width,
            thumb_width=o.thumb_width if item.kind == "video" else None,
        )

    # what this participant receives: one SUB prefix per stream -----------------------------------

    def _feed_selection(self) -> None:
        """Give the selector the inputs it reads at each update: the room's members, and
        (for last-N) when each of them last spoke."""
        members = self.session.members(self.room)
        self.selection.set_members(members)
        if self.options.max_streams is not None:
            self.selection.set_last_spoke({m: self._last_spoke(m) for m in members})

    def update_streams(self) -> None:
        """Subscribe to what :meth:`StreamSelector.update` selects for every other member of
        the room (only what changed is (un)subscribed), and
        clear the tiles of senders whose video is no longer received (no frozen pictures)."""
        if self.subscriber is None:
            return
        self._feed_selection()
        change = self.selection.update()
        self.subscriber.set_streams(self.room, change.selection.by_sender())
        if self.viewer is not None:
            for sender in change.hidden:
                self.viewer.remove(sender, "video")

    def _on_members(self, room: str) -> None:
        if room == self.room and not self._stopped:
            self.update_streams()

    def _on_encoded(self, kind: str, encoded: Any) -> None:
        """The self-view: this participant's own video in its own tile, from the capture
        (never a round trip through the broker)."""
        if kind == "video" and self.viewer is not None:
            large = self.selection.current.layer == "video" or encoded.thumb is None
            self.viewer.show(self.session.nick, "video", encoded.data if large else encoded.thumb)

    # media state and controls -------------------------------------------------------------------

    def state(self) -> MediaState:
        """This participant's :class:`~zmeet.protocol.MediaState` now."""
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
        frame = self.state().frame(self.room, self._state_seq, self.clock.wall_us())
        if self.publisher.send_frame(frame):
            self._state_seq += 1

    def _state_loop(self) -> None:
        while True:
            self._send_state()
            self.update_streams()  # last-N follows the active speakers
            gevent.sleep(STATE_INTERVAL_S)  # the state is repeated: late joiners learn it

    def _on_state(self, frame: p.MediaFrame) -> None:
        try:
            state = MediaState.decode(frame.payload)
        except p.RemoteProtocolError:
            return
        old = self.selection.states.get(frame.sender)
        reselect = self.selection.set_state(frame.sender, state)
        if self.viewer is not None and old is not None:
            if old.video and not state.video:
                self.viewer.remove(frame.sender, "video")
            if old.screen and not state.screen:
                self.viewer.remove(frame.sender, "screen")
        if reselect:
            self.update_streams()  # a stage appears or goes: the tiles change size

    def forget(self, sender: str) -> None:
        """``sender`` left the room: drop their tiles, state and audio."""
        self.selection.forget(sender)
        if self.audio_lane is not None:
            self.audio_lane.remove(sender)
        if self.viewer is not None:
            for kind in PUBLISHED_KINDS:
                self.viewer.remove(sender, kind)

    def set_muted(self, muted: bool) -> None:
        """``/mute``, ``/unmute``: stop or resume sending audio; others see a muted badge.
        Raises :class:`LocalProtocolError` without a microphone."""
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
            source = ScreenSource(self.options.monitor)
            source.open()
            self._publishing.append(
                _Publishing(source, "screen", self.options.fps or DEFAULT_SCREEN_FPS))
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
        return self.audio_lane.mixer.active_speaker(self.clock.monotonic_s())

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


__all__ = ["DEFAULT_CAMERA_FPS", "DEFAULT_SCREEN_FPS", "Meeting", "MeetingOptions"]
