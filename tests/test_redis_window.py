"""RedisSlidingWindow against the local SlidingWindow, field by field, on real servers: the
worked example of src_cy/window.pxd, a hypothesis state machine under one ManualClock,
the server-clock path, bad input, faults, a cluster and asyncio."""

import asyncio
import os
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
from redis_fixtures import (  # noqa: E402,F401,F811
    External, RedisServer, own_server, prefix, redis_cluster, redis_server,
)

redis = pytest.importorskip("redis")

from fastcore import (  # noqa: E402
    CostExceedsLimit, Decision, InvalidCost, InvalidRate, ManualClock, SlidingWindow,
)
from fastcore.redis import RedisSlidingWindow  # noqa: E402
from fastcore.redis import asyncio as redis_asyncio  # noqa: E402


@pytest.fixture
def client(redis_server):
    with redis_server.client() as conn:
        yield conn


def test_worked_example_from_window_pxd(client, prefix):
    # Limit 10, window 1 s, 10 slices of 100 ms (src_cy/window.pxd).
    clock = ManualClock(5.02)
    remote = RedisSlidingWindow(client, 10, 1.0, slices=10, prefix=prefix, clock=clock)
    assert remote.acquire("k", 4) == Decision(True, 6, 0, 980_000_000)
    clock.set(5.51)
    assert remote.acquire("k", 6) == Decision(True, 0, 0, 990_000_000)
    clock.set(5.93)
    assert remote.acquire("k") == Decision(False, 0, 70_000_000, 570_000_000)
    clock.set_ns(5_999_999_999)
    assert not remote.try_acquire("k")
    clock.set(6.0)                       # slice 50 leaves: its 4 units free up
    assert remote.acquire("k", 4) == Decision(True, 0, 0, 1_000_000_000)


KEYS = st.sampled_from(["a", "b", "{c}"])
COSTS = st.one_of(st.sampled_from([0, 1, 1, 2, 0.5, 3]),
                  st.floats(min_value=0, max_value=4, allow_nan=False))
STEPS_NS = st.one_of(st.integers(0, 10), st.integers(0, 3_000_000_000),
                     st.sampled_from([100_000_000, 333_333_334, 999_999_999, 1_000_000_000]))


class WindowVersusLocal(RuleBasedStateMachine):
    client = None

    @initialize(limit=st.sampled_from([1, 3, 4, 10, 2.5, 100, "5/2 seconds"]),
                window=st.sampled_from([1.0, 0.25, 3.0, 1.000003]),
                slices=st.sampled_from([1, 3, 10, 7]),
                start_ns=st.sampled_from([0, 999_999_999, 1_700_000_000 * 10**9]))
    def build(self, limit, window, slices, start_ns):
        self.clock = ManualClock()
        self.clock.set_ns(start_ns)
        window = None if isinstance(limit, str) else window
        self.remote = RedisSlidingWindow(self.client, limit, window, slices=slices,
                                         prefix=f"w{uuid.uuid4().hex[:10]}:", clock=self.clock)
        self.local = SlidingWindow(limit, window, slices=slices, clock=self.clock)

    def both(self, remote, local):
        try:
            want = local()
        except (ValueError, TypeError) as error:
            with pytest.raises(type(error)):
                remote()
            return
        got = remote()
        if isinstance(want, tuple):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        else:
            assert got == want

    @rule(key=KEYS, cost=COSTS)
    def acquire(self, key, cost):
        self.both(lambda: self.remote.acquire(key, cost), lambda: self.local.acquire(key, cost))

    @rule(key=KEYS, cost=COSTS)
    def try_acquire(self, key, cost):
        self.both(lambda: self.remote.try_acquire(key, cost),
                  lambda: self.local.try_acquire(key, cost))

    @rule(key=KEYS, cost=COSTS)
    def peek(self, key, cost):
        self.both(lambda: self.remote.peek(key, cost), lambda: self.local.peek(key, cost))

    @rule(keys=st.lists(KEYS, max_size=8), data=st.data())
    def acquire_many(self, keys, data):
        costs = data.draw(st.none() | st.lists(COSTS, min_size=len(keys), max_size=len(keys)))
        self.both(lambda: self.remote.acquire_many(keys, costs, with_retry_after=True),
                  lambda: self.local.acquire_many(keys, costs, with_retry_after=True))

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
            for key in ("a", "b", "{c}"):
                assert self.remote.peek(key, 0) == self.local.peek(key, 0)


