"""zmeet.clock: the one clock seam, its system readings and the manual clock tests drive."""

from __future__ import annotations

import time

import pytest

from zmeet.clock import SYSTEM_CLOCK, ManualClock, now_ms, now_us


def test_the_system_clock_reads_one_wall_time_in_its_three_units():
    before_ns = time.time_ns()
    us, ms, s = SYSTEM_CLOCK.wall_us(), SYSTEM_CLOCK.wall_ms(), SYSTEM_CLOCK.wall_s()
    after_ns = time.time_ns()
    assert before_ns // 1000 <= us <= after_ns // 1000
    assert before_ns // 1_000_000 <= ms <= after_ns // 1_000_000
    assert before_ns / 1e9 - 1e-6 <= s <= after_ns / 1e9 + 1e-6
    assert before_ns // 1000 <= now_us() and before_ns // 1_000_000 <= now_ms()


def test_the_system_monotonic_clock_never_goes_back():
    readings = [SYSTEM_CLOCK.monotonic_s() for _ in range(1000)]
    assert readings == sorted(readings)


def test_a_manual_clock_moves_only_when_told_and_never_back():
    clock = ManualClock(wall_us_=1_000_000, monotonic_s_=5.0)
    assert (clock.wall_us(), clock.wall_ms(), clock.wall_s(), clock.monotonic_s()) == (
        1_000_000, 1000, 1.0, 5.0)
    clock.advance(0.25)
    assert (clock.wall_us(), clock.wall_ms(), clock.wall_s(), clock.monotonic_s()) == (
        1_250_000, 1250, 1.25, 5.25)
    with pytest.raises(ValueError):
        clock.advance(-0.001)
    assert clock.monotonic_s() == 5.25
