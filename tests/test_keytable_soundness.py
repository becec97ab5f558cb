"""The key table under every keyed limiter against Python keys that fight back.

Keys whose __hash__/__eq__/__del__ run Python code may re-enter the limiter, raise, or let
another thread run at any point. Each test here states what a correct table does then: the
call completes, the table stays consistent (len <= max_keys, membership agrees with what was
kept), and a call that raises changes nothing. The threaded and crash-prone versions of the
same attacks run in subprocesses in test_stress.py; eviction exactness is checked here
against the idle rule itself (a key is idle when its state is a fresh key's: reset_after 0).
"""

import gc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore import KeyedTokenBucket, ManualClock, SlidingWindow, SlidingWindowCounter

LIMITERS = {
    "bucket": lambda clock, **kw: KeyedTokenBucket(1, 2, clock=clock, **kw),
    "counter": lambda clock, **kw: SlidingWindowCounter(2, 1.0, clock=clock, **kw),
    "ring": lambda clock, **kw: SlidingWindow(2, 1.0, slices=4, clock=clock, **kw),
}


@pytest.fixture(params=sorted(LIMITERS))
def make(request):
    return LIMITERS[request.param]


class Colliding:
    """A key with a fixed hash whose __eq__ runs `on_eq` first (once, unless `repeat`).

    The table compares the key it holds with the one looked up (resident.__eq__(newcomer)),
    so the hook goes on a resident key.
    """

    def __init__(self, name, on_eq=None, repeat=False):
        self.name = name
        self.on_eq = on_eq
        self.repeat = repeat

    def __hash__(self):
        return 7

    def __eq__(self, other):
        if self.on_eq is not None:
            action = self.on_eq
            if not self.repeat:
                self.on_eq = None
            action()
        return isinstance(other, Colliding) and other.name == self.name

    def __repr__(self):
        return f"Colliding({self.name!r})"


# -- re-entrant __eq__ -------------------------------------------------------------------------

def test_eq_that_forgets_every_key_mid_lookup(make, clock):
    limiter = make(clock, max_keys=8)
    resident = Colliding("resident")
    assert limiter.try_acquire(resident)
    resident.on_eq = limiter.reset
    newcomer = Colliding("newcomer")
    # the lookup compares resident with newcomer; reset() frees resident's slot under it
    assert limiter.try_acquire(newcomer)
    assert len(limiter) == 1
    assert newcomer in limiter and resident not in limiter


def test_eq_that_forgets_every_key_then_says_equal(make, clock):
    # __eq__ returns True about a slot it just freed: the lookup must not trust that slot
    limiter = make(clock, max_keys=8)
    for i in range(5):
        limiter.try_acquire(f"other-{i}")
    resident = Colliding("same")
    limiter.try_acquire(resident, 2)
    resident.on_eq = limiter.reset
    twin = Colliding("same")
    decision = limiter.acquire(twin)
    assert decision.allowed and len(limiter) == 1 and twin in limiter
    fresh = make(ManualClock(clock.now()), max_keys=8)
    fresh.acquire("x")                       # the twin's one admission, on a fresh key
    assert limiter.peek(twin) == fresh.peek("x")


def test_eq_that_fills_and_evicts_mid_lookup(make, clock):
    limiter = make(clock, max_keys=4)
    resident = Colliding("resident")
    limiter.try_acquire(resident)

    def flood():
        for i in range(20):
            limiter.try_acquire(f"flood-{i}")            # evicts resident and each other

    resident.on_eq = flood
    newcomer = Colliding("newcomer")
    assert limiter.try_acquire(newcomer)
    assert len(limiter) == 4
    assert newcomer in limiter and resident not in limiter
    assert all(f"flood-{i}" in limiter for i in range(17, 20))


def test_eq_that_reenters_on_every_comparison(make, clock):
    limiter = make(clock, max_keys=3)
    calls = []
    residents = [Colliding(f"k{i}", on_eq=lambda: calls.append(limiter.peek("x")), repeat=True)
                 for i in range(3)]
    for key in residents:
        limiter.try_acquire(key)
    calls.clear()
    newcomer = Colliding("newcomer")
    limiter.try_acquire(newcomer)
    assert len(calls) >= 3 and len(limiter) == 3 and newcomer in limiter


