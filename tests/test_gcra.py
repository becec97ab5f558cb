"""Token buckets: hand-computed cases, bad input, properties, threads, memory bounds."""

import math
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastcore
from fastcore import (CostExceedsBurst, Decision, InvalidCost, KeyedTokenBucket, ManualClock,
                      TokenBucket)

T3 = 333_333_334            # ns per token at 3/s, rounded up
TAU3 = 3 * T3               # burst 3


def decision(allowed, remaining, retry_ns, reset_ns):
    return Decision(allowed, remaining, retry_ns, reset_ns)


# -- hand-computed timelines ------------------------------------------------------------------

def test_worked_example_three_per_second(clock):
    bucket = TokenBucket(3, 3, clock=clock)
    assert bucket.acquire() == decision(True, 2, 0, T3)
    assert bucket.acquire() == decision(True, 1, 0, 2 * T3)
    assert bucket.acquire() == decision(True, 0, 0, TAU3)
    assert bucket.acquire() == decision(False, 0, T3, TAU3)
    clock.advance_ns(T3 - 1)
    assert not bucket.try_acquire()
    clock.advance_ns(1)
    assert bucket.acquire() == decision(True, 0, 0, TAU3)


def test_full_bucket_admits_exactly_burst_for_rates_that_are_not_whole_ns(clock):
    for rate in (3, 7, 1e9 / 7, 0.3, "7/3 seconds"):
        bucket = TokenBucket(rate, 7, clock=clock)
        assert sum(bucket.try_acquire() for _ in range(20)) == 7


def test_sustained_rate_never_exceeds_the_exact_rate(clock):
    bucket = TokenBucket(3, 1, clock=clock)
    admitted = 0
    for _ in range(20_000):                    # 20 s polled every ms
        admitted += bucket.try_acquire()
        clock.advance_ns(1_000_000)
    elapsed = 20_000 * 1_000_000 / 1e9
    assert admitted <= 1 + 3 * elapsed        # the exact bucket's bound: burst + rate * t
    assert admitted >= 3 * elapsed - 1        # polling and ns rounding lose under one token


def test_fractional_costs_are_exact(clock):
    bucket = TokenBucket(2, 2, clock=clock)   # T = 0.5 s
    assert bucket.acquire(0.5) == decision(True, 1, 0, 250_000_000)
    assert bucket.acquire(1.25) == decision(True, 0, 0, 875_000_000)
    # 1/3 of a token at T = 0.5 s is 166_666_666.67 ns: rounded up, never down
    assert bucket.acquire(1 / 3) == decision(False, 0, 41_666_667, 875_000_000)
    assert bucket.peek(0.25) == decision(True, 0, 0, 1_000_000_000)


def test_zero_cost_is_admitted_and_changes_nothing(clock):
    bucket = TokenBucket(1, 1, clock=clock)
    assert bucket.try_acquire()
    assert bucket.acquire(0) == decision(True, 0, 0, 1_000_000_000)


def test_rate_string_burst_defaults_to_its_limit(clock):
    bucket = TokenBucket("5/30 seconds", clock=clock)
    assert bucket.burst == 5
    assert sum(bucket.try_acquire() for _ in range(10)) == 5
    assert bucket.peek().retry_after == 6.0


def test_peek_consumes_nothing_and_reset_refills(clock):
    bucket = TokenBucket(1, 2, clock=clock)
    assert bucket.peek() == decision(True, 1, 0, 1_000_000_000)
    assert bucket.peek() == decision(True, 1, 0, 1_000_000_000)
    bucket.acquire(2)
    assert bucket.peek() == decision(False, 0, 1_000_000_000, 2_000_000_000)
    bucket.reset()
    assert bucket.peek() == decision(True, 1, 0, 1_000_000_000)


