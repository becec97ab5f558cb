"""Hand-computed cases and properties of SlidingWindowCounter and SlidingWindow.

The worked examples are the ones in src_cy/window.pxd; every other expected value is worked
out in the comment beside it.
"""

import threading
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcore
from fastcore import (
    CostExceedsLimit, Decision, InvalidCost, InvalidRate, ManualClock, SlidingWindow,
    SlidingWindowCounter,
)

S = 1_000_000_000                      # ns per second
KINDS = [SlidingWindowCounter, SlidingWindow]


def at(clock, seconds):
    clock.set_ns(round(Fraction(seconds) * S))


def test_compiled_classes_are_exported():
    from fastcore._core import window
    assert fastcore.SlidingWindowCounter is window.SlidingWindowCounter
    assert fastcore.SlidingWindow is window.SlidingWindow
    assert window.__file__.endswith((".so", ".pyd"))


# -- the worked examples of window.pxd ---------------------------------------------------------

def test_counter_worked_example():
    clock = ManualClock()
    limiter = SlidingWindowCounter(10, 1.0, clock=clock)
    at(clock, 4.5)
    assert all(limiter.try_acquire("k") for _ in range(8))       # window 4: 8
    at(clock, 5.25)
    assert all(limiter.try_acquire("k") for _ in range(3))       # 8 * 0.75 + 3 = 9
    assert limiter.acquire("k") == Decision(True, 0, 0, 1_750_000_000)
    denied = limiter.acquire("k")                                # 8 * 0.75 + 4 + 1 = 11
    assert denied == Decision(False, 0, 125_000_000, 1_750_000_000)
    clock.set_ns(5_375_000_000 - 1)                              # 8 * 0.625000001 + 5 > 10
    assert not limiter.peek("k").allowed
    clock.set_ns(5_375_000_000)                                  # 8 * 0.625 + 5 = 10
    assert limiter.peek("k") == Decision(True, 0, 0, 1_625_000_000)


def test_ring_worked_example():
    clock = ManualClock()
    limiter = SlidingWindow(10, 1.0, slices=10, clock=clock)
    at(clock, 5.02)
    assert limiter.acquire("k", 4) == Decision(True, 6, 0, 980_000_000)   # slice 50 leaves at 6.0
    at(clock, 5.51)
    assert limiter.acquire("k", 6) == Decision(True, 0, 0, 990_000_000)   # slice 55 leaves at 6.5
    at(clock, 5.93)
    assert limiter.acquire("k") == Decision(False, 0, 70_000_000, 570_000_000)
    clock.set_ns(6 * S - 1)
    assert not limiter.try_acquire("k")
    clock.set_ns(6 * S)                                          # slice 50 left: 6 counted
    assert limiter.acquire("k", 4) == Decision(True, 0, 0, 1_000_000_000)


def test_counter_denied_until_next_window():
    # cur + cost > limit: the previous-window weight must fall in the next window:
    # 10 admitted at 0.5 s; at 1.0 + e the estimate is 10 * (1 - e) and 10 * (1 - e) + 1 <= 10
    # from e = 0.1, so retry_after = 1.1 - 0.5 = 0.6 s; reset when window 1 ends: 2.0 - 0.5.
    clock = ManualClock()
    limiter = SlidingWindowCounter(10, 1.0, clock=clock)
    at(clock, 0.5)
    assert limiter.acquire_many(["k"] * 10).all()
    assert limiter.acquire("k") == Decision(False, 0, 600_000_000, 1_500_000_000)
    clock.set_ns(1_100_000_000 - 1)
    assert not limiter.try_acquire("k")
    clock.set_ns(1_100_000_000)
    assert limiter.try_acquire("k")


def test_cost_equal_to_limit_waits_for_an_empty_window():
    clock = ManualClock()
    limiter = SlidingWindowCounter(5, 1.0, clock=clock)
    assert limiter.try_acquire("k", 1)
    # (limit - cost) = 0: the whole previous window must have left, at 2.0 s
    assert limiter.acquire("k", 5) == Decision(False, 4, 2 * S, 2 * S)


@pytest.mark.parametrize("kind", KINDS)
def test_fractional_costs_are_counted_in_units(kind):
    clock = ManualClock()
    limiter = kind(1, 1.0, clock=clock)
    assert limiter.cost_unit == 2.0**-23                         # 1 * 2**23 < 2**24 <= 2 * 2**23
    # 0.1 rounds up to 838861 units of 2**-23, so 9 fit in 8388608 units and a 10th does not;
    # with exact Fractions 10 * 0.1 (a double) = 1.0000000000000000555 > 1 as well.
    assert [limiter.try_acquire("k", 0.1) for _ in range(10)] == [True] * 9 + [False]
    assert limiter.peek("k", 0.0625).allowed                     # 2**-4 is exact