def test_eq_that_raises_leaves_the_table_as_it_was(make, clock):
    limiter = make(clock, max_keys=2)
    resident = Colliding("a")
    limiter.try_acquire(resident)
    limiter.try_acquire("b")
    before = (len(limiter), limiter.evictions, limiter.peek("b"))

    def boom():
        raise RuntimeError("eq failed")

    resident.on_eq = boom
    with pytest.raises(RuntimeError, match="eq failed"):
        limiter.try_acquire(Colliding("new"))
    assert (len(limiter), limiter.evictions, limiter.peek("b")) == before
    assert resident in limiter and Colliding("a") in limiter


# -- re-entrant __del__ ------------------------------------------------------------------------

class Haunted:
    """A key whose __del__ (run when the table drops it) calls back into the limiter."""

    def __init__(self, name, on_del):
        self.name = name
        self.on_del = on_del

    def __del__(self):
        self.on_del()


def test_del_of_an_evicted_key_reenters_after_the_insert_completes(make, clock):
    limiter = make(clock, max_keys=3)
    seen = []

    def reenter():
        # runs after the evicting call made its decision: the table is consistent and full
        seen.append(len(limiter))
        limiter.try_acquire(f"from-del-{len(seen)}")

    limiter.try_acquire(Haunted("ghost", reenter))
    gc.collect()
    limiter.try_acquire("b")
    limiter.try_acquire("c")
    assert limiter.try_acquire("d")          # evicts the ghost (LRU, live): __del__ runs
    assert seen == [3]
    assert len(limiter) == 3
    assert "from-del-1" in limiter and "d" in limiter


def test_del_that_forgets_every_key(make, clock):
    limiter = make(clock, max_keys=2)
    limiter.try_acquire(Haunted("ghost", lambda: limiter.reset()))
    limiter.try_acquire("b")
    limiter.try_acquire("c")                   # evicts the ghost; its __del__ clears all
    assert len(limiter) == 0
    limiter.try_acquire("e")
    assert len(limiter) == 1


def test_del_during_a_batch_runs_after_its_decisions(make, clock):
    limiter = make(clock, max_keys=2)
    runs = []
    limiter.try_acquire(Haunted("ghost", lambda: runs.append(limiter.acquire_many(["z"]))))
    limiter.try_acquire("b")
    allowed = limiter.acquire_many(["c", "d", "c"])
    assert allowed.tolist() == [True, True, True]
    assert len(runs) == 1 and len(limiter) == 2


# -- a failing batch changes nothing ------------------------------------------------------------

def snapshot(limiter, keys):
    return (len(limiter), limiter.evictions,
            [(key in limiter) for key in keys], [limiter.peek(key) for key in keys])


@pytest.mark.parametrize("full", [False, True])
def test_a_batch_whose_key_raises_in_eq_changes_nothing(make, clock, full):
    limiter = make(clock, max_keys=3)
    resident = Colliding("resident")
    keys = [resident, "b"] + (["c"] if full else [])
    for key in keys:
        limiter.try_acquire(key)
    probe = keys + ["new-1", "new-2"]
    before = snapshot(limiter, probe)

    def boom():
        raise KeyError("no")

    resident.on_eq = boom
    batch = ["new-1", "b", "new-2", Colliding("late")]
    with pytest.raises(KeyError):
        limiter.acquire_many(batch)
    assert snapshot(limiter, probe) == before


def test_a_batch_whose_key_raises_in_hash_changes_nothing(make, clock):
    class BadHash:
        def __hash__(self):
            raise TypeError("no hash")

    limiter = make(clock, max_keys=2)
    limiter.try_acquire("a")
    limiter.try_acquire("b")
    before = snapshot(limiter, ["a", "b", "c"])
    with pytest.raises(TypeError, match="no hash"):
        limiter.acquire_many(["c", "a", BadHash()])
    assert snapshot(limiter, ["a", "b", "c"]) == before


def test_a_batch_with_a_stale_handle_changes_nothing(make, clock):
    limiter = make(clock, max_keys=2)
    a, b = limiter.handle("a"), limiter.handle("b")
    limiter.try_acquire("c")                      # "a" (idle) leaves: its handle is stale
    before = snapshot(limiter, ["a", "b", "c"])
    with pytest.raises(IndexError):
        limiter.acquire_many(np.array([b, b, a], dtype=np.int64))
    assert snapshot(limiter, ["a", "b", "c"]) == before


