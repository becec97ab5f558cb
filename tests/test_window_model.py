"""Differential tests: the compiled sliding windows against tests/model/window.py.

A hypothesis state machine drives a limiter and its model with the same operations under one
ManualClock and compares every field of every Decision, every batch result (allowed and
retry_after) and the key set. Time only moves forward here; dating back is tested by hand in
test_window.py.
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fastcore
from model.window import CostTooHigh, CounterModel, Keyed, ModelDecision, RingModel

LIMITS = [1, 3, 10, 2.5, 100, 1_000_000, 0.75]
WINDOWS_NS = [1_000_000_000, 700_000_003, 60_000_000_000, 1_000_000]
COSTS = [1, 1, 1, 0, 0.5, 2, 0.1, 1 / 3, 2.5, 3, 10, 1e-7, 12, -1.0, float("nan")]
KEYS = ["a", "b", "c", ("tenant", 1), 7]


def as_model(decision) -> ModelDecision:
    return ModelDecision(decision.allowed, decision.remaining, decision.retry_after_ns,
                         decision.reset_after_ns)


class WindowMachine(RuleBasedStateMachine):
    """Shared rules; subclasses build the limiter and its per-key model."""

    def build_pair(self, limit, window_ns):
        raise NotImplementedError

    @initialize(limit=st.sampled_from(LIMITS), window_ns=st.sampled_from(WINDOWS_NS),
                start_ns=st.integers(0, 10**12), slices=st.sampled_from([1, 2, 3, 7, 10, 64]))
    def build(self, limit, window_ns, start_ns, slices):
        self.slices = slices
        self.clock = fastcore.ManualClock()
        self.clock.set_ns(start_ns)
        self.window_ns = window_ns
        self.limiter, self.model = self.build_pair(limit, window_ns)

    def cost_is_bad(self, cost):
        if not cost >= 0:
            return True
        try:
            self.model.make().cost(cost)
        except CostTooHigh:
            return True
        return False

    @rule(fraction=st.integers(0, 300))
    def advance(self, fraction):
        # steps of 1% of a window, up to 3 windows, and sometimes one ns
        self.clock.advance_ns(max(1, self.window_ns * fraction // 100) if fraction else 1)

    @rule(key=st.sampled_from(KEYS), cost=st.sampled_from(COSTS))
    def acquire(self, key, cost):
        if self.cost_is_bad(cost):
            with pytest.raises(ValueError):
                self.limiter.acquire(key, cost)
            return
        expected = self.model.decide(key, cost, self.clock.now_ns)
        assert as_model(self.limiter.acquire(key, cost)) == expected

    @rule(key=st.sampled_from(KEYS), cost=st.sampled_from(COSTS))
    def try_acquire(self, key, cost):
        if self.cost_is_bad(cost):
            with pytest.raises(ValueError):
                self.limiter.try_acquire(key, cost)
            return
        expected = self.model.decide(key, cost, self.clock.now_ns)
        assert self.limiter.try_acquire(key, cost) == expected.allowed

    @rule(key=st.sampled_from(KEYS), cost=st.sampled_from(COSTS))
    def peek(self, key, cost):
        if self.cost_is_bad(cost):
            with pytest.raises(ValueError):
                self.limiter.peek(key, cost)
            return
        expected = self.model.decide(key, cost, self.clock.now_ns, write=False)
        assert as_model(self.limiter.peek(key, cost)) == expected

    @rule(keys=st.lists(st.sampled_from(KEYS), max_size=12), data=st.data(),
          by_handle=st.booleans(), with_retry=st.booleans(), ahead=st.integers(0, 5))
    def acquire_many(self, keys, data, by_handle, with_retry, ahead):
        costs = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(COSTS[:12]),
                                                         min_size=len(keys),
                                                         max_size=len(keys))))
        if any(self.cost_is_bad(c) for c in ([1] if costs is None else costs)):
            before = len(self.limiter)
            with pytest.raises(ValueError):
                self.limiter.acquire_many(keys, costs)
            assert len(self.limiter) == before
            return
        # an explicit batch time a little ahead of the clock, then the clock catches up
        now_ns = self.clock.now_ns + ahead * self.window_ns // 7
        batch = keys
        if by_handle:
            batch = np.array([self.limiter.handle(k) for k in keys], dtype=np.int64)
            for k in keys:
                self.model.touch(k)
        expected = [self.model.decide(k, 1 if costs is None else c, now_ns)
                    for k, c in zip(keys, [1] * len(keys) if costs is None else costs)]
        result = self.limiter.acquire_many(batch, costs, now=Fraction(now_ns, 10**9),
                                           with_retry_after=with_retry)
        allowed, retry = result if with_retry else (result, None)
        assert allowed.tolist() == [d.allowed for d in expected]
        if with_retry:
            assert retry.tolist() == [d.retry_after_ns / 1e9 for d in expected]
        self.clock.set_ns(now_ns)

    @rule(key=st.sampled_from(KEYS))
    def reset_key(self, key):
        self.limiter.reset(key)
        self.model.reset(key)

    @rule()
    def reset_all(self):
        self.limiter.reset()
        self.model.reset()

    @invariant()
    def same_keys(self):
        if hasattr(self, "limiter"):
            assert len(self.limiter) == len(self.model.keys)
            for key in KEYS:
                assert (key in self.limiter) == (key in self.model.keys)


class CounterMachine(WindowMachine):
    def build_pair(self, limit, window_ns):
        limiter = fastcore.SlidingWindowCounter(limit, Fraction(window_ns, 10**9),
                                                clock=self.clock)
        assert limiter.window_ns == window_ns
        return limiter, Keyed(lambda: CounterModel(limit, window_ns))


class RingMachine(WindowMachine):
    def build_pair(self, limit, window_ns):
        limiter = fastcore.SlidingWindow(limit, Fraction(window_ns, 10**9), slices=self.slices,
                                         clock=self.clock)
        model = RingModel(limit, window_ns, self.slices)
        assert (limiter.slice_ns, limiter.window_ns) == (model.slice_ns, model.window_ns)
        return limiter, Keyed(lambda: RingModel(limit, window_ns, self.slices))


SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestCounterMachine = SETTINGS(CounterMachine).TestCase
TestRingMachine = SETTINGS(RingMachine).TestCase
