"""Stress scenarios, each run in a fresh interpreter by tests/stress_runner.py.

A scenario attacks one structure (re-entrant ``__eq__``/``__del__``, threads switching every
microsecond, exceptions in the middle of a batch), then checks what a correct structure
guarantees afterwards and returns the facts as a dict, which the child prints as JSON for
the parent test to assert on. A crash, an ``AssertionError`` here or a hang fails only the
test that ran the scenario: the parent sees the exit status, the stderr and the JSON.

Every loop is bounded twice: by a fixed number of iterations and by ``deadline()`` (wall
clock, see ``WORK_SECONDS``), so a scenario takes a few seconds at most on a loaded machine
and under a sanitizer. Time inside the structures comes from ``ManualClock``; threads that
move it hold ``clock_lock``.

Run one by hand, against the installed package:
``python tests/stress_scenarios.py threads_evicting '{"kind": "token"}'``.
"""

import dataclasses
import faulthandler
import gc
import json
import random
import sys
import threading
import time

import numpy as np

import fastcore
from fastcore import KeyedTokenBucket, ManualClock, SemanticCache, SlidingWindow
from fastcore import SlidingWindowCounter, TTLCache

# Wall-clock budget of a scenario's loops (seconds); the checks after them come on top.
WORK_SECONDS = 2.0
_started = time.monotonic()          # when the running scenario started
clock_lock = threading.Lock()        # ManualClock.advance from several threads


def deadline():
    """True once the running scenario's loops should stop."""
    return time.monotonic() - _started > WORK_SECONDS


def start_clock():
    global _started
    _started = time.monotonic()


# -- keys -----------------------------------------------------------------------------------

class Key:
    """Equal by name; every Key hashes alike, so a lookup compares it with each stored Key.

    While ``Key.hook`` is set, the next ``__eq__`` takes it and runs it once: Python code
    that changes the structure in the middle of a lookup.
    """

    hook = None
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __hash__(self):
        return 7

    def __eq__(self, other):
        hook, Key.hook = Key.hook, None
        if hook is not None:
            hook()
        return isinstance(other, Key) and self.name == other.name

    def __repr__(self):
        return f"Key({self.name!r})"


class RaisingKey(Key):
    """A Key whose ``__eq__`` raises while ``RaisingKey.armed``."""

    armed = False
    __slots__ = ()
    __hash__ = Key.__hash__

    def __eq__(self, other):
        if RaisingKey.armed:
            raise RuntimeError("__eq__ refused")
        return Key.__eq__(self, other)


class LateHashKey:
    """A key whose ``__hash__`` raises while ``LateHashKey.armed``."""

    armed = False

    def __hash__(self):
        if LateHashKey.armed:
            raise RuntimeError("__hash__ refused")
        return 11


class DelKey:
    """A key whose ``__del__`` runs ``DelKey.hook(n)`` (when set): Python code that runs when
    a structure drops its last reference, e.g. while it evicts."""

    hook = None

    def __init__(self, n):
        self.n = n

    def __hash__(self):
        return hash(("DelKey", self.n))

    def __eq__(self, other):
        return isinstance(other, DelKey) and other.n == self.n

    def __repr__(self):
        return f"DelKey({self.n})"

    def __del__(self):
        hook = DelKey.hook
        if hook is not None:
            hook(self.n)


@dataclasses.dataclass(frozen=True)
class Agent:
    """A realistic composite key: its generated ``__hash__``/``__eq__`` are Python code, so
    the GIL may pass to another thread in the middle of a lookup."""

    tenant: int
    agent: int


def agent(n):
    return Agent(n % 7, n)


class Path:
    """A key compared part by part in a Python loop: every turn of the loop is a point
    where the GIL may pass to another thread in the middle of a lookup."""

    __slots__ = ("parts", "_hash")

    def __init__(self, n):
        self.parts = ("api", "v1", "tenants", n % 7, "agents", n)
        self._hash = hash(self.parts)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if not isinstance(other, Path) or len(other.parts) != len(self.parts):
            return False
        for mine, theirs in zip(self.parts, other.parts):
            if mine != theirs:
                return False
        return True

    def __repr__(self):
        return f"Path({self.parts[-1]})"


