"""SemanticCache workloads: ``lookup`` against the TTL caches of the peers and a dict floor.

Groups (one ``operation`` each, prefixed ``semantic:`` so they never merge with the
TTLCache groups of the same names, whose peer rows would then appear twice): get hit on
one hot key, get hit round robin over ``keys`` keys, get miss, set overwrite, set insert
with eviction (a full cache of ``keys`` entries), and ``get_or_load`` hit. SemanticCache
runs on the system monotonic clock (the default), on ``CoarseClock`` and on ``ManualClock``
(the algorithm without a clock read); peers use their defaults. Keys are pre-generated
strings; inserts use fresh integers.
"""

from __future__ import annotations

import itertools
from collections import deque

import fastcore
from fastcore.benchmark.workload import Workload

OPS = 10_000                       # operations per timed call
TTL = 600.0                        # seconds: nothing expires while a benchmark runs
STRUCTURE = "semantic"             # the name fastcore.benchmark.registry lists


def _key_names(count: int) -> list:
    return [f"key-{i}" for i in range(count)]


def _cycle(keys: list, ops: int) -> list:
    return [keys[i % len(keys)] for i in range(ops)]


def _loop(function, arguments):
    def run():
        deque(map(function, arguments), 0)
    return run


def _loop2(function, first, second):
    def run():
        deque(map(function, first, second), 0)
    return run


def _semantic(size, clock):
    return fastcore.SemanticCache(size, default=fastcore.Freshness(TTL), clock=clock)


CLOCKS = [
    ("fastcore.SemanticCache", lambda: None),
    ("fastcore.SemanticCache (CoarseClock)", fastcore.CoarseClock),
    ("fastcore.SemanticCache (ManualClock)", fastcore.ManualClock),
]


def _peer_caches():
    """(subject, distribution, build(size) -> (get, set)) for every peer and the floor."""
    def cachebox_ttl(size):
        import cachebox
        cache = cachebox.TTLCache(size, TTL)
        return cache.get, cache.__setitem__

    def cachetools_ttl(size):
        import cachetools
        cache = cachetools.TTLCache(size, TTL)
        return cache.get, cache.__setitem__

    def theine_cache(size):
        import theine
        cache = theine.Cache(size)
        return cache.get, cache.set

    def plain_dict(size):
        cache = {}
        return cache.get, cache.__setitem__

    return [
        ("cachebox.TTLCache", "cachebox", cachebox_ttl, "peer"),
        ("cachetools.TTLCache", "cachetools", cachetools_ttl, "peer"),
        ("theine.Cache", "theine", theine_cache, "peer"),
        ("floor: dict (no expiry, no eviction)", None, plain_dict, "floor"),
    ]


def _group(operation, keys, live_keys, make_run) -> list:
    """One workload per subject; ``make_run(get, set, fill_keys) -> run``."""
    found = []
    for subject, clock in CLOCKS:
        def setup(clock=clock):
            cache = _semantic(max(len(keys), 1), clock())
            for key in keys:
                cache.set(key, key)
            return make_run(cache.lookup, cache.set)
        found.append(Workload(STRUCTURE, operation, subject, setup, OPS, keys=live_keys))
    for subject, distribution, build, kind in _peer_caches():
        def setup(build=build):
            get, store = build(max(len(keys), 1))
            for key in keys:
                store(key, key)
            return make_run(get, store)
        found.append(Workload(STRUCTURE, operation, subject, setup, OPS, kind=kind,
                              peer=distribution, keys=live_keys))
    return found


def _get_or_load_workload(keys: list) -> Workload:
    sequence = _cycle(keys, OPS)

    def setup():
        cache = _semantic(len(keys), None)
        get_or_load = cache.get_or_load
        loader = str
        for key in keys:
            get_or_load(key, loader)

        def run():
            for key in sequence:
                get_or_load(key, loader)
        return run
    return Workload(STRUCTURE, "semantic: get_or_load hit (hot key)",
                    "fastcore.SemanticCache", setup, OPS)


def workloads(keys: int, batch: int) -> list:
    """Every SemanticCache workload for caches of ``keys`` entries (``batch`` is unused:
    a cache has no batch API)."""
    hot = ["key-0"]
    names = _key_names(keys)
    absent = [f"absent-{i}" for i in range(OPS)]
    hot_sequence = _cycle(hot, OPS)
    round_robin = _cycle(names, OPS)
    overwrite = _cycle(names, OPS)
    values = list(range(OPS))
    fresh_keys = itertools.count()

    def insert_run(get, store):
        return lambda: deque(map(store, itertools.islice(fresh_keys, OPS),
                                 itertools.repeat(1)), 0)

    return (
        _group("semantic: get hit (hot key)", hot, None, lambda get, store: _loop(get, hot_sequence))
        + _group(f"semantic: get hit ({keys:,} keys round robin)", names, keys,
                 lambda get, store: _loop(get, round_robin))
        + _group(f"semantic: get miss ({keys:,} keys)", names, keys,
                 lambda get, store: _loop(get, absent))
        + _group(f"semantic: set overwrite ({keys:,} keys)", names, keys,
                 lambda get, store: _loop2(store, overwrite, values))
        + _group(f"semantic: set insert with eviction ({keys:,} keys)", names, keys, insert_run)
        + [_get_or_load_workload(hot)]
    )
