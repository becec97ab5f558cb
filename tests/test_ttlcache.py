"""fastcore.TTLCache: hand-computed cases, the drop-in contract, bad input, threads, reentrancy."""

import copy
import gc
import math
import random
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import MutableMapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import cachetools
import pytest

import fastcore
from fastcore import CoarseClock, ManualClock, TTLCache

NS = 1_000_000_000


class Timer:
    """cachetools' own test timer: moves when told to, or by one on every call (auto)."""

    def __init__(self, auto=False):
        self.auto = auto
        self.time = 0

    def __call__(self):
        if self.auto:
            self.time += 1
        return self.time

    def tick(self):
        self.time += 1


def contents(cache):
    return list(cache.items())


# -- the drop-in contract: the same user code against both classes -------------------------

@pytest.fixture(params=["cachetools", "fastcore"])
def Cache(request):
    return cachetools.TTLCache if request.param == "cachetools" else fastcore.TTLCache


def test_contract_ttl_and_lru(Cache):
    cache = Cache(maxsize=2, ttl=2, timer=Timer())
    assert cache.timer() == 0 and cache.ttl == 2 and cache.maxsize == 2
    cache[1] = 1                            # expires at 2
    assert set(cache) == {1} and len(cache) == 1 and cache[1] == 1
    cache.timer.tick()
    cache[2] = 2                            # expires at 3
    assert set(cache) == {1, 2} and cache[1] == 1 and cache[2] == 2
    cache.timer.tick()
    assert set(cache) == {2} and 1 not in cache and cache[2] == 2
    cache[3] = 3
    assert set(cache) == {2, 3} and cache.currsize == 2
    cache.timer.tick()
    assert set(cache) == {3}
    with pytest.raises(KeyError):           # expired but still stored: removed, then KeyError
        del cache[2]
    assert cache.expire() == []
    cache.timer.tick()
    assert len(cache) == 0 and cache.currsize == 0
    with pytest.raises(KeyError):
        cache.popitem()


def test_contract_lru_eviction_and_expired_first(Cache):
    timer = Timer()
    cache = Cache(maxsize=3, ttl=10, timer=timer)
    cache["a"], cache["b"], cache["c"] = 1, 2, 3
    assert cache["a"] == 1                  # "b" is now the least recently used
    cache["d"] = 4
    assert list(cache) == ["a", "c", "d"]
    timer.time = 5
    cache["c"] = 30                         # refreshed: expires at 15
    timer.time = 10                         # "a" and "d" expire (set at 0)
    cache["e"] = 5                          # room without evicting a live item
    assert contents(cache) == [("c", 30), ("e", 5)]
    assert cache.expire(15) == [("c", 30)]


def test_contract_auto_timer_calls_match():
    """A timer that moves on every call: fastcore calls it exactly when cachetools does."""
    ours, theirs = TTLCache(4, 3, timer=Timer(auto=True)), cachetools.TTLCache(
        4, 3, timer=Timer(auto=True))
    script = [("set", 1), ("get", 1), ("contains", 1), ("set", 2), ("get", 2), ("pop", 1),
              ("set", 3), ("iter", None), ("len", None), ("setdefault", 4), ("popitem", None),
              ("get", 9), ("contains", 9), ("set", 5), ("items", None), ("expire", None)]
    for name, key in script:
        for cache in (ours, theirs):
            try:
                if name == "set":
                    cache[key] = key
                elif name == "get":
                    cache.get(key)
                elif name == "contains":
                    key in cache
                elif name == "pop":
                    cache.pop(key, None)
                elif name == "iter":
                    list(cache)
                elif name == "len":
                    len(cache)
                elif name == "setdefault":
                    cache.setdefault(key, key)
                elif name == "popitem":
                    cache.popitem()
                elif name == "items":
                    list(cache.items())
                elif name == "expire":
                    cache.expire()
            except KeyError:
                pass
        assert ours.timer.time == theirs.timer.time, name
        assert repr(ours) == repr(theirs), name


def test_contract_getsizeof(Cache):
    cache = Cache(maxsize=3, ttl=10, timer=Timer(), getsizeof=lambda v: v)
    cache[1], cache[2] = 1, 2
    assert cache.currsize == 3 and cache.getsizeof(2) == 2
    cache[3] = 3                            # evicts both
    assert contents(cache) == [(3, 3)] and cache.currsize == 3
    with pytest.raises(ValueError, match="value too large"):
        cache[4] = 4
    cache[3] = 1
    assert cache.currsize == 1


