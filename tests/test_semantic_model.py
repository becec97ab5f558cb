"""SemanticCache against the naive model of tests/model/semantic.py, under one ManualClock.

Every lookup's state, value, age and negative flag, every fallback, delete, expire and
membership answer, and after every step the stored keys in queue order, currsize and the
counters must agree.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fastcore
from fastcore import Freshness, Intent, ManualClock, SemanticCache
from model.semantic import SemanticModel

INTENTS = {
    "default": (0, True, True),
    "ctx": (15, True, False),
    "strict": (0, False, False),
}
keys = st.integers(0, 7)
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


class SemanticMachine(RuleBasedStateMachine):
    @initialize(maxsize=st.integers(1, 6), weighted=st.booleans(),
                only_default=st.booleans())
    def setup(self, maxsize, weighted, only_default):
        self.clock = ManualClock(1000)
        chosen = {"default": INTENTS["default"]} if only_default else INTENTS
        self.getsizeof = weight if weighted else None
        self.maxsize = max(maxsize, 3) if weighted else maxsize
        self.cache = SemanticCache(
            self.maxsize, default=Freshness(10, 3, 7), negative_ttl=4,
            intents=[Intent(n, s, w, e) for n, (s, w, e) in chosen.items()],
            getsizeof=self.getsizeof, clock=self.clock)
        self.model = SemanticModel(self.maxsize, (10, 3, 7, False), 4, chosen, "default")
        self.names = list(chosen)

    def now(self):
        return self.clock.now_ns

    def intent(self, name):
        return name if name in self.names or name is None else None

    @rule(seconds=st.sampled_from([0.5, 1, 2, 3, 7, 10, 25, 60]))
    def advance(self, seconds):
        self.clock.advance(seconds)

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
        assert (got.value if got is not None else None) == expected

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
