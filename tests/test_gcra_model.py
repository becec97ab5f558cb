"""Differential tests: the compiled token buckets against tests/model/gcra.py.

A hypothesis state machine drives both with the same operations under one ManualClock and
compares every field of every Decision, every batch result, and the key table.
"""

import math

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fastcore
from model.gcra import ModelBucket, ModelDecision, ModelKeyedBucket, TableFull

RATES = [3, 0.5, 7.25, 1000, "5/30 seconds", "2/minute", 1e9 / 3]
BURSTS = [1, 2.5, 3, 10]
COSTS = [1, 1, 1, 0, 0.5, 2, 0.1, 1 / 3, 2.5, 3]
KEYS = ["a", "b", "c", ("tenant", 1), 7, "f"]


def as_model(decision) -> ModelDecision:
    return ModelDecision(decision.allowed, decision.remaining, decision.retry_after_ns,
                         decision.reset_after_ns)


def check(decision, expected):
    if isinstance(expected, TableFull):
        assert not decision.allowed and decision.remaining == 0
        assert 1 <= decision.retry_after_ns <= expected.min_wait_ns
        assert decision.reset_after_ns == 0
    else:
        assert as_model(decision) == expected


class SingleBucketMachine(RuleBasedStateMachine):
    @initialize(rate=st.sampled_from(RATES), burst=st.sampled_from(BURSTS))
    def build(self, rate, burst):
        self.clock = fastcore.ManualClock(start=5.0)
        self.model = ModelBucket(rate, burst)
        self.bucket = fastcore.TokenBucket(rate, burst, clock=self.clock)

    @rule(ns=st.integers(0, 3 * 10**9))
    def advance(self, ns):
        self.clock.advance_ns(ns)

    @rule(cost=st.sampled_from(COSTS))
    def acquire(self, cost):
        if not self.model.valid_cost(cost):
            with pytest.raises(fastcore.FastcoreError):
                self.bucket.acquire(cost)
            return
        check(self.bucket.acquire(cost), self.model.acquire(cost, self.clock.now_ns))

    @rule(cost=st.sampled_from(COSTS))
    def try_acquire(self, cost):
        if self.model.valid_cost(cost):
            assert self.bucket.try_acquire(cost) == self.model.acquire(cost, self.clock.now_ns).allowed

    @rule(cost=st.sampled_from(COSTS))
    def peek(self, cost):
        if self.model.valid_cost(cost):
            check(self.bucket.peek(cost), self.model.peek(cost, self.clock.now_ns))

    @rule()
    def reset(self):
        self.bucket.reset()
        self.model.tat = 0


class KeyedBucketMachine(RuleBasedStateMachine):
    @initialize(rate=st.sampled_from(RATES), burst=st.sampled_from(BURSTS),
                max_keys=st.integers(1, 5), on_full=st.sampled_from(["evict", "deny"]))
    def build(self, rate, burst, max_keys, on_full):
        self.clock = fastcore.ManualClock(start=5.0)
        self.model = ModelKeyedBucket(rate, burst, max_keys, on_full)
        self.limiter = fastcore.KeyedTokenBucket(rate, burst, max_keys=max_keys,
                                                 on_full=on_full, clock=self.clock)

    @property
    def now(self):
        return self.clock.now_ns

    @rule(ns=st.integers(0, 3 * 10**9))
    def advance(self, ns):
        self.clock.advance_ns(ns)

    @rule(key=st.sampled_from(KEYS), cost=st.sampled_from(COSTS))
    def acquire(self, key, cost):
        if not self.model.shape.valid_cost(cost):
            with pytest.raises(fastcore.FastcoreError):
                self.limiter.acquire(key, cost)
            return
        check(self.limiter.acquire(key, cost), self.model.acquire(key, cost, self.now))

    @rule(key=st.sampled_from(KEYS), cost=st.sampled_from(COSTS))
    def try_acquire(self, key, cost):
        if self.model.shape.valid_cost(cost):
            expected = self.model.acquire(key, cost, self.now)
            assert self.limiter.try_acquire(key, cost) == (
                not isinstance(expected, TableFull) and expected.allowed)

    @rule(key=st.sampled_from(KEYS), cost=st.sampled_from(COSTS))
    def peek(self, key, cost):
        if self.model.shape.valid_cost(cost):
            check(self.limiter.peek(key, cost), self.model.peek(key, cost, self.now))

    @rule(key=st.sampled_from(KEYS))
    def handle(self, key):
        if self.model.handle(key, self.now):
            assert isinstance(self.limiter.handle(key), int)
        else:
            with pytest.raises(fastcore.FastcoreError):
                self.limiter.handle(key)

    @rule(key=st.one_of(st.none(), st.sampled_from(KEYS)))
    def reset(self, key):
        self.limiter.reset(key)
        self.model.reset(key)

    @rule(batch=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(COSTS)), max_size=12),
          explicit_now=st.booleans())
    def acquire_many(self, batch, explicit_now):
        keys = [key for key, _ in batch]
        costs = [cost for _, cost in batch]
        now = self.clock.now() if explicit_now else None
        now_ns = fastcore.ManualClock(now).now_ns if explicit_now else self.now
        if not all(self.model.shape.valid_cost(cost) for cost in costs):
            before = [self.limiter.peek(key) for key in KEYS]
            with pytest.raises(fastcore.FastcoreError):
                self.limiter.acquire_many(keys, costs, now=now)
            assert [self.limiter.peek(key) for key in KEYS] == before
            return
        allowed, retry = self.limiter.acquire_many(keys, costs, now=now, with_retry_after=True)
        for i, (key, cost) in enumerate(batch):
            expected = self.model.acquire(key, cost, now_ns)
            if isinstance(expected, TableFull):
                assert not allowed[i] and 0 < retry[i] <= expected.min_wait_ns / 1e9
            else:
                assert allowed[i] == expected.allowed
                assert retry[i] == expected.retry_after_ns / 1e9

    @precondition(lambda self: len(self.model.tats) > 0)
    @rule(data=st.data())
    def acquire_many_handles(self, data):
        present = list(self.model.tats)
        keys = data.draw(st.lists(st.sampled_from(present), min_size=1, max_size=8))
        handles = np.array([self.limiter.handle(key) for key in keys], dtype=np.int64)
        allowed = self.limiter.acquire_many(handles)
        # handle() of a present key does not touch it; decisions by handle do not either.
        for key, got in zip(keys, allowed):
            shape = self.model.shape
            expected = shape.decide(self.model.tats[key], 1, self.now,
                                    lambda new, key=key: self.model.tats.__setitem__(key, new))
            assert got == expected.allowed

    @invariant()
    def same_table(self):
        if not hasattr(self, "limiter"):
            return
        assert len(self.limiter) == len(self.model.tats) <= self.model.max_keys
        assert self.limiter.evictions == self.model.evictions
        for key in KEYS:
            assert (key in self.limiter) == (key in self.model.tats)


TestSingleBucket = SingleBucketMachine.TestCase
TestKeyedBucket = KeyedBucketMachine.TestCase
