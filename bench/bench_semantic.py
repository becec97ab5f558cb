"""SemanticCache under pytest-benchmark: the workloads of ``fastcore/benchmark/semantic.py``.

Cache sizes come from ``FASTCORE_BENCH_KEYS`` (default 100,000; e.g. ``1e3,1e5``). Run from
this folder: ``cd bench && python -m pytest -q bench_semantic.py`` (conftest.py and
_suite.py come with the benchmark CLI). The hit-ratio comparison is bench/hit_ratio.py.
"""

import os

from _suite import define_benchmarks

from fastcore.benchmark import semantic
from fastcore.benchmark.cli import parse_counts

KEYS = parse_counts(os.environ.get("FASTCORE_BENCH_KEYS", "100000"))

for _keys in KEYS:
    define_benchmarks(globals(), semantic.workloads(_keys, 1))
