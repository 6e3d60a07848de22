"""The media domain without sockets, devices or a real clock: slots, loss counting, pacing,
rate meters, tiling."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmeet.media import (
    KIND_COLOURS_BGR,
    LABEL_BAR_PX,
    FpsMeter,
    LatestSlot,
    Pacer,
    Rect,
    SeqTracker,
    Tile,
    fit_rect,
    gallery_layout,
    render_gallery,
    scaled_size,
)


class FakeClock:
    """Seconds that move only when told to."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, dt_s: float) -> None:
        self.now_s += dt_s


# --- LatestSlot --------------------------------------------------------------------------------


def test_latest_slot_keeps_the_newest_and_counts_the_superseded():
    slot: LatestSlot[tuple[str, str], int] = LatestSlot()
    assert slot.put(("alice", "video"), 1) is False
    assert slot.put(("alice", "video"), 2) is True
    assert slot.put(("alice", "video"), 3) is True
    assert slot.put(("bob", "screen"), 10) is False
    assert slot.superseded[("alice", "video")] == 2
    assert slot.superseded[("bob", "screen")] == 0
    assert slot.total_superseded == 2
    assert slot.peek(("alice", "video")) == 3
    assert slot.take(("alice", "video")) == 3
    assert slot.take(("alice", "video")) is None
    # taken, so the next put supersedes nothing
    assert slot.put(("alice", "video"), 4) is False
    assert slot.take_all() == {("bob", "screen"): 10, ("alice", "video"): 4}
    assert len(slot) == 0
    assert slot.total_superseded == 2


def test_latest_slot_discard_is_not_counted():
    slot: LatestSlot[str, int] = LatestSlot()
    slot.put("k", 1)
    slot.discard("k")
    slot.discard("missing")
    assert slot.put("k", 2) is False
    assert slot.total_superseded == 0


def test_latest_slot_between_threads_loses_nothing_it_does_not_count():
    """A producer and a consumer thread: every item is either taken or counted superseded."""
    slot: LatestSlot[str, int] = LatestSlot()
    n_items = 5000
    taken: list[int] = []
    done = threading.Event()

    def consume() -> None:
        for _ in range(100_000):  # bounded
            item = slot.take("k")
            if item is not None:
                taken.append(item)
            elif done.is_set():
                return

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(n_items):
        slot.put("k", i)
    done.set()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    leftover = slot.take("k")
    total = len(taken) + slot.superseded["k"] + (leftover is not None)
    assert total == n_items
    assert taken == sorted(taken)  # never an older one after a newer one


# --- SeqTracker --------------------------------------------------------------------------------


def test_seq_tracker_counts_gaps_and_not_the_start():
    seqs: SeqTracker[str] = SeqTracker()
    assert seqs.observe("a", 7) == 0  # joined late: 0..6 are not lost
    assert seqs.observe("a", 8) == 0
    assert seqs.observe("a", 11) == 2
    assert seqs.observe("a", 12) == 0
    assert seqs.lost["a"] == 2
    assert seqs.received["a"] == 4
    assert seqs.last_seq("a") == 12
    assert seqs.observe("b", 0) == 0
    assert seqs.total_lost == 2


def test_seq_tracker_treats_going_back_as_a_restart():
    seqs: SeqTracker[str] = SeqTracker()
    for s in (0, 1, 2, 3):
        seqs.observe("a", s)
    assert seqs.observe("a", 0) == 0
    assert seqs.restarts["a"] == 1
    assert seqs.observe("a", 2) == 1
    assert seqs.lost["a"] == 1
    with pytest.raises(ValueError):
        seqs.observe("a", -1)


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=200))
def test_seq_tracker_lost_plus_received_spans_the_seqs(gaps):
    seqs: SeqTracker[str] = SeqTracker()
    seq = 0
    for gap in gaps:
        seq += gap
        seqs.observe("k", seq)
        seq += 1
    first = gaps[0]
    assert seqs.received["k"] + seqs.lost["k"] == seq - first


# --- Pacer -------------------------------------------------------------------------------------


def test_pacer_deadlines_do_not_drift():
    clock = FakeClock()
    pacer = Pacer(10, clock)
    assert pacer.interval_s == pytest.approx(0.1)
    assert pacer.delay_s() == 0.0  # the first frame is due at once
    t0 = clock()
    for k in range(1, 6):
        delay = pacer.delay_s()
        assert delay == pytest.approx(0.1 - 0.03 if k > 1 else 0.1)
        clock.advance(delay + 0.03)  # each capture takes 30 ms
    assert pacer.next_deadline() == pytest.approx(t0 + 0.6)
    assert pacer.skipped == 0


def test_pacer_never_bursts_after_falling_behind():
    clock = FakeClock()
    pacer = Pacer(10, clock)
    pacer.next_deadline()
    clock.advance(0.55)  # stalled for five and a half intervals
    deadline = pacer.next_deadline()
    assert deadline == clock()  # capture now, once
    assert pacer.skipped == 4
    assert pacer.delay_s() == pytest.approx(0.1)  # then back to the rate, not a burst


