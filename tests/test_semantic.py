"""SemanticCache: hand-computed timelines under ManualClock, single flight with threads and
asyncio tasks, memoize, eviction, memory bound and bad input.

Nothing here sleeps: threads meet at Barriers and Events, time moves only by ManualClock.
"""

import asyncio
import math
import os
import random
import threading

import pytest

import fastcore
from fastcore import (
    CacheState,
    Freshness,
    Intent,
    InvalidFreshness,
    Loaded,
    ManualClock,
    SemanticCache,
    UnknownIntent,
    ValueTooLarge,
)
from fastcore._core import semantic as core

FRESH, STALE, MISS = CacheState.FRESH, CacheState.STALE, CacheState.MISS


class ManualExecutor:
    """Background refreshes wait here until the test runs them."""

    def __init__(self):
        self.jobs = []

    def submit(self, fn, *args):
        self.jobs.append((fn, args))

    def run_all(self):
        jobs, self.jobs = self.jobs, []
        for fn, args in jobs:
            fn(*args)


def make(clock, **kwargs):
    kwargs.setdefault("default", Freshness(60, 30, 300))
    kwargs.setdefault("intents", [Intent("context", max_staleness=600),
                                  Intent("verify", serve_stale_while_revalidate=False,
                                         serve_stale_on_error=False)])
    return SemanticCache(100, clock=clock, **kwargs)


def snapshot(cache):
    return cache.keys(), cache.currsize, len(cache), cache.stats()


def wait_until(predicate):
    """Spin (yielding the CPU, never sleeping) until another thread makes it true."""
    for _ in range(10_000_000):
        if predicate():
            return
        os.sched_yield()
    raise AssertionError("condition never became true")


# -- the compiled surface ------------------------------------------------------------------

def test_hot_path_is_compiled_and_inherited():
    assert core.__file__.endswith(".so")
    assert SemanticCache.__slots__ == ()
    assert SemanticCache.lookup is core.SemanticCacheCore.lookup
    assert SemanticCache.set is core.SemanticCacheCore.set
    assert not hasattr(SemanticCache(1), "__dict__")
    for cls in (Freshness, Intent, fastcore.Lookup, Loaded):
        assert cls.__module__ == "fastcore._core.semantic"
    assert issubclass(CacheState, str) and CacheState.STALE == "STALE"


# -- the state rules, hand computed ----------------------------------------------------------

def test_worked_example_timeline(clock):
    # The example of semantic.pxd: max_age 60, swr 30, sie 300, stored at t=1000.
    cache = make(clock)
    cache.set("k", "v")
    assert cache.lookup("k").state is FRESH
    clock.set(1059)
    r = cache.lookup("k", "context")
    assert (r.state, r.value, r.age, r.negative) == (FRESH, "v", 59.0, False)
    clock.set(1060)                       # a == max_age: stale
    assert cache.lookup("k").state is STALE
    clock.set(1070)
    assert [cache.lookup("k", i).state for i in (None, "context", "verify")] == [
        STALE, STALE, MISS]
    clock.set(1089.999)
    assert cache.lookup("k").state is STALE
    clock.set(1090)                       # 60 + 30: the default intent's window closes
    assert cache.lookup("k").state is MISS
    assert cache.lookup("k", "context").state is STALE
    clock.set(1100)
    assert cache._fallback("k", None).value == "v"     # 1100 < 1060 + 300
    assert cache._fallback("k", "verify") is None       # does not serve stale on error
    clock.set(1659.5)
    assert cache.lookup("k", "context").age == 659.5
    clock.set(1660)                       # keep_until = 1060 + max(600, 30, 300): dead
    assert cache.lookup("k", "context").state is MISS
    assert len(cache) == 0


def test_state_rules_per_intent(clock):
    cache = make(clock, default=Freshness(10, 5, 20))
    ad_hoc = Intent("lenient", max_staleness=10_000)
    cache.set("k", 1)
    clock.advance(12)                     # a=12: swr window (10..15)
    assert cache.lookup("k", "verify").state is MISS
    assert cache.lookup("k", Intent("x", 0, serve_stale_while_revalidate=False)).state is MISS
    assert cache.lookup("k", Intent("x", 3, serve_stale_while_revalidate=False)).state is STALE
    clock.advance(8)                      # a=20: past swr, inside context's 600
    assert cache.lookup("k").state is MISS
    assert cache.lookup("k", "context").state is STALE
    clock.advance(600)                    # a=620 >= 10 + 600: dead for every intent
    assert cache.lookup("k", ad_hoc).state is MISS   # an ad-hoc intent cannot revive it
    assert "k" not in cache


def test_must_revalidate_and_no_cache(clock):
    cache = make(clock)
    cache.set("m", 1, Freshness(10, 30, 300, must_revalidate=True))
    cache.set("n", 2, Freshness.from_cache_control("no-cache"))
    assert "n" not in cache               # stale at once and never usable: not kept
    assert cache.lookup("m").state is FRESH
    clock.advance(10)
    assert cache.lookup("m", "context").state is MISS
    assert cache._fallback("m", None) is None
    assert len(cache) == 0


def test_age_header_adds_to_lookup_age(clock):
    cache = make(clock)
    cache.set("k", 1, Freshness.from_cache_control("max-age=60", age=10))
    clock.advance(49)
    assert (cache.lookup("k").state, cache.lookup("k").age) == (FRESH, 59.0)
    clock.advance(1)                      # no stale window in the header
    assert cache.lookup("k").state is MISS
    assert cache.lookup("k", "context").age == 60.0