# -- batches that evict keys they still have to decide --------------------------------------------

def test_a_batch_evicting_its_own_keys_decides_like_calls_in_order(make, clock):
    """Keys of one batch evicting each other (max_keys 2, every key live) decide as the same
    calls made one by one would, duplicates included."""
    keys = ["a", "b", "c", "a", "d", "b", "a", "a", "e", "c"]
    one_by_one = make(clock, max_keys=2)
    expected = [one_by_one.try_acquire(key) for key in keys]
    batched = make(ManualClock(clock.now()), max_keys=2)
    assert batched.acquire_many(keys).tolist() == expected
    assert batched.evictions == one_by_one.evictions
    assert [key in batched for key in "abcde"] == [key in one_by_one for key in "abcde"]


# -- exact idle-first eviction --------------------------------------------------------------------

def test_junk_keys_cannot_reset_an_exhausted_tenant_while_idle_keys_exist(clock):
    # The idle keys are the most recently used ones, far from the LRU tail, and the live keys
    # (the drained tenant first) are the least recently used: a rule that looks for idle keys
    # near the tail, or now and then, evicts the tenant and so refills its bucket.
    limiter = KeyedTokenBucket("5/minute", max_keys=1000, clock=clock)
    while limiter.try_acquire("tenant"):          # drained: live for 60 s
        pass
    drained = limiter.peek("tenant")
    for i in range(399):
        limiter.try_acquire(f"live-{i}", 5)       # live for 60 s
    for i in range(600):
        limiter.try_acquire(f"recent-{i}")        # idle after 12 s
    clock.advance(20.0)
    assert len(limiter) == 1000
    for i in range(600):
        assert limiter.try_acquire(f"junk-{i}", 5)
        assert "tenant" in limiter
    assert limiter.evictions == 0
    assert not any(f"recent-{i}" in limiter for i in range(600))
    # not refilled: 20 s gave back one token (12 s each), and taking it leaves none
    assert drained.reset_after == 60.0
    peek = limiter.peek("tenant")
    assert (peek.allowed, peek.remaining, peek.reset_after) == (True, 0, 60.0 - 20.0 + 12.0)
    limiter.try_acquire("junk-last", 5)           # now every key is live: the LRU goes
    assert limiter.evictions == 1 and "tenant" not in limiter


KEY_SPACE = 60
OPS = st.lists(st.tuples(st.integers(0, KEY_SPACE - 1),      # key
                         st.sampled_from([0, 1, 2]),         # cost
                         st.integers(0, 700_000_000),        # ns to advance first
                         st.sampled_from(["acquire", "peek", "reset", "handle"])),
               min_size=1, max_size=200)


@settings(max_examples=40)
@given(kind=st.sampled_from(sorted(LIMITERS)),
       max_keys=st.sampled_from([1, 2, 3, 5, 8, 33, 40, 50]),
       on_full=st.sampled_from(["evict", "deny"]), ops=OPS)
def test_eviction_is_exact(kind, max_keys, on_full, ops):
    """Whenever a new key enters a full table: if any key is idle, every idle key leaves and
    no live key does (no eviction counted); otherwise the policy applies to one live key."""
    clock = ManualClock(3.0)
    limiter = LIMITERS[kind](clock, max_keys=max_keys, on_full=on_full)
    present = set()
    for key, cost, step, op in ops:
        clock.advance_ns(step)
        if op == "reset":
            limiter.reset(key)
            continue
        if op == "peek":
            limiter.peek(key, cost)
            continue
        assert present == {k for k in range(KEY_SPACE) if k in limiter}
        idle = {k for k in present if limiter.peek(k, 0).reset_after == 0}
        evictions = limiter.evictions
        new = key not in present
        if op == "handle":
            try:
                limiter.handle(key)
            except Exception:
                assert on_full == "deny" and not idle
        else:
            limiter.acquire(key, cost)
        now_present = {k for k in range(KEY_SPACE) if k in limiter}
        if new and len(present) == max_keys:
            if idle:
                assert now_present == (present - idle) | {key}
                assert limiter.evictions == evictions
            elif on_full == "evict":
                assert limiter.evictions == evictions + 1
                assert len(now_present - {key}) == max_keys - 1
            else:
                assert now_present == present
        else:
            assert now_present == present | {key}
        present = now_present
        assert len(limiter) == len(present) <= max_keys