def test_contract_missing_and_mapping_api(Cache):
    class Defaulting(Cache):
        def __missing__(self, key):
            self[key] = value = key * 2
            return value

    cache = Defaulting(maxsize=2, ttl=1, timer=Timer())
    assert cache[3] == 6 and 3 in cache
    assert cache.get(5) is None and 5 not in cache         # get() never calls __missing__
    assert cache.pop(7, "d") == "d" and cache.setdefault(8, 16) == 16
    cache.update({1: 1}, two=2)
    assert dict(cache) == {1: 1, "two": 2}
    assert cache == {1: 1, "two": 2} and cache != {1: 1}
    assert isinstance(cache, MutableMapping)
    assert Cache[str, int].__origin__ is Cache
    with pytest.raises(TypeError):
        hash(cache)
    duplicate = copy.copy(cache)
    duplicate[9] = 9
    assert 9 not in cache and type(duplicate) is Defaulting
    cache.clear()
    assert len(cache) == 0 and cache.currsize == 0


def test_contract_eviction_notification(Cache):
    """The cachetools documentation's recipe: override popitem to see evictions."""
    evicted = []

    class Logged(Cache):
        def popitem(self):
            key, value = super().popitem()
            evicted.append(key)
            return key, value

    cache = Logged(maxsize=2, ttl=60)
    for key in "abcd":
        cache[key] = key
    assert evicted == ["a", "b"] and list(cache) == ["c", "d"]


def test_contract_cached_decorators(Cache):
    calls = []

    @cachetools.cached(cache=Cache(maxsize=8, ttl=60))
    def square(x):
        calls.append(x)
        return x * x

    assert [square(3), square(3), square(4)] == [9, 9, 16] and calls == [3, 4]

    class Service:
        def __init__(self):
            self.cache = Cache(maxsize=8, ttl=60)

        @cachetools.cachedmethod(lambda self: self.cache)
        def double(self, x):
            calls.append(x)
            return 2 * x

    service = Service()
    assert service.double(5) == service.double(5) == 10 and calls == [3, 4, 5]


def test_contract_a_set_freezes_the_time_for_the_code_it_runs(Cache):
    """A key whose __hash__ moves the clock and stores another item: that item is stored at
    the outer set's time, so both expire together, in the order they were linked."""
    clock = ManualClock(start=1000.0)
    cache = Cache(8, 1.0, clock=clock) if Cache is TTLCache else Cache(8, 1.0, timer=clock)

    class MovesClock:
        armed = True

        def __hash__(self):
            if MovesClock.armed:
                MovesClock.armed = False
                clock.advance(0.5)
                cache["inner"] = 2          # inside the outer set: at its time, 1000.0
            return 1

    outer = MovesClock()
    cache[outer] = 1
    clock.set(1000.999)
    assert len(cache) == 2
    clock.set(1001.0)
    assert cache.expire() == [("inner", 2), (outer, 1)] and len(cache) == 0


def test_contract_a_set_reads_the_timer_first(Cache):
    timer = Timer(auto=True)
    cache = Cache(2, 10, timer=timer)
    with pytest.raises(TypeError):
        cache[[1]] = 1                      # the timer is read before the key is hashed
    assert timer.time == 1 and len(cache) == 0


def test_pickle_keeps_items_orders_and_expiries():
    import pickle

    timer = Timer()
    cache = TTLCache(3, 10, timer=timer, getsizeof=len)
    cache["a"], cache["b"] = "x", "yy"
    timer.time = 4
    cache["a"] = "z"                          # LRU and expiry order now b, a
    restored = pickle.loads(pickle.dumps(cache))
    assert contents(restored) == contents(cache) and restored.currsize == 3
    for _ in range(6):
        restored.timer.tick()                 # 4 -> 10 on restored's own copy of the timer
    assert timer.time == 4 and restored.timer.time == 10
    assert restored.expire() == [("b", "yy")]
    restored["c"] = "c"
    restored["d"] = "dd"                      # evicts "a", the least recently used
    assert list(restored) == ["c", "d"]
    plain = TTLCache(5, 60)
    plain[1] = 1
    assert pickle.loads(pickle.dumps(plain))[1] == 1


