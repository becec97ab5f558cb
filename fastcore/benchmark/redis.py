"""Redis workloads: ``fastcore.redis.RedisTokenBucket`` beside ``limits``' Redis storage.

Every subject talks to the same server (``url``) in the same run. Groups: one decision per
round trip on one hot key and round robin over ``keys`` keys (fastcore ``try_acquire``,
limits' moving window and sliding-window counter ``hit``, and a ``PING`` floor: one bare
round trip through redis-py; ``RedisSlidingWindow`` when the local sliding window is
built), fastcore's ``acquire_many`` pipelined in batches of
``batch``, and ``lease=50`` on one hot key. Limits are set so nothing is denied (every call
does its full work); fastcore's rate is capped by the Redis engine's exact range (tau at
most 2**50 ns), so it uses 1,000,000 tokens/s with a burst of 1,000,000.
Keys live under a prefix of this run's own and are deleted by ``cleanup(url)``.

A row whose calls never reached Redis has no figure: every setup first checks that the
server answers ``PING`` (within ``CONNECT_TIMEOUT_S``), and every timed call of a fastcore
limiter checks afterwards that none of its Redis calls failed (the limiters answer a failed
call locally, by ``on_error``, in about a microsecond: those are not Redis figures). Either
raises ``Unavailable``, which the runner reports as a "failed" row.
"""

from __future__ import annotations

import os
from collections import deque

from fastcore.benchmark.workload import Unavailable, Workload

__all__ = ["workloads", "cleanup", "reachable", "PREFIX"]

PREFIX = f"fcbench{os.getpid()}:"
RATE = 1_000_000                 # tokens/s (tau = 1 s): nothing is denied at these speeds
LIMITS_RATE = "1000000/second"
ONE_BY_ONE_OPS = 200             # decisions per timed call, one round trip each
LEASE = 50
CONNECT_TIMEOUT_S = 3.0          # connect and read timeout of the reachability check


def _keys(count: int) -> list:
    return [f"agent-{i}" for i in range(count)]


def _cycle(keys: list, ops: int) -> list:
    return [keys[i % len(keys)] for i in range(ops)]


def _client(url):
    import redis
    return redis.Redis.from_url(url)


def reachable(url) -> None:
    """Raise ``Unavailable`` unless the server at ``url`` answers PING; no retries, at most
    about ``CONNECT_TIMEOUT_S`` seconds for a connect and as long for the reply."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                  socket_timeout=CONNECT_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        raise Unavailable(f"Redis not reachable: {type(error).__name__}: {error}") from None
    finally:
        client.close()


def _limiter(url, **options):
    from fastcore.redis import RedisTokenBucket
    return RedisTokenBucket(_client(url), RATE, RATE, prefix=PREFIX, **options)


def _one_by_one(url, keys, build):
    """``run()`` making one call per key of a pre-generated round-robin sequence."""
    sequence = _cycle(keys, ONE_BY_ONE_OPS)

    def setup():
        reachable(url)
        built = build(url)
        limiter, call = built if isinstance(built, tuple) else (None, built)

        def run():
            deque(map(call, sequence), 0)
        if limiter is None:
            return _raising_checked(run, url)
        return _errors_checked(run, limiter)
    return setup


def _raising_checked(run, url):
    """``run`` of a subject that raises when Redis fails (limits, PING): an error raised while
    the server no longer answers is ``Unavailable``, any other error is the workload's."""
    def checked():
        try:
            run()
        except Exception as error:
            reachable(url)        # raises Unavailable when the server is gone
            raise error
    return checked


def _errors_checked(run, limiter):
    """``run`` followed by the check that none of ``limiter``'s Redis calls failed."""
    def checked():
        run()
        if limiter.status()["errors"]:
            status = limiter.status()
            raise Unavailable(f"{status['errors']} Redis call(s) failed, decisions answered "
                              f"locally by on_error: {status['last_error']}")
    return checked


def _fastcore_try(url):
    limiter = _limiter(url)
    return limiter, limiter.try_acquire


