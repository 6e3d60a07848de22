"""Gallery tiling: where each participant's tile goes, and the mosaic drawn from the tiles.

Pure: numpy arrays in, numpy arrays out; ``cv2`` is used only for resizing and text, never for
windows or files. Images are BGR ``uint8`` arrays of shape ``(height, width, 3)``, OpenCV's
layout; sizes are in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

DEFAULT_ASPECT = 16 / 9
"""Width over height of the content a gallery is laid out for."""

LABEL_BAR_PX = 22
"""Height of the label bar at the top of each tile."""

TILE_GAP_PX = 2
"""Black border kept around each tile."""

KIND_COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "video": (0, 140, 0),
    "screen": (160, 64, 0),
    "audio": (0, 110, 180),
}
"""Label bar colour of each media kind (BGR)."""

OTHER_KIND_BGR = (90, 90, 90)
"""Label bar colour of a kind not in :data:`KIND_COLOURS_BGR`."""

LABEL_TEXT_BGR = (255, 255, 255)
WAITING_BGR = (32, 32, 32)
"""Fill of a tile that has no image yet."""


class Rect(NamedTuple):
    """A rectangle in pixels: top-left corner ``(x, y)``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int


class Tile(NamedTuple):
    """One tile of the gallery: ``label`` (e.g. the sender's nick), media ``kind``, and the
    newest ``image`` (BGR uint8 HxWx3) or None while waiting for the first frame."""

    label: str
    kind: str
    image: np.ndarray | None