@pytest.mark.parametrize("kind", KINDS)
def test_rate_strings(kind):
    limiter = kind("100/minute", clock=ManualClock())
    assert (limiter.limit, limiter.window, limiter.window_ns) == (100, 60.0, 60 * S)
    assert limiter.acquire("k").remaining == 99
    limiter = kind("5/30 seconds", clock=ManualClock())
    assert (limiter.limit, limiter.window_ns) == (5, 30 * S)


def test_ring_rounds_the_window_up_to_whole_ns_per_slice():
    limiter = SlidingWindow(3, 1.0, slices=7, clock=ManualClock())
    assert limiter.slice_ns == 142_857_143 and limiter.window_ns == 7 * 142_857_143
    assert SlidingWindow(3, 1.0, slices=1024).slice_ns == 976_563


# -- bad input raises and changes nothing --------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("limit, window", [
    (0, 1.0), (-1, 1.0), (float("nan"), 1.0), (float("inf"), 1.0), (2**24, 1.0), (10, 0),
    (10, -1.0), (10, float("nan")), (10, None), ("100/minute", 60.0), ("often", None),
    (10, 2.0**61 / 1e9), (10, "1s"), (True, 1.0),
])
def test_bad_limits_and_windows(kind, limit, window):
    with pytest.raises(InvalidRate):
        kind(limit, window)


@pytest.mark.parametrize("slices, error", [(0, ValueError), (1025, ValueError),
                                           (2.0, TypeError), (True, TypeError)])
def test_bad_slices(slices, error):
    with pytest.raises(error):
        SlidingWindow(10, 1.0, slices=slices)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_changes_nothing(kind):
    clock = ManualClock(start=3.0)
    limiter = kind(4, 1.0, clock=clock, max_keys=10)
    limiter.acquire("k", 2)
    state = (len(limiter), limiter.peek("k"), limiter.peek("other"))
    for cost, error in [(-1, InvalidCost), (float("nan"), InvalidCost), (float("inf"), InvalidCost),
                        (4.5, CostExceedsLimit), (5, CostExceedsLimit)]:
        for call in (limiter.try_acquire, limiter.acquire, limiter.peek):
            with pytest.raises(error):
                call("new", cost)
        with pytest.raises(error):
            limiter.acquire_many(["new", "k"], [1, cost])
        with pytest.raises(error):
            limiter.acquire_many(np.array([limiter.handle("k")]), [cost])
    with pytest.raises(TypeError):
        limiter.acquire(["unhashable"])
    with pytest.raises(TypeError):
        limiter.acquire_many(["new", ["unhashable"]])
    with pytest.raises(ValueError):
        limiter.acquire_many(["new", "k"], [1])
    with pytest.raises(IndexError):
        limiter.acquire_many(np.array([limiter.handle("k"), 12345 << 32], dtype=np.int64))
    assert issubclass(CostExceedsLimit, fastcore.FastcoreError)
    assert (len(limiter), limiter.peek("k"), limiter.peek("other")) == state


def test_limit_below_one_rejects_the_default_cost():
    limiter = SlidingWindowCounter(0.75, 1.0, clock=ManualClock())
    with pytest.raises(CostExceedsLimit):
        limiter.try_acquire("k")
    with pytest.raises(CostExceedsLimit):
        limiter.acquire_many(["k"])
    assert limiter.try_acquire("k", 0.75) and len(limiter) == 1


# -- retry_after is exact -------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(KINDS), limit=st.sampled_from([1, 3, 10, 7.5]),
       window_ns=st.sampled_from([S, 999_999_937, 60 * S]), slices=st.sampled_from([1, 3, 10]),
       arrivals=st.lists(st.tuples(st.integers(0, 2 * S), st.sampled_from([1, 0.5, 2, 3])),
                         min_size=1, max_size=30),
       cost=st.sampled_from([1, 0.5, 2, 3]))
