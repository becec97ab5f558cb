"""Sliding-window workloads: fastcore's two kinds, the token bucket beside them, and the peers.

Groups (one ``operation`` each): ``try_acquire`` on one hot key, round robin over every one
of ``keys`` keys, over random keys of a table of ``large_keys`` (optional: 10 million keys
need several GB), and ``acquire_many`` per decision on ``batch`` random handles of a table of
``keys`` keys (the token bucket's batch workload, so the two compare directly). fastcore
runs on the system monotonic clock, like the peers, with limits too high to deny
(10,000,000 per 10 ms window), so every call does the full work.
``fastcore.KeyedTokenBucket`` runs the same sequences: the issue's targets are ratios to it.
"""

from __future__ import annotations

import numpy as np

import fastcore
from fastcore.benchmark.token import (
    HIGH_BURST, HIGH_RATE, SEED, _loop, _peer_limits, _peer_throttled, _table_memory, key_names,
)
from fastcore.benchmark.workload import Workload

WINDOW_LIMIT = 10_000_000
WINDOW_S = 0.01
OPS = 10_000                        # operations per timed call on one hot key
LARGE_OPS = 1_000_000               # random keys per timed call on the large table

KINDS = [
    ("fastcore.SlidingWindowCounter",
     lambda keys: fastcore.SlidingWindowCounter(WINDOW_LIMIT, WINDOW_S, max_keys=keys)),
    ("fastcore.SlidingWindow (10 slices)",
     lambda keys: fastcore.SlidingWindow(WINDOW_LIMIT, WINDOW_S, max_keys=keys)),
    ("fastcore.KeyedTokenBucket (reference)",
     lambda keys: fastcore.KeyedTokenBucket(HIGH_RATE, HIGH_BURST, max_keys=keys)),
]

PEERS = [
    ("limits MovingWindow", "limits", _peer_limits("MovingWindowRateLimiter")),
    ("limits SlidingWindowCounter", "limits", _peer_limits("SlidingWindowCounterRateLimiter")),
    ("throttled-py sliding_window", "throttled-py", _peer_throttled("sliding_window")),
]


def _filled(build, keys: list):
    limiter = build(max(len(keys), 1))
    limiter.acquire_many(keys)
    return limiter


def _try_acquire_group(operation: str, keys: list, sequence: list, live_keys, peers=True):
    found = []
    for subject, build in KINDS:
        def setup(build=build):
            limiter = _filled(build, keys)
            run = _loop(limiter.try_acquire, sequence)
            run.limiter = limiter
            return run
        found.append(Workload("window", operation, subject, setup, len(sequence),
                              keys=live_keys, memory=_table_memory))
    for subject, distribution, build in PEERS if peers else ():
        found.append(Workload(
            "window", operation, subject,
            (lambda build=build: _loop(build(keys), sequence)), len(sequence), kind="peer",
            peer=distribution, keys=live_keys))
    return found


def _batch_group(keys: int, batch: int) -> list:
    picks = np.random.default_rng(SEED).integers(0, keys, size=batch)
    operation = f"acquire_many per decision ({batch:,} random handles over {keys:,} keys)"
    found = []
    for subject, build in KINDS:
        def setup(build=build):
            limiter = build(keys)
            handles = np.array([limiter.handle(i) for i in range(keys)], dtype=np.int64)[picks]
            acquire_many = limiter.acquire_many
            return lambda: acquire_many(handles)
        found.append(Workload("window", operation, subject, setup, batch, keys=keys,
                              batch=batch))
    return found


def workloads(keys: int, batch: int, large_keys: int | None = None) -> list:
    """Every sliding-window workload for ``keys`` live keys and batches of ``batch``."""
    names = key_names(keys)
    found = (_try_acquire_group("try_acquire hot key", ["agent-0"], ["agent-0"] * OPS, None)
             + _try_acquire_group(f"try_acquire {keys:,} keys round robin", names, names, keys))
    if large_keys:
        large = list(range(large_keys))
        sequence = np.random.default_rng(SEED).integers(0, large_keys, size=LARGE_OPS).tolist()
        found += _try_acquire_group(f"try_acquire {large_keys:,} keys random", large, sequence,
                                    large_keys, peers=False)
    return found + _batch_group(max(keys, 1), max(batch, 1))