def test_decision_reads_like_a_record():
    d = Decision(False, 0, 250_000_000, 1_000_000_000)
    assert not d and d.retry_after == 0.25 and d.reset_after == 1.0
    assert repr(d) == "Decision(allowed=False, remaining=0, retry_after=0.25, reset_after=1.0)"
    assert bool(Decision(True, 3, 0, 0))
    assert d == Decision(False, 0, 250_000_000, 1_000_000_000) != Decision(True, 0, 0, 0)
    assert hash(d) == hash(Decision(False, 0, 250_000_000, 1_000_000_000))


def test_keys_never_share_state(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    assert limiter.try_acquire("a")
    assert not limiter.try_acquire("a")
    assert limiter.try_acquire("b")
    assert limiter.try_acquire(("a",))
    assert limiter.try_acquire(b"a")
    assert limiter.try_acquire(1) and not limiter.try_acquire(1.0)   # 1 == 1.0: one key
    assert len(limiter) == 5


def test_equal_keys_built_separately_find_the_same_bucket(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    assert limiter.try_acquire("".join(["ten", "ant"]))
    assert not limiter.try_acquire("".join(["te", "nant"]))


# -- bad input: clear errors, nothing changes ---------------------------------------------------

BAD_COSTS = [(-1, InvalidCost), (math.nan, InvalidCost), (math.inf, InvalidCost),
             (-math.inf, InvalidCost), (4, CostExceedsBurst), (3.0000001, CostExceedsBurst)]


@pytest.mark.parametrize("cost, error", BAD_COSTS)
def test_bad_costs_raise_and_change_nothing(clock, cost, error):
    bucket = TokenBucket(3, 3, clock=clock)
    keyed = KeyedTokenBucket(3, 3, max_keys=2, clock=clock)
    bucket.acquire(1)
    keyed.acquire("a", 1)
    before = (bucket.peek(), keyed.peek("a"), len(keyed))
    for call in (bucket.try_acquire, bucket.acquire, bucket.peek):
        with pytest.raises(error):
            call(cost)
    for call in (keyed.try_acquire, keyed.acquire, keyed.peek):
        with pytest.raises(error):
            call("new-key", cost)
    with pytest.raises(error):
        keyed.acquire_many(["a", "b"], [1, cost])
    assert (bucket.peek(), keyed.peek("a"), len(keyed)) == before
    assert "new-key" not in keyed and "b" not in keyed


def test_errors_are_fastcore_and_value_errors():
    assert issubclass(InvalidCost, fastcore.FastcoreError) and issubclass(InvalidCost, ValueError)
    assert issubclass(CostExceedsBurst, ValueError)
    assert issubclass(fastcore.InvalidRate, ValueError)


def test_non_numeric_cost_is_a_type_error(clock):
    with pytest.raises(TypeError):
        TokenBucket(1, 1, clock=clock).try_acquire("1")


def test_unhashable_key_is_a_type_error_and_changes_nothing(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    limiter.try_acquire("a")
    for call in (limiter.try_acquire, limiter.acquire, limiter.peek, limiter.handle,
                 limiter.reset, limiter.__contains__):
        with pytest.raises(TypeError):
            call(["unhashable"])
    with pytest.raises(TypeError):
        limiter.acquire_many(["b", ["unhashable"], "c"])
    assert len(limiter) == 1 and "b" not in limiter


def test_batch_length_mismatch_and_stale_handles(clock):
    limiter = KeyedTokenBucket(1, 1, max_keys=1, clock=clock)
    with pytest.raises(ValueError, match="differ in length"):
        limiter.acquire_many(["a", "b"], [1])
    handle = limiter.handle("a")
    assert limiter.acquire_many(np.array([handle])).tolist() == [True]
    limiter.try_acquire("b")                              # evicts "a": its handle goes stale
    fresh = limiter.handle("b")
    before = limiter.peek("b")
    for bad in ([fresh, handle], [fresh, -1], [fresh, 1 << 40], [fresh, fresh + 1]):
        with pytest.raises(IndexError):
            limiter.acquire_many(np.array(bad, dtype=np.int64))
    assert limiter.peek("b") == before


def test_handles_before_and_after_the_first_key_leaves(clock):
    # Until a key leaves, handles are validated from the handle alone (generation 1, slot
    # below the slots in use); afterwards from the generations. Both must reject the same.
    limiter = KeyedTokenBucket(1, 5, max_keys=3, clock=clock)
    a, b, c = (limiter.handle(key) for key in "abc")
    stamp = a >> 32                              # generation 1 XOR the limiter's salt
    assert [a, b, c] == [(stamp << 32) | 0, (stamp << 32) | 1, (stamp << 32) | 2]
    forged = [(stamp << 32) | 3, ((stamp ^ 3) << 32) | 0, 0, -1, ((stamp ^ 2) << 32) | 1,
              (stamp << 32) | (1 << 31), (1 << 32) | 0]
    for table_lost_a_key in (False, True):
        before = [limiter.peek(key) for key in "bc"]
        for bad in forged:
            with pytest.raises(IndexError):
                limiter.acquire_many(np.array([b, c, bad], dtype=np.int64))
        assert [limiter.peek(key) for key in "bc"] == before
        assert limiter.acquire_many(np.array([b, c, b], dtype=np.int64)).tolist() == [True] * 3
        if not table_lost_a_key:
            limiter.try_acquire("d")            # evicts "a", the least recently used key
    d = limiter.handle("d")
    assert d == (((stamp ^ 1) ^ 3) << 32) | 0   # a's slot, in its second stay (generation 3)
    with pytest.raises(IndexError):
        limiter.acquire_many(np.array([d, a], dtype=np.int64))
    assert limiter.acquire_many(np.array([d, b, c], dtype=np.int64)).tolist() == [True] * 3


def test_handles_of_another_limiter_are_refused(clock):
    first = KeyedTokenBucket(1, 5, clock=clock)
    other = KeyedTokenBucket(1, 5, clock=clock)
    mine = np.array([first.handle(k) for k in "abc"], dtype=np.int64)
    theirs = np.array([other.handle(k) for k in "abc"], dtype=np.int64)
    for limiter, foreign in ((first, theirs), (other, mine)):
        with pytest.raises(IndexError, match="unknown or stale"):
            limiter.acquire_many(foreign)
    first.reset("a")                             # both paths: before and after a key left
    first.try_acquire("x")
    first.reset()
    mine = np.array([first.handle(k) for k in "abc"], dtype=np.int64)
    with pytest.raises(IndexError):
        first.acquire_many(theirs)
    assert first.acquire_many(mine).tolist() == [True] * 3


@pytest.mark.parametrize("kwargs", [
    {"max_keys": 0}, {"max_keys": -5}, {"max_keys": 1 << 40}, {"on_full": "drop"},
])
def test_bad_table_arguments(kwargs):
    with pytest.raises(ValueError):
        KeyedTokenBucket(1, 1, **kwargs)
    with pytest.raises(TypeError):
        KeyedTokenBucket(1, 1, max_keys=2.5)


# -- properties ----------------------------------------------------------------------------

@given(rate=st.sampled_from([3, 0.7, 1000, 1e9 / 3, 12.5]),
       burst=st.sampled_from([1, 2, 5, 2.5]),
       cost=st.sampled_from([1, 0.5, 2, 0.3]),
       steps=st.lists(st.integers(0, 10**9), max_size=8))
def test_retry_after_is_exact(rate, burst, cost, steps):
    """Denied one ns before retry_after, admitted exactly at it (governor's property)."""
    clock = ManualClock(1.0)
    bucket = TokenBucket(rate, burst, clock=clock)
    if cost > burst:
        return
    for step in steps:
        clock.advance_ns(step)
        bucket.try_acquire(cost)
    while bucket.try_acquire(cost):
        pass
    denied = bucket.peek(cost)
    assert not denied and denied.retry_after_ns > 0
    clock.advance_ns(denied.retry_after_ns - 1)
    assert not bucket.peek(cost)
    clock.advance_ns(1)
    assert bucket.try_acquire(cost)


@given(ops=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 400_000_000)), max_size=40))
def test_a_denial_changes_no_state(ops):
    clock = ManualClock(1.0)
    limiter = KeyedTokenBucket(5, 2, clock=clock)
    for key, step in ops:
        clock.advance_ns(step)
        before = limiter.peek(key)
        if not limiter.acquire(key):
            assert limiter.peek(key) == before