def test_retry_after_is_exact(kind, limit, window_ns, slices, arrivals, cost):
    """Denied: still denied 1 ns before retry_after, admitted exactly at it."""
    clock = ManualClock()
    extra = {"slices": slices} if kind is SlidingWindow else {}
    limiter = kind(limit, Fraction(window_ns, S), clock=clock, **extra)
    if cost > limit:
        return
    for step, c in arrivals:
        clock.advance_ns(step)
        if c <= limit:
            limiter.try_acquire("k", c)
    decision = limiter.peek("k", cost)
    if decision.allowed:
        assert decision.retry_after_ns == 0
        return
    start = clock.now_ns
    assert decision.retry_after_ns >= 1
    clock.set_ns(start + decision.retry_after_ns - 1)
    assert not limiter.peek("k", cost).allowed
    clock.set_ns(start + decision.retry_after_ns)
    assert limiter.acquire("k", cost).allowed


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(KINDS),
       arrivals=st.lists(st.tuples(st.integers(0, S // 2), st.sampled_from([1, 2])),
                         min_size=1, max_size=20))
def test_reset_after_is_when_the_key_turns_fresh(kind, arrivals):
    clock = ManualClock()
    limiter = kind(5, 1.0, clock=clock)
    for step, c in arrivals:
        clock.advance_ns(step)
        limiter.try_acquire("k", c)
    reset_ns = limiter.peek("k", 0).reset_after_ns
    start = clock.now_ns
    if reset_ns:
        clock.set_ns(start + reset_ns - 1)
        assert limiter.peek("k", 5).allowed is False or limiter.peek("k", 0).reset_after_ns == 1
    clock.set_ns(start + reset_ns)
    assert limiter.peek("k", 0).reset_after_ns == 0
    assert limiter.peek("k", 5) == limiter.peek("fresh", 5)


# -- time: long gaps, the maintenance pass, dating back ------------------------------------------

def test_counter_long_idle_key_is_not_mistaken_for_a_recent_one():
    # The counter keeps w mod 2**16; a key last written 65,536 windows ago must read empty.
    clock = ManualClock()
    limiter = SlidingWindowCounter(3, 0.001, clock=clock)
    assert limiter.acquire_many(["k"] * 3).all()
    assert not limiter.try_acquire("k")
    for gap_windows in (65_536, 65_536 + 1, 3 * 65_536):
        clock.advance_ns(gap_windows * 1_000_000)
        assert limiter.acquire_many(["k"] * 4).tolist() == [True, True, True, False]
    # the same through a batch of handles whose time jumps ahead without the clock
    handles = np.array([limiter.handle("k")] * 4, dtype=np.int64)
    later = Fraction(clock.now_ns + 65_536 * 1_000_000, S)
    assert limiter.acquire_many(handles, now=later).tolist() == [True, True, True, False]


def test_dated_back_decisions_are_made_at_the_start_of_the_keys_window():
    clock = ManualClock(start=10.0)
    limiter = SlidingWindowCounter(4, 1.0, clock=clock)
    assert limiter.acquire_many(["k"] * 4, now=Fraction(21, 2)).all()     # window 10
    # at 11.75 the estimate would be 4 * 0.25 = 1, but the key last moved at 11.75 ...
    assert limiter.acquire_many(["k"] * 3, now=Fraction(47, 4)).tolist() == [True, True, True]
    # ... so a batch dated 11.0 is decided at the start of window 11: 4 * 1 + 3 > 4
    allowed, retry = limiter.acquire_many(["k"], now=11.0, with_retry_after=True)
    assert not allowed[0] and retry[0] > 0.75
    # a Decision dated back the same way (the clock behind the batch) reports nothing left
    d = limiter.acquire("k")
    assert not d and d.remaining == 0 and d.retry_after_ns > 750_000_000
    ring = SlidingWindow(2, 1.0, slices=4, clock=clock)
    assert ring.acquire_many(["k", "k"], now=12.0).all()
    assert not ring.acquire_many(["k"], now=11.0)[0]                      # dated back: slice 48


# -- the bounded key table ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_flood_of_unique_keys_stays_within_max_keys(kind):
    clock = ManualClock()
    limiter = kind(5, 1.0, max_keys=64, clock=clock)
    for i in range(5000):
        limiter.try_acquire(i)
        if i % 50 == 0:
            clock.advance(0.01)
        assert len(limiter) <= 64
    assert limiter.evictions > 0
    limiter.acquire_many(list(range(10_000, 12_000)))
    assert len(limiter) <= 64


@pytest.mark.parametrize("kind", KINDS)
def test_idle_keys_go_first_and_change_no_decision(kind):
    clock = ManualClock()
    limiter = kind(2, 1.0, max_keys=4, clock=clock)
    for key in "abcd":
        limiter.try_acquire(key)
    clock.advance(2.5)                                   # a..d are empty again: idle
    for key in "efgh":
        assert limiter.acquire(key).remaining == 1       # fresh, and no live key evicted
    assert limiter.evictions == 0 and len(limiter) == 4
    assert limiter.try_acquire("e") and not limiter.try_acquire("e")


@pytest.mark.parametrize("kind", KINDS)
def test_on_full_deny_and_evict(kind):
    clock = ManualClock()
    deny = kind(2, 1.0, max_keys=2, on_full="deny", clock=clock)
    assert deny.try_acquire("a") and deny.try_acquire("b")
    denied = deny.acquire("c")
    assert not denied and denied.remaining == 0 and 1 <= denied.retry_after_ns <= 2 * S
    assert not deny.peek("c") and "c" not in deny
    with pytest.raises(fastcore.FastcoreError):
        deny.handle("c")
    allowed, retry = deny.acquire_many(["a", "c"], with_retry_after=True)
    assert allowed.tolist() == [True, False] and retry[1] > 0
    evict = kind(2, 1.0, max_keys=2, clock=clock)
    handle_a = evict.handle("a")
    evict.try_acquire("a")
    evict.try_acquire("b")
    assert evict.try_acquire("c") and evict.evictions == 1 and "a" not in evict
    with pytest.raises(IndexError):
        evict.acquire_many(np.array([handle_a], dtype=np.int64))


@pytest.mark.parametrize("kind", KINDS)
def test_reset(kind):
    clock = ManualClock()
    limiter = kind(2, 1.0, clock=clock)
    handle = limiter.handle("a")
    limiter.acquire_many(["a", "a", "b"])
    assert not limiter.try_acquire("a")
    limiter.reset("a")
    limiter.reset("never-seen")
    assert limiter.acquire_many(np.array([handle, handle, handle])).tolist() == [True, True, False]
    limiter.reset()
    assert len(limiter) == 0 and limiter.peek("b").remaining == 1


# 24 slot + 16 idle queue + 4 generation + ~8 index + state (8, or 16 + 4 * 10 slices)
@pytest.mark.parametrize("kind, most", [(SlidingWindowCounter, 60.5), (SlidingWindow, 108.5)])
def test_bytes_per_key(kind, most):
    limiter = kind(10, 1.0, max_keys=1_000_000, clock=ManualClock())
    limiter.acquire_many(range(1_000_000))
    assert len(limiter) == 1_000_000
    assert limiter.memory_bytes() / 1_000_000 <= most


# -- threads -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("by_handle", [True, False])
def test_concurrent_batches_never_admit_more_than_the_limit(kind, by_handle):
    clock = ManualClock(start=100.0)                     # frozen: one window for every thread
    limit, keys, threads = 500, 8, 4
    limiter = kind(limit, 1.0, clock=clock)
    handles = np.array([limiter.handle(k) for k in range(keys)], dtype=np.int64)
    admitted = np.zeros((threads, keys), dtype=np.float64)
    barrier = threading.Barrier(threads)
    rng = np.random.default_rng(7)
    plans = [rng.integers(0, keys, size=4000) for _ in range(threads)]
    costs = [rng.choice([0.5, 1.0, 2.0], size=4000) for _ in range(threads)]

    def work(t):
        barrier.wait()
        for chunk in range(0, 4000, 250):
            picks = plans[t][chunk:chunk + 250]
            batch = handles[picks] if by_handle else picks.tolist()
            allowed = limiter.acquire_many(batch, costs[t][chunk:chunk + 250])
            np.add.at(admitted[t], picks[allowed], costs[t][chunk:chunk + 250][allowed])
            if limiter.try_acquire(int(picks[0])):       # single calls racing the batches
                admitted[t, picks[0]] += 1
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    per_key = admitted.sum(axis=0)
    assert (per_key <= limit).all()
    assert (per_key >= limit - 2).all()                  # demand far above: filled up
    for k in range(keys):                                # every admission counted once
        assert limiter.peek(k, 0).remaining == int(limit - per_key[k])


@pytest.mark.parametrize("kind", [SlidingWindowCounter, SlidingWindow])
def test_a_refused_far_future_batch_changes_nothing(kind):
    # A batch dated 40,000 windows ahead would run the counter's maintenance pass first; a
    # batch refused for a stale handle or an unhashable key must leave every key as it was.
    limiter = kind(5, 1.0, clock=ManualClock(100.0))
    assert [limiter.try_acquire("a") for _ in range(6)] == [True] * 5 + [False]
    before = limiter.peek("a")
    with pytest.raises(IndexError):
        limiter.acquire_many(np.array([12345], dtype=np.int64), now=40_100.0)
    with pytest.raises(TypeError):
        limiter.acquire_many(["b", ["unhashable"]], now=40_100.0)
    assert limiter.peek("a") == before and not before.allowed
    assert "b" not in limiter
