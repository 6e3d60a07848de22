"""The stream selection of a meeting without sockets (zmeet.media.selection): which streams a
participant subscribes to and which video layer it takes, from the members, their media
states, when each last spoke and the window's size (docs/protocol.md, 3.9.3 and 3.9.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmeet.media.selection import (
    LARGE_TILE_FACTOR,
    Selection,
    StreamSelector,
)
from zmeet.media.tiling import TILE_GAP_PX, meeting_layout
from zmeet.protocol import MediaState

CANVAS = (1280, 720)  # the viewer's default window
THUMB = 320


def selector(members: list[str], me: str = "me", **config) -> StreamSelector:
    config.setdefault("thumb_width", THUMB)
    config.setdefault("canvas", CANVAS)
    s = StreamSelector(me, **config)
    s.set_members(members)
    return s


def kinds(selection: Selection, sender: str) -> set[str]:
    return selection.by_sender().get(sender, set())


# --- examples --------------------------------------------------------------------------------


def test_a_small_meeting_takes_everyone_full_size() -> None:
    s = selector(["alice", "me", "bob"])
    change = s.update()
    assert change.selection.layer == "video"
    assert change.selection.by_sender() == {
        "alice": {"state", "screen", "video"}, "bob": {"state", "screen", "video"}}
    assert change.subscribe == change.selection.streams and not change.unsubscribe
    assert change.selection.shown == {"alice", "bob"}
    assert s.current == change.selection


def test_the_thumbnail_while_tiles_are_small() -> None:
    """Five tiles on 1280x720 are 426 px wide: not more than 1.5 thumbnails (480 px)."""
    assert selector(["me", "a", "b", "c"]).wanted().layer == "video"  # 2 x 2 tiles of 640
    wide = selector(["me", "a", "b", "c", "d"]).wanted()
    assert wide.layer == "thumb"
    assert kinds(wide, "a") == {"state", "screen", "thumb"}


def test_a_screen_share_puts_the_tiles_in_a_strip_and_they_take_the_thumbnail() -> None:
    s = selector(["me", "alice"])
    assert s.update().selection.layer == "video"
    assert s.set_state("alice", MediaState(video=True)) is True  # her first state
    assert s.update().selection.layer == "video"
    assert s.set_state("alice", MediaState(video=True, muted=True)) is False  # same stage
    assert s.set_state("alice", MediaState(video=True, screen=True)) is True
    change = s.update()
    assert change.selection.layer == "thumb"
    assert change.subscribe == {("alice", "thumb")}
    assert change.unsubscribe == {("alice", "video")}
    assert not change.hidden  # still her video, in the other layer
    assert s.set_state("alice", MediaState(video=True)) is True  # the share ends
    assert s.update().selection.layer == "video"


def test_a_state_is_kept_until_forgotten() -> None:
    """A sender who shares a screen keeps the stage until forgotten, member or not."""
    s = selector(["me", "alice"])
    s.set_state("bob", MediaState(screen=True))
    assert s.wanted().layer == "thumb"
    s.forget("bob")
    assert s.wanted().layer == "video"
    assert "bob" not in s.states


def test_always_the_full_layer_without_simulcast_or_a_window() -> None:
    many = ["me", *"abcdefghij"]
    assert selector(many, thumb_width=None).wanted().layer == "video"
    assert selector(many, canvas=None).wanted().layer == "video"


def test_audio_for_everyone_while_it_plays_or_records_audio() -> None:
    selection = selector(["me", "alice"], receive_audio=True).wanted()
    assert kinds(selection, "alice") == {"state", "screen", "audio", "video"}


def test_recording_takes_everyone_s_full_video_beside_the_shown_layer() -> None:
    s = selector(["me", "a", "b", "c", "d"], record=True, max_streams=1)
    selection = s.wanted()
    assert selection.layer == "thumb"
    assert kinds(selection, "a") == {"state", "screen", "video", "thumb"}  # the one shown
    assert kinds(selection, "b") == {"state", "screen", "video"}
    assert selection.shown == {"a", "b", "c", "d"}  # everyone's video is received


def test_last_n_follows_the_latest_speakers() -> None:
    """Nobody spoke: the first to join; then whoever spoke last; those who never spoke come
    after those who did, in join order."""
    s = selector(["alice", "bob", "me", "carol"], max_streams=1)
    first = s.update()
    assert first.selection.shown == {"alice"}
    assert kinds(first.selection, "bob") == {"state", "screen"}
    s.set_last_spoke({"carol": 10.0})
    change = s.update()
    assert change.selection.shown == {"carol"}
    assert change.subscribe == {("carol", "video")}
    assert change.unsubscribe == {("alice", "video")}
    assert change.hidden == {"alice"}  # her tile is cleared: no frozen picture
    s.set_last_spoke({"alice": 12.0})
    assert s.update().selection.shown == {"alice"}
    s.max_streams = 2
    assert s.wanted().shown == {"alice", "carol"}
    s.set_last_spoke({"alice": None, "carol": None})  # the mixer forgot them
    assert s.wanted().shown == {"alice", "bob"}


def test_no_video_at_all_with_max_streams_zero() -> None:
    selection = selector(["me", "alice"], max_streams=0).wanted()
    assert kinds(selection, "alice") == {"state", "screen"} and not selection.shown


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])  # a bool is not a count
def test_max_streams_must_be_an_integer_of_zero_or_more(bad) -> None:
    with pytest.raises(ValueError, match="max_streams"):
        StreamSelector("me", max_streams=bad)


def test_wanted_changes_nothing_and_the_first_update_hides_nothing() -> None:
    s = selector(["me", "alice"])
    assert s.wanted() == s.wanted()
    assert s.current == Selection()
    assert not s.update().hidden


# --- properties ------------------------------------------------------------------------------

NICKS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]

members_st = st.lists(st.sampled_from([*NICKS, "me"]), unique=True, max_size=11)
spoke_st = st.dictionaries(st.sampled_from(NICKS), st.one_of(st.none(), st.floats(0, 1e6)))
config_st = st.fixed_dictionaries({
    "receive_audio": st.booleans(),
    "record": st.booleans(),
    "max_streams": st.one_of(st.none(), st.integers(0, 12)),
    "thumb_width": st.one_of(st.none(), st.sampled_from([16, 160, 320, 640])),
    "canvas": st.one_of(st.none(), st.tuples(st.integers(320, 2560), st.integers(240, 1440))),
})


@settings(max_examples=300, deadline=None)
@given(members_st, spoke_st, st.sets(st.sampled_from(NICKS)), config_st)
def test_selection_rules(members, spoke, screens, config) -> None:
    s = selector(members, **config)
    s.set_last_spoke(spoke)
    for sender in screens:
        s.set_state(sender, MediaState(screen=True))
    selection = s.wanted()
    others = [m for m in members if m != "me"]
    by_sender = selection.by_sender()
    assert set(by_sender) == set(others)  # never oneself, never a stranger
    for sender in others:
        got = by_sender[sender]
        assert {"state", "screen"} <= got
        assert ("audio" in got) == config["receive_audio"]
        assert "video" in got or not config["record"]
        assert got <= {"state", "screen", "audio", "video", "thumb"}
    layered = [o for o in others if selection.layer in by_sender[o]]
    n = config["max_streams"]
    if not config["record"] or selection.layer == "thumb":
        assert len(layered) == (len(others) if n is None else min(n, len(others)))
    # the shown are the latest speakers: none left out spoke later than one shown
    if n is not None and not config["record"]:
        def when(o: str) -> float:
            return spoke.get(o) or 0.0
        left_out = [o for o in others if o not in layered]
        assert all(when(a) >= when(b) for a in layered for b in left_out)
    # the layer: the full one exactly when a tile is wide enough, or there is no choice
    if config["thumb_width"] is None or config["canvas"] is None:
        assert selection.layer == "video"
    else:
        _, rects = meeting_layout(1 + len(others), *config["canvas"], stage=bool(screens))
        wide = min(r.w for r in rects) - 2 * TILE_GAP_PX > config["thumb_width"] * LARGE_TILE_FACTOR
        assert selection.layer == ("video" if wide else "thumb")
    assert selection.shown == {o for o, k in by_sender.items() if k & {"video", "thumb"}}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(members_st, spoke_st, st.booleans()), min_size=1, max_size=6),
       config_st)
def test_updates_change_exactly_the_difference(steps, config) -> None:
    """Applying each change's (un)subscriptions to what was subscribed gives the new
    selection, and the hidden are those whose video is no longer received."""
    s = StreamSelector("me", **config)
    subscribed: set[tuple[str, str]] = set()
    shown: frozenset[str] = frozenset()
    for members, spoke, sharing in steps:
        s.set_members(members)
        s.set_last_spoke(spoke)
        s.set_state("alice", MediaState(screen=sharing))
        change = s.update()
        assert not change.subscribe & change.unsubscribe
        assert change.unsubscribe <= subscribed
        subscribed = (subscribed - change.unsubscribe) | change.subscribe
        assert subscribed == change.selection.streams == s.current.streams
        assert change.hidden == shown - change.selection.shown
        shown = change.selection.shown
        assert s.update().subscribe == s.update().unsubscribe == frozenset()  # no new input
