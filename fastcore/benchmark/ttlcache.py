"""TTL cache workloads: fastcore.TTLCache, its peers and a plain dict floor.

Groups (one ``operation`` each), every cache built with maxsize = ``keys`` and ttl 600 s,
filled with ``keys`` entries before timing:
- ``get hit (hot key)``: ``cache.get(k)`` on one key;
- ``get hit (N keys)``: ``cache.get(k)`` round robin over every key;
- ``cache[k] hit (hot key)``: ``cache[k]`` on one key (theine: ``get``);
- ``get miss``: ``cache.get(k)`` for keys never stored;
- ``set overwrite``: ``cache[k] = v`` round robin over the stored keys;
- ``set new (evicts)``: ``cache[k] = v`` for keys not stored, so every set evicts one
  (the keys cycle through a ring of 2N names, so a name comes back long after its eviction).
Every subject gets the same key objects in the same order. ``cache[k]`` and ``cache[k] = v``
are timed as ``operator.getitem``/``operator.setitem`` mapped over the keys: the calls those
statements make (``PyObject_GetItem``/``PyObject_SetItem``, so a Python class's method is
found through its type slot as in user code). Mapping the bound ``cache.__setitem__`` instead
would time a different path per kind of class: for a C type a slot wrapper that packs an
argument tuple (10-40 ns here, none of it paid by ``cache[k] = v``), for a Python class a plain
method call that skips the slot lookup.
fastcore runs on the default clock (CLOCK_MONOTONIC) and on ``CoarseClock``. theine's
``get`` returns ``(value, found)`` and takes ``timedelta`` ttls; it may refuse inserts
(W-TinyLFU admission), so its "set new" is not always an insert. The dict floor never
expires or evicts: its "set new" is a dict overwrite.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from datetime import timedelta

import fastcore
from fastcore.benchmark.workload import Workload

TTL = 600.0                         # seconds: nothing expires while a benchmark runs
OPS = 10_000                        # operations per timed call


def key_names(count: int, prefix: str = "key") -> list:
    return [f"{prefix}-{i}" for i in range(count)]


def _cycle(keys: list, ops: int, start: int = 0) -> list:
    return [keys[(start + i) % len(keys)] for i in range(ops)]


def _fastcore(clock=None):
    def build(keys):
        return fastcore.TTLCache(len(keys), TTL, clock=clock)
    return build


def _cachetools(keys):
    import cachetools
    return cachetools.TTLCache(len(keys), TTL)


def _cachebox(keys):
    import cachebox
    return cachebox.TTLCache(len(keys), TTL)


def _dict(keys):
    return {}


class _Theine:
    """theine's API shaped like a mapping, bound methods fetched once."""

    def __init__(self, keys):
        from theine import Cache
        self.cache = Cache(len(keys))
        self.ttl = timedelta(seconds=TTL)

    def filler(self):
        set_, ttl = self.cache.set, self.ttl
        return lambda key, value: set_(key, value, ttl)


SUBJECTS = [
    # (subject, kind, peer distribution, builder)
    ("fastcore.TTLCache", "fastcore", None, _fastcore()),
    ("fastcore.TTLCache (CoarseClock)", "fastcore", None, _fastcore(fastcore.CoarseClock())),
    ("cachebox.TTLCache", "peer", "cachebox", _cachebox),
    ("cachetools.TTLCache", "peer", "cachetools", _cachetools),
    ("theine.Cache", "peer", "theine", None),
    ("dict (floor, no expiry)", "floor", None, _dict),
]


def _filled(builder, keys):
    """(cache, calls) for a subject, filled with every key: calls maps "getitem", "get" and
    "setitem" to (function, leading iterables), the function taking the leading iterables'
    items before the key."""
    if builder is None:
        theine = _Theine(keys)
        setitem = theine.filler()
        get = theine.cache.get
        for key in keys:
            setitem(key, key)
        return theine.cache, {"getitem": (get, ()), "get": (get, ()), "setitem": (setitem, ())}
    cache = builder(keys)
    for key in keys:
        cache[key] = key
    itself = (itertools.repeat(cache),)
    return cache, {"getitem": (operator.getitem, itself), "get": (cache.get, ()),
                   "setitem": (operator.setitem, itself)}


def _loop(function, leading, chunks, *arguments):
    """``run()`` applying ``function`` to the leading iterables' items, the next chunk's keys
    and ``arguments`` (chunks cycle, so a round robin covers every key even when there are
    more keys than operations per call)."""
    chunks = itertools.cycle(chunks)

    def run():
        deque(map(function, *leading, next(chunks), *arguments), 0)
    return run


def _memory(run):
    cache = run.cache
    return cache.memory_bytes() if hasattr(cache, "memory_bytes") else None


def _workload(operation, subject, kind, peer, keys, setup):
    return Workload(structure="cache", operation=operation, subject=subject, setup=setup,
                    ops=OPS, kind=kind, peer=peer, keys=keys,
                    memory=_memory if subject.startswith("fastcore") else None)


def workloads(keys: int, batch: int) -> list:
    """Every cache workload at ``keys`` entries (``batch`` is unused: no batch API)."""
    keys = max(keys, 1)
    names = key_names(keys)
    hot = [[names[keys // 2]] * OPS]
    round_robin = [_cycle(names, OPS, start) for start in range(0, keys, OPS)]
    misses = [_cycle(key_names(keys, "missing"), OPS, start) for start in range(0, keys, OPS)]
    values = list(range(OPS))
    # A ring of R >= 2N names, R a multiple of OPS; the cache starts with the first N and each
    # run inserts the next OPS, so a name returns R >= 2N inserts later: always evicted by then.
    ring_size = OPS * -(-2 * keys // OPS)
    ring = names + key_names(ring_size - keys, "fresh")
    ring_chunks = [_cycle(ring, OPS, keys + start) for start in range(0, ring_size, OPS)]
    result = []
    for subject, kind, peer, builder in SUBJECTS:
        def timed(chunks, method, builder=builder, values=None):
            def setup():
                cache, calls = _filled(builder, names)
                function, leading = calls[method]
                run = _loop(function, leading, chunks, *([values] if values else []))
                run.cache = cache
                return run
            return setup

        result += [
            _workload("get hit (hot key)", subject, kind, peer, keys, timed(hot, "get")),
            _workload(f"get hit ({keys:,} keys)", subject, kind, peer, keys,
                      timed(round_robin, "get")),
            _workload("cache[k] hit (hot key)", subject, kind, peer, keys,
                      timed(hot, "getitem")),
            _workload("get miss", subject, kind, peer, keys, timed(misses, "get")),
            _workload("set overwrite", subject, kind, peer, keys,
                      timed(round_robin, "setitem", values=values)),
            _workload("set new (evicts)", subject, kind, peer, keys,
                      timed(ring_chunks, "setitem", values=values)),
        ]
    return result