def test_negative_entries(clock):
    cache = make(clock, negative_ttl=5)
    cache.set_negative("gone")
    r = cache.lookup("gone")
    assert (r.state, r.value, r.negative) == (FRESH, None, True)
    clock.advance(5)                      # negative_ttl 5, context keeps it 600 more
    assert cache.lookup("gone").state is MISS
    assert cache.lookup("gone", "context").state is STALE
    cache.set_negative("404", Freshness.from_response(404, {"Cache-Control": "max-age=30"}))
    cache.set("410", "body", Freshness.from_response(410, {"Cache-Control": "max-age=30"}))
    assert cache.lookup("404").negative and cache.lookup("410").negative
    assert cache.lookup("410").value == "body"
    assert cache.stats()["hits"] == 4


# -- loaders: stale-while-revalidate, stale-if-error, XFetch ----------------------------------

def test_stale_while_revalidate_timeline(clock):
    executor = ManualExecutor()
    cache = make(clock, executor=executor)
    calls = []

    def loader(key):
        calls.append(clock.now())
        return f"v{len(calls)}"

    assert cache.get_or_load("k", loader) == "v1"          # t=1000 miss: loads inline
    clock.set(1059)
    assert cache.get_or_load("k", loader) == "v1"          # fresh
    clock.set(1070)                                          # stale, inside swr
    assert cache.get_or_load("k", loader) == "v1"
    assert cache.get_or_load("k", loader) == "v1"
    assert len(executor.jobs) == 1 and calls == [1000.0]    # one refresh per key
    executor.run_all()
    assert calls == [1000.0, 1070.0]
    assert cache.lookup("k").value == "v2" and cache.lookup("k").age == 0.0
    clock.set(1129)
    assert cache.get_or_load("k", loader) == "v2" and executor.jobs == []
    s = cache.stats()
    assert (s["loads"], s["stale_hits"]) == (2, 2)


def test_strict_intent_joins_the_background_refresh():
    clock = ManualClock(0)
    executor = ManualExecutor()
    cache = make(clock, executor=executor)
    cache.set("k", "old")
    clock.advance(70)
    assert cache.get_or_load("k", lambda k: "new") == "old"    # refresh queued
    result = []
    waiter = threading.Thread(
        target=lambda: result.append(cache.get_or_load("k", lambda k: "other",
                                                       intent="verify")))
    waiter.start()
    wait_until(lambda: cache.stats()["coalesced_waits"] == 1)
    executor.run_all()
    waiter.join()
    assert result == ["new"]
    assert cache.stats()["loads"] == 1


def test_stale_if_error_timeline(clock):
    cache = make(clock, executor=ManualExecutor())
    cache.set("k", "old")

    def failing(key):
        raise ConnectionError("upstream down")

    clock.set(1100)                       # default: MISS (past 60 + 30), inside sie 300
    assert cache.get_or_load("k", failing) == "old"
    with pytest.raises(ConnectionError):
        cache.get_or_load("k", failing, intent="verify")
    clock.set(1359.999)
    assert cache.get_or_load("k", failing) == "old"
    clock.set(1360)                       # 60 + 300: the error propagates
    with pytest.raises(ConnectionError, match="upstream down"):
        cache.get_or_load("k", failing)
    assert cache.lookup("k", "context").value == "old"     # the entry itself is untouched
    s = cache.stats()
    assert (s["loads"], s["load_errors"]) == (4, 4)


def test_loaded_sets_freshness_negative_and_no_store(clock):
    cache = make(clock)
    assert cache.get_or_load("a", lambda k: Loaded("A", Freshness(5))) == "A"
    clock.advance(5)                      # no swr: MISS by default, STALE for context
    assert cache.lookup("a").state is MISS and cache.lookup("a", "context").state is STALE
    assert cache.get_or_load("b", lambda k: Loaded("nf", Freshness(3, negative=True))) == "nf"
    assert cache.lookup("b").negative
    cache.set("c", "old")
    assert cache.get_or_load("c", lambda k: "x", intent="verify") == "old"
    clock.advance(61)
    no_store = Freshness.from_cache_control("no-store")
    assert cache.get_or_load("c", lambda k: Loaded("new", no_store), intent="verify") == "new"
    assert "c" not in cache
    with pytest.raises(TypeError):
        Loaded(1, 60)


def test_xfetch_early_refresh_is_seedable(clock):
    draws = []
    executor = ManualExecutor()
    cache = make(clock, executor=executor, random=lambda: draws.pop(0))

    def slow_loader(key):
        clock.advance(2)                  # the load takes 2 s: delta = 2 s
        return "v"

    cache.get_or_load("k", slow_loader)   # stored at t=1002, fresh until 1062
    clock.set(1057)                       # 5 s left: refresh iff 2 * -ln(1 - u) >= 5
    draws[:] = [0.90]                     # -ln(0.10) = 2.30 -> 4.6 s < 5: no refresh
    cache.get_or_load("k", slow_loader)
    assert executor.jobs == []
    draws[:] = [0.95]                     # -ln(0.05) = 3.00 -> 6.0 s >= 5: refresh
    cache.get_or_load("k", slow_loader)
    assert len(executor.jobs) == 1 and draws == []
    plain = make(clock, executor=executor, random=random.Random(7).random)
    plain.set("p", 1)                     # set() records no load time: never early
    for _ in range(100):
        plain.get_or_load("p", slow_loader)
    assert len(executor.jobs) == 1


def test_xfetch_disabled_by_beta_zero(clock):
    executor = ManualExecutor()
    cache = make(clock, executor=executor, xfetch_beta=0, random=lambda: 0.999999)
    cache.get_or_load("k", lambda k: clock.advance(30) or "v")
    clock.advance(59)
    cache.get_or_load("k", lambda k: "w")
    assert executor.jobs == []