def test_pacer_a_little_late_is_caught_up_without_skipping():
    clock = FakeClock()
    pacer = Pacer(10, clock)
    pacer.next_deadline()
    clock.advance(0.15)
    assert pacer.delay_s() == 0.0
    assert pacer.skipped == 0
    assert pacer.delay_s() == pytest.approx(0.05)


@pytest.mark.parametrize("fps", [0, -1, float("inf"), float("nan"), "10"])
def test_pacer_rejects_bad_rates(fps):
    with pytest.raises(ValueError):
        Pacer(fps, FakeClock())


# --- FpsMeter ----------------------------------------------------------------------------------


def test_fps_meter_window_and_mean():
    clock = FakeClock()
    meter = FpsMeter(clock, window_s=2.0)
    assert meter.fps() == 0.0
    for _ in range(31):  # 30 intervals of 100 ms
        meter.tick()
        clock.advance(0.1)
    assert meter.mean_fps() == pytest.approx(10.0)
    assert meter.fps() == pytest.approx(10.0)
    assert meter.count == 31
    clock.advance(5.0)  # the stream stopped
    assert meter.fps() == 0.0
    assert meter.mean_fps() == pytest.approx(10.0)


# --- tiling ------------------------------------------------------------------------------------


def test_gallery_layout_small_counts():
    assert gallery_layout(0, 1280, 720) == []
    assert gallery_layout(1, 1280, 720) == [Rect(0, 0, 1280, 720)]
    assert gallery_layout(2, 1280, 720) == [Rect(0, 0, 640, 720), Rect(640, 0, 640, 720)]
    four = gallery_layout(4, 1280, 720)
    assert four == [Rect(0, 0, 640, 360), Rect(640, 0, 640, 360),
                    Rect(0, 360, 640, 360), Rect(640, 360, 640, 360)]
    three = gallery_layout(3, 1280, 720)
    assert three[2] == Rect(320, 360, 640, 360)  # the last, lone tile is centred


@pytest.mark.parametrize("args", [(-1, 100, 100), (1, 0, 100), (1, 100, 0)])
def test_gallery_layout_rejects_bad_input(args):
    with pytest.raises(ValueError):
        gallery_layout(*args)


@given(
    n=st.integers(min_value=1, max_value=40),
    w=st.integers(min_value=40, max_value=2000),
    h=st.integers(min_value=40, max_value=2000),
)
def test_gallery_layout_tiles_fit_and_never_overlap(n, w, h):
    rects = gallery_layout(n, w, h)
    assert len(rects) == n
    for r in rects:
        assert r.w >= 1 and r.h >= 1
        assert 0 <= r.x and r.x + r.w <= w and 0 <= r.y and r.y + r.h <= h
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert (a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y)


def test_fit_rect_letterboxes_and_centres():
    assert fit_rect(1600, 900, Rect(0, 0, 800, 800)) == Rect(0, 175, 800, 450)
    assert fit_rect(900, 1600, Rect(10, 0, 800, 800)) == Rect(10 + 175, 0, 450, 800)
    with pytest.raises(ValueError):
        fit_rect(0, 10, Rect(0, 0, 10, 10))


def test_scaled_size():
    assert scaled_size(1920, 1080, 1280) == (1280, 720)
    assert scaled_size(768, 576, 1280) == (768, 576)  # never scaled up
    assert scaled_size(768, 576, 160) == (160, 120)
    assert scaled_size(4000, 1, 100) == (100, 1)
    with pytest.raises(ValueError):
        scaled_size(10, 10, 0)


def test_render_gallery_draws_labelled_tiles():
    red = np.zeros((90, 160, 3), np.uint8)
    red[:] = (0, 0, 255)
    grey = np.full((50, 50), 200, np.uint8)
    canvas = render_gallery(
        [Tile("alice video", "video", red), Tile("bob screen", "screen", grey),
         Tile("carol video", "video", None)],
        640, 360,
    )
    assert canvas.shape == (360, 640, 3) and canvas.dtype == np.uint8
    rects = gallery_layout(3, 640, 360)
    first = rects[0]
    # the label bar of the first tile is the video colour
    bar_pixel = canvas[first.y + 4, first.x + first.w - 10]
    assert tuple(int(v) for v in bar_pixel) == KIND_COLOURS_BGR["video"]
    second = rects[1]
    assert tuple(int(v) for v in canvas[second.y + 4, second.x + second.w - 10]) == \
        KIND_COLOURS_BGR["screen"]
    # the image fills the middle of the tile under the bar
    cx, cy = first.x + first.w // 2, first.y + (first.h + LABEL_BAR_PX) // 2
    assert tuple(int(v) for v in canvas[cy, cx]) == (0, 0, 255)
    assert tuple(int(v) for v in canvas[second.y + second.h // 2 + 10,
                                        second.x + second.w // 2]) == (200, 200, 200)


def test_render_gallery_rejects_bad_images():
    with pytest.raises(ValueError):
        render_gallery([Tile("x", "video", np.zeros((4, 4, 4), np.uint8))], 64, 64)
    with pytest.raises(ValueError):
        render_gallery([Tile("x", "video", np.zeros((4, 4, 3), np.float32))], 64, 64)
