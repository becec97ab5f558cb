"""RedisTokenBucket on a three-master cluster (every script call on one slot), and the
asyncio limiter on a standalone server and the cluster, against the local limiter."""

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from redis_fixtures import own_server, prefix, redis_cluster, redis_server  # noqa: E402,F401,F811

redis = pytest.importorskip("redis")

from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from fastcore import Decision, KeyedTokenBucket, ManualClock  # noqa: E402
from fastcore.redis import RedisTokenBucket  # noqa: E402
from fastcore.redis import asyncio as redis_asyncio  # noqa: E402


def node_calls(cluster, command):
    """How many times each master ran ``command`` (INFO commandstats)."""
    calls = []
    for node in cluster.nodes:
        with node.client() as conn:
            calls.append(conn.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    return calls


KEYS = [f"tenant-{i}" for i in range(60)] + ["{x}", "a{b}c", ""]


def test_cluster_decisions_match_local_and_stay_on_one_slot(redis_cluster, prefix):
    client = redis_cluster.client(retry=Retry(NoBackoff(), 0), socket_timeout=0.5)
    clock = ManualClock(5.0)
    remote = RedisTokenBucket(client, 2, 3, prefix=prefix, clock=clock)
    local = KeyedTokenBucket(2, 3, clock=clock)
    before = node_calls(redis_cluster, "evalsha")
    for key in KEYS:
        assert remote.acquire(key, 2) == local.acquire(key, 2)
    got, wait = remote.acquire_many(KEYS * 2, with_retry_after=True)
    want, want_wait = local.acquire_many(KEYS * 2, with_retry_after=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(wait, want_wait)
    after = node_calls(redis_cluster, "evalsha")
    # Every call ran on exactly one node (no CROSSSLOT, no redirection loops) ...
    assert sum(after) - sum(before) == 3 * len(KEYS)
    # ... the keys spread over all three masters ...
    assert all(a > b for a, b in zip(after, before))
    # ... and each key lives on the master that owns its hash tag's slot.
    for key in KEYS:
        name = remote.name(key)
        node = client.get_node_from_key(name)
        owner = next(n for n in redis_cluster.nodes if n.port == node.port)
        with owner.client() as conn:
            assert conn.exists(name)
        tag = name[name.index(b"{") + 1:name.index(b"}")]
        assert client.keyslot(name) == client.keyslot(tag)
    # SCRIPT FLUSH on every master: the next calls reload the script and go on.
    for node in redis_cluster.nodes:
        with node.client() as conn:
            conn.script_flush()
    clock.advance(1.0)
    assert remote.acquire("tenant-1") == local.acquire("tenant-1")
    np.testing.assert_array_equal(remote.acquire_many(KEYS), local.acquire_many(KEYS))
    assert remote.status()["script_reloads"] >= 2 and remote.status()["errors"] == 0
    remote.reset()
    assert remote.peek("tenant-1", 3)
    client.close()


def test_cluster_leases(redis_cluster, prefix):
    client = redis_cluster.client(retry=Retry(NoBackoff(), 0))
    clock = ManualClock(1.0)
    with RedisTokenBucket(client, 0.001, 50, prefix=prefix, lease=20, clock=clock) as limiter:
        assert sum(limiter.try_acquire(key) for key in KEYS[:10] for _ in range(60)) == 500
    plain = RedisTokenBucket(client, 0.001, 50, prefix=prefix, clock=clock)
    assert all(plain.peek(key).remaining == 0 for key in KEYS[:10])
    client.close()


def run(coroutine):
    return asyncio.run(coroutine)


def test_async_matches_local(redis_server, prefix):
    async def scenario():
        client = redis.asyncio.Redis.from_url(redis_server.url)
        clock = ManualClock(100.0)
        remote = redis_asyncio.RedisTokenBucket(client, 3, 3, prefix=prefix, clock=clock)
        local = KeyedTokenBucket(3, 3, clock=clock)
        for step in range(12):
            key = "ab"[step % 2]
            assert await remote.acquire(key) == local.acquire(key)
            assert await remote.try_acquire(key, 0.5) == local.try_acquire(key, 0.5)
            assert await remote.peek(key, 2) == local.peek(key, 2)
            got = await remote.acquire_many(["a", "b", "a"], [1, 2, 0.5], with_retry_after=True)
            want = local.acquire_many(["a", "b", "a"], [1, 2, 0.5], with_retry_after=True)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            if step == 5:
                await client.script_flush()
            clock.advance(0.2)
        results = await asyncio.gather(*(remote.try_acquire("c") for _ in range(10)))
        assert sum(results) == 3
        await remote.reset("c")
        assert await remote.try_acquire("c", 3)
        await remote.close()
        await client.aclose()

    run(scenario())


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open", "fallback"])
def test_async_kill_and_restart(own_server, mode):
    async def scenario():
        clock = ManualClock(0.0)
        fallback = KeyedTokenBucket(0.001, 2, clock=clock) if mode == "fallback" else None
        limiter = redis_asyncio.RedisTokenBucket(
            redis.asyncio.Redis.from_url(own_server.url), 0.001, 5, on_error=mode,
            fallback=fallback, breaker_threshold=2, breaker_cooldown=1.0, clock=clock,
            timeout=2.0)       # a killed server refuses at once; 2 s covers a slow reconnect
        assert sum([await limiter.try_acquire("k") for _ in range(3)]) == 3
        own_server.kill()
        answers = [await limiter.try_acquire("k") for _ in range(4)]
        answers += list(await limiter.acquire_many(["k"]))
        assert limiter.status()["breaker"] == "open"
        expected = {"fail_closed": [False] * 5, "fail_open": [True] * 5,
                    "fallback": [True, True, False, False, False]}[mode]
        assert answers == expected
        denied = await limiter.acquire("k")
        assert denied == {"fail_closed": Decision(False, 0, 1_000_000_000, 0),
                          "fail_open": Decision(True, 0, 0, 0),
                          # the fallback's own answer: 2 tokens taken at t=0 at 1 per
                          # 1000 s, so the next is 1000 s away and it is full at 2000 s
                          "fallback": Decision(False, 0, 1_000_000_000_000,
                                               2_000_000_000_000)}[mode]
        own_server.start()
        clock.advance(1.0)
        assert sum([await limiter.try_acquire("k") for _ in range(5)]) == 2
        assert limiter.status()["breaker"] == "closed"
        await limiter.close()

    run(scenario())


def test_async_cluster_and_leases(redis_cluster, prefix):
    async def scenario():
        from redis.asyncio.cluster import ClusterNode
        from redis.asyncio.cluster import RedisCluster as Client

        client = Client(startup_nodes=[ClusterNode("127.0.0.1", n.port)
                                       for n in redis_cluster.nodes])
        clock = ManualClock(3.0)
        remote = redis_asyncio.RedisTokenBucket(client, 0.001, 10, prefix=prefix, lease=4,
                                                clock=clock)
        admitted = 0
        for key in KEYS[:20]:
            admitted += sum([await remote.try_acquire(key) for _ in range(12)])
        admitted += int((await remote.acquire_many(KEYS[:20])).sum())
        assert admitted == 200
        await remote.close()
        await client.aclose()

    run(scenario())


def test_async_deadline_with_a_hung_server(own_server):
    """As the sync test: each decision waits one 0.05 s read timeout until the breaker opens,
    then answers without I/O. The 2 s bound is 40x the timeout (loaded CI machines), below
    the 4 s that redis-py's default retries would take."""
    import time

    async def scenario():
        limiter = redis_asyncio.RedisTokenBucket(redis.asyncio.Redis.from_url(own_server.url),
                                                 100, 100, timeout=0.05, breaker_threshold=2)
        assert await limiter.try_acquire("k")
        own_server.pause()
        try:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                assert not await limiter.try_acquire("k")
                times.append(time.perf_counter() - start)
        finally:
            own_server.resume()
        # Two read timeouts, then the open breaker answers without trying the server (no
        # third error; counted, not timed, since a loaded machine may pause any call).
        assert all(0.04 < t < 2.0 for t in times[:2])
        assert limiter.status()["errors"] == 2
        await limiter.close()

    run(scenario())


def test_async_cancelled_probe_does_not_wedge_the_breaker(own_server):
    """A probe whose task is cancelled mid-call reports neither success nor failure; the
    breaker must allow a new probe one cool-down later instead of staying half-open."""
    async def scenario():
        clock = ManualClock(0.0)
        limiter = redis_asyncio.RedisTokenBucket(
            redis.asyncio.Redis.from_url(own_server.url), 100, 100, timeout=30.0,
            breaker_threshold=1, breaker_cooldown=1.0, clock=clock)
        own_server.kill()
        assert not await limiter.try_acquire("k")                 # refused: the breaker opens
        assert limiter.status()["breaker"] == "open"
        own_server.start()
        own_server.pause()                                        # accepts, never answers
        try:
            clock.advance(1.0)
            probe = asyncio.ensure_future(limiter.try_acquire("k"))
            for _ in range(1000):                                 # until the probe is sent
                if limiter.status()["breaker"] == "half_open":
                    break
                await asyncio.sleep(0)
            assert limiter.status()["breaker"] == "half_open"
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            assert not await limiter.try_acquire("k")             # degraded: no second probe yet
            assert limiter.status()["errors"] == 1
        finally:
            own_server.resume()
        clock.advance(1.0)
        assert await limiter.try_acquire("k")                     # a new probe closes it
        assert limiter.status()["breaker"] == "closed"
        await limiter.close()

    run(scenario())