@given(keys=st.lists(st.integers(0, 10**6), max_size=300), max_keys=st.integers(1, 40),
       on_full=st.sampled_from(["evict", "deny"]))
def test_len_never_exceeds_max_keys(keys, max_keys, on_full):
    clock = ManualClock(1.0)
    limiter = KeyedTokenBucket(1, 1, max_keys=max_keys, on_full=on_full, clock=clock)
    for key in keys:
        limiter.try_acquire(key)
        assert len(limiter) <= max_keys


def test_flood_of_unique_keys_keeps_memory_bounded(clock):
    limiter = KeyedTokenBucket(1, 1, max_keys=1000, clock=clock)
    for key in range(1000):
        limiter.try_acquire(key)
    settled = limiter.memory_bytes()
    for key in range(1000, 200_000):
        limiter.try_acquire(key)
    assert len(limiter) == 1000
    assert limiter.memory_bytes() == settled
    assert limiter.evictions == 199_000          # every key stays live: LRU evictions


def test_idle_keys_are_dropped_before_live_ones(clock):
    limiter = KeyedTokenBucket(1, 1, max_keys=3, clock=clock)
    limiter.try_acquire("old")
    clock.advance(2.0)                              # "old" is full again: idle
    limiter.try_acquire("b")
    limiter.try_acquire("c")
    limiter.try_acquire("d")                        # full: "old" goes, not an eviction
    assert "old" not in limiter and len(limiter) == 3 and limiter.evictions == 0
    limiter.try_acquire("e")                        # all live: LRU ("b") evicted
    assert "b" not in limiter and limiter.evictions == 1


