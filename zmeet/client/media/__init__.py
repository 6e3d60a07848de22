"""The client's media lane (DESIGN.md, "The lanes"): publish captured frames, receive a room's.

Sockets, driven by gevent and ``zmq.green`` (docs/protocol.md, "Media lane"), one module each:

- :mod:`.publisher`: :class:`MediaPublisher`, a DEALER connected to the broker's ``media_in``
  ROUTER, sending ``NOBLOCK`` (a frame that does not fit is dropped and counted, so no backlog
  ever builds); a camera or video file is sent twice (simulcast): ``video`` at full size and
  ``thumb`` at most :data:`THUMB_WIDTH` pixels wide.
- :mod:`.subscriber`: :class:`MediaSubscriber`, a SUB on the broker's ``media_out`` PUB,
  subscribed to a whole room or to chosen streams; newest frame wins, late frames are dropped,
  video is held back to its audio, the recorder gets every full-size frame.
- :mod:`.meeting`: :class:`Meeting` (set up by :class:`MeetingOptions`) puts them together for
  ``zmeet join ROOM --video/--video-file/--screen`` with the audio lane
  (:mod:`zmeet.client.audio`), the viewer and the recorder; which streams it subscribes to is
  decided by :class:`zmeet.media.selection.StreamSelector`, pure.

Blocking work never runs on the hub: capture and JPEG encoding in each source's own thread,
JPEG decoding in the viewer's window thread and the recorder's thread.

Imports go one way: ``meeting`` -> ``publisher``, ``subscriber``, :mod:`zmeet.client.audio`
-> ``_common``; the audio lane knows the publisher only as a
:class:`~zmeet.client.audio.FrameSender`.
"""

from __future__ import annotations

from ...media.selection import LARGE_TILE_FACTOR
from ._common import PUBLISHED_KINDS, STOP_TIMEOUT_S, THUMB_WIDTH, VIEW_KINDS
from .meeting import DEFAULT_CAMERA_FPS, DEFAULT_SCREEN_FPS, Meeting, MeetingOptions
from .publisher import PUBLISH_SNDHWM, MediaPublisher, PublishedStream
from .subscriber import (
    DELAY_LINE_FRAMES,
    DRAIN_BATCH,
    MAX_FRAME_AGE_MS,
    RECORD_QUEUE_FRAMES,
    SUBSCRIBE_RCVHWM,
    MediaSubscriber,
)

__all__ = [
    "DEFAULT_CAMERA_FPS", "DEFAULT_SCREEN_FPS", "DELAY_LINE_FRAMES", "DRAIN_BATCH",
    "LARGE_TILE_FACTOR", "MAX_FRAME_AGE_MS", "PUBLISHED_KINDS", "PUBLISH_SNDHWM",
    "RECORD_QUEUE_FRAMES", "STOP_TIMEOUT_S", "SUBSCRIBE_RCVHWM", "THUMB_WIDTH", "VIEW_KINDS",
    "MediaPublisher", "MediaSubscriber", "Meeting", "MeetingOptions", "PublishedStream",
]