@pytest.mark.parametrize("clock", [None, CoarseClock(), ManualClock(start=7.0)])
def test_pickle_and_deepcopy_with_compiled_clocks(clock):
    import pickle

    cache = TTLCache(4, 10, clock=clock)
    cache["k"] = ["v"]
    for duplicate in (pickle.loads(pickle.dumps(cache)), copy.deepcopy(cache)):
        assert contents(duplicate) == [("k", ["v"])] and repr(duplicate.timer) == repr(cache.timer)
        assert duplicate["k"] is not cache["k"]
    if isinstance(clock, ManualClock):
        duplicate.timer.advance(10)         # the copy's clock is its own
        assert "k" not in duplicate and "k" in cache


def test_repr_matches_cachetools():
    ours, theirs = TTLCache(3, 10, timer=Timer()), cachetools.TTLCache(3, 10, timer=Timer())
    for cache in (ours, theirs):
        cache["x"] = 1
        cache[2] = "y"
    assert repr(ours) == repr(theirs) == "TTLCache({'x': 1, 2: 'y'}, maxsize=3, currsize=2)"


# -- time: exact boundaries and clocks ----------------------------------------------------

def test_expiry_boundary_in_nanoseconds():
    clock = ManualClock(start=5.0)
    cache = TTLCache(10, 600, clock=clock)
    cache["k"] = "v"                        # expires at 605 s exactly
    clock.set_ns(605 * NS - 1)
    assert cache["k"] == "v" and "k" in cache and cache.get("k") == "v"
    clock.set_ns(605 * NS)
    assert "k" not in cache and cache.get("k") is None
    with pytest.raises(KeyError):
        cache["k"]
    assert cache.expire() == [("k", "v")] and len(cache) == 0


def test_ttl_zero_and_infinite():
    clock = ManualClock()
    never = TTLCache(2, math.inf, clock=clock)
    at_once = TTLCache(2, 0, clock=clock)
    never["a"] = at_once["a"] = 1
    clock.advance(1e9)
    assert never["a"] == 1 and "a" not in at_once


def test_timer_and_clock_choices():
    assert repr(TTLCache(1, 1).timer) == "<timer of a TTLCache: MonotonicClock()>"
    assert repr(TTLCache(1, 1, timer=time.monotonic).timer) == repr(TTLCache(1, 1).timer)
    coarse = CoarseClock()
    assert repr(TTLCache(1, 1, clock=coarse).timer) == f"<timer of a TTLCache: {coarse!r}>"
    assert repr(TTLCache(1, 1, timer=coarse).timer) == f"<timer of a TTLCache: {coarse!r}>"
    manual = ManualClock(start=3.0)
    cache = TTLCache(1, 1, timer=manual)
    assert cache.timer() == 3.0 and cache.timer.now_ns == 3 * NS   # attributes: the clock's
    cache["a"] = 1
    manual.advance(1)
    assert "a" not in cache
    real = TTLCache(4, 60)
    real["a"] = 1
    assert real["a"] == 1 and abs(real.timer() - time.monotonic()) < 1.0
    with pytest.raises(TypeError):
        TTLCache(1, 1, timer=Timer(), clock=manual)
    with pytest.raises(TypeError):
        TTLCache(1, 1, clock=time.monotonic)
    with pytest.raises(TypeError):
        TTLCache(1, 1, timer=42)


def test_expire_with_an_explicit_time():
    clock = ManualClock()
    cache = TTLCache(4, 2, clock=clock)
    cache["a"] = 1
    clock.advance(1)
    cache["b"] = 2
    assert cache.expire(1.5) == []
    assert cache.expire(2.0) == [("a", 1)]
    assert cache.expire(10) == [("b", 2)]


# -- cache.timer, datetime time, getsizeof, cachetools.Cache: as cachetools has them --------

def test_timer_block_freezes_a_compiled_clock():
    clock = ManualClock(start=10.0)
    cache = TTLCache(4, 5, clock=clock)
    cache["a"] = 1                          # expires at 15
    with cache.timer as now:
        assert now == 10.0
        clock.set(20.0)
        assert cache.timer() == 10.0        # frozen: "a" is still alive in here
        assert cache["a"] == 1 and "a" in cache and cache.get("a") == 1 and len(cache) == 1
        cache["b"] = 2                      # set at the frozen 10: expires at 15
        with cache.timer as inner:
            assert inner == 10.0            # a nested block sees the outer time
        assert cache.timer() == 10.0
    assert cache.timer() == 20.0            # after the block: the clock again
    assert "a" not in cache and "b" not in cache and len(cache) == 0