def test_on_full_deny_refuses_new_keys_until_room_frees(clock):
    limiter = KeyedTokenBucket(1, 1, max_keys=2, on_full="deny", clock=clock)
    limiter.try_acquire("a")
    clock.advance(0.5)
    limiter.try_acquire("b")
    refused = limiter.acquire("c")
    assert not refused and refused.remaining == 0
    assert refused.retry_after_ns == 500_000_000        # "a" turns idle first, in 0.5 s
    assert limiter.peek("c") == refused
    assert not limiter.try_acquire("c") and "c" not in limiter
    with pytest.raises(fastcore.FastcoreError, match="on_full='deny'"):
        limiter.handle("c")
    clock.advance(0.5)
    assert limiter.try_acquire("c") and "a" not in limiter and limiter.evictions == 0


def test_large_table_drops_idle_keys_under_a_flood(clock):
    """A flood arriving when every old key is idle drops those (all of them, at the first
    insert into the full table) and evicts only its own keys."""
    limiter = KeyedTokenBucket(1, 1, max_keys=10_000, clock=clock)
    for key in range(10_000):
        limiter.try_acquire(key)
    clock.advance(1.0)                               # every key idle
    for key in range(10_000, 30_000):
        assert limiter.try_acquire(key)
    assert limiter.evictions == 10_000               # only the flood's own keys were live


