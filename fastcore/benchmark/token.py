"""Token-bucket workloads: fastcore's GCRA buckets, the compiled floors and the peers.

Groups (one ``operation`` each): ``try_acquire`` on one hot key, round robin over ``keys``
keys, ``acquire`` (building a Decision), ``acquire_many`` per decision on a batch of random
handles, and the real-clock group (system monotonic vs coarse clock, mostly-allow and
mostly-deny). Every peer runs the same key walk with limits too high to deny, warmed by one
lap up to PEER_WARM_KEYS keys so it is timed on hits like fastcore's pre-filled table.
"""

from __future__ import annotations

from collections import deque

import itertools

import numpy as np

import fastcore
from fastcore._core.benchfloor import FloorBatch, FloorKeyedBucket
from fastcore.benchmark.workload import Workload

SEED = 20261127
HIGH_RATE = 1_000_000_000          # tokens/s: nothing is denied, so every call does full work
HIGH_BURST = 1_000_000_000
OPS = 10_000                       # operations per timed call
PEER_WARM_KEYS = 100_000           # peers get one warm lap (every key inserted) up to this


def key_names(count: int) -> list:
    """The pre-generated key strings every structure's workloads use."""
    return [f"agent-{i}" for i in range(count)]


def _loop(function, arguments):
    """``run()`` calling ``function`` on each argument, a few ns of loop overhead each."""
    def run():
        deque(map(function, arguments), 0)
    return run