def test_timer_block_calls_a_timer_once_and_returns_its_value():
    timer = Timer(auto=True)                # moves on every call
    cache = TTLCache(4, 3, timer=timer)
    with cache.timer as now:
        assert now == 1 and type(now) is int
        cache[1] = 1
        cache[2] = 2
        assert cache.get(1) == 1 and 2 in cache and len(cache) == 2 and cache.timer() == 1
        assert timer.time == 1              # nothing in the block called the timer again
    assert cache.timer() == 2
    assert cache.expire(4) == [(1, 1), (2, 2)]      # both set at 1 with ttl 3


def test_timer_attributes_are_the_wrapped_timers():
    timer = Timer()
    cache = TTLCache(2, 1, timer=timer)
    cache.timer.tick()
    assert timer.time == 1 and cache.timer.time == 1 and cache.timer.auto is False
    with pytest.raises(AttributeError):
        cache.timer.no_such_attribute
    manual = ManualClock()
    clocked = TTLCache(2, 1, clock=manual)
    clocked.timer.advance(2.5)
    assert manual.now_ns == 2_500_000_000 and clocked.timer() == 2.5


def test_a_copy_has_a_timer_of_its_own():
    clock = ManualClock()
    source = TTLCache(4, 2, clock=clock)
    source["a"] = 1                         # expires at 2
    duplicate = copy.copy(source)
    with source.timer:
        clock.advance(2)                    # the clock itself is shared
        assert "a" in source and "a" not in duplicate
    assert "a" not in source


def test_timer_misuse_is_harmless():
    import pickle

    clock = ManualClock()
    cache = TTLCache(2, 1, clock=clock)
    cache.timer.__exit__(None, None, None)  # an exit without an enter changes nothing
    clock.advance(5)
    assert cache.timer() == 5.0
    assert pickle.loads(pickle.dumps(cache.timer))() == 5.0   # a copy of the cache's timer
    for args in [(), (None,), (clock,)]:
        with pytest.raises(TypeError):
            type(cache.timer)(*args)        # a timer belongs to a cache


BASE = datetime(2026, 1, 1, 12, 0, 0)


class DatetimeTimer:
    """A datetime.now that the test moves."""

    def __init__(self):
        self.now = BASE

    def __call__(self):
        return self.now


def test_datetime_timer_with_a_timedelta_ttl():
    timer = DatetimeTimer()
    cache = TTLCache(2, timedelta(seconds=10), timer=timer)
    cache["a"] = 1                                          # expires at 12:00:10
    timer.now = BASE + timedelta(seconds=5)
    cache["b"] = 2                                          # expires at 12:00:15
    assert cache.ttl == timedelta(seconds=10) and cache.timer() == timer.now
    timer.now = BASE + timedelta(seconds=10) - timedelta(microseconds=1)
    assert cache["a"] == 1 and "a" in cache and cache.get("a") == 1
    timer.now = BASE + timedelta(seconds=10)
    assert "a" not in cache and cache.get("a") is None and list(cache) == ["b"]
    with pytest.raises(KeyError):
        cache["a"]
    cache["c"] = 3                          # "a" goes first: it has expired (expires 12:00:20)
    assert contents(cache) == [("b", 2), ("c", 3)]
    assert cache["b"] == 2                  # "c" is now the least recently used
    cache["d"] = 4                          # full, none expired: "c" goes
    assert contents(cache) == [("b", 2), ("d", 4)]
    assert cache.expire(BASE + timedelta(seconds=15)) == [("b", 2)]
    assert cache.expire(BASE + timedelta(seconds=20)) == [("d", 4)]


def test_datetime_items_survive_copy_pickle_and_deepcopy():
    import pickle

    timer = DatetimeTimer()
    cache = TTLCache(3, timedelta(seconds=10), timer=timer, getsizeof=len)
    cache["a"] = "x"                        # expires at 12:00:10
    timer.now += timedelta(seconds=4)
    cache["b"] = "yy"                       # expires at 12:00:14
    for duplicate in (copy.copy(cache), pickle.loads(pickle.dumps(cache)), copy.deepcopy(cache)):
        assert contents(duplicate) == [("a", "x"), ("b", "yy")] and duplicate.currsize == 3
        assert duplicate.expire(BASE + timedelta(seconds=10)) == [("a", "x")]
        assert duplicate.expire(BASE + timedelta(seconds=14)) == [("b", "yy")]
        duplicate._check_invariants()
    assert contents(cache) == [("a", "x"), ("b", "yy")]


