"""fastcore.TTLCache against the real cachetools.TTLCache, side by side.

cachetools is the reference: a hypothesis state machine drives both caches with the same
random operations on one shared time source and compares every result (or the exception
type and arguments), what iteration yields and in which order, len, currsize and what
expire() returns. Variants: fastcore on a ManualClock with cachetools reading the same clock
(times kept dyadic so float seconds and integer ns agree exactly), both on the same
float-returning timer callable, both on a datetime-returning timer with a timedelta ttl,
getsizeof-weighted, and a subclass with __missing__ and an eviction-logging popitem (the
cachetools documentation's recipe).

The one intended difference: bad input (an unhashable key, an item larger than maxsize)
changes nothing in fastcore, while cachetools has already removed expired items when it
raises. The reference adapter below raises those errors before calling cachetools.
"""

from datetime import datetime, timedelta

import cachetools
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fastcore
from fastcore._core.ttlcache import TTLCache as CompiledTTLCache


class Collide:
    """A key whose hash always collides, with equality on `n`: exercises probing by __eq__."""

    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n

    def __hash__(self):
        return 12345

    def __eq__(self, other):
        return isinstance(other, Collide) and other.n == self.n

    def __repr__(self):
        return f"Collide({self.n})"


def fresh_str(n):
    # Equal but not identical objects: lookups must compare, not only test identity.
    return "".join(["k", str(n)])


KEYS = st.one_of(st.integers(0, 7), st.integers(0, 4).map(fresh_str),
                 st.integers(0, 3).map(Collide))
VALUES = st.integers(0, 6)


class FloatTimer:
    """A timer callable both caches share: returns float seconds, moved by the test."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class DatetimeTimer:
    """A timer callable both caches share: returns datetimes, moved by the test."""

    def __init__(self):
        self.t = datetime(2026, 1, 1)

    def __call__(self):
        return self.t


class Reference:
    """cachetools.TTLCache with fastcore's bad-input rule: such calls raise and change nothing."""

    def __init__(self, cache, getsizeof):
        self.cache = cache
        self.getsizeof = getsizeof

    def check_item(self, key, value):
        hash(key)
        size = self.getsizeof(value) if self.getsizeof else 1
        if size > self.cache.maxsize:
            raise ValueError("value too large")


def outcome(call, *args):
    try:
        return ("ok", call(*args))
    except (KeyError, ValueError, TypeError) as error:
        return (type(error).__name__, error.args)


