"""A participant's media state: the payload of a ``state`` frame (docs/protocol.md, 3.9.2).

Sans-IO like the rest of :mod:`zmeet.protocol`: no gevent, no zmq, no clock (the caller
gives the capture time).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..errors import RemoteProtocolError
from .messages import MediaFrame

STATE_INTERVAL_S = 1.0
"""How often, in seconds, a participant repeats its media state (besides on every change), so
that a late joiner learns it and a lost one is repaired."""

MAX_STATE_BYTES = 256
"""A ``state`` payload longer than this many octets is dropped by the receiver."""

STATE_CODEC = "json"
"""The ``codec`` of a ``state`` frame."""

_FIELDS = ("audio", "muted", "video", "screen")


@dataclass(frozen=True)
class MediaState:
    """A participant's media as others should show it: ``muted`` (audio on but not sent:
    a muted badge), ``audio``, ``video`` and ``screen`` (being sent; video off: a dark tile).

    On the wire (docs/protocol.md, 3.9.2): the JSON object
    ``{"audio": bool, "muted": bool, "video": bool, "screen": bool}``, compact, in that order.
    """

    audio: bool = False
    muted: bool = False
    video: bool = False
    screen: bool = False

    def encode(self) -> bytes:
        """The payload: compact JSON, UTF-8, at most :data:`MAX_STATE_BYTES` octets."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> MediaState:
        """The state in ``payload``: a missing key or a value other than ``true`` is False.

        Raises :class:`RemoteProtocolError` for a payload over :data:`MAX_STATE_BYTES` octets
        or one that is not a JSON object (the receiver drops the frame)."""
        if len(payload) > MAX_STATE_BYTES:
            raise RemoteProtocolError("state payload too large")
        try:
            body = json.loads(bytes(payload))
        except ValueError:
            raise RemoteProtocolError("state payload is not JSON") from None
        if not isinstance(body, dict):
            raise RemoteProtocolError("state payload is not an object")
        return cls(**{k: body.get(k) is True for k in _FIELDS})

    def frame(self, room: str, seq: int, capture_ts_us: int) -> MediaFrame:
        """This state as the ``state`` :class:`~zmeet.protocol.MediaFrame` of ``room``:
        ``seq`` counts the sender's state frames, ``capture_ts_us`` is the sender's wall clock
        in microseconds since the Unix epoch; width, height, ``pts_ms`` 0, ``fps`` 0.0."""
        return MediaFrame(
            room=room, kind="state", seq=seq, capture_ts_us=capture_ts_us, pts_ms=0,
            width=0, height=0, fps=0.0, codec=STATE_CODEC, payload=self.encode(),
        )


__all__ = ["MAX_STATE_BYTES", "STATE_CODEC", "STATE_INTERVAL_S", "MediaState"]