def test_aware_datetimes_compare_by_instant():
    plus2 = timezone(timedelta(hours=2))
    timer = DatetimeTimer()
    timer.now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    cache = TTLCache(2, timedelta(minutes=1), timer=timer)
    cache["a"] = 1                                              # expires at 12:01 UTC
    timer.now = datetime(2026, 1, 1, 14, 0, 59, tzinfo=plus2)   # 12:00:59 UTC
    assert "a" in cache
    timer.now = datetime(2026, 1, 1, 14, 1, tzinfo=plus2)       # 12:01 UTC
    assert "a" not in cache


def test_any_time_type_that_adds_and_compares():
    """Exact rationals: a float timeline could not tell 1/3 from the next double."""
    now = [Fraction(0)]
    cache = TTLCache(2, Fraction(1, 3), timer=lambda: now[0])
    cache["a"] = 1                          # expires at exactly 1/3
    now[0] = Fraction(1, 3) - Fraction(1, 10**30)
    assert cache["a"] == 1
    now[0] = Fraction(1, 3)
    assert "a" not in cache and cache.expire() == [("a", 1)]


def test_datetime_overflow_raises_and_changes_nothing():
    timer = DatetimeTimer()
    cache = TTLCache(2, timedelta(seconds=10), timer=timer)
    cache["old"] = 1
    timer.now = datetime.max - timedelta(seconds=5)     # "old" has expired, still stored
    with pytest.raises(OverflowError):
        cache["new"] = 2                                # datetime.max + 10 s
    with pytest.raises(OverflowError):
        cache.setdefault("new", 2)
    assert cache.expire(datetime.max) == [("old", 1)]   # it was still there
    assert len(cache) == 0


def test_incomparable_times_raise_and_change_nothing():
    timer = DatetimeTimer()
    cache = TTLCache(2, timedelta(seconds=10), timer=timer)
    cache["a"] = 1
    with pytest.raises(TypeError):
        cache.expire(datetime(2030, 1, 1, tzinfo=timezone.utc))     # aware against naive
    assert contents(cache) == [("a", 1)]


@pytest.mark.parametrize("ttl, timer, error", [
    (timedelta(seconds=1), None, TypeError),            # a compiled clock counts seconds
    (timedelta(seconds=1), time.monotonic, TypeError),
    (timedelta(seconds=-1), DatetimeTimer(), ValueError),
    (None, DatetimeTimer(), TypeError),
    (True, DatetimeTimer(), TypeError),
])
def test_bad_ttl_for_the_time_source(ttl, timer, error):
    with pytest.raises(error):
        TTLCache(2, ttl, timer=timer)


def test_a_time_comparison_that_changes_the_cache_raises():
    class Meddling:
        """A time whose `<` writes into the cache once armed."""

        armed = False

        def __init__(self, t):
            self.t = t

        def __add__(self, ttl):
            return Meddling(self.t + ttl)

        def __lt__(self, other):
            if Meddling.armed:
                Meddling.armed = False
                cache["intruder"] = 0
            return self.t < other.t

    cache = TTLCache(4, Decimal(5), timer=lambda: Meddling(Decimal(0)))
    cache["a"] = 1
    Meddling.armed = True
    with pytest.raises(RuntimeError, match="changed while comparing"):
        "a" in cache
    cache._check_invariants()
    assert sorted(cache) == ["a", "intruder"]


def test_an_expiry_referencing_the_cache_is_collected():
    class Stamp:
        """A time that carries whatever its ttl carries into the expiry."""

        def __init__(self, t, payload=None):
            self.t, self.payload = t, payload

        def __add__(self, ttl):
            return Stamp(self.t + ttl.t, ttl.payload)

        def __lt__(self, other):
            return self.t < other.t

    ttl = Stamp(5)
    cache = TTLCache(4, ttl, timer=lambda: Stamp(0))
    ttl.payload = cache
    cache["k"] = "v"                        # the expiry object refers to the cache
    ttl.payload = None                      # ...and nothing else does
    ref = weakref.ref(cache)
    del cache
    gc.collect()
    assert ref() is None