# -- keyed limiters -------------------------------------------------------------------------

def make_limiter(kind, max_keys, limit=5, *, on_full="evict", clock=None):
    """``limit`` admissions per key while the clock stands still, for every kind; a key is
    idle again 0.05 s (token), 0.1 s (counter) or 0.05 s (window) after its last admission."""
    clock = clock if clock is not None else ManualClock(start=1000.0)
    if kind == "token":
        return KeyedTokenBucket(limit / 0.05, limit, max_keys=max_keys, on_full=on_full,
                                clock=clock)
    if kind == "counter":
        return SlidingWindowCounter(limit, 0.05, max_keys=max_keys, on_full=on_full,
                                    clock=clock)
    if kind == "window":
        return SlidingWindow(limit, 0.05, slices=5, max_keys=max_keys, on_full=on_full,
                             clock=clock)
    raise ValueError(kind)


def consumed(lim, key, limit=5):
    """Admissions counted against ``key`` (peek's ``remaining`` after a cost of 1 is what
    is left after one more: ``limit - consumed - 1``); 0 for an absent key."""
    return limit - 1 - lim.peek(key).remaining


def census(lim, universe):
    """Keys of ``universe`` that ``lim`` holds; asserts they are all it holds (``len`` counts
    no phantom slot) and that it holds at most ``max_keys``."""
    present = [k for k in universe if k in lim]
    assert len(present) == len(lim) <= lim.max_keys, (len(present), len(lim), lim.max_keys)
    return present


def snapshot(lim, universe):
    """Everything an error must leave as it was: len, which keys, evictions, and what peek()
    answers for every key of ``universe`` (peek changes nothing)."""
    present = census(lim, universe)
    return {
        "len": len(lim),
        "present": [repr(k) for k in present],
        "evictions": lim.evictions,
        "peek": [repr(lim.peek(k)) for k in universe],
    }


def workout(lim, tag):
    """Use the table hard after an attack: it must still bound, count and forget keys."""
    fresh = [(tag, i) for i in range(3 * lim.max_keys + 5)]
    for key in fresh:
        assert lim.try_acquire(key), key            # a new key has its whole limit
    census(lim, fresh)
    assert len(lim) <= lim.max_keys
    last = fresh[-min(len(fresh), lim.max_keys):]
    handles = np.array([lim.handle(k) for k in last], dtype=np.int64)
    assert len(lim.acquire_many(handles)) == len(last)
    lim.acquire_many(last + fresh[:3])
    lim.reset()
    assert len(lim) == 0 and not any(k in lim for k in last)
    assert lim.try_acquire((tag, "after reset")) and len(lim) == 1


def finish(lim, universe, tag="workout"):
    """The common ending: census, workout, then free the table (a corrupted heap shows)."""
    held = len(census(lim, universe))
    workout(lim, tag)
    return held


def reentrant_eq(kind, op, action):
    """A lookup whose key's ``__eq__`` changes the table (``reset()`` forgets every key,
    ``fill`` inserts enough keys to evict): the call must complete and leave a consistent
    table; the key is then either present or absent."""
    lim = make_limiter(kind, max_keys=32)
    others = [("other", i) for i in range(40)]
    lim.try_acquire(Key("a"))
    lim.try_acquire("b")
    if action == "reset":
        Key.hook = lim.reset
    else:
        def fill():
            for key in others:
                lim.try_acquire(key)
        Key.hook = fill
    probe = Key("a")                 # equal to the stored Key("a"), not the same object
    if op == "try_acquire":
        assert lim.try_acquire(probe) is True
    elif op == "acquire":
        assert lim.acquire(probe).allowed
    elif op == "handle":
        handle = lim.handle(probe)
        assert Key("a") in lim, "handle() returned while its key is absent"
        assert lim.acquire_many(np.array([handle], dtype=np.int64)).tolist() == [True]
    elif op == "acquire_many":
        assert lim.acquire_many([probe, "c"]).tolist() == [True, True]
        assert "c" in lim
    elif op == "peek":
        assert lim.peek(probe).allowed
    elif op == "contains":
        assert isinstance(probe in lim, bool)
    elif op == "reset_key":
        lim.reset(probe)
    else:
        raise ValueError(op)
    assert Key.hook is None, "__eq__ was never called: the scenario tests nothing"
    universe = [Key("a"), "b", "c"] + others
    present = census(lim, universe)
    if action == "reset":
        # after reset() only what this call inserted may remain
        assert {repr(k) for k in present} <= {"Key('a')", "'c'"}, present
    # no other key's state was touched by this call: each counts what fill() took, 1
    touched = {repr(k): consumed(lim, k) for k in present if k not in (Key("a"), "c")}
    assert all(n == 1 for n in touched.values()), {
        k: n for k, n in touched.items() if n != 1}
    if Key("a") in lim:
        # 1 if the call counted on a fresh key, 2 on the one stored before; 1 too after
        # reset_key or a read that the call made before the change
        assert 0 <= consumed(lim, Key("a")) <= 2, consumed(lim, Key("a"))
    return {"held": finish(lim, universe)}


