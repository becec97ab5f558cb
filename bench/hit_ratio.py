"""Hit ratio of SemanticCache's SIEVE eviction against LRU and W-TinyLFU on Zipf traces.

Seeded Zipf traces (alpha 0.7, 0.9, 1.1) over ``--keys`` keys; caches sized at 1 % and
10 % of the key space; every cache sees the same trace and inserts on every miss.
Peers: ``cachetools.LRUCache`` (exact LRU) and ``theine.Cache`` (W-TinyLFU, which may
refuse an insert). Prints a Markdown table (the README's "SemanticCache" section).

    python bench/hit_ratio.py                    # 100,000 keys, 1,000,000 requests
    python bench/hit_ratio.py --keys 10000 --requests 200000
"""

import argparse

import numpy as np

import fastcore

ALPHAS = (0.7, 0.9, 1.1)
SHARES = (0.01, 0.10)


def zipf_trace(keys: int, requests: int, alpha: float, seed: int) -> list:
    """``requests`` keys drawn with P(rank i) proportional to 1 / i**alpha, i = 1..keys;
    ranks are mapped to shuffled key ids so popularity does not follow key order."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1, dtype=np.float64) ** alpha
    ranks = rng.choice(keys, size=requests, p=weights / weights.sum())
    return rng.permutation(keys)[ranks].tolist()


def semantic_hits(trace, size):
    cache = fastcore.SemanticCache(size, default=fastcore.Freshness(3600),
                                   clock=fastcore.ManualClock())
    lookup, store, miss = cache.lookup, cache.set, fastcore.CacheState.MISS
    hits = 0
    for key in trace:
        if lookup(key).state is miss:
            store(key, key)
        else:
            hits += 1
    return hits


def lru_hits(trace, size):
    import cachetools
    cache = cachetools.LRUCache(size)
    get = cache.get
    hits = 0
    for key in trace:
        if get(key) is None:
            cache[key] = key
        else:
            hits += 1
    return hits


def theine_hits(trace, size):
    import theine
    cache = theine.Cache(size)
    get, store = cache.get, cache.set
    hits = 0
    for key in trace:
        if get(key)[1]:
            hits += 1
        else:
            store(key, key)
    return hits


CACHES = [
    ("fastcore.SemanticCache (SIEVE)", semantic_hits),
    ("cachetools.LRUCache", lru_hits),
    ("theine (W-TinyLFU)", theine_hits),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args(argv)
    header = "| alpha | cache size | " + " | ".join(name for name, _ in CACHES) + " |"
    print(f"Zipf traces: {args.keys:,} keys, {args.requests:,} requests, seed {args.seed}; "
          "hit ratio in %\n")
    print(header)
    print("|" + "---|" * (2 + len(CACHES)))
    for alpha in ALPHAS:
        trace = zipf_trace(args.keys, args.requests, alpha, args.seed)
        for share in SHARES:
            size = max(1, int(args.keys * share))
            ratios = [100.0 * run(trace, size) / len(trace) for _, run in CACHES]
            cells = " | ".join(f"{r:.2f}" for r in ratios)
            print(f"| {alpha} | {size:,} ({share:.0%}) | {cells} |", flush=True)


if __name__ == "__main__":
    main()
