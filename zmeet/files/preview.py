"""Small previews of shared images for the meeting window (the seeds' wish for previews).

Pure: bytes in, a BGR ``uint8`` array of shape ``(h, w, 3)`` out. OpenCV is imported only when a
preview is made, so file sharing without a window never loads it. Decoding is CPU work: call
:func:`image_preview` in a thread (gevent's threadpool), not on the hub.
"""

from __future__ import annotations

from typing import Any

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
"""Names OpenCV decodes that are shown as a preview tile."""

PREVIEW_MAX_BYTES = 16 * 1024 * 1024
"""Largest image fetched for a preview."""

PREVIEW_MAX_SIDE_PX = 320
"""Longest side of a preview, in pixels."""

MAX_IMAGE_PIXELS = 64_000_000
"""An image with more pixels is not decoded (a decompression bomb)."""


def is_previewable(name: str, size: int) -> bool:
    """True for an image name of at most PREVIEW_MAX_BYTES octets."""
    return name.lower().endswith(PREVIEW_SUFFIXES) and 0 < size <= PREVIEW_MAX_BYTES


def image_preview(data: bytes, max_side_px: int = PREVIEW_MAX_SIDE_PX) -> Any:
    """A BGR uint8 ``(h, w, 3)`` array of the image in ``data``, scaled down so that its longest
    side is at most ``max_side_px``; None if ``data`` is not an image OpenCV decodes."""
    import cv2
    import numpy as np

    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        return None
    try:
        header = cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_8)
    except cv2.error:
        return None
    if header is None or header.shape[0] * header.shape[1] * 64 > MAX_IMAGE_PIXELS:
        return None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = min(1.0, max_side_px / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))),
                           interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)