def test_init_again_changes_the_time_source():
    cache = TTLCache(2, 10)
    cache["a"] = 1
    cache.__init__(2, timedelta(seconds=10), timer=DatetimeTimer())
    assert len(cache) == 0
    cache["b"] = 2
    assert contents(cache) == [("b", 2)]
    cache.__init__(2, 10)
    assert len(cache) == 0
    cache["c"] = 3
    assert contents(cache) == [("c", 3)]


@pytest.mark.parametrize("to_datetime", [True, False])
@pytest.mark.parametrize("stores_an_item", [True, False])
def test_switching_time_source_in_the_middle_of_a_set_is_refused(to_datetime, stores_an_item):
    """A key's __eq__ that re-initialises the cache with the other kind of ttl while a set
    looks it up: the set raises instead of storing an expiry of the wrong kind."""
    timer = DatetimeTimer()
    settings = [(4, 60), (4, timedelta(seconds=60), timer)]
    if not to_datetime:
        settings.reverse()

    class Switching:
        armed = False

        def __hash__(self):
            return 1

        def __eq__(self, other):
            if Switching.armed:
                Switching.armed = False
                cache.__init__(*settings[1])
                if stores_an_item:
                    cache["filler"] = 0
            return isinstance(other, Switching)

    cache = TTLCache(*settings[0])
    cache[Switching()] = 1
    Switching.armed = True
    with pytest.raises(RuntimeError, match="re-initialised"):
        cache[Switching()] = 2
    cache._check_invariants()
    assert list(cache) == (["filler"] if stores_an_item else [])
    cache["after"] = 3
    assert cache["after"] == 3 and cache.ttl == settings[1][1]


def test_getsizeof_is_the_callable_given():
    assert TTLCache(2, 1, getsizeof=len).getsizeof is len
    unweighted = TTLCache(2, 1)
    assert unweighted.getsizeof is TTLCache.getsizeof and unweighted.getsizeof(object()) == 1

    class Weighted(TTLCache):
        @staticmethod
        def getsizeof(value):
            return value

    weighted = Weighted(5, 60)
    weighted[1], weighted[2] = 3, 2
    assert weighted.currsize == 5 and weighted.getsizeof(4) == 4


def test_empty_popitem_raises_without_exception_context():
    cache = TTLCache(2, 1)
    try:
        raise ValueError("being handled")
    except ValueError:
        with pytest.raises(KeyError) as info:
            cache.popitem()
    assert info.value.args == ("TTLCache is empty",)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_cachetools_cache_to_cachetools():
    assert issubclass(TTLCache, cachetools.Cache) and isinstance(TTLCache(2, 1), cachetools.Cache)
    square = cachetools.cached(TTLCache(2, 60), info=True)(lambda x: x * x)
    assert square(3) == square(3) == 9
    assert square.cache_info() == (1, 1, 2, 1)          # hits, misses, maxsize, currsize


