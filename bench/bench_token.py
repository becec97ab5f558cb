"""Token buckets under pytest-benchmark: the workloads of ``fastcore/benchmark/token.py``.

Key counts come from ``FASTCORE_BENCH_KEYS`` (default 100,000; e.g. ``1e5,1e7`` adds ten
million keys, whose key strings take a few seconds and about 1 GB to build) and the batch
size from ``FASTCORE_BENCH_BATCH`` (default 4,096).
"""

import os

from _suite import define_benchmarks

from fastcore.benchmark import token
from fastcore.benchmark.cli import parse_counts

KEYS = parse_counts(os.environ.get("FASTCORE_BENCH_KEYS", "100000"))
BATCH = parse_counts(os.environ.get("FASTCORE_BENCH_BATCH", "4096"))

for _keys in KEYS:
    for _batch in BATCH:
        define_benchmarks(globals(), token.workloads(_keys, _batch))