# -- single flight ----------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [2, 16, 64])
def test_single_flight_threads(threads):
    cache = SemanticCache(100, clock=ManualClock())
    start = threading.Barrier(threads)
    calls = []
    results = []

    def loader(key):
        calls.append(key)
        wait_until(lambda: cache.stats()["coalesced_waits"] == threads - 1)
        return object()

    def worker():
        start.wait()
        results.append(cache.get_or_load("k", loader))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert calls == ["k"]
    assert len(results) == threads and all(r is results[0] for r in results)
    assert cache.stats()["loads"] == 1


def test_single_flight_error_reaches_every_waiter():
    threads = 16
    cache = SemanticCache(100, clock=ManualClock())
    start = threading.Barrier(threads)
    errors = []
    calls = []

    def loader(key):
        calls.append(key)
        wait_until(lambda: cache.stats()["coalesced_waits"] == threads - 1)
        raise LookupError("no such key")

    def worker():
        start.wait()
        try:
            cache.get_or_load("k", loader)
        except LookupError as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(calls) == 1 and len(errors) == threads
    assert "k" not in cache and cache.stats()["load_errors"] == 1


def test_single_flight_asyncio_tasks():
    tasks_n = 200

    async def main():
        cache = SemanticCache(100, clock=ManualClock())
        release = asyncio.Event()
        calls = []

        async def loader(key):
            calls.append(key)
            await release.wait()
            return [key]

        tasks = [asyncio.create_task(cache.aget_or_load("k", loader)) for _ in range(tasks_n)]
        while cache.stats()["coalesced_waits"] < tasks_n - 1:
            await asyncio.sleep(0)        # a yield to the loop, not a timed wait
        release.set()
        results = await asyncio.gather(*tasks)
        assert calls == ["k"]
        assert all(r is results[0] for r in results)
        assert await cache.aget_or_load("k", loader) is results[0]
        return cache.stats()

    stats = asyncio.run(main())
    assert (stats["loads"], stats["coalesced_waits"]) == (1, tasks_n - 1)


def test_asyncio_error_fallback_and_cancelled_caller():
    async def main():
        clock = ManualClock(0)
        cache = make(clock)
        gate = asyncio.Event()

        async def failing(key):
            await gate.wait()
            raise TimeoutError("slow upstream")

        cache.set("k", "old")
        clock.advance(100)                # MISS for default, inside stale_if_error
        a = asyncio.create_task(cache.aget_or_load("k", failing))
        b = asyncio.create_task(cache.aget_or_load("k", failing, intent="verify"))
        c = asyncio.create_task(cache.aget_or_load("k", failing))
        await asyncio.sleep(0)
        c.cancel()                        # one caller gives up; the load goes on
        gate.set()
        assert await a == "old"
        with pytest.raises(TimeoutError):
            await b
        with pytest.raises(asyncio.CancelledError):
            await c
        return cache.stats()

    stats = asyncio.run(main())
    assert (stats["loads"], stats["load_errors"], stats["coalesced_waits"]) == (1, 1, 2)


def test_asyncio_stale_while_revalidate_one_task_per_key():
    async def main():
        clock = ManualClock(0)
        cache = make(clock)
        calls = []

        async def loader(key):
            calls.append(key)
            return f"v{len(calls)}"

        assert await cache.aget_or_load("k", loader) == "v1"
        clock.advance(70)
        assert [await cache.aget_or_load("k", loader) for _ in range(5)] == ["v1"] * 5
        assert len(cache._aflights) == 1
        await asyncio.gather(*(f.task for f in cache._aflights.values()))
        assert calls == ["k", "k"] and not cache._aflights
        assert cache.lookup("k").state is FRESH
        assert await cache.aget_or_load("k", lambda key: "sync result ok") == "v2"

    asyncio.run(main())


def test_asyncio_accepts_a_plain_loader_and_loaded(clock):
    async def main():
        cache = make(clock)
        assert await cache.aget_or_load("a", lambda key: key.upper()) == "A"
        assert await cache.aget_or_load(
            "b", lambda key: Loaded(None, Freshness(5, negative=True))) is None
        return cache.lookup("a").value, cache.lookup("b").negative, cache.stats()["loads"]

    assert asyncio.run(main()) == ("A", True, 2)


# -- memoize ----------------------------------------------------------------------------------

def test_memoize_sync_and_async(clock):
    cache = make(clock)
    calls = []

    @cache.memoize()
    def square(x, *, offset=0):
        calls.append(x)
        return x * x + offset

    @cache.memoize(intent="context", key=lambda user: ("user", user))
    async def profile(user):
        calls.append(user)
        return {"id": user}

    @cache.memoize
    def bare(x):
        calls.append(("bare", x))
        return -x

    assert [square(3), square(3), square(3, offset=1), square(4)] == [9, 9, 10, 16]
    assert calls == [3, 3, 4]
    assert asyncio.run(profile(7)) == {"id": 7} == asyncio.run(profile(7))
    assert cache.lookup(("user", 7)).value == {"id": 7}
    assert bare(2) == bare(2) == -2
    assert calls == [3, 3, 4, 7, ("bare", 2)]
    assert square.__name__ == "square"
    with pytest.raises(UnknownIntent):
        cache.memoize(intent="nope")


# -- eviction and memory ----------------------------------------------------------------------