@pytest.mark.parametrize("on_full", ["evict", "deny"])
def test_idle_keys_away_from_the_lru_tail_go_before_live_ones(clock, on_full):
    # 64 keys: the 8 least recently used stay live (cost 2, full again at t=2), the other 56
    # are idle at t=1.5 (cost 1). Idle keys away from the LRU tail are found all the same:
    # no live key is evicted, no new key denied.
    limiter = KeyedTokenBucket(1, 2, max_keys=64, on_full=on_full, clock=clock)
    for key in range(8):
        assert limiter.try_acquire(f"k{key}", 2)
    for key in range(8, 64):
        assert limiter.try_acquire(f"k{key}", 1)
    clock.advance(1.5)
    for new in range(4):
        assert limiter.try_acquire(f"new{new}")
        assert limiter.peek(f"unseen{new}").allowed          # room for one more, read-only
    assert limiter.evictions == 0
    assert all(f"k{key}" in limiter for key in range(8))
    assert all(f"new{new}" in limiter for new in range(4))


def test_reset_one_key_keeps_its_handle_and_reset_all_forgets(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    handle = limiter.handle("a")
    limiter.try_acquire("a")
    limiter.reset("a")
    limiter.reset("never-seen")
    assert limiter.acquire_many(np.array([handle])).tolist() == [True]
    limiter.reset()
    assert len(limiter) == 0
    with pytest.raises(IndexError):
        limiter.acquire_many(np.array([handle]))


def test_acquire_many_matches_one_by_one(clock):
    rng = np.random.default_rng(7)
    keys = [f"k{i}" for i in rng.integers(0, 50, 2000)]
    costs = rng.choice([0.5, 1, 2], 2000)
    batch = KeyedTokenBucket(10, 5, max_keys=30, clock=clock)
    single = KeyedTokenBucket(10, 5, max_keys=30, clock=ManualClock(clock.now()))
    allowed, retry = batch.acquire_many(keys, costs, with_retry_after=True)
    expected = [single.acquire(k, c) for k, c in zip(keys, costs)]
    assert allowed.tolist() == [d.allowed for d in expected]
    assert retry.tolist() == [d.retry_after for d in expected]
    assert batch.evictions == single.evictions and len(batch) == len(single)


def test_acquire_many_with_explicit_now(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    assert limiter.acquire_many(["a", "a"], now=5.0).tolist() == [True, False]
    assert limiter.acquire_many(["a"], now=6.0).tolist() == [True]
    assert limiter.acquire_many([]).tolist() == []


# -- threads: lock-free, never over budget ------------------------------------------------------

def test_concurrent_batches_admit_exactly_the_budget():
    clock = ManualClock(1.0)
    limiter = KeyedTokenBucket(1e-3, 1000, clock=clock)   # tiny rate: the budget is the burst
    handle = limiter.handle("hot")
    handles = np.full(400_000, handle, dtype=np.int64)
    totals = []
    barrier = threading.Barrier(2)

    def worker():
        barrier.wait()
        totals.append(int(sum(limiter.acquire_many(handles).sum() for _ in range(5))))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(totals) == 1000


def test_concurrent_keyed_batches_and_single_calls_stay_exact():
    clock = ManualClock(1.0)
    limiter = KeyedTokenBucket(1e-3, 50, max_keys=64, clock=clock)
    keys = [f"tenant-{i}" for i in range(40)] * 2000
    counts = []
    barrier = threading.Barrier(3)

    def batch_worker():
        barrier.wait()
        counts.append(int(limiter.acquire_many(keys).sum()))

    def single_worker():
        barrier.wait()
        counts.append(sum(limiter.try_acquire(k) for k in keys[:20_000]))

    threads = [threading.Thread(target=batch_worker) for _ in range(2)]
    threads.append(threading.Thread(target=single_worker))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 40 * 50


# -- the compiled core is what runs -------------------------------------------------------------

def test_imported_modules_are_compiled_extensions():
    import importlib.machinery
    import inspect
    import fastcore._core.clock
    import fastcore._core.gcra
    import fastcore._core.keytable
    for module in (fastcore._core.clock, fastcore._core.gcra, fastcore._core.keytable):
        assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert not inspect.isfunction(TokenBucket.try_acquire)     # compiled, not Python code
    assert KeyedTokenBucket.__module__ == "fastcore._core.gcra"
