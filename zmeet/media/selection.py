"""Which streams a meeting receives, sans-IO (docs/protocol.md, 3.9.3 and 3.9.4).

:class:`StreamSelector` decides, for one participant in one room, which of the others'
streams it subscribes to: ``(sender, kind)`` pairs, ``kind`` one of the media kinds, where
``video`` and ``thumb`` are the two layers of a sender's camera (simulcast). Inputs go in
(the room's members, the media states the others send, when each last spoke, the window's
size); :meth:`StreamSelector.update` gives the new :class:`Selection` and what changed
(:class:`SelectionChange`). The driver (:class:`zmeet.client.media.Meeting`) turns the change
into SUB subscriptions and clears the tiles of senders whose video it no longer receives.

The rules, from every other member ``s`` (the room's members but ``me``, in join order):

- ``state`` and ``screen`` of everyone, always;
- ``audio`` of everyone while this participant plays or records audio (``receive_audio``);
- ``video`` of everyone while it records (``record``: the recorder writes the full layer);
- one video layer of the senders the gallery shows: everyone, or with ``max_streams`` N only
  the N who spoke most recently (Jitsi's last-N; those who never spoke come after, in join
  order). The layer is ``thumb`` while a tile is at most :data:`LARGE_TILE_FACTOR`
  thumbnails wide (the tiles of :func:`~zmeet.media.tiling.meeting_layout` for this
  participant and the others, beside the stage while anyone shares a screen), else
  ``video``; always ``video`` without simulcast (``thumb_width`` None) or a window
  (``canvas`` None).

Pure: no sockets, no clock (the times of speech are given, in seconds of any monotonic
clock), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..protocol.media import MediaState
from .tiling import TILE_GAP_PX, meeting_layout

LARGE_TILE_FACTOR = 1.5
"""A tile wider than this many thumbnails is shown from the full ``video`` layer."""

ALWAYS_KINDS = ("state", "screen")
"""Kinds received from every other member."""

VIDEO_LAYERS = ("video", "thumb")
"""The two layers of a sender's camera or video file: full size, and the thumbnail."""

Stream = tuple[str, str]
"""``(sender, kind)``: one SUB prefix ``media/<room>/<sender>/<kind>``."""


@dataclass(frozen=True)
class Selection:
    """What a participant receives: ``streams`` (``(sender, kind)`` pairs), ``layer`` (the
    video layer its tiles take now, ``"video"`` or ``"thumb"``) and ``shown`` (the senders
    whose video, in either layer, it receives)."""

    streams: frozenset[Stream] = frozenset()
    layer: str = "video"
    shown: frozenset[str] = frozenset()

    def by_sender(self) -> dict[str, set[str]]:
        """``{sender: kinds}`` (the shape of :meth:`MediaSubscriber.set_streams`); a sender
        with no stream does not appear."""
        out: dict[str, set[str]] = {}
        for sender, kind in self.streams:
            out.setdefault(sender, set()).add(kind)
        return out


@dataclass(frozen=True)
class SelectionChange:
    """From one :class:`Selection` to the next: the ``subscribe`` and ``unsubscribe`` streams
    (disjoint), and ``hidden``, the senders whose video is no longer received (their tiles
    are cleared: no frozen picture)."""

    selection: Selection
    subscribe: frozenset[Stream] = frozenset()
    unsubscribe: frozenset[Stream] = frozenset()
    hidden: frozenset[str] = frozenset()