def _fastcore_window_try(url):
    from fastcore.redis import RedisSlidingWindow
    limiter = RedisSlidingWindow(_client(url), RATE, 1.0, slices=10, prefix=PREFIX)
    return limiter, limiter.try_acquire


def _fastcore_lease(url):
    limiter = _limiter(url, lease=LEASE)
    return limiter, limiter.try_acquire


def _limits(strategy_name):
    def build(url):
        import limits
        from limits import strategies
        from limits.storage import RedisStorage
        storage = RedisStorage(url, key_prefix=PREFIX + "limits")
        hit = getattr(strategies, strategy_name)(storage).hit
        item = limits.parse(LIMITS_RATE)
        return lambda key: hit(item, key)
    return build


def _ping(url):
    ping = _client(url).ping
    return lambda key: ping()


def _batched(url, keys, batch):
    sequence = _cycle(keys, max(batch, 1) * 10)
    batches = [sequence[i:i + batch] for i in range(0, len(sequence), batch)]

    def setup():
        reachable(url)
        limiter = _limiter(url)
        acquire_many = limiter.acquire_many

        def run():
            deque(map(acquire_many, batches), 0)
        return _errors_checked(run, limiter)
    return setup, len(sequence)


def _window_workloads(url, operation, keys, key_count):
    """RedisSlidingWindow, when the local sliding window (its arguments) is built."""
    import fastcore
    if not hasattr(fastcore, "SlidingWindow"):
        return []
    return [Workload("redis", operation, "fastcore.redis.RedisSlidingWindow.try_acquire",
                     _one_by_one(url, keys, _fastcore_window_try), ONE_BY_ONE_OPS,
                     keys=key_count)]


def _one_by_one_group(url, label, keys, key_count):
    operation = f"redis one decision per round trip, {label}"
    return [
        Workload("redis", operation, "fastcore.redis.RedisTokenBucket.try_acquire",
                 _one_by_one(url, keys, _fastcore_try), ONE_BY_ONE_OPS, keys=key_count),
        *_window_workloads(url, operation, keys, key_count),
        Workload("redis", operation, "limits MovingWindow (RedisStorage)",
                 _one_by_one(url, keys, _limits("MovingWindowRateLimiter")), ONE_BY_ONE_OPS,
                 kind="peer", peer="limits", keys=key_count),
        Workload("redis", operation, "limits SlidingWindowCounter (RedisStorage)",
                 _one_by_one(url, keys, _limits("SlidingWindowCounterRateLimiter")),
                 ONE_BY_ONE_OPS, kind="peer", peer="limits", keys=key_count),
        Workload("redis", operation, "floor: redis-py PING round trip",
                 _one_by_one(url, keys, _ping), ONE_BY_ONE_OPS, kind="floor", keys=key_count),
    ]


def workloads(keys: int, batch: int, url: str = "redis://127.0.0.1:6379/0") -> list:
    """Every Redis workload against the server at ``url``, ``keys`` keys, batches of ``batch``."""
    many = _keys(keys)
    found = _one_by_one_group(url, "hot key", ["agent-0"], 1)
    found += _one_by_one_group(url, f"{keys:,} keys round robin", many, keys)
    for label, key_list in (("hot key", ["agent-0"]), (f"{keys:,} keys", many)):
        setup, ops = _batched(url, key_list, batch)
        found.append(Workload("redis", f"redis acquire_many pipelined, batch {batch}, {label}",
                              "fastcore.redis.RedisTokenBucket.acquire_many", setup, ops,
                              keys=len(key_list), batch=batch))
    found.append(Workload("redis", f"redis lease={LEASE}, hot key",
                          "fastcore.redis.RedisTokenBucket(lease=50).try_acquire",
                          _one_by_one(url, ["agent-0"], _fastcore_lease), ONE_BY_ONE_OPS,
                          keys=1))
    return found


def cleanup(url: str) -> int:
    """Delete every key this process's workloads created; the number deleted."""
    client = _client(url)
    deleted = 0
    for name in client.scan_iter(match=PREFIX + "*", count=1000):
        deleted += client.delete(name)
    return deleted