def threads_evicting(kind, threads=4, max_keys=32, keys=100, iterations=50_000):
    """Threads switching every microsecond inside the keys' Python ``__eq__``/``__hash__``
    while the table evicts and drops idle keys (the clock moves): no crash, no exception,
    and afterwards a consistent table."""
    clock = ManualClock(start=1000.0)
    lim = make_limiter(kind, max_keys, clock=clock)
    errors = []
    counts = [0] * threads

    def worker(seed):
        rng = random.Random(seed)
        try:
            for i in range(iterations):
                if deadline():
                    break
                key = agent(rng.randrange(keys))
                op = rng.random()
                if op < 0.6:
                    lim.try_acquire(key)
                elif op < 0.7:
                    lim.acquire(key)
                elif op < 0.8:
                    lim.peek(key)
                elif op < 0.85:
                    key in lim
                elif op < 0.9:
                    try:
                        lim.acquire_many(np.array([lim.handle(key)], dtype=np.int64))
                    except IndexError:
                        pass                  # the key left between handle() and the batch
                elif op < 0.95:
                    lim.acquire_many([key, agent(rng.randrange(keys))])
                elif op < 0.99:
                    with clock_lock:
                        clock.advance(1.0)     # every key idle again: the next sweep drops them
                else:
                    lim.reset(key)
                counts[seed] += 1
        except BaseException as error:
            errors.append(repr(error))

    run_threads(worker, threads)
    assert errors == [], errors
    return {"ops": counts, "evictions": lim.evictions,
            "held": finish(lim, [agent(n) for n in range(keys)])}


def run_threads(worker, threads):
    """Run ``worker(seed)`` in ``threads`` threads started together, the GIL switching
    every microsecond (as often as CPython asks for it)."""
    start = threading.Barrier(threads)

    def started(seed):
        start.wait()
        worker(seed)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    pool = [threading.Thread(target=started, args=(seed,)) for seed in range(threads)]
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(old)


def hot_key_linearizable(kind, limit=1000, threads=4, max_keys=256, iterations=20_000):
    """One hot key, a clock that never moves and threads deciding it every way (single
    calls, batches of keys, batches of handles) between new cold keys that make the table
    evict: exactly ``limit`` admissions of the hot key in total, as if the calls had run
    one after another. The hot key is never evicted: each thread touches it between any two
    of its cold inserts, so it never gets near the LRU tail, and it is never idle."""
    lim = make_limiter(kind, max_keys, limit)
    hot = agent(-1)
    admitted = [0] * threads
    errors = []
    seq = iter(range(10**9))

    def worker(seed):
        handles = np.array([lim.handle(agent(-1))] * 4, dtype=np.int64)

        def by_handles():
            nonlocal handles
            try:
                return int(lim.acquire_many(handles).sum())
            except IndexError:
                # only before its first admission: a fresh hot key is idle, so it may be
                # dropped for room; once admitted, it stays
                handles = np.array([lim.handle(agent(-1))] * 4, dtype=np.int64)
                return 0

        try:
            for i in range(iterations):
                if i >= 400 and deadline():       # 400: well over `limit` attempts
                    break
                op = i % 5
                if op == 0:
                    admitted[seed] += lim.try_acquire(agent(-1))
                elif op == 1:
                    admitted[seed] += lim.acquire(agent(-1)).allowed
                elif op == 2:
                    batch = [agent(-1)] + [agent(10**6 + next(seq)) for _ in range(4)]
                    admitted[seed] += int(lim.acquire_many(batch)[0])
                elif op == 3:
                    admitted[seed] += by_handles()
                else:
                    lim.peek(agent(-1))
                    lim.try_acquire(agent(10**6 + next(seq)))     # cold: evicts when full
        except BaseException as error:
            errors.append(repr(error))

    run_threads(worker, threads)
    assert errors == [], errors
    assert sum(admitted) == limit, (sum(admitted), limit, admitted)
    assert hot in lim and not lim.peek(hot).allowed
    cold = [agent(10**6 + n) for n in range(next(seq))]
    return {"admitted": admitted, "evictions": lim.evictions,
            "held": finish(lim, [hot] + cold)}