def gallery_layout(
    n: int, canvas_w: int, canvas_h: int, *, aspect: float = DEFAULT_ASPECT
) -> list[Rect]:
    """Rectangles of ``n`` equal tiles on a ``canvas_w`` x ``canvas_h`` canvas, row by row.

    The grid (columns x rows) is the one that shows content of width/height ``aspect`` the
    largest; on a tie, more columns (side by side). A last row that is not full is centred.
    Tiles never overlap and stay inside the canvas. ``n == 0`` gives ``[]``.

    Raises ValueError for ``n < 0``, a canvas with a side below 1 pixel, or ``aspect <= 0``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if canvas_w < 1 or canvas_h < 1:
        raise ValueError(f"canvas must be at least 1x1 pixels, got {canvas_w}x{canvas_h}")
    if not aspect > 0:
        raise ValueError(f"aspect must be above 0, got {aspect}")
    if n == 0:
        return []
    best_cols, best_area = 1, -1.0
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        tile_w, tile_h = canvas_w / cols, canvas_h / rows
        shown_w = min(tile_w, tile_h * aspect)
        area = shown_w * (shown_w / aspect)
        if area >= best_area * (1 - 1e-9):
            best_cols, best_area = cols, area
    cols = best_cols
    rows = math.ceil(n / cols)
    tile_w, tile_h = canvas_w // cols, canvas_h // rows
    if tile_w < 1 or tile_h < 1:
        raise ValueError(f"{n} tiles do not fit on a {canvas_w}x{canvas_h} canvas")
    rects = []
    for i in range(n):
        row, col = divmod(i, cols)
        in_row = min(cols, n - row * cols)
        offset_x = (canvas_w - in_row * tile_w) // 2
        rects.append(Rect(offset_x + col * tile_w, row * tile_h, tile_w, tile_h))
    return rects


def fit_rect(src_w: int, src_h: int, box: Rect) -> Rect:
    """The largest rectangle of ``src_w``:``src_h`` aspect inside ``box``, centred (letterbox).

    Raises ValueError for a source with a side below 1 pixel.
    """
    if src_w < 1 or src_h < 1:
        raise ValueError(f"source must be at least 1x1 pixels, got {src_w}x{src_h}")
    scale = min(box.w / src_w, box.h / src_h)
    w = max(1, min(box.w, round(src_w * scale)))
    h = max(1, min(box.h, round(src_h * scale)))
    return Rect(box.x + (box.w - w) // 2, box.y + (box.h - h) // 2, w, h)


def scaled_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """``(width, height)`` scaled down, aspect kept, so that the width is at most ``max_width``
    (unchanged if it already is; never scaled up). Height is rounded, at least 1.

    Raises ValueError for sizes or ``max_width`` below 1.
    """
    if width < 1 or height < 1:
        raise ValueError(f"size must be at least 1x1, got {width}x{height}")
    if max_width < 1:
        raise ValueError(f"max_width must be at least 1, got {max_width}")
    if width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def decode_reduction(src_w: int, src_h: int, box_w: int, box_h: int) -> int:
    """The JPEG decode reduction (1, 2, 4 or 8) for a ``src_w`` x ``src_h`` picture shown in a
    ``box_w`` x ``box_h`` box: the largest whose reduced picture still fills the box as
    :func:`fit_rect` would (so a reduced decode is never scaled up to fit). Sizes in pixels;
    1 for any size below 1."""
    if min(src_w, src_h, box_w, box_h) < 1:
        return 1
    scale = min(box_w / src_w, box_h / src_h)  # what fit_rect shrinks the picture by
    for factor in (8, 4, 2):
        if scale * factor <= 1:
            return factor
    return 1


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (HxWxC uint8) resized to ``width`` x ``height``: area averaging when
    shrinking, bilinear when growing; the same array if the size already matches."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrinking = width * height < w * h
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )


def render_gallery(
    tiles: Sequence[Tile], canvas_w: int, canvas_h: int, *, aspect: float = DEFAULT_ASPECT
) -> np.ndarray:
    """The mosaic of ``tiles``: a BGR uint8 array of shape ``(canvas_h, canvas_w, 3)``.

    Each tile gets a rectangle from :func:`gallery_layout`; a label bar of
    :data:`LABEL_BAR_PX` at its top in its kind's colour (:data:`KIND_COLOURS_BGR`) with the
    label in white; below it the image letterboxed on black (or :data:`WAITING_BGR` while
    there is none). Images may be any size; grey (HxW) images are accepted.

    Raises ValueError for an image that is not HxW or HxWx3 uint8, or a canvas below 1x1.
    """
    canvas = np.zeros((canvas_h, canvas_w, 3), np.uint8)
    rects = gallery_layout(len(tiles), canvas_w, canvas_h, aspect=aspect)
    for tile, rect in zip(tiles, rects, strict=True):
        inner = Rect(
            rect.x + TILE_GAP_PX,
            rect.y + TILE_GAP_PX,
            max(1, rect.w - 2 * TILE_GAP_PX),
            max(1, rect.h - 2 * TILE_GAP_PX),
        )
        bar_h = min(LABEL_BAR_PX, inner.h // 4)
        colour = KIND_COLOURS_BGR.get(tile.kind, OTHER_KIND_BGR)
        if bar_h > 0:
            canvas[inner.y : inner.y + bar_h, inner.x : inner.x + inner.w] = colour
            scale = bar_h / 30
            cv2.putText(
                canvas,
                tile.label,
                (inner.x + 4, inner.y + bar_h - max(2, bar_h // 4)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                LABEL_TEXT_BGR,
                1,
                cv2.LINE_AA,
            )
        body = Rect(inner.x, inner.y + bar_h, inner.w, max(1, inner.h - bar_h))
        image = tile.image
        if image is None:
            canvas[body.y : body.y + body.h, body.x : body.x + body.w] = WAITING_BGR
            continue
        image = _as_bgr(image)
        spot = fit_rect(image.shape[1], image.shape[0], body)
        fitted = resize_to(image, spot.w, spot.h)
        canvas[spot.y : spot.y + spot.h, spot.x : spot.x + spot.w] = fitted
    return canvas


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("a tile image must be a uint8 numpy array")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"a tile image must be HxW or HxWx3, got shape {image.shape}")


# --- the meeting gallery: one tile per participant, the screen share on a stage ---------------

STAGE_FRACTION = 0.75
"""Width of the stage (a screen share shown large) as a fraction of the canvas."""

ACTIVE_SPEAKER_BGR = (0, 215, 255)
"""Border of the active speaker's tile (amber)."""

ACTIVE_BORDER_PX = 4
MUTED_BGR = (40, 40, 220)
"""The muted badge (red)."""

VIDEO_OFF_BGR = (12, 12, 12)
"""Fill of a tile whose video is off (dark)."""


class Participant(NamedTuple):
    """One participant's tile: ``nick``, the newest video ``image`` (BGR uint8, or None),
    ``muted`` (draws a badge), ``video_off`` (a dark tile), ``active`` (the active speaker:
    a highlighted border)."""

    nick: str
    image: np.ndarray | None
    muted: bool = False
    video_off: bool = False
    active: bool = False