class EvictionLog:
    """Mixin for both sides: __missing__ computes a value; popitem() records evictions."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.evicted = []

    def __missing__(self, key):
        return ("missing", repr(key))

    def popitem(self):
        key, value = super().popitem()
        self.evicted.append((key, value))
        return key, value


class LoggedCachetools(EvictionLog, cachetools.TTLCache):
    pass


class LoggedFastcore(EvictionLog, fastcore.TTLCache):
    pass


# Messages and reprs name the class: give both sides one name.
LoggedCachetools.__name__ = LoggedFastcore.__name__ = "LoggedCache"


class TTLCacheVersusCachetools(RuleBasedStateMachine):
    """Subclasses pick the time source, getsizeof and classes through `variant`."""

    variant = "clock"

    @initialize(maxsize=st.integers(0, 5), ttl=st.sampled_from([0, 1, 2.5, 4, 10]))
    def build(self, maxsize, ttl):
        getsizeof = None
        if self.variant == "sized":
            getsizeof = lambda value: value % 4  # noqa: E731 - sizes 0..3, maxsize up to 5
        ours_class, theirs_class = fastcore.TTLCache, cachetools.TTLCache
        if self.variant == "subclass":
            ours_class, theirs_class = LoggedFastcore, LoggedCachetools
        if self.variant in ("timer", "datetime"):
            if self.variant == "datetime":
                self.timer, ttl = DatetimeTimer(), timedelta(seconds=ttl)
            else:
                self.timer = FloatTimer()
            self.ours = ours_class(maxsize, ttl, timer=self.timer, getsizeof=getsizeof)
            theirs = theirs_class(maxsize, ttl, timer=self.timer, getsizeof=getsizeof)
        else:
            self.clock = fastcore.ManualClock()
            self.ours = ours_class(maxsize, ttl, clock=self.clock, getsizeof=getsizeof)
            theirs = theirs_class(maxsize, ttl, timer=self.clock, getsizeof=getsizeof)
        self.ref = Reference(theirs, getsizeof)
        self.theirs = theirs

    def now(self):
        return self.timer() if self.variant in ("timer", "datetime") else self.clock()

    def later(self, seconds):
        """The time `seconds` from now on the variant's timeline."""
        if self.variant == "datetime":
            return self.now() + timedelta(seconds=seconds)
        return self.now() + seconds

    def same(self, ours, theirs):
        assert ours == theirs

    # -- time ------------------------------------------------------------------------

    @rule(steps=st.integers(0, 12))
    def advance(self, steps):
        if self.variant == "timer":
            self.timer.t += steps * 0.3   # not dyadic: both sides compare the same doubles
        elif self.variant == "datetime":
            self.timer.t += timedelta(seconds=steps * 0.3)
        else:
            self.clock.advance(steps * 0.25)

    # -- writing ---------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES)
    def setitem(self, key, value):
        def theirs(k, v):
            self.ref.check_item(k, v)
            self.theirs[k] = v
        self.same(outcome(self.ours.__setitem__, key, value), outcome(theirs, key, value))

    @rule(value=VALUES)
    def set_unhashable(self, value):
        ours = outcome(self.ours.__setitem__, [1], value)
        assert ours[0] == "TypeError"

    @rule(key=KEYS)
    def delitem(self, key):
        self.same(outcome(self.ours.__delitem__, key), outcome(self.theirs.__delitem__, key))

    @rule(key=KEYS, default=st.sampled_from([None, -1, "absent"]))
    def pop(self, key, default):
        if default == "absent":
            self.same(outcome(self.ours.pop, key), outcome(self.theirs.pop, key))
        else:
            self.same(outcome(self.ours.pop, key, default),
                      outcome(self.theirs.pop, key, default))

    @rule(key=KEYS, value=VALUES)
    def setdefault(self, key, value):
        def theirs(k, v):
            if k not in self.theirs:
                self.ref.check_item(k, v)
            return self.theirs.setdefault(k, v)
        self.same(outcome(self.ours.setdefault, key, value), outcome(theirs, key, value))

    @rule()
    def popitem(self):
        self.same(outcome(self.ours.popitem), outcome(self.theirs.popitem))

    @rule(items=st.lists(st.tuples(st.integers(0, 7), VALUES), max_size=4))
    def update(self, items):
        def theirs(pairs):
            for k, v in pairs:
                self.ref.check_item(k, v)
                self.theirs[k] = v
        self.same(outcome(self.ours.update, items), outcome(theirs, items))

    @rule()
    def clear(self):
        self.ours.clear()
        self.theirs.clear()

    @rule(ahead=st.integers(-2, 8))
    def expire(self, ahead):
        if ahead < 0:
            self.same(self.ours.expire(), self.theirs.expire())
        else:
            t = self.later(ahead * 0.25)
            self.same(self.ours.expire(t), self.theirs.expire(t))

    # -- reading ---------------------------------------------------------------------

    @rule(key=KEYS)
    def getitem(self, key):
        self.same(outcome(self.ours.__getitem__, key), outcome(self.theirs.__getitem__, key))

    @rule(key=KEYS)
    def get(self, key):
        self.same(self.ours.get(key), self.theirs.get(key))

    @rule(key=KEYS)
    def contains(self, key):
        self.same(key in self.ours, key in self.theirs)

    @rule()
    def iterate(self):
        self.same(list(self.ours), list(self.theirs))

    @rule()
    def views(self):
        # values()/items() call __getitem__, which marks each key as recently used.
        self.same(list(self.ours.items()), list(self.theirs.items()))
        self.same(list(self.ours.values()), list(self.theirs.values()))

    @rule()
    def sizes(self):
        self.same(len(self.ours), len(self.theirs))
        self.same(self.ours.currsize, self.theirs.currsize)

    @rule()
    def representation(self):
        self.same(repr(self.ours).split("(", 1)[1], repr(self.theirs).split("(", 1)[1])

    @invariant()
    def structure_is_consistent(self):
        if hasattr(self, "ours"):
            self.ours._check_invariants()

    @invariant()
    def evictions_agree(self):
        if self.variant == "subclass":
            assert self.ours.evicted == self.theirs.evicted

    def teardown(self):
        if hasattr(self, "ours"):
            self.same(list(self.ours.items()), list(self.theirs.items()))
            self.same(self.ours.currsize, self.theirs.currsize)
            self.same(self.ours.expire(self.later(100)), self.theirs.expire(self.later(100)))


class OnManualClock(TTLCacheVersusCachetools):
    variant = "clock"


class OnTimerCallable(TTLCacheVersusCachetools):
    variant = "timer"


class OnDatetimeTimer(TTLCacheVersusCachetools):
    variant = "datetime"


class WithGetsizeof(TTLCacheVersusCachetools):
    variant = "sized"


class AsSubclass(TTLCacheVersusCachetools):
    variant = "subclass"


TestOnManualClock = OnManualClock.TestCase
TestOnTimerCallable = OnTimerCallable.TestCase
TestOnDatetimeTimer = OnDatetimeTimer.TestCase
TestWithGetsizeof = WithGetsizeof.TestCase
TestAsSubclass = AsSubclass.TestCase


def test_the_compiled_class_is_the_public_one():
    assert fastcore.TTLCache is CompiledTTLCache
    assert CompiledTTLCache.__module__ == "fastcore._core.ttlcache"
    assert type(CompiledTTLCache.__getitem__).__name__ == "wrapper_descriptor"


@pytest.mark.parametrize("maxsize", [1, 3])
def test_a_long_scripted_sequence_agrees(maxsize):
    """A deterministic mix at a boundary-heavy ttl, for quick failures without hypothesis."""
    clock = fastcore.ManualClock()
    ours = fastcore.TTLCache(maxsize, 1, clock=clock)
    theirs = cachetools.TTLCache(maxsize, 1, timer=clock)
    for step in range(200):
        key = step % 5
        ours[key] = theirs[key] = step
        if step % 3 == 0:
            clock.advance(0.5)
        assert outcome(ours.__getitem__, (step * 7) % 5) == outcome(theirs.__getitem__,
                                                                     (step * 7) % 5)
        assert list(ours.items()) == list(theirs.items())