def test_sieve_eviction_order(clock):
    cache = SemanticCache(3, clock=clock)
    for k in "abc":
        cache.set(k, k)
    cache.lookup("a")                     # a visited
    cache.set("d", "d")                   # hand at a: clears it, evicts b
    assert cache.keys() == ["a", "c", "d"]
    cache.set("e", "e")                   # hand at c (after b): unvisited, evicted
    assert cache.keys() == ["a", "d", "e"]
    cache.lookup("d")
    cache.lookup("e")
    cache.set("a", "A")                   # an overwrite keeps its place (and clear bit)
    assert cache.keys() == ["a", "d", "e"]
    cache.set("f", "f")                   # hand (after c) is d: clear d, e; wrap; evict a
    assert cache.keys() == ["d", "e", "f"]
    assert cache.stats()["evictions"] == 3


def test_growing_overwrite_evicts_others_never_itself(clock):
    cache = SemanticCache(10, clock=clock, getsizeof=len)
    for k in "abc":
        cache.set(k, "xxx")               # currsize 9
    cache.lookup("c")
    # 9 - 3 + 8 = 14 > 10: the hand skips a, evicts b (11 > 10), clears c, wraps past a
    # and evicts c (8).
    cache.set("a", "x" * 8)
    assert (cache.keys(), cache.currsize, cache.stats()["evictions"]) == (["a"], 8, 2)


def test_sieve_evicts_a_dead_entry_even_if_visited(clock):
    cache = SemanticCache(3, clock=clock, default=Freshness(100))
    cache.set("a", 1)
    cache.set("b", 2, Freshness(1))
    cache.set("c", 3)
    for k in "abc":
        cache.lookup(k)
    clock.advance(5)                      # b is dead (but still stored and visited)
    cache.set("d", 4)                     # hand: a visited -> cleared; b dead -> evicted
    assert cache.keys() == ["a", "c", "d"]


def test_memory_stays_within_maxsize(clock):
    cache = SemanticCache(100, clock=clock)
    for i in range(20_000):
        cache.set(i, i)
        if i % 7 == 0:
            cache.lookup(i // 2)
    assert len(cache) == cache.currsize == 100
    weighted = SemanticCache(1000, clock=clock, getsizeof=len)
    rng = random.Random(1)
    for i in range(5_000):
        weighted.set(i, "x" * rng.randint(1, 200))
        assert weighted.currsize <= 1000
    assert weighted.currsize == sum(len(weighted.lookup(k).value) for k in weighted.keys())


def test_many_threads_mixing_operations_keep_accounts_straight():
    cache = SemanticCache(50, clock=ManualClock(), getsizeof=lambda v: 1 + v % 3)
    start = threading.Barrier(4)

    def worker(seed):
        rng = random.Random(seed)
        start.wait()
        for _ in range(20_000):
            k = rng.randrange(200)
            op = rng.random()
            if op < 0.5:
                cache.set(k, rng.randrange(10))
            elif op < 0.9:
                cache.lookup(k)
            else:
                cache.delete(k)

    pool = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    keys = cache.keys()
    assert len(keys) == len(set(keys)) == len(cache)
    assert cache.currsize == sum(1 + cache.lookup(k).value % 3 for k in keys) <= 50


# -- bad input raises and changes nothing -----------------------------------------------------

def test_bad_input_raises_and_changes_nothing(clock):
    cache = SemanticCache(10, clock=clock, getsizeof=len,
                          intents=[Intent("context", max_staleness=5)])
    cache.set("k", "abc")
    before = snapshot(cache)
    with pytest.raises(TypeError):
        cache.set(["unhashable"], "x")
    with pytest.raises(TypeError):
        cache.lookup({})
    with pytest.raises(ValueTooLarge):
        cache.set("k", "x" * 11)
    with pytest.raises(ValueTooLarge):
        cache.set("new", "x" * 11)
    with pytest.raises(TypeError):
        cache.set("k", "v", freshness=60)
    with pytest.raises(UnknownIntent):
        cache.lookup("k", "nope")
    with pytest.raises(TypeError):
        cache.lookup("k", 3)
    with pytest.raises(TypeError):
        cache.get_or_load(["x"], lambda k: 1)
    with pytest.raises(TypeError):
        cache.delete([])
    assert snapshot(cache) == before
    assert cache.lookup("k").value == "abc"


@pytest.mark.parametrize("kwargs,error", [
    ({"maxsize": 0}, ValueError),
    ({"maxsize": -1}, ValueError),
    ({"maxsize": 1.5}, TypeError),
    ({"maxsize": 10, "negative_ttl": -1}, InvalidFreshness),
    ({"maxsize": 10, "negative_ttl": math.nan}, InvalidFreshness),
    ({"maxsize": 10, "default": 60}, TypeError),
    ({"maxsize": 10, "intents": {"a": Intent("b")}}, InvalidFreshness),
    ({"maxsize": 10, "intents": ["ctx"]}, TypeError),
    ({"maxsize": 10, "default_intent": "nope"}, UnknownIntent),
    ({"maxsize": 10, "getsizeof": 3}, TypeError),
    ({"maxsize": 10, "xfetch_beta": -1}, ValueError),
    ({"maxsize": 10, "xfetch_beta": math.nan}, ValueError),
    ({"maxsize": 10, "clock": lambda: 0.0}, TypeError),
])
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error):
        SemanticCache(**kwargs)


@pytest.mark.parametrize("args,error", [
    ((1,), TypeError),
    (("",), InvalidFreshness),
    (("x", -1), InvalidFreshness),
    (("x", math.inf), InvalidFreshness),
])
def test_bad_intents(args, error):
    with pytest.raises(error):
        Intent(*args)


def test_getsizeof_must_return_a_positive_int(clock):
    cache = SemanticCache(10, clock=clock, getsizeof=lambda v: v)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            cache.set("k", bad)
    assert len(cache) == 0


