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
from hypothesis import HealthCheck, given, settings
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
from fastcore.redis._window import WINDOW_LUA, WINDOW_SHA  # noqa: E402
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
    # timeout: a killed server refuses at once; 2 s only covers a slow reconnect under load
    limiter = RedisSlidingWindow(own_server.client(), 6, 60.0, on_error=mode, fallback=fallback,
                                 breaker_threshold=2, breaker_cooldown=1.0, clock=clock,
                                 timeout=2.0)
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
    # Leases through the cluster client: limit 3, lease 2 -> 1 + 1 leased, 1 from the lease,
    # 1 more (no room to lease), denied; what close() gives back lands on each key's slot.
    with RedisSlidingWindow(client, 3, 1.0, prefix=prefix + "l:", lease=2,
                            clock=clock) as leasing:
        assert [sum(leasing.try_acquire(key) for _ in range(5)) for key in keys] == [3] * 30
        assert leasing.acquire_many(["x", "y"], [0.5, 0.5]).all()      # 0.5 + 1 leased each
    plain = RedisSlidingWindow(client, 3, 1.0, prefix=prefix + "l:", clock=clock)
    assert [plain.peek(key, 0).remaining for key in keys] == [0] * 30
    assert [plain.peek(key, 0).remaining for key in "xy"] == [2, 2]      # 3 - 0.5, floored
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


# -- leases ----------------------------------------------------------------------------------
# Limit 10, window 1 s, 10 slices of 100 ms (src_cy/window.pxd's example): a lease counted in
# slice 50 (5.0 s .. 5.1 s) is spent until 5.1 s, when the slice ends, not 6.0 s, when it
# leaves the ring (fastcore/redis/_window.py says why).

def leased_window(client, prefix, clock, **options):
    return RedisSlidingWindow(client, 10, 1.0, slices=10, prefix=prefix, clock=clock, **options)


def evalsha_calls(client):
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def test_lease_counted_spent_and_expired_with_its_slice(client, prefix):
    clock = ManualClock(5.02)
    leasing = leased_window(client, prefix, clock, lease=5)
    plain = leased_window(client, prefix, clock)
    # 1 admitted + 4 leased counted in slice 50; remaining = 10 - 5 in Redis + 4 held.
    assert leasing.acquire("k") == Decision(True, 9, 0, 980_000_000)
    assert plain.peek("k", 0) == Decision(True, 5, 0, 980_000_000)
    assert leasing.status()["leased_keys"] == 1
    before = evalsha_calls(client)
    clock.set(5.05)
    # From the lease: remaining = what this process still holds; reset_after counts down.
    assert leasing.acquire("k", 2) == Decision(True, 2, 0, 950_000_000)
    clock.set_ns(5_099_999_999)                   # the last ns of slice 50
    assert leasing.acquire("k") == Decision(True, 1, 0, 900_000_001)
    assert evalsha_calls(client) == before        # no round trip
    assert plain.peek("k", 0) == Decision(True, 5, 0, 900_000_001)
    clock.set(5.1)                                # slice 50 ends (it stays in the ring)
    # The 1 unit left in the lease is not spent: a new round trip counts 1 + 4 in slice 51
    # (remaining 0 in Redis + 4 held, not 5).
    assert leasing.acquire("k") == Decision(True, 4, 0, 1_000_000_000)
    assert evalsha_calls(client) == before + 2    # the peek and this acquire
    # Slice 50's unspent unit stays counted until 6.0 s: retry_after is when it leaves.
    assert plain.acquire("k") == Decision(False, 0, 900_000_000, 1_000_000_000)
    clock.set(5.15)
    assert [leasing.try_acquire("k") for _ in range(5)] == [True] * 4 + [False]
    assert plain.peek("k", 0) == Decision(True, 0, 0, 950_000_000)
    clock.set(6.0)                                # slice 50 leaves: its 5 units free up
    assert plain.peek("k", 0) == Decision(True, 5, 0, 100_000_000)


def test_close_gives_back_to_the_slice_while_it_is_in_the_ring(client, prefix):
    clock = ManualClock(5.02)
    plain = leased_window(client, prefix, clock)
    with leased_window(client, prefix, clock, lease=5) as leasing:
        assert leasing.acquire("k") and leasing.acquire_many(["j", "j"]).all()
        clock.set(5.07)
        assert leasing.try_acquire("k")
        assert leasing.status()["leased_keys"] == 2
        assert plain.acquire("k", 2) == Decision(True, 3, 0, 930_000_000)
    # k: 5 leased + 2 counted, 3 of the lease unspent go back; j: two grants of 5 in one
    # batch, 2 spent by the batch itself, 8 held go back.
    assert plain.peek("k", 0) == Decision(True, 6, 0, 930_000_000)
    assert plain.peek("j", 0) == Decision(True, 8, 0, 930_000_000)
    assert leasing.status()["leased_keys"] == 0

    # Past the slice's end a lease is not given back (it expired); the count it left goes
    # with its slice.
    clock.set(7.02)
    leasing = leased_window(client, prefix, clock, lease=5)
    assert leasing.acquire("x", 2) == Decision(True, 8, 0, 980_000_000)
    clock.set(7.1)
    leasing.close()
    assert plain.peek("x", 0) == Decision(True, 5, 0, 900_000_000)