def batches_while_inserting(kind, max_keys=128, batch=65536, inserters=4,
                            iterations=1_000_000, pool=4096):
    """One thread loops ``acquire_many`` over live keys (an array of handles, now and then
    a list of keys) while others add new keys to the full table with ``handle()`` (a fresh
    key, so idle): room is made by dropping idle keys, one found near the LRU tail or all
    of them in a sweep, and both wait for the batch in flight. Every thread finishes and
    the table stays consistent. Each inserter cycles through ``pool`` keys of its own, so
    nearly every insert is of a key the full table does not hold."""
    lim = make_limiter(kind, max_keys, limit=10**6)     # no key runs out in a batch
    warm = [("warm", i) for i in range(max_keys // 2)]
    for key in warm:
        lim.try_acquire(key)
    errors = []
    done = {"batches": 0, "stale": 0}
    inserted = [0] * (1 + inserters)
    stop = threading.Event()

    def handles_for():
        return np.array([lim.handle(k) for k in warm] * (batch // len(warm)), dtype=np.int64)

    def batcher():
        handles = handles_for()
        for i in range(iterations):
            if deadline() or stop.is_set():
                break
            try:
                lim.acquire_many(handles)
            except IndexError:            # a live key was evicted
                done["stale"] += 1
                handles = handles_for()
            if i % 16 == 15:
                lim.acquire_many(warm)
            done["batches"] += 1

    def inserter(seed):
        for i in range(iterations):
            if deadline():
                break
            lim.handle(("new", seed, i % pool))
            inserted[seed] += 1

    def worker(seed):
        try:
            if seed == 0:
                batcher()
            else:
                inserter(seed)
                stop.set()
        except BaseException as error:
            errors.append(repr(error))

    run_threads(worker, 1 + inserters)
    assert errors == [], errors
    universe = warm + [("new", seed, i) for seed in range(1, inserters + 1)
                       for i in range(min(inserted[seed], pool))]
    return dict(done, inserted=inserted, evictions=lim.evictions,
                held=finish(lim, universe))


def del_reenters(kind, action, trigger):
    """A key's ``__del__``, run when the table drops its last reference to it, re-enters the
    table (``insert``: a new key; ``reset``: forget every key). ``trigger``: what drops the
    key: ``evict`` (a new key into a table full of live keys), ``idle`` (a new key into a
    full table whose keys went idle) or ``reset`` (``reset()`` itself)."""
    clock = ManualClock(start=1000.0)
    max_keys = 8
    lim = make_limiter(kind, max_keys, clock=clock)
    inserted = []

    def hook(n):
        if action == "insert":
            key = ("from __del__", n)
            inserted.append(key)
            lim.try_acquire(key)
        else:
            lim.reset()

    for n in range(max_keys):
        lim.try_acquire(DelKey(n))          # the table holds the only reference
    DelKey.hook = hook
    try:
        if trigger == "reset":
            lim.reset()
            assert len(lim) <= max_keys, len(lim)
        else:
            if trigger == "idle":
                clock.advance(1.0)
            for n in range(max_keys, 3 * max_keys):
                lim.try_acquire(DelKey(n))
                assert len(lim) <= max_keys, (n, len(lim))
            lim.acquire_many([DelKey(n) for n in range(3 * max_keys, 4 * max_keys)])
            assert len(lim) <= max_keys, len(lim)
    finally:
        DelKey.hook = None               # the checks below make and drop DelKeys too
    universe = [DelKey(n) for n in range(4 * max_keys)] + inserted
    held = len(census(lim, universe))
    lim.try_acquire("one more")
    lim.acquire_many(["two more", "three more"])
    universe += ["one more", "two more", "three more"]
    return {"held": held, "inserted": len(inserted), "after": finish(lim, universe)}


def eviction_beside_batches(kind, max_keys=1024, batch=100_000, bound=1.5):
    """Two threads loop ``acquire_many`` over a full table of live keys while one
    ``try_acquire`` of a new key must evict: that call may wait for the batches in flight,
    but not for ever more of them. It must return within ``bound`` seconds, hundreds of
    batches (one takes about a millisecond): a bound on a hang, not a speed figure. The
    batch loops stop by themselves after ``2.5 * bound`` seconds."""
    lim = make_limiter(kind, max_keys, limit=10**6)     # no key runs out in a batch
    warm = [("warm", i) for i in range(max_keys)]
    for key in warm:
        lim.try_acquire(key)
    handles = np.array([lim.handle(k) for k in warm] * (batch // max_keys), dtype=np.int64)
    t0 = time.perf_counter()
    lim.acquire_many(handles)
    one_batch = time.perf_counter() - t0
    looping = [threading.Event(), threading.Event()]
    finished = threading.Event()
    batches = [0, 0]
    errors = []

    def batcher(seed):
        try:
            stop_at = time.monotonic() + 2.5 * bound
            while not finished.is_set() and time.monotonic() < stop_at:
                try:
                    lim.acquire_many(handles)
                except IndexError:
                    return                    # the new key evicted one of them
                batches[seed] += 1
                if batches[seed] == 3:
                    looping[seed].set()
        except BaseException as error:
            errors.append(repr(error))
        finally:
            looping[seed].set()

    pool = [threading.Thread(target=batcher, args=(seed,)) for seed in range(2)]
    for thread in pool:
        thread.start()
    for event in looping:
        event.wait()
    started = time.monotonic()
    lim.try_acquire("new key")
    waited = time.monotonic() - started
    finished.set()
    for thread in pool:
        thread.join()
    assert errors == [], errors
    assert min(batches) >= 3, ("the batch loops ended before the call", batches)
    assert waited < bound, f"waited {waited:.2f} s for room (one batch: {one_batch:.4f} s)"
    return {"waited": waited, "one_batch": one_batch, "batches": batches,
            "held": finish(lim, warm + ["new key"])}


def raising_batch(kind, case):
    """``acquire_many`` that raises must change nothing: len, the keys, evictions and what
    peek() says of every key are exactly as before. Cases: ``eq`` (the 3rd key's __eq__
    raises, the table has room), ``eq_full`` (the same, the table full of live keys),
    ``hash`` (the last key fails to hash), ``unhashable`` (the last key), ``cost`` (a
    negative cost last), ``too_costly`` (a cost above the limit in the middle), ``lengths``
    (fewer costs than keys), ``stale`` (a stale handle in the middle of live ones)."""
    max_keys = 8
    lim = make_limiter(kind, max_keys)
    gone = lim.handle("gone")             # inserted idle: the first key dropped for room
    stored = [Key("a"), RaisingKey("r")]
    filler = [f"k{i}" for i in range(max_keys - len(stored) - 1)]
    for key in stored + filler[:3]:
        lim.try_acquire(key)
    if case in ("eq_full", "stale"):
        for key in filler[3:]:
            lim.try_acquire(key)          # full: 8 live keys with "gone"
    if case == "stale":
        lim.try_acquire("evictor")        # drops the idle "gone": its handle is stale
        assert "gone" not in lim
    universe = ["gone"] + stored + filler + ["new1", "new2", "evictor", LateHashKey()]
    live_handles = [lim.handle(k) for k in filler[:3]]     # no change: the keys are there
    before = snapshot(lim, universe)
    error = None
    try:
        if case in ("eq", "eq_full"):
            RaisingKey.armed = True
            lim.acquire_many([filler[0], "new1", RaisingKey("q"), "new2"])
        elif case == "hash":
            LateHashKey.armed = True
            lim.acquire_many(["new1", filler[0], "new2"] + filler[1:3] + [LateHashKey()])
        elif case == "unhashable":
            lim.acquire_many(["new1", filler[0], "new2", filler[1], ["unhashable"]])
        elif case == "cost":
            lim.acquire_many(["new1", filler[0], "new2"], [1, 1, -1])
        elif case == "too_costly":
            lim.acquire_many(["new1", filler[0], "new2"], [1, 10**7, 1])
        elif case == "lengths":
            lim.acquire_many(["new1", filler[0], "new2"], [1, 1])
        elif case == "stale":
            lim.acquire_many(np.array(live_handles[:2] + [gone] + live_handles[2:],
                                      dtype=np.int64))
        else:
            raise ValueError(case)
    except Exception as raised:
        error = type(raised).__name__
    finally:
        RaisingKey.armed = False
        LateHashKey.armed = False
    assert error is not None, "the batch did not raise: the scenario tests nothing"
    after = snapshot(lim, universe)
    assert after == before, {field: {"before": before[field], "after": after[field]}
                             for field in before if before[field] != after[field]}
    return {"error": error, "held": finish(lim, universe)}


# -- TTLCache and SemanticCache -------------------------------------------------------------

def weight(value):
    """getsizeof of the sized caches: 1 to 3 (1 for a negative entry's None)."""
    return 1 if value is None else 1 + value % 3


def ttl_invariants(cache, sized):
    """TTLCache's own check, and len, iteration and currsize agreeing. As in cachetools,
    len() and currsize count expired items until a write or expire() drops them, while
    iteration skips them: expire() first."""
    cache.expire()
    cache._check_invariants()
    items = list(cache.items())
    keys = [k for k, _ in items]
    assert len(cache) == len(items) == len(set(keys)), {
        "len": len(cache), "items": len(items), "distinct keys": len(set(keys)),
        "repeated": sorted({repr(k) for k in keys if keys.count(k) > 1})}
    expected = sum(weight(v) for _, v in items) if sized else len(items)
    assert cache.currsize == expected <= cache.maxsize, (cache.currsize, expected)
    return len(items)


def semantic_invariants(cache, sized):
    """SemanticCache: keys() without duplicates, agreeing with len and stats; currsize the
    total weight of what it holds (read after expire(), with an intent that sees stale
    entries, so the reads drop nothing)."""
    cache.expire()
    keys = cache.keys()
    assert len(keys) == len(set(keys)) == len(cache) == cache.stats()["len"], (
        len(keys), len(set(keys)), len(cache))
    anything = fastcore.Intent("anything", max_staleness=10**6)
    values = [cache.lookup(k, intent=anything).value for k in keys]
    expected = sum(weight(v) for v in values) if sized else len(keys)
    assert cache.currsize == expected <= cache.maxsize, (cache.currsize, expected)
    return len(keys)


def make_cache(which, maxsize=16, *, sized=False, clock=None, ttl=60.0):
    clock = clock if clock is not None else ManualClock(start=1000.0)
    getsizeof = weight if sized else None
    if which == "ttl":
        return TTLCache(maxsize, ttl, clock=clock, getsizeof=getsizeof)
    return SemanticCache(maxsize, clock=clock, getsizeof=getsizeof,
                         default=fastcore.Freshness(ttl))


def cache_ops(which, cache):
    """The cache's operations by name, each taking a key."""
    if which == "ttl":
        return {
            "get": cache.get,
            "getitem": lambda k: cache[k],
            "setitem": lambda k: cache.__setitem__(k, 5),
            "delitem": lambda k: cache.__delitem__(k),
            "pop": lambda k: cache.pop(k, None),
            "setdefault": lambda k: cache.setdefault(k, 5),
            "contains": lambda k: k in cache,
        }
    return {
        "lookup": cache.lookup,
        "set": lambda k: cache.set(k, 5),
        "set_negative": cache.set_negative,
        "delete": cache.delete,
        "contains": lambda k: k in cache,
    }


def cache_reentrant_eq(which, op, action):
    """A key's ``__eq__`` changes the cache in the middle of a lookup (``clear``, ``fill``:
    enough inserts to evict and grow, ``write``: one insert): the call completes (or
    raises), never crashes or hangs, and the cache stays consistent."""
    cache = make_cache(which, maxsize=16)
    ops = cache_ops(which, cache)
    put = cache.__setitem__ if which == "ttl" else cache.set
    put(Key("a"), 1)
    put("b", 2)
    hooks = {
        "clear": cache.clear,
        "fill": lambda: [put(("fill", i), i) for i in range(40)],
        "write": lambda: put("written", 3),
    }
    Key.hook = hooks[action]
    outcome = "returned"
    try:
        ops[op](Key("a"))
    except KeyError:
        outcome = "KeyError"            # e.g. cache[key] after clear(): absent is a fine answer
    except RuntimeError as error:       # a structure may refuse re-entrant writes
        outcome = f"RuntimeError: {error}"
    assert Key.hook is None, "__eq__ was never called: the scenario tests nothing"
    check = ttl_invariants if which == "ttl" else semantic_invariants
    held = check(cache, False)
    for i in range(50):
        put(("after", i), i)
    check(cache, False)
    cache.clear()
    assert len(cache) == 0
    return {"outcome": outcome, "held": held}


def cache_del_reenters(which, part, action, trigger):
    """A key's or a value's ``__del__`` (``part``) re-enters the cache (``insert`` or
    ``clear``) when the cache drops its last reference: by eviction, expiry, overwrite (a
    value), deletion or clear()."""
    clock = ManualClock(start=1000.0)
    cache = make_cache(which, maxsize=8, clock=clock, ttl=10.0)
    put = cache.__setitem__ if which == "ttl" else cache.set
    inserted = []

    def hook(n):
        if action == "insert":
            inserted.append(n)
            put(("from __del__", n), n)
        else:
            cache.clear()

    def item(n):
        return (DelKey(n), n) if part == "key" else (("plain", n), DelValue(n))

    for n in range(8):
        put(*item(n))
    DelKey.hook = DelValue.hook = hook
    try:
        if trigger == "evict":
            for n in range(8, 24):
                put(*item(n))
        elif trigger == "expire":
            clock.advance(60.0)
            cache.expire()
            put(*item(100))
        elif trigger == "overwrite":
            for n in range(8):
                put(("plain", n), n)
        elif trigger == "delete":
            for n in range(8):
                key = DelKey(n) if part == "key" else ("plain", n)
                if which == "ttl":
                    cache.pop(key, None)
                else:
                    cache.delete(key)
        else:
            cache.clear()
    finally:
        DelKey.hook = DelValue.hook = None
    check = ttl_invariants if which == "ttl" else semantic_invariants
    held = check(cache, False)
    for i in range(30):
        put(("after", i), i)
    check(cache, False)
    return {"held": held, "inserted": len(inserted)}


class DelValue:
    """A value whose ``__del__`` runs ``DelValue.hook(n)`` (when set)."""

    hook = None

    def __init__(self, n):
        self.n = n

    def __del__(self):
        hook = DelValue.hook
        if hook is not None:
            hook(self.n)


def cache_threads(which, sized, clear, threads=4, keys=200, iterations=200_000,
                  keys_of="path"):
    """Threads switching every microsecond inside the keys' Python ``__eq__``, mixing every
    operation while the clock moves, a fraction ``clear`` (0 to 0.05) of them ``clear()``:
    no crash, no exception, and afterwards len, iteration and currsize agree."""
    clock = ManualClock(start=1000.0)
    cache = make_cache(which, maxsize=40, sized=sized, clock=clock, ttl=0.05)
    errors = []
    counts = [0] * threads

    def worker(seed):
        rng = random.Random(seed)
        try:
            for i in range(iterations):
                if deadline():
                    break
                n = rng.randrange(keys)
                key = Path(n) if keys_of == "path" else agent(n)
                op = rng.random()
                try:
                    if which == "ttl":
                        ttl_step(cache, key, op, rng, clock, clear)
                    else:
                        semantic_step(cache, key, op, rng, clock, clear)
                except KeyError:
                    pass
                counts[seed] += 1
        except BaseException as error:
            errors.append(repr(error))

    run_threads(worker, threads)
    assert errors == [], errors
    if which == "semantic":
        return {"ops": counts, "held": semantic_invariants(cache, sized)}
    # An item linked after one that expires later can outlive expire() (ttl_hash_moves_clock
    # shows how): len() and currsize count it, iteration skips it. So here iteration may
    # come short of len(); once every item has expired, all must agree on nothing.
    cache.expire()
    cache._check_invariants()
    items = list(cache.items())
    keys = [k for k, _ in items]
    assert len(keys) == len(set(keys)) <= len(cache), (len(keys), len(set(keys)), len(cache))
    outlived = len(cache) - len(items)
    clock.advance(60.0)
    cache.expire()
    assert len(cache) == len(list(cache)) == cache.currsize == 0, (
        len(cache), len(list(cache)), cache.currsize)
    cache._check_invariants()
    return {"ops": counts, "held": len(items), "outlived expire()": outlived}


def ttl_step(cache, key, op, rng, clock, clear):
    if op < 0.3:
        cache[key] = rng.randrange(10)
    elif op < 0.5:
        cache.get(key)
    elif op < 0.6:
        cache[key]
    elif op < 0.65:
        cache.pop(key, None)
    elif op < 0.7:
        cache.setdefault(key, rng.randrange(10))
    elif op < 0.75:
        del cache[key]
    elif op < 0.8:
        cache.popitem()
    elif op < 0.85:
        cache.expire()
    elif op < 0.9:
        len(cache), cache.currsize, key in cache, list(cache.items())
    elif op < 0.95:
        with clock_lock:
            clock.advance(0.01)
    elif op >= 1.0 - clear:           # clear: at most 0.05
        cache.clear()


def semantic_step(cache, key, op, rng, clock, clear):
    if op < 0.35:
        cache.set(key, rng.randrange(10))
    elif op < 0.65:
        cache.lookup(key)
    elif op < 0.7:
        cache.set_negative(key)
    elif op < 0.75:
        cache.delete(key)
    elif op < 0.8:
        cache.expire()
    elif op < 0.9:
        len(cache), cache.currsize, key in cache, cache.keys(), cache.stats()
    elif op < 0.95:
        with clock_lock:
            clock.advance(0.01)
    elif op >= 1.0 - clear:           # clear: at most 0.05
        cache.clear()


def ttl_hash_moves_clock():
    """A key whose ``__hash__`` moves the clock and stores another item while its own
    ``cache[key] = value`` runs. cachetools reads its timer once per call, nested calls
    included, so both items get one expiry; here the item inserted meanwhile expires later
    than the outer one, which is linked after it. Once the outer item has expired,
    expire() must drop it: len(), currsize and iteration agree."""
    clock = ManualClock(start=1000.0)
    cache = TTLCache(8, 1.0, clock=clock)

    class MovesClock:
        armed = True

        def __hash__(self):
            if MovesClock.armed:
                MovesClock.armed = False
                clock.advance(0.5)
                cache["inner"] = 2
            return 1

    cache[MovesClock()] = 1
    clock.advance(0.75)        # the outer item (stored at 1000.0) has expired
    cache.expire()
    return {"held": ttl_invariants(cache, False)}


def several(runs):
    """Run several scenarios, given as [name, params] pairs, one after another in this
    child (cheaper than a child each, for scenarios that pass); a failure names its run."""
    results = []
    for name, params in runs:
        start_clock()
        try:
            results.append(globals()[name](**params))
        except Exception as error:
            raise AssertionError(f"{name}({params}): {type(error).__name__}: {error}") from error
    return results


# -- the child's entry point ---------------------------------------------------------------

def main(name, params, hang_seconds):
    """Run scenario ``name`` with ``params``; print its result as one JSON line. A child
    still running after ``hang_seconds`` prints every thread's stack and exits with 1."""
    faulthandler.enable()
    faulthandler.dump_traceback_later(hang_seconds, exit=True)
    start_clock()
    result = globals()[name](**params)
    gc.collect()                         # frees what the scenario left: a corrupted heap shows
    print("STRESS-RESULT " + json.dumps(result), flush=True)
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}, 60.0)
