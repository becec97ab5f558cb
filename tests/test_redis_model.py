"""RedisTokenBucket against the local KeyedTokenBucket, field by field, under one ManualClock.

The Redis limiter is built with ``clock=`` so the script takes the client's time; the local
limiter reads the same clock. Every Decision field (allowed, remaining, retry_after_ns,
reset_after_ns), every batch answer and retry-after must be identical. Clock values span
tiny steps, whole-second boundaries (the script splits time into seconds + ns) and starts
far from zero (a large client clock origin).
"""

import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test,
)

sys.path.insert(0, str(Path(__file__).parent))
from redis_fixtures import External, RedisServer  # noqa: E402

redis = pytest.importorskip("redis")

from fastcore import KeyedTokenBucket, ManualClock  # noqa: E402
from fastcore.redis import RedisTokenBucket  # noqa: E402

KEYS = st.sampled_from(["a", "b", "{c}", ""])
COSTS = st.one_of(st.sampled_from([0, 1, 1, 1, 2, 0.5, 0.25]),
                  st.floats(min_value=0, max_value=3, allow_nan=False))
STEPS_NS = st.one_of(st.integers(0, 10), st.integers(0, 2_000_000_000),
                     st.sampled_from([1_000_000_000, 333_333_334, 999_999_999]))


class RedisVersusLocal(RuleBasedStateMachine):
    client = None   # set by the test below

    @initialize(rate=st.sampled_from([1, 3, 7, 0.5, 1000, "5/30 seconds", 123.456]),
                 burst=st.sampled_from([1, 3, 3.5, 10, 100]),
                 start_ns=st.sampled_from([0, 999_999_999, 1_700_000_000 * 10**9]))
    def build(self, rate, burst, start_ns):
        self.clock = ManualClock()
        self.clock.set_ns(start_ns)
        prefix = f"m{uuid.uuid4().hex[:10]}:"
        self.remote = RedisTokenBucket(self.client, rate, burst, prefix=prefix, clock=self.clock)
        self.local = KeyedTokenBucket(rate, burst, clock=self.clock)

    def same_error(self, call_remote, call_local):
        try:
            want = call_local()
        except ValueError as error:
            with pytest.raises(type(error)):
                call_remote()
            return None
        got = call_remote()
        return got, want

    @rule(key=KEYS, cost=COSTS)
    def acquire(self, key, cost):
        pair = self.same_error(lambda: self.remote.acquire(key, cost),
                               lambda: self.local.acquire(key, cost))
        if pair:
            assert pair[0] == pair[1]

    @rule(key=KEYS, cost=COSTS)
    def try_acquire(self, key, cost):
        pair = self.same_error(lambda: self.remote.try_acquire(key, cost),
                               lambda: self.local.try_acquire(key, cost))
        if pair:
            assert pair[0] == pair[1]

    @rule(key=KEYS, cost=COSTS)
    def peek(self, key, cost):
        pair = self.same_error(lambda: self.remote.peek(key, cost),
                               lambda: self.local.peek(key, cost))
        if pair:
            assert pair[0] == pair[1]

    @rule(keys=st.lists(KEYS, max_size=12), data=st.data())
    def acquire_many(self, keys, data):
        costs = data.draw(st.none() | st.lists(COSTS, min_size=len(keys), max_size=len(keys)))
        pair = self.same_error(
            lambda: self.remote.acquire_many(keys, costs, with_retry_after=True),
            lambda: self.local.acquire_many(keys, costs, with_retry_after=True))
        if pair:
            np.testing.assert_array_equal(pair[0][0], pair[1][0])
            np.testing.assert_array_equal(pair[0][1], pair[1][1])

    @rule(step_ns=STEPS_NS)
    def advance(self, step_ns):
        self.clock.advance_ns(step_ns)

    @rule(key=KEYS)
    def reset(self, key):
        self.remote.reset(key)
        self.local.reset(key)

    @invariant()
    def same_state(self):
        if hasattr(self, "remote"):
            for key in ("a", "b", "{c}", ""):
                assert self.remote.peek(key, 0) == self.local.peek(key, 0)


@pytest.fixture(scope="module")
def model_client(tmp_path_factory):
    import os

    url = os.environ.get("REDIS_URL")
    server = External(url) if url else RedisServer(tmp_path_factory.mktemp("redis-model"))
    with server.client() as client:
        yield client
    server.stop()


def test_redis_matches_local(model_client):
    RedisVersusLocal.client = model_client
    # Examples and steps come from the hypothesis profile (tests/conftest.py).
    run_state_machine_as_test(RedisVersusLocal, settings=settings(
        deadline=None, suppress_health_check=[HealthCheck.too_slow]))