@pytest.fixture(scope="module")
def model_client(tmp_path_factory):
    url = os.environ.get("REDIS_URL")
    server = External(url) if url else RedisServer(tmp_path_factory.mktemp("redis-window"))
    with server.client() as conn:
        yield conn
    server.stop()


def test_redis_window_matches_local(model_client):
    WindowVersusLocal.client = model_client
    run_state_machine_as_test(WindowVersusLocal, settings=settings(
        deadline=None, suppress_health_check=[HealthCheck.too_slow]))


def test_server_clock_window(client, prefix):
    # A slice of 333,333,333,334 ns is not whole microseconds: the script's exact split. The
    # window is long enough that no slice expires however slowly the machine runs the calls.
    limiter = RedisSlidingWindow(client, 5, 1000.0, slices=3, prefix=prefix)
    assert [limiter.try_acquire("k") for _ in range(6)] == [True] * 5 + [False]
    denied = limiter.acquire("k")
    assert not denied and 0 < denied.retry_after <= 1000.000000002
    assert 0 < client.pttl(limiter.name("k")) <= 1_000_001
    assert limiter.name("k").endswith(b"sw:{k}")


def test_bad_input(client, prefix):
    limiter = RedisSlidingWindow(client, 5, 1.0, prefix=prefix)
    for cost, error in ((-1, InvalidCost), (float("nan"), InvalidCost), (5.5, CostExceedsLimit),
                        ("1", TypeError)):
        with pytest.raises(error):
            limiter.acquire("k", cost)
    with pytest.raises(TypeError):
        limiter.acquire(3)
    with pytest.raises(InvalidRate):
        RedisSlidingWindow(client, 5, 30 * 86400.0)          # past 2**50 ns
    with pytest.raises(InvalidRate):
        RedisSlidingWindow(client, 5, 0.000005, slices=10)   # slices under 1 us
    with pytest.raises(ValueError):
        RedisSlidingWindow(client, 5, 1.0, slices=0)
    assert not client.keys(prefix + "*")


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open", "fallback"])
def test_kill_and_restart(own_server, mode):
    clock = ManualClock(100.0)
    fallback = SlidingWindow(2, 60.0, clock=clock) if mode == "fallback" else None
    limiter = RedisSlidingWindow(own_server.client(), 6, 60.0, on_error=mode, fallback=fallback,
                                 breaker_threshold=2, breaker_cooldown=1.0, clock=clock)
    assert sum(limiter.try_acquire("k") for _ in range(4)) == 4
    own_server.kill()
    answers = [limiter.try_acquire("k") for _ in range(4)] + list(limiter.acquire_many(["k"]))
    assert limiter.status()["breaker"] == "open"
    assert answers == {"fail_closed": [False] * 5, "fail_open": [True] * 5,
                       "fallback": [True, True, False, False, False]}[mode]
    own_server.start()
    clock.advance(1.0)
    assert sum(limiter.try_acquire("k") for _ in range(5)) == 2      # 6 - 4, never again
    assert limiter.status()["breaker"] == "closed"


def test_cluster_window(redis_cluster, prefix):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis_cluster.client(retry=Retry(NoBackoff(), 0))
    clock = ManualClock(7.0)
    remote = RedisSlidingWindow(client, 3, 1.0, prefix=prefix, clock=clock)
    local = SlidingWindow(3, 1.0, clock=clock)
    keys = [f"tenant-{i}" for i in range(30)]
    for key in keys:
        assert remote.acquire(key, 2) == local.acquire(key, 2)
    np.testing.assert_array_equal(remote.acquire_many(keys * 2), local.acquire_many(keys * 2))
    client.close()


def test_async_window(redis_server, prefix):
    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_server.url)
        clock = ManualClock(50.0)
        remote = redis_asyncio.RedisSlidingWindow(client, 4, 1.0, slices=4, prefix=prefix,
                                                  clock=clock)
        local = SlidingWindow(4, 1.0, slices=4, clock=clock)
        for step in range(10):
            key = "ab"[step % 2]
            assert await remote.acquire(key, 1.5) == local.acquire(key, 1.5)
            assert await remote.peek(key) == local.peek(key)
            got = await remote.acquire_many(["a", "b"], with_retry_after=True)
            want = local.acquire_many(["a", "b"], with_retry_after=True)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            clock.advance(0.3)
        await remote.close()
        await client.aclose()

    asyncio.run(scenario())