def _walk(keys: list) -> list:
    """The keys in chunks of OPS, laid end to end over whole laps of every key: built once per
    key set, outside the setups, so the memory pass counts the structures, not the walk."""
    laps = -(-len(keys) // OPS)
    walk = [keys[i % len(keys)] for i in range(laps * OPS)]
    return [walk[i:i + OPS] for i in range(0, len(walk), OPS)]


def _round_robin(function, walk: list, warm: bool):
    """``run()`` calling ``function`` on the next chunk of an endless ``_walk`` over every
    key, so each of N keys is touched once per N operations (the whole table, not its first
    OPS keys). ``warm`` makes one full lap first, so a structure that starts empty is timed
    on hits, like fastcore's pre-filled table."""
    chunks = itertools.cycle(walk)

    def run():
        deque(map(function, next(chunks)), 0)
    if warm:
        for _ in range(len(walk)):
            run()
    return run


def _keyed_fastcore(keys: list, clock=None, rate=HIGH_RATE, burst=HIGH_BURST):
    limiter = fastcore.KeyedTokenBucket(rate, burst, max_keys=max(len(keys), 1), clock=clock)
    for key in keys:
        limiter.try_acquire(key)
    return limiter


def _table_memory(run) -> int:
    return run.limiter.memory_bytes()


def _peer_token_bucket(keys):
    import token_bucket
    limiter = token_bucket.Limiter(HIGH_RATE, HIGH_BURST, token_bucket.MemoryStorage())
    return limiter.consume


def _peer_limits(strategy_name):
    def build(keys):
        import limits
        from limits import strategies
        from limits.storage import MemoryStorage
        strategy = getattr(strategies, strategy_name)(MemoryStorage())
        item = limits.parse(f"{HIGH_RATE}/second")
        hit = strategy.hit
        return lambda key: hit(item, key)
    return build


def _peer_throttled(using):
    def build(keys):
        from throttled import MemoryStore, Throttled, rate_limiter
        limiter = Throttled(using=using, quota=rate_limiter.per_sec(HIGH_RATE, burst=HIGH_BURST),
                            store=MemoryStore())
        return limiter.limit
    return build


def _peer_pyrate(keys):
    import pyrate_limiter as pl
    limiter = pl.Limiter(pl.InMemoryBucket([pl.Rate(HIGH_RATE, pl.Duration.SECOND)]))
    return lambda key: limiter.try_acquire(key, blocking=False)


PEERS = [
    ("token-bucket MemoryStorage", "token-bucket", _peer_token_bucket),
    ("limits FixedWindow", "limits", _peer_limits("FixedWindowRateLimiter")),
    ("limits MovingWindow", "limits", _peer_limits("MovingWindowRateLimiter")),
    ("throttled-py gcra", "throttled-py", _peer_throttled("gcra")),
    ("throttled-py token_bucket", "throttled-py", _peer_throttled("token_bucket")),
    ("pyrate-limiter in-memory", "pyrate-limiter", _peer_pyrate),
]


def _try_acquire_workloads(label: str, keys: list, live_keys) -> list:
    walk = _walk(keys)

    def fastcore_setup(clock=None):
        def setup():
            limiter = _keyed_fastcore(keys, clock)
            run = _round_robin(limiter.try_acquire, walk, warm=False)
            run.limiter = limiter
            return run
        return setup

    def floor_setup():
        floor = FloorKeyedBucket(1, HIGH_BURST)
        return _round_robin(floor.try_acquire, walk, warm=True)

    found = [
        Workload("token", f"try_acquire {label}", "fastcore.KeyedTokenBucket",
                 fastcore_setup(), OPS, keys=live_keys, memory=_table_memory),
        Workload("token", f"try_acquire {label}", "fastcore.KeyedTokenBucket (CoarseClock)",
                 fastcore_setup(fastcore.CoarseClock()), OPS, keys=live_keys),
        Workload("token", f"try_acquire {label}", "floor: Cython dict + clock + GCRA",
                 floor_setup, OPS, kind="floor", keys=live_keys),
    ]
    for subject, distribution, build in PEERS:
        found.append(Workload(
            "token", f"try_acquire {label}", subject,
            (lambda build=build: _round_robin(build(keys), walk,
                                              warm=len(keys) <= PEER_WARM_KEYS)),
            OPS, kind="peer",
            peer=distribution, keys=live_keys))
    return found


def _acquire_workload(keys: list) -> Workload:
    walk = _walk(keys)

    def setup():
        limiter = _keyed_fastcore(keys)
        return _round_robin(limiter.acquire, walk, warm=False)
    return Workload("token", "acquire (Decision) hot key", "fastcore.KeyedTokenBucket",
                    setup, OPS)


def _batch_workloads(keys: int, batch: int) -> list:
    decisions = max(batch, 1)
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, keys, size=decisions)

    def fastcore_setup(churned=False):
        limiter = fastcore.KeyedTokenBucket(HIGH_RATE, HIGH_BURST, max_keys=keys)
        if churned:
            # A key in and out first: a table that has lost a key validates each handle
            # against its slot's generation instead of from the handle alone.
            limiter.handle("gone")
            limiter.reset()
        handles = np.array([limiter.handle(i) for i in range(keys)], dtype=np.int64)[picks]
        acquire_many = limiter.acquire_many
        return lambda: acquire_many(handles)

    def floor_setup():
        floor = FloorBatch(np.zeros(keys, dtype=np.int64), 1, HIGH_BURST)
        handles = picks.astype(np.int64)
        allowed = np.zeros(decisions, dtype=np.uint8)
        now_ns = fastcore.monotonic_ns()
        return lambda: floor.acquire_many(handles, allowed, now_ns)

    operation = f"acquire_many per decision (batch {decisions})"
    return [
        Workload("token", operation, "fastcore.KeyedTokenBucket", fastcore_setup, decisions,
                 keys=keys, batch=decisions),
        Workload("token", operation, "fastcore.KeyedTokenBucket, table that lost a key",
                 lambda: fastcore_setup(churned=True), decisions, keys=keys, batch=decisions),
        Workload("token", operation, "floor: nogil loop over a TAT array", floor_setup,
                 decisions, kind="floor", keys=keys, batch=decisions),
    ]


def _real_clock_workloads() -> list:
    """Real-clock cost under mostly-allow and mostly-deny traffic (one hot key)."""
    found = []
    sequence = ["agent-0"] * OPS
    for clock_name, clock in (("monotonic", None), ("coarse", fastcore.CoarseClock())):
        for traffic, rate in (("mostly-allow", HIGH_RATE), ("mostly-deny", 1)):
            def setup(clock=clock, rate=rate):
                limiter = fastcore.KeyedTokenBucket(rate, 1, clock=clock)
                return _loop(limiter.try_acquire, sequence)
            found.append(Workload("token", f"try_acquire real clock, {traffic}",
                                  f"fastcore.KeyedTokenBucket ({clock_name})", setup, OPS))
    return found


def workloads(keys: int, batch: int) -> list:
    """Every token-bucket workload for ``keys`` live keys and batches of ``batch``."""
    return (
        _try_acquire_workloads("hot key", ["agent-0"], None)
        + _try_acquire_workloads(f"{keys:,} keys round robin", key_names(keys), keys)
        + [_acquire_workload(["agent-0"])]
        + _batch_workloads(keys, batch)
        + _real_clock_workloads()
    )
