"""Media domain logic, pure: newest-frame-wins slots, loss counting, pacing, gallery tiling,
the stream selection of a meeting (:mod:`.selection`).

No sockets, no windows, no clock but an injected one (DESIGN.md, "Layers"). The devices that
capture, show and record frames are in :mod:`zmeet.devices`; the media lane's sockets in
:mod:`zmeet.client.media`.
"""

from __future__ import annotations

from .pacing import Clock, FpsMeter, Pacer
from .selection import Selection, SelectionChange, StreamSelector
from .slots import LatestSlot, SeqTracker
from .tiling import (
    KIND_COLOURS_BGR,
    LABEL_BAR_PX,
    Rect,
    Tile,
    fit_rect,
    gallery_layout,
    render_gallery,
    resize_to,
    scaled_size,
)

__all__ = [
    "KIND_COLOURS_BGR", "LABEL_BAR_PX", "Clock", "FpsMeter", "LatestSlot", "Pacer", "Rect",
    "Selection", "SelectionChange", "SeqTracker", "StreamSelector", "Tile", "fit_rect",
    "gallery_layout", "render_gallery", "resize_to", "scaled_size",
]
