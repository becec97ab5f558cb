"""SemanticCache against the naive model of tests/model/semantic.py, under one ManualClock.

Every lookup's state, value, age and negative flag, every get_or_load result or error
(inline loads, stale-if-error, stale answers queueing one background refresh per key, run
later by a manual executor), every fallback, delete, expire and membership answer, and after
every step the stored keys in queue order, currsize and the counters must agree.
"""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fastcore
from fastcore import Freshness, Intent, ManualClock, SemanticCache
from model.semantic import NO_FALLBACK, SemanticModel

ERROR = LookupError("the loader failed")

INTENTS = {
    "default": (0, True, True),
    "ctx": (15, True, False),
    "strict": (0, False, False),
}
keys = st.integers(0, 2)
intents = st.sampled_from([None, "default", "ctx", "strict"])
freshness = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([0, 1, 5, 10]), st.sampled_from([0, 3, 20]),
              st.sampled_from([0, 7, 50]), st.booleans(), st.sampled_from([0, 2]),
              st.booleans()),
)
values = st.text(alphabet="ab", min_size=1, max_size=3)


def weight(value):
    return len(value)


class ManualExecutor:
    """Background refreshes wait here until the run_refreshes rule runs them, in order."""

    def __init__(self):
        self.jobs = []

    def submit(self, fn, *args):
        self.jobs.append((fn, args))

    def run_all(self):
        jobs, self.jobs = self.jobs, []
        for fn, args in jobs:
            fn(*args)


class SemanticMachine(RuleBasedStateMachine):
    @initialize(maxsize=st.integers(1, 6), weighted=st.booleans(),
                only_default=st.booleans())
    def setup(self, maxsize, weighted, only_default):
        self.clock = ManualClock(1000)
        chosen = {"default": INTENTS["default"]} if only_default else INTENTS
        self.getsizeof = weight if weighted else None
        self.maxsize = max(maxsize, 3) if weighted else maxsize
        self.executor = ManualExecutor()
        self.cache = SemanticCache(
            self.maxsize, default=Freshness(2, 3, 7), negative_ttl=4,
            intents=[Intent(n, s, w, e) for n, (s, w, e) in chosen.items()],
            getsizeof=self.getsizeof, clock=self.clock, executor=self.executor)
        self.model = SemanticModel(self.maxsize, (2, 3, 7, False), 4, chosen, "default")
        self.names = list(chosen)

    def now(self):
        return self.clock.now_ns

    def intent(self, name):
        return name if name in self.names or name is None else None

    @rule(seconds=st.sampled_from([0.5, 1, 2, 3, 5, 8, 12, 30]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(key=keys, offset=st.sampled_from([0, 0.5, 2.999, 3, 6.999, 7, 15, 20]))
    def age_to_window(self, key, offset):
        """Move time to ``max_age + offset`` of a stored entry: onto its window edges."""
        e = self.model.entries.get(key)
        if e is not None:
            target = e.stored + e.fresh + round(offset * 10**9)
            if target > self.now():
                self.clock.set_ns(target)

    @rule(key=keys, value=values, f=freshness)
    def set(self, key, value, f):
        w = self.model.weight_of(value, self.getsizeof)
        fresh = None if f is None else Freshness(f[0], f[1], f[2], must_revalidate=f[3],
                                                 age=f[4], negative=f[5])
        try:
            self.model.set(key, value, f, False, self.now(), w)
        except ValueError:
            before = (self.cache.keys(), self.cache.currsize)
            try:
                self.cache.set(key, value, fresh)
            except fastcore.ValueTooLarge:
                assert (self.cache.keys(), self.cache.currsize) == before
                return
            raise AssertionError("a value larger than maxsize was accepted")
        self.cache.set(key, value, fresh)

    @rule(key=keys)
    def set_negative(self, key):
        w = self.model.weight_of(None, None)
        if self.getsizeof is not None:
            return   # the weigher measures str values; None has no length
        self.model.set(key, None, None, True, self.now(), w)
        self.cache.set_negative(key)

    @rule(key=keys, name=intents)
    def lookup(self, key, name):
        name = self.intent(name)
        got = self.cache.lookup(key, name)
        state, value, age_ns, negative = self.model.lookup(key, name, self.now())
        assert got.state == state
        assert got.value == value
        assert got.negative == negative
        if age_ns is None:
            assert got.age is None
        else:
            assert round(got.age * 1e9) == age_ns

    @rule(key=keys, name=intents)
    def fallback(self, key, name):
        name = self.intent(name)
        got = self.cache._fallback(key, name)
        expected = self.model.fallback(key, name, self.now())
        assert (got.value if got is not None else NO_FALLBACK) == expected

    @rule(key=keys, name=intents, outcome=st.one_of(values, st.just(ERROR)),
          then_refresh=st.booleans())
    def get_or_load(self, key, name, outcome, then_refresh):
        name = self.intent(name)
        now = self.now()
        if key in self.model.pending and self.model.peek(key, name, now) == "MISS":
            return      # this caller would wait for the queued refresh: no second thread here

        def loader(k):
            assert k == key
            if outcome is ERROR:
                raise ERROR
            return outcome

        weight = self.model.weight_of(outcome, self.getsizeof) if outcome is not ERROR else 1
        try:
            expected = self.model.get_or_load(key, name, outcome, now, weight, ERROR)
        except LookupError:
            with pytest.raises(LookupError):
                self.cache.get_or_load(key, loader, intent=name)
        else:
            assert self.cache.get_or_load(key, loader, intent=name) == expected
        if then_refresh:
            self.run_refreshes()

    @rule()
    def run_refreshes(self):
        self.model.run_refreshes(self.now(), lambda v: self.model.weight_of(v, self.getsizeof),
                                 ERROR)
        self.executor.run_all()

    @rule(key=keys)
    def delete(self, key):
        assert self.cache.delete(key) == self.model.delete(key, self.now())

    @rule(key=keys)
    def contains(self, key):
        assert (key in self.cache) == self.model.contains(key, self.now())

    @rule()
    def expire(self):
        assert self.cache.expire() == self.model.expire(self.now())

    @invariant()
    def same_state(self):
        if not hasattr(self, "model"):
            return
        assert self.cache.keys() == self.model.queue
        assert self.cache.currsize == self.model.currsize() <= self.maxsize
        assert len(self.cache) == len(self.model.entries)
        stats = self.cache.stats()
        for name, count in self.model.stats.items():
            assert stats[name] == count, name


# Example counts come from the hypothesis profile (tests/conftest.py).
SemanticMachine.TestCase.settings = settings(deadline=None)
TestSemanticModel = SemanticMachine.TestCase