def test_default_intent_and_intent_registry(clock):
    strict = Intent("strict", serve_stale_while_revalidate=False)
    cache = SemanticCache(10, clock=clock, intents={"strict": strict},
                          default_intent="strict", default=Freshness(1, 10))
    assert cache.default_intent is strict and cache.intent("strict") is strict
    assert set(cache.intents) == {"strict"}
    cache.set("k", 1)
    clock.advance(0.5)
    assert cache.lookup("k", Intent("swr")).state is FRESH
    clock.advance(1.5)                    # no configured intent uses swr: dead at 1 s
    assert cache.lookup("k", Intent("swr")).state is MISS
    assert len(cache) == 0


# -- load_timeout: hung loaders, abandoned flights, hung refreshes ---------------------------

SHORT = 0.05      # a load_timeout that a hung loader (blocked on an Event) always outlives
LONG = 60.0       # a load_timeout (and join bound) far above what any healthy step needs


def bounded_join(thread):
    thread.join(LONG)
    assert not thread.is_alive(), f"{thread.name} still blocked: a hang"


def in_thread(fn, *args, **kwargs):
    """Run ``fn`` on a thread; -> (thread, box) where box gets "result" or "error"."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:   # noqa: BLE001 - the test inspects it
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


class HungLoader:
    """A loader that blocks until ``release`` is set, then returns ``value``; records the
    threads that called it and whether each call has returned."""

    def __init__(self, value="late"):
        self.release = threading.Event()
        self.value = value
        self.threads = []
        self.returned = 0

    def __call__(self, key):
        self.threads.append(threading.current_thread())
        self.release.wait()
        self.returned += 1
        return self.value

    def called(self, times=1):
        wait_until(lambda: len(self.threads) >= times)

    def finish(self):
        """Release every call and join the per-load threads (pool threads stay)."""
        self.release.set()
        for thread in self.threads:
            if thread.name.startswith("fastcore-load"):
                bounded_join(thread)


@pytest.fixture
def frozen_flights(monkeypatch):
    """Freeze the wall clock that flight ages are read from, so that a caller always joins
    a running load instead of finding it older than its timeout; ``now[0]`` moves it."""
    import fastcore.semantic as layer
    now = [0.0]
    monkeypatch.setattr(layer, "_monotonic", lambda: now[0])
    return now


def test_sync_waiters_on_a_hung_loader_get_the_stale_value_or_load_timeout(clock):
    cache = make(clock, load_timeout=SHORT)
    cache.set("k", "old")
    clock.set(1100)                       # MISS for every intent; inside stale_if_error
    hung = HungLoader()
    intents = ["default", "verify"] * 4
    try:
        workers = [in_thread(cache.get_or_load, "k", hung, intent=i, with_state=True)
                   for i in intents]
        for thread, _ in workers:
            bounded_join(thread)
        for intent, (_, box) in zip(intents, workers):
            if intent == "default":
                r = box["result"]
                assert (r.value, r.state, r.age) == ("old", CacheState.ERROR, 100.0)
                assert isinstance(r.error, fastcore.LoadTimeout)
            else:                         # verify: no stale serving, not even on error
                error = box["error"]
                assert isinstance(error, fastcore.LoadTimeout)
                assert isinstance(error, TimeoutError) and error.key == "k"
                assert error.timeout == SHORT and "load_timeout" in str(error)
        # Late joiners may find the load older than their timeout and start anew.
        timeouts = cache.stats()["load_timeouts"]
        assert 1 <= timeouts <= len(intents) and not cache._flights   # all abandoned
        hung.called(timeouts)             # each abandoned load's thread did call it
    finally:
        hung.finish()
    # The abandoned loads returned after all: their result is discarded, not stored.
    assert hung.returned == len(hung.threads)
    assert cache.lookup("k", "context").value == "old"


def test_sync_single_flight_holds_under_a_timeout(clock):
    threads = 16
    cache = make(clock, load_timeout=LONG)
    start = threading.Barrier(threads)
    calls = []

    def loader(key):
        calls.append(threading.current_thread().name)
        wait_until(lambda: cache.stats()["coalesced_waits"] == threads - 1)
        return "v"

    def worker():
        start.wait()
        return cache.get_or_load("k", loader, with_state=True)

    workers = [in_thread(worker) for _ in range(threads)]
    for thread, _ in workers:
        bounded_join(thread)
    results = {box["result"] for _, box in workers}
    assert results == {fastcore.LoadResult("v", MISS, 0.0, False, None)}
    # With a timeout the leader waits while the loader runs on its own thread.
    assert len(calls) == 1 and calls[0].startswith("fastcore-load")
    assert cache.stats()["loads"] == 1 and cache.stats()["load_timeouts"] == 0


def test_after_a_timeout_the_next_call_loads_again(clock):
    cache = make(clock)
    hung = HungLoader()
    try:
        with pytest.raises(fastcore.LoadTimeout):
            cache.get_or_load("k", hung, load_timeout=SHORT)      # nothing cached
        assert "k" not in cache._flights
        hung.called()
        assert cache.get_or_load("k", lambda k: "fresh") == "fresh"   # no timeout: inline
        assert cache.stats()["loads"] == 2
    finally:
        hung.finish()
    assert cache.lookup("k").value == "fresh"      # the late "late" never overwrote it
    assert cache.stats()["load_timeouts"] == 1


def test_a_timeout_abandons_an_inline_leader_but_it_keeps_its_own_value(clock,
                                                                         frozen_flights):
    # The first caller has no timeout and runs the loader itself; a joiner with a timeout
    # abandons the load, so a third caller starts anew; the first caller still returns
    # what its loader gave, without storing it over the newer value.
    cache = make(clock)
    hung = HungLoader("first")
    leader, box = in_thread(cache.get_or_load, "k", hung)
    try:
        wait_until(lambda: hung.threads)
        with pytest.raises(fastcore.LoadTimeout):
            cache.get_or_load("k", lambda k: "never called", load_timeout=SHORT)
        assert cache.get_or_load("k", lambda k: "second") == "second"
    finally:
        hung.release.set()
        bounded_join(leader)
    assert box["result"] == "first"
    assert cache.lookup("k").value == "second"


def test_a_caller_abandons_a_load_older_than_its_timeout_at_once(clock, frozen_flights):
    now = frozen_flights
    executor = ManualExecutor()           # its refreshes never run: a hung refresh
    cache = make(clock, executor=executor)
    cache.set("k", "old")
    clock.set(1070)
    assert cache.get_or_load("k", lambda k: "refresh") == "old"   # refresh queued
    now[0] = 5.0                          # the refresh has run 5 s (wall clock)
    assert cache.get_or_load("k", lambda k: "new", intent="verify", load_timeout=5.0) == "new"
    assert cache.stats()["load_timeouts"] == 1 and cache.stats()["coalesced_waits"] == 0
    executor.run_all()                    # the abandoned refresh returns: discarded
    assert cache.lookup("k").value == "new"
    assert not cache._refreshing


def test_hung_refreshes_do_not_starve_other_keys(clock, frozen_flights):
    cache = make(clock, refresh_workers=2)
    hung = HungLoader("refreshed")
    for key in "abc":
        cache.set(key, f"old-{key}")
    clock.set(1070)                        # STALE for default, MISS for verify
    try:
        assert cache.get_or_load("a", hung) == "old-a"
        assert cache.get_or_load("b", hung) == "old-b"
        hung.called(2)                     # both workers hang
        # c's refresh is skipped, not queued behind the hung ones: stale at once ...
        assert cache.get_or_load("c", hung) == "old-c"
        assert cache.stats()["refreshes_skipped"] == 1 and "c" not in cache._flights
        # ... and a caller that needs a fresh c loads it itself, at once.
        thread, box = in_thread(cache.get_or_load, "c", lambda k: "new-c", intent="verify")
        bounded_join(thread)
        assert box == {"result": "new-c"}
        # A strict caller for a joins its hung refresh and gives up on it.
        with pytest.raises(fastcore.LoadTimeout):
            cache.get_or_load("a", lambda k: "unused", intent="verify", load_timeout=SHORT)
        assert "a" not in cache._flights and cache._refreshing.keys() == {"a", "b"}
        # The abandoned refresh still holds its worker: a stale hit starts no second one.
        assert cache.get_or_load("a", hung) == "old-a"
        assert cache.stats()["refreshes_skipped"] == 2 and len(hung.threads) == 2
        # The next strict caller loads anew.
        assert cache.get_or_load("a", lambda k: "new-a", intent="verify",
                                 load_timeout=LONG) == "new-a"
    finally:
        hung.release.set()
    wait_until(lambda: not cache._refreshing)           # workers freed when loaders return
    # a's late refresh was abandoned (discarded); b's was not: stored.
    assert [cache.lookup(k).value for k in "abc"] == ["new-a", "refreshed", "new-c"]
    assert cache.stats()["load_timeouts"] == 1
    cache._executor.shutdown(wait=True)


def test_asyncio_waiters_on_a_hung_loader_get_the_stale_value_or_load_timeout(
        frozen_flights):
    async def main():
        clock = ManualClock(0)
        cache = make(clock, load_timeout=SHORT)
        cache.set("k", "old")
        clock.advance(100)                # MISS; inside stale_if_error
        release = asyncio.Event()
        unwound = asyncio.Event()
        events = []

        async def hung(key):
            events.append("called")
            try:
                await release.wait()
            except asyncio.CancelledError:
                events.append("cancelled")
                unwound.set()
                raise
            return "late"

        intents = ["default", "verify"] * 50
        tasks = [asyncio.create_task(cache.aget_or_load("k", hung, intent=i, with_state=True))
                 for i in intents]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(unwound.wait(), LONG)     # the load task was cancelled
        for intent, r in zip(intents, results):
            if intent == "default":
                assert (r.value, r.state, type(r.error)) == ("old", CacheState.ERROR,
                                                             fastcore.LoadTimeout)
            else:
                assert type(r) is fastcore.LoadTimeout and r.key == "k"
        assert events == ["called", "cancelled"]     # one load, cancelled when abandoned
        assert not cache._aflights
        assert await cache.aget_or_load("k", lambda k: "new") == "new"   # loads anew
        release.set()
        return cache.stats()

    stats = asyncio.run(main())
    assert (stats["loads"], stats["load_timeouts"], stats["coalesced_waits"]) == (2, 1, 99)


def test_asyncio_hung_refresh_is_abandoned_and_other_keys_proceed(frozen_flights):
    async def main():
        clock = ManualClock(0)
        cache = make(clock)
        release = asyncio.Event()

        async def hung(key):
            await release.wait()
            return "late"

        cache.set("a", "old-a")
        cache.set("b", "old-b")
        clock.advance(70)                 # STALE for default, MISS for verify
        assert await cache.aget_or_load("a", hung) == "old-a"     # refresh task hangs
        assert await cache.aget_or_load("b", lambda k: "new-b", intent="verify",
                                        load_timeout=LONG) == "new-b"
        with pytest.raises(fastcore.LoadTimeout):
            await cache.aget_or_load("a", hung, intent="verify", load_timeout=SHORT)
        assert "a" not in cache._aflights
        r = await cache.aget_or_load("a", lambda k: Loaded("new-a", Freshness(5, age=2)),
                                     intent="verify", with_state=True)
        assert r == fastcore.LoadResult("new-a", MISS, 2.0, False, None)
        release.set()
        await asyncio.sleep(0)
        assert cache.lookup("a").value == "new-a"
        return cache.stats()

    stats = asyncio.run(main())
    assert (stats["loads"], stats["load_timeouts"], stats["coalesced_waits"]) == (3, 1, 1)


def test_asyncio_caller_abandons_a_load_older_than_its_timeout(frozen_flights):
    now = frozen_flights

    async def main():
        cache = SemanticCache(10, clock=ManualClock())
        release = asyncio.Event()
        started = asyncio.Event()

        async def hung(key):
            started.set()
            await release.wait()

        first = asyncio.create_task(cache.aget_or_load("k", hung))
        await asyncio.wait_for(started.wait(), LONG)
        now[0] = 3.0
        # Not stored (no-store), so the first caller has no entry to fall back to.
        assert await cache.aget_or_load("k", lambda k: Loaded("new", None),
                                        load_timeout=3) == "new"
        with pytest.raises(fastcore.LoadTimeout):
            await first                   # it waited on the load that was abandoned
        assert "k" not in cache
        return cache.stats()

    stats = asyncio.run(main())
    assert (stats["loads"], stats["load_timeouts"]) == (2, 1)


def test_load_timeout_per_call_overrides_and_inf_waits_for_ever(clock):
    cache = make(clock, load_timeout=SHORT)
    assert cache.load_timeout == SHORT
    hung = HungLoader("v")
    leader, box = in_thread(cache.get_or_load, "k", hung, load_timeout=math.inf)
    try:
        hung.called()
        # A caller on the cache's SHORT default gives up; so SHORT has passed since the
        # leader started, and the leader (inf: wait for ever) is still waiting.
        with pytest.raises(fastcore.LoadTimeout):
            cache.get_or_load("k", hung)
        assert leader.is_alive()
    finally:
        hung.finish()
        bounded_join(leader)
    assert box == {"result": "v"}
    assert SemanticCache(1, load_timeout=math.inf).load_timeout is None
    assert SemanticCache(1, load_timeout=1e300).load_timeout is None
    assert SemanticCache(1, load_timeout=2).load_timeout == 2.0
    assert SemanticCache(1).load_timeout is None


def test_memoize_passes_load_timeout(clock):
    cache = make(clock)
    hung = HungLoader()

    @cache.memoize(load_timeout=SHORT)
    def fetch(x):
        return hung(x)

    try:
        with pytest.raises(fastcore.LoadTimeout):
            fetch(1)
        hung.called()
    finally:
        hung.finish()
    assert cache.stats()["load_timeouts"] == 1


# -- with_state: the state with the value -------------------------------------------------------

def test_with_state_reports_fresh_stale_miss_and_error(clock):
    executor = ManualExecutor()
    cache = make(clock, executor=executor)

    def failing(key):
        raise ConnectionError("down")

    r = cache.get_or_load("k", lambda k: "v1", with_state=True)
    assert r == fastcore.LoadResult("v1", MISS, 0.0, False, None)
    assert (r.value, r.state, r.age) == ("v1", MISS, 0.0)
    clock.advance(10)
    assert cache.get_or_load("k", failing, with_state=True) == (
        "v1", FRESH, 10.0, False, None)
    clock.advance(60)                     # a = 70: STALE, a refresh is queued
    assert cache.get_or_load("k", failing, with_state=True) == ("v1", STALE, 70.0, False,
                                                                None)
    executor.run_all()                    # it fails; the entry stays
    clock.advance(30)                     # a = 100: MISS, the load fails: fallback
    r = cache.get_or_load("k", failing, with_state=True)
    assert (r.value, r.state, r.age, type(r.error)) == ("v1", CacheState.ERROR, 100.0,
                                                        ConnectionError)
    assert cache.get_or_load("k", failing) == "v1"          # the default return
    r = cache.get_or_load("gone", lambda k: Loaded(None, Freshness(5, negative=True)),
                          with_state=True)
    assert (r.state, r.negative) == (MISS, True)
    assert cache.get_or_load("gone", failing, with_state=True).negative
    r = cache.get_or_load("h", lambda k: Loaded("x", Freshness.from_cache_control(
        "max-age=60", age=7)), with_state=True)
    assert (r.state, r.age) == (MISS, 7.0)
    assert cache.lookup("h").age == 7.0   # the same age a lookup reports


def test_with_state_asyncio(clock):
    async def main():
        cache = make(clock)
        first = await cache.aget_or_load("k", lambda k: "v", with_state=True)
        clock.advance(70)
        stale = await cache.aget_or_load("k", lambda k: "w", with_state=True)
        await asyncio.gather(*(f.task for f in cache._aflights.values()))
        fresh = await cache.aget_or_load("k", lambda k: "unused", with_state=True)
        plain = await cache.aget_or_load("k", lambda k: "unused")
        return first, stale, fresh, plain

    first, stale, fresh, plain = asyncio.run(main())
    assert first == ("v", MISS, 0.0, False, None)
    assert stale == ("v", STALE, 70.0, False, None)
    assert fresh == ("w", FRESH, 0.0, False, None) and plain == "w"
    assert CacheState.ERROR == "ERROR" and str(CacheState.ERROR) == "ERROR"


# -- errors name the argument the caller passed ---------------------------------------------

@pytest.mark.parametrize("kwargs,error,named", [
    ({"maxsize": 0}, ValueError, "maxsize"),
    ({"maxsize": "10"}, TypeError, "maxsize"),
    ({"default": 60}, TypeError, "default"),
    ({"intents": 5}, TypeError, "intents"),
    ({"intents": "context"}, TypeError, "intents"),
    ({"intents": Intent("x")}, TypeError, "intents"),
    ({"intents": {"a": "b"}}, TypeError, "intents"),
    ({"intents": [3]}, TypeError, "intents"),
    ({"default_intent": "nope"}, UnknownIntent, "default_intent"),
    ({"default_intent": 3}, TypeError, "default_intent"),
    ({"negative_ttl": -1}, InvalidFreshness, "negative_ttl"),
    ({"negative_ttl": math.nan}, InvalidFreshness, "negative_ttl"),
    ({"negative_ttl": "10"}, TypeError, "negative_ttl"),
    ({"negative_ttl": 1e12}, InvalidFreshness, "negative_ttl"),
    ({"getsizeof": 3}, TypeError, "getsizeof"),
    ({"clock": lambda: 0.0}, TypeError, "clock"),
    ({"xfetch_beta": -1}, ValueError, "xfetch_beta"),
    ({"random": 0.5}, TypeError, "random"),
    ({"executor": 4}, TypeError, "executor"),
    ({"load_timeout": 0}, ValueError, "load_timeout"),
    ({"load_timeout": -1}, ValueError, "load_timeout"),
    ({"load_timeout": math.nan}, ValueError, "load_timeout"),
    ({"load_timeout": "1"}, TypeError, "load_timeout"),
    ({"load_timeout": True}, TypeError, "load_timeout"),
    ({"refresh_workers": 0}, ValueError, "refresh_workers"),
    ({"refresh_workers": 2.0}, TypeError, "refresh_workers"),
    ({"refresh_workers": True}, TypeError, "refresh_workers"),
])
def test_constructor_errors_name_the_argument(kwargs, error, named):
    kwargs.setdefault("maxsize", 10)
    with pytest.raises(error) as info:
        SemanticCache(**kwargs)
    assert named in str(info.value)
    if named == "negative_ttl":
        assert "max_age" not in str(info.value)


@pytest.mark.parametrize("call,error,named", [
    (lambda: Freshness(-1), InvalidFreshness, "max_age"),
    (lambda: Freshness(1, -1), InvalidFreshness, "stale_while_revalidate"),
    (lambda: Freshness(1, 0, "x"), TypeError, "stale_if_error"),
    (lambda: Freshness(1, age=math.inf), InvalidFreshness, "age"),
    (lambda: Freshness.from_cache_control(5), TypeError, "header"),
    (lambda: Freshness.from_cache_control("max-age=1", age=-1), InvalidFreshness, "age"),
    (lambda: Freshness.from_response("200", {}), TypeError, "status"),
    (lambda: Freshness.from_response(200, {}, heuristic=-1), InvalidFreshness, "heuristic"),
    (lambda: Freshness.from_response(200, 5), TypeError, "headers"),
    (lambda: Freshness.from_response(200, "cache-control: max-age=1"), TypeError, "headers"),
    (lambda: Freshness.from_response(200, ["max-age=1"]), TypeError, "headers"),
    (lambda: Freshness.from_response(200, {1: "x"}), TypeError, "headers"),
    (lambda: Intent(1), TypeError, "name"),
    (lambda: Intent(""), InvalidFreshness, "name"),
    (lambda: Intent("x", max_staleness=-1), InvalidFreshness, "max_staleness"),
    (lambda: Loaded(1, 60), TypeError, "freshness"),
])
def test_freshness_and_intent_errors_name_the_argument(call, error, named):
    with pytest.raises(error) as info:
        call()
    assert named in str(info.value)


def test_from_response_still_takes_mappings_and_pair_lists():
    headers = [("Cache-Control", "max-age=30"), (b"age", "5")]
    assert Freshness.from_response(200, headers) == Freshness(25, age=5)
    assert Freshness.from_response(200, iter(headers)) == Freshness(25, age=5)
    assert Freshness.from_response(200, {b"Cache-Control": "max-age=3"}) == Freshness(3)


def test_method_errors_name_the_argument_and_change_nothing(clock):
    cache = make(clock, executor=ManualExecutor())
    cache.set("k", "v")
    clock.advance(70)                     # STALE: a bad loader must not queue a refresh
    before = snapshot(cache)
    calls = [
        (lambda: cache.get_or_load("k", 3), TypeError, "loader"),
        (lambda: cache.get_or_load("k", len, load_timeout=0), ValueError, "load_timeout"),
        (lambda: cache.get_or_load("k", len, load_timeout="1"), TypeError, "load_timeout"),
        (lambda: cache.get_or_load("k", len, with_state=1), TypeError, "with_state"),
        (lambda: cache.get_or_load("k", len, intent=3), TypeError, "intent"),
        (lambda: cache.get_or_load("k", len, intent="nope"), UnknownIntent, "intent"),
        (lambda: asyncio.run(cache.aget_or_load("k", None)), TypeError, "aloader"),
        (lambda: asyncio.run(cache.aget_or_load("k", len, load_timeout=-2)), ValueError,
         "load_timeout"),
        (lambda: asyncio.run(cache.aget_or_load("k", len, with_state="yes")), TypeError,
         "with_state"),
        (lambda: cache.lookup("k", 3), TypeError, "intent"),
        (lambda: cache.set("k", "v", 60), TypeError, "freshness"),
        (lambda: cache.set_negative("k", 60), TypeError, "freshness"),
        (lambda: cache.memoize(key=3), TypeError, "key"),
        (lambda: cache.memoize(load_timeout=0), ValueError, "load_timeout"),
        (lambda: cache.memoize(intent="nope"), UnknownIntent, "intent"),
    ]
    for call, error, named in calls:
        with pytest.raises(error) as info:
            call()
        assert named in str(info.value), (named, info.value)
    assert snapshot(cache) == before
    assert cache._executor.jobs == [] and not cache._flights and not cache._aflights
