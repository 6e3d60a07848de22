"""Adapters to real devices: cameras, video files and screens to capture; JPEG; the viewer
window; the recorder. Blocking calls run in a device's own OS thread, never on the gevent hub.
"""

from __future__ import annotations

from .capture import (
    CameraSource,
    CapturedImage,
    CaptureSource,
    EncodedImage,
    ScreenSource,
    VideoFileSource,
)
from .jpeg import DEFAULT_MAX_WIDTH, DEFAULT_QUALITY, decode_jpeg, encode_jpeg
from .recorder import Recorder
from .viewer import Viewer

__all__ = [
    "DEFAULT_MAX_WIDTH", "DEFAULT_QUALITY", "CameraSource", "CaptureSource", "CapturedImage",
    "EncodedImage", "Recorder", "ScreenSource", "VideoFileSource", "Viewer", "decode_jpeg",
    "encode_jpeg",
]