def test_give_back_script_spares_a_slice_that_left_and_never_goes_below_zero(client, prefix):
    """The give-back itself, as close() sends it, when it arrives late: it changes slice G
    only while G is in the ring, and takes at most what G holds."""
    clock = ManualClock(5.02)
    limiter = leased_window(client, prefix, clock)
    name = limiter.name("k")

    def give_back(cost, slice_index):
        reply = limiter._io.scripts(WINDOW_SHA, WINDOW_LUA, [name],
                                    limiter.give_back_argvs([(name, limiter.units(cost), slice_index)]))[0]
        return Decision(reply[0] == 1, reply[1], reply[2], reply[3])

    assert limiter.acquire("k", 3)                  # slice 50
    clock.set(5.95)
    assert limiter.acquire("k", 4)                  # slice 59
    assert give_back(1, 50) == Decision(True, 4, 0, 50_000_000 + 900_000_000)
    clock.set(6.02)                                 # slice 60 at slice 50's ring position
    assert limiter.acquire("k", 2) == Decision(True, 4, 0, 980_000_000)
    assert give_back(2, 50) == Decision(True, 4, 0, 980_000_000)     # 50 left: unchanged
    assert give_back(9, 59) == Decision(True, 8, 0, 980_000_000)     # 59 held 4: now 0
    assert give_back(9, 60) == Decision(True, 10, 0, 0)
    assert not client.exists(name)                  # an empty ring is deleted


def test_lease_spends_while_redis_is_down_and_close_fails_quietly(own_server):
    clock = ManualClock(5.02)
    limiter = RedisSlidingWindow(own_server.client(), 10, 1.0, lease=3, clock=clock,
                                 breaker_threshold=1, breaker_cooldown=1.0)
    assert limiter.try_acquire("k")
    own_server.kill()
    assert limiter.try_acquire("k") and limiter.acquire_many(["k"]).all()   # from the lease
    assert not limiter.try_acquire("k")                                    # fail_closed
    assert limiter.status()["breaker"] == "open"
    limiter.close()                       # breaker open: nothing sent, nothing raised
    assert limiter.status()["leased_keys"] == 0


@pytest.mark.parametrize("options", [{"lease": -1}, {"lease": 2.5}, {"lease": True},
                                     {"lease": 2, "lease_ttl": 0}])
def test_bad_lease_options(client, prefix, options):
    before = evalsha_calls(client)
    with pytest.raises(ValueError):
        RedisSlidingWindow(client, 5, 1.0, prefix=prefix, **options)
    assert evalsha_calls(client) == before


# (who, cost, how many calls in a row, then how far the clock moves)
OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["leasing", "other", "plain", "close"]),
    st.sampled_from([1, 1, 2, 0.5, 3]),
    st.integers(1, 8),
    st.sampled_from([0, 1, 7_000_000, 50_000_000, 99_999_999, 100_000_000, 300_000_000,
                     900_000_000])),
    max_size=40)


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS)
def test_leases_never_admit_more_than_the_limit_in_any_window(model_client, operations):
    """Two leasing processes and a plain one on one key, under one ManualClock: whatever they
    do, no interval (t - (window - slice), t] sees more than `limit` admitted (the local
    ring's bound, src_cy/window.pxd). Leases that outlived their slice break this."""
    clock = ManualClock(5.0)
    shared = f"p{uuid.uuid4().hex[:10]}:"
    limit, window_ns, slice_ns = 10, 1_000_000_000, 100_000_000

    def make(lease):
        return leased_window(model_client, shared, clock, lease=lease)

    limiters = {"leasing": make(6), "other": make(4), "plain": make(0)}
    admitted = []
    for who, cost, calls, step in operations:
        if who == "close":
            limiters["leasing"].close()
            limiters["leasing"] = make(6)
        else:
            admitted += [(clock.now_ns, cost) for _ in range(calls)
                         if limiters[who].try_acquire("k", cost)]
        clock.advance_ns(step)
    for t, _ in admitted:
        inside = sum(c for s, c in admitted if t - (window_ns - slice_ns) < s <= t)
        assert inside <= limit


def test_async_window_leases(redis_server, prefix):
    """The asyncio window leases as the sync one: counted with the decision, spent without a
    round trip until the slice ends, batches, and given back by close()."""
    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_server.url)
        clock = ManualClock(5.02)
        plain = redis_asyncio.RedisSlidingWindow(client, 10, 1.0, prefix=prefix, clock=clock)
        async with redis_asyncio.RedisSlidingWindow(client, 10, 1.0, prefix=prefix, lease=5,
                                                    clock=clock) as leasing:
            assert await leasing.acquire("k") == Decision(True, 9, 0, 980_000_000)
            clock.set(5.05)
            assert await leasing.acquire("k", 2) == Decision(True, 2, 0, 950_000_000)
            assert (await leasing.acquire_many(["k", "k", "j"])).all()   # k from the lease
            assert await plain.peek("k", 0) == Decision(True, 5, 0, 980_000_000 - 30_000_000)
            assert await plain.peek("j", 0) == Decision(True, 5, 0, 950_000_000)
            clock.set(5.1)       # slice 50 ends: j's 4 held there are not spent any more
            assert await leasing.acquire("j") == Decision(True, 0 + 4, 0, 1_000_000_000)
        # j: the 4 leased in slice 51 go back; slice 50's 4 stay counted until it leaves.
        assert await plain.peek("j", 0) == Decision(True, 4, 0, 1_000_000_000)
        assert await plain.peek("k", 0) == Decision(True, 5, 0, 900_000_000)
        with pytest.raises(ValueError):
            redis_asyncio.RedisSlidingWindow(client, 10, 1.0, lease=-1)
        await client.aclose()

    asyncio.run(scenario())