@pytest.mark.parametrize("first", ["fastcore", "cachetools"])
def test_registered_whichever_is_imported_first(first, tmp_path):
    script = f"""
import importlib, sys
if {first!r} == "fastcore":
    import fastcore
    assert "cachetools" not in sys.modules, "importing fastcore imported cachetools"
    import cachetools
else:
    import cachetools
    import fastcore
assert isinstance(fastcore.TTLCache(2, 1), cachetools.Cache)
assert cachetools.__spec__.loader is cachetools.__loader__
assert type(cachetools.__loader__).__name__ == "SourceFileLoader"
reloaded = importlib.reload(cachetools)
assert isinstance(fastcore.TTLCache(2, 1), reloaded.Cache)
print("registered")
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "registered"


# -- bad input raises and changes nothing -------------------------------------------------

@pytest.mark.parametrize("maxsize, ttl, error", [
    (-1, 1, ValueError), (float("nan"), 1, ValueError), ("10", 1, TypeError),
    (10, -1, ValueError), (10, float("nan"), ValueError), (10, "1", TypeError),
    (10, None, TypeError),
])
def test_bad_constructor_arguments(maxsize, ttl, error):
    with pytest.raises(error):
        TTLCache(maxsize, ttl)


def test_bad_getsizeof_argument():
    with pytest.raises(TypeError):
        TTLCache(10, 1, getsizeof=3)


def expired_state():
    """A full cache holding one expired item (still stored) and two live ones."""
    clock = ManualClock()
    cache = TTLCache(3, 10, clock=clock, getsizeof=lambda v: v if isinstance(v, int) else -1)
    cache["old"] = 1
    clock.advance(5)
    cache["a"], cache["b"] = 1, 1
    clock.advance(5)                        # "old" is expired but not removed yet
    return cache, clock


@pytest.mark.parametrize("key, value, error", [
    ([1], 1, TypeError),                    # unhashable key
    ("big", 4, ValueError),                 # larger than maxsize
    ("neg", "x", ValueError),               # negative size
    ("nan", float("nan"), ValueError),
])
def test_bad_item_changes_nothing(key, value, error):
    cache, clock = expired_state()
    with pytest.raises(error):
        cache[key] = value
    assert cache.expire() == [("old", 1)]   # the expired item was still there
    assert contents(cache) == [("a", 1), ("b", 1)] and cache.currsize == 2


def test_maxsize_zero_stores_nothing():
    cache = TTLCache(0, 10)
    with pytest.raises(ValueError, match="value too large"):
        cache["a"] = 1
    assert len(cache) == 0


def test_unhashable_lookups_raise_type_error():
    cache = TTLCache(2, 10)
    for call in (cache.__getitem__, cache.__contains__, cache.get, cache.pop,
                 cache.__delitem__):
        with pytest.raises(TypeError):
            call([])


def test_a_raising_eq_changes_nothing():
    class Bad:
        def __hash__(self):
            return 7

        def __eq__(self, other):
            raise RuntimeError("no")

    cache = TTLCache(4, 10)
    cache[Bad()] = 1
    with pytest.raises(RuntimeError):
        cache[Bad()] = 2
    assert list(cache.values()) == [1] and cache.currsize == 1


# -- reentrancy: Python code running in the middle of an update ---------------------------

def test_value_del_that_writes_into_the_cache():
    cache = TTLCache(2, 10)

    class Reenter:
        def __del__(self):
            cache["from_del"] = len(cache)

    cache["a"] = Reenter()
    cache["a"] = "replaced"                 # the old value's __del__ runs after the update
    assert cache["from_del"] == 1
    cache["b"] = Reenter()
    cache["c"] = "evicts b"                 # eviction DECREF runs __del__ again
    assert len(cache) == 2 and cache.currsize == 2 and len(list(cache)) == 2


def test_key_eq_that_mutates_the_cache():
    cache = TTLCache(64, 10)

    class Mutating:
        armed = False

        def __init__(self, n):
            self.n = n

        def __hash__(self):
            return 1

        def __eq__(self, other):
            if Mutating.armed:
                Mutating.armed = False
                for i in range(40):         # forces the table to grow mid-lookup
                    cache[f"filler{i}"] = i
            return isinstance(other, Mutating) and other.n == self.n

    cache[Mutating(1)] = "one"
    cache[Mutating(2)] = "two"
    Mutating.armed = True
    assert cache[Mutating(2)] == "two"
    assert len(cache) == 42 and len(list(cache)) == 42
    cache._check_invariants()


@pytest.mark.parametrize("Cache", [cachetools.TTLCache, fastcore.TTLCache])
def test_clock_read_where_cachetools_reads_it(Cache):
    """Keys whose __hash__/__eq__ move a ManualClock see cachetools' read order: get() reads
    the time before the lookup, cache[key] after it, a set before hashing the key."""
    clock = ManualClock()
    cache = Cache(8, 1, clock=clock) if Cache is fastcore.TTLCache else Cache(8, 1, timer=clock)

    class Moving:
        """Equal by name; the next __hash__ or __eq__ call moves the clock once."""
        on_hash = on_eq = 0.0

        def __init__(self, name):
            self.name = name

        def __hash__(self):
            clock.advance(Moving.on_hash)
            Moving.on_hash = 0.0
            return hash(self.name)

        def __eq__(self, other):
            clock.advance(Moving.on_eq)
            Moving.on_eq = 0.0
            return isinstance(other, Moving) and other.name == self.name

    cache[Moving("a")] = "a"                  # at 0: expires at 1
    clock.set(0.5)
    Moving.on_eq = 0.6
    assert cache.get(Moving("a")) == "a"      # read at 0.5, then the lookup moves it to 1.1
    cache[Moving("b")] = "b"                  # at 1.1: expires at 2.1
    clock.set(1.5)
    Moving.on_eq = 0.7
    with pytest.raises(KeyError):
        cache[Moving("b")]                    # the lookup moves it to 2.2, then it is read
    Moving.on_hash = 0.7
    cache[Moving("c")] = "c"                  # read at 2.2 (expires 3.2), then hashed
    clock.set(3.25)
    assert cache.get(Moving("c")) is None     # hashing first would have kept it to 3.9


def test_values_referencing_the_cache_are_collected():
    class Node:
        pass

    cache = TTLCache(4, 10)
    node = Node()
    node.cache = cache
    cache["self"] = node
    ref = weakref.ref(node)
    del node, cache
    gc.collect()
    assert ref() is None


def test_a_subclass_cycle_through_getsizeof_is_collected():
    class Weighted(TTLCache):
        def getsizeof(self, value):
            return 1

    cache = Weighted(4, 10)
    cache["self"] = cache
    ref = weakref.ref(cache)
    del cache
    gc.collect()
    assert ref() is None


# -- threads ------------------------------------------------------------------------------

@pytest.mark.parametrize("sized", [False, True])
def test_four_threads_mixing_every_operation(sized):
    clock = ManualClock()
    cache = TTLCache(16, 0.05, clock=clock, getsizeof=(lambda v: 1 + v % 2) if sized else None)
    errors = []
    clock_lock = threading.Lock()           # ManualClock.advance is not atomic across threads
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(6000):
                key = rng.randrange(40)
                op = rng.randrange(13)
                try:
                    if op == 0:
                        cache[key] = key
                    elif op == 1:
                        cache[key]
                    elif op == 2:
                        cache.get(key)
                    elif op == 3:
                        del cache[key]
                    elif op == 4:
                        cache.pop(key, None)
                    elif op == 5:
                        cache.setdefault(key, key)
                    elif op == 6:
                        cache.popitem()
                    elif op == 7:
                        cache.expire()
                    elif op == 8:
                        list(cache.items())
                    elif op == 9:
                        cache.update({key: key, key + 1: key})
                    elif op == 10:
                        len(cache), cache.currsize, key in cache
                    elif op == 11:
                        with clock_lock:
                            clock.advance(0.001)
                    elif rng.random() < 0.02:
                        cache.clear()
                except KeyError:
                    pass
        except BaseException as error:      # anything else is a failure
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert errors == []
    cache._check_invariants()
    items = contents(cache)
    assert len(cache) == len(items) == len(set(k for k, _ in items))
    expected_size = sum(1 + v % 2 for _, v in items) if sized else len(items)
    assert cache.currsize == expected_size <= 16


# -- growth, memory, agreement at scale ---------------------------------------------------

def test_growth_and_deletion_agree_with_cachetools_at_scale():
    rng = random.Random(7)
    clock = ManualClock()
    ours = TTLCache(1000, 5, clock=clock)
    theirs = cachetools.TTLCache(1000, 5, timer=clock)
    for step in range(30000):
        key = rng.randrange(3000)
        op = rng.random()
        if op < 0.5:
            ours[key] = theirs[key] = step
        elif op < 0.8:
            assert ours.get(key) == theirs.get(key)
        elif op < 0.95:
            assert ours.pop(key, None) == theirs.pop(key, None)
        else:
            clock.advance(0.25)
    ours._check_invariants()
    assert contents(ours) == contents(theirs)
    assert ours.expire(clock() + 10) == theirs.expire(clock() + 10)


def test_memory_is_bounded_by_maxsize():
    cache = TTLCache(1000, 600)
    for i in range(1000):
        cache[i] = i
    full = cache.memory_bytes()
    assert 64 * 1000 <= full <= 100 * 1024 + 64 * 1024 + 4096
    for i in range(1000, 50000):            # a flood of unique keys
        cache[i] = i
    # Only the list of references awaiting release may grow, by a few hundred bytes.
    assert full <= cache.memory_bytes() <= full + 1024 and len(cache) == 1000


def test_the_extension_is_compiled():
    module = sys.modules[TTLCache.__module__]
    assert module.__file__.endswith((".so", ".pyd"))