def meeting_layout(
    n: int, canvas_w: int, canvas_h: int, *, stage: bool
) -> tuple[Rect | None, list[Rect]]:
    """``(stage_rect, tile_rects)``: with ``stage`` the stage takes :data:`STAGE_FRACTION` of
    the width on the left and ``n`` tiles share the strip on the right; without, the ``n``
    tiles share the canvas (:func:`gallery_layout`)."""
    if not stage:
        return None, gallery_layout(n, canvas_w, canvas_h)
    stage_w = max(1, int(canvas_w * STAGE_FRACTION))
    strip_w = max(1, canvas_w - stage_w)
    tiles = [Rect(stage_w + r.x, r.y, r.w, r.h) for r in gallery_layout(n, strip_w, canvas_h)]
    return Rect(0, 0, stage_w, canvas_h), tiles


def _draw_tile(
    canvas: np.ndarray, rect: Rect, label: str, colour: tuple[int, int, int],
    image: np.ndarray | None, *, fill: tuple[int, int, int] = WAITING_BGR,
    muted: bool = False, active: bool = False,
) -> None:
    inner = Rect(rect.x + TILE_GAP_PX, rect.y + TILE_GAP_PX,
                 max(1, rect.w - 2 * TILE_GAP_PX), max(1, rect.h - 2 * TILE_GAP_PX))
    bar_h = min(LABEL_BAR_PX, inner.h // 4)
    if bar_h > 0:
        canvas[inner.y: inner.y + bar_h, inner.x: inner.x + inner.w] = colour
        cv2.putText(canvas, label, (inner.x + 4, inner.y + bar_h - max(2, bar_h // 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, bar_h / 30, LABEL_TEXT_BGR, 1, cv2.LINE_AA)
        if muted:
            badge_w = min(inner.w // 3, 3 * bar_h)
            x0 = inner.x + inner.w - badge_w
            canvas[inner.y: inner.y + bar_h, x0: inner.x + inner.w] = MUTED_BGR
            cv2.putText(canvas, "muted", (x0 + 3, inner.y + bar_h - max(2, bar_h // 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, bar_h / 36, LABEL_TEXT_BGR, 1, cv2.LINE_AA)
    body = Rect(inner.x, inner.y + bar_h, inner.w, max(1, inner.h - bar_h))
    if image is None:
        canvas[body.y: body.y + body.h, body.x: body.x + body.w] = fill
    else:
        image = _as_bgr(image)
        spot = fit_rect(image.shape[1], image.shape[0], body)
        canvas[spot.y: spot.y + spot.h, spot.x: spot.x + spot.w] = resize_to(image, spot.w, spot.h)
    if active:
        cv2.rectangle(canvas, (inner.x, inner.y), (inner.x + inner.w - 1, inner.y + inner.h - 1),
                      ACTIVE_SPEAKER_BGR, ACTIVE_BORDER_PX)


def render_meeting(
    people: Sequence[Participant],
    canvas_w: int,
    canvas_h: int,
    *,
    stage: tuple[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The meeting's gallery: a BGR uint8 array of shape ``(canvas_h, canvas_w, 3)``.

    One tile per participant of ``people`` (in order), labelled with the nick on a video
    label bar, a muted badge, a dark body when the video is off, the active speaker's border.
    ``stage`` is ``(label, image)`` of a screen share, shown large on the left (Jitsi's stage
    view) while the tiles move to a strip on the right. Raises ValueError for a bad image.
    """
    canvas = np.zeros((canvas_h, canvas_w, 3), np.uint8)
    stage_rect, rects = meeting_layout(len(people), canvas_w, canvas_h, stage=stage is not None)
    if stage is not None and stage_rect is not None:
        _draw_tile(canvas, stage_rect, stage[0], KIND_COLOURS_BGR["screen"], stage[1])
    for person, rect in zip(people, rects, strict=True):
        _draw_tile(
            canvas, rect, person.nick, KIND_COLOURS_BGR["video"],
            None if person.video_off else person.image,
            fill=VIDEO_OFF_BGR if person.video_off else WAITING_BGR,
            muted=person.muted, active=person.active,
        )
    return canvas
