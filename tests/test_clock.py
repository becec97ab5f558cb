"""Clocks: ManualClock arithmetic and errors, the system clocks' basic promises."""

import math

import pytest

import fastcore
from fastcore import CoarseClock, ManualClock, MonotonicClock


def test_manual_clock_reads_and_moves_exactly():
    clock = ManualClock(start=1.5)
    assert clock.now_ns == 1_500_000_000
    assert clock.now() == 1.5
    clock.advance(0.25)
    assert clock.now_ns == 1_750_000_000
    clock.advance_ns(1)
    assert clock.now_ns == 1_750_000_001
    clock.set(2)
    assert clock.now_ns == 2_000_000_000
    clock.set_ns(2_000_000_007)
    assert clock.now_ns == 2_000_000_007
    assert clock() == 2.000000007


def test_manual_clock_rounds_seconds_to_the_nearest_ns():
    clock = ManualClock()
    clock.advance(1e-9 * 0.6)        # 0.6 ns rounds up
    assert clock.now_ns == 1
    clock.advance(0.1)               # 0.1 is 0.1000000000000000055... s: 100_000_000 ns
    assert clock.now_ns == 100_000_001
    assert ManualClock(1 / 3).now_ns == 333_333_333


@pytest.mark.parametrize("move", [
    lambda c: c.advance(-0.1), lambda c: c.advance_ns(-1), lambda c: c.set(9.999),
    lambda c: c.set_ns(9_999_999_999), lambda c: c.advance(math.nan),
    lambda c: c.advance(math.inf), lambda c: c.set_ns(1 << 63),
])
def test_manual_clock_refuses_to_move_backwards_or_to_nonsense(move):
    clock = ManualClock(start=10.0)
    with pytest.raises(ValueError):
        move(clock)
    assert clock.now_ns == 10_000_000_000


@pytest.mark.parametrize("bad", ["1", None, 1.5j])
def test_manual_clock_type_errors(bad):
    with pytest.raises(TypeError):
        ManualClock(bad)
    with pytest.raises(TypeError):
        ManualClock().advance_ns(1.0)


def test_negative_start_is_refused():
    with pytest.raises(ValueError):
        ManualClock(-1.0)


def test_system_clocks_are_monotonic_and_share_a_timeline():
    # Bracketed reads, so a preempted test thread widens the bracket instead of failing: the
    # coarse clock is the monotonic clock as of its last tick, at most one tick behind.
    first = fastcore.monotonic_ns()
    mono = MonotonicClock().now_ns
    coarse = CoarseClock().now_ns
    last = fastcore.monotonic_ns()
    assert first <= mono <= last
    tick_ns = CoarseClock.resolution() * 1e9
    assert first - 2 * tick_ns - 1e6 <= coarse <= last + 1e6
    assert 0 < CoarseClock.resolution() < 0.1


def test_structures_refuse_foreign_clocks():
    with pytest.raises(TypeError, match="clock must be"):
        fastcore.TokenBucket(1, 1, clock=lambda: 0.0)