@dataclass
class StreamSelector:
    """The stream selection of participant ``me`` (its nick) in one room.

    Configuration: ``receive_audio`` (it plays or records audio), ``record`` (it records the
    full video of everyone), ``max_streams`` (None, or N >= 0: last-N), ``thumb_width``
    (pixels; None: no simulcast), ``canvas`` (the window's ``(width, height)`` in pixels;
    None: no window). Inputs: :meth:`set_members`, :meth:`set_state`, :meth:`forget`,
    :meth:`set_last_spoke`, :attr:`canvas`. Output: :meth:`wanted` (what the inputs ask for
    now), :meth:`update` (that, and the change from the last update).

    Raises ValueError for a ``max_streams`` that is not None or an int >= 0.
    """

    me: str
    receive_audio: bool = False
    record: bool = False
    max_streams: int | None = None
    thumb_width: int | None = None
    canvas: tuple[int, int] | None = None
    members: tuple[str, ...] = ()
    """The room's members in join order (``me`` among them or not)."""
    states: dict[str, MediaState] = field(default_factory=dict)
    """``{sender: MediaState}`` as the others last told it (kept until :meth:`forget`)."""
    last_spoke_s: dict[str, float | None] = field(default_factory=dict)
    """``{sender: seconds}``: when each last spoke (monotonic), None or absent if never."""
    current: Selection = field(default_factory=Selection)
    """The selection of the last :meth:`update` (nothing before the first)."""

    def __post_init__(self) -> None:
        if self.max_streams is not None and (
            type(self.max_streams) is not int or self.max_streams < 0
        ):
            raise ValueError(f"max_streams must be an integer >= 0, got {self.max_streams!r}")

    # inputs -------------------------------------------------------------------------------------

    def set_members(self, members: Iterable[str]) -> None:
        """The room's members now, in join order (:meth:`Session.members`)."""
        self.members = tuple(members)

    def set_state(self, sender: str, state: MediaState) -> bool:
        """``sender``'s media state, from its ``state`` frame. Returns True if the selection
        may change with it (the first state of a sender, or a screen share that starts or
        stops: the stage appears or goes, and the tiles change size), so the driver calls
        :meth:`update`."""
        old = self.states.get(sender)
        self.states[sender] = state
        return old is None or old.screen != state.screen

    def forget(self, sender: str) -> None:
        """``sender`` left the room: drop its state and its time of speech."""
        self.states.pop(sender, None)
        self.last_spoke_s.pop(sender, None)

    def set_last_spoke(self, last_spoke_s: Mapping[str, float | None]) -> None:
        """When each sender last spoke (seconds on any monotonic clock; None: never), as the
        audio mixer tells it (:meth:`AudioMixer.last_spoke_s`)."""
        self.last_spoke_s.update(last_spoke_s)

    # outputs ------------------------------------------------------------------------------------

    def others(self) -> list[str]:
        """The room's other members, in join order."""
        return [m for m in self.members if m != self.me]

    def video_senders(self, others: list[str]) -> list[str]:
        """Whose video the gallery shows, of ``others`` (in join order): everyone's, or with
        ``max_streams`` N only the N who spoke most recently (those who never spoke come
        after, in join order)."""
        if self.max_streams is None:
            return list(others)
        order = {nick: i for i, nick in enumerate(others)}
        ranked = sorted(
            others, key=lambda s: (-(self.last_spoke_s.get(s) or 0.0), order[s]))
        return ranked[: self.max_streams]

    def video_layer(self, others: int) -> str:
        """``"video"`` if a tile of the gallery of this participant and ``others`` others is
        wide enough for the full layer (more than :data:`LARGE_TILE_FACTOR` thumbnails),
        else ``"thumb"``; always ``"video"`` without simulcast or a window. Raises
        ValueError if the tiles do not fit the canvas (:func:`meeting_layout`)."""
        if self.thumb_width is None or self.canvas is None:
            return "video"
        stage = any(st.screen for st in self.states.values())
        _, rects = meeting_layout(1 + others, self.canvas[0], self.canvas[1], stage=stage)
        tile_w = min(r.w for r in rects) - 2 * TILE_GAP_PX
        return "video" if tile_w > self.thumb_width * LARGE_TILE_FACTOR else "thumb"

    def wanted(self) -> Selection:
        """The selection the inputs ask for now (the module's rules); changes nothing."""
        others = self.others()
        layer = self.video_layer(len(others))
        shown = set(self.video_senders(others))
        streams: set[Stream] = set()
        receiving_video: set[str] = set()
        for sender in others:
            kinds = set(ALWAYS_KINDS)
            if self.receive_audio:
                kinds.add("audio")
            if self.record:
                kinds.add("video")
            if sender in shown:
                kinds.add(layer)
            if kinds.intersection(VIDEO_LAYERS):
                receiving_video.add(sender)
            streams.update((sender, kind) for kind in kinds)
        return Selection(frozenset(streams), layer, frozenset(receiving_video))

    def update(self) -> SelectionChange:
        """:meth:`wanted`, made :attr:`current`, and the change from the one before."""
        before, after = self.current, self.wanted()
        self.current = after
        return SelectionChange(
            selection=after,
            subscribe=after.streams - before.streams,
            unsubscribe=before.streams - after.streams,
            hidden=before.shown - after.shown,
        )


__all__ = [
    "ALWAYS_KINDS", "LARGE_TILE_FACTOR", "VIDEO_LAYERS", "Selection", "SelectionChange",
    "Stream", "StreamSelector",
]
