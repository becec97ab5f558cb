"""pytest-benchmark suite for TTL caches: the workloads of ``python -m fastcore bench``.

One benchmark group per operation; every subject gets its own uniquely named test function
(no parametrisation), built from ``fastcore.benchmark.ttlcache.workloads``. Run with

    pytest bench/bench_ttlcache.py --benchmark-group-by=group --benchmark-columns=median,ops

Each timed call performs ``OPS`` operations: divide the figures by ``OPS`` for ns/op.
"""

import re

import pytest

from fastcore.benchmark.ttlcache import OPS, workloads
from fastcore.benchmark.workload import PeerMissing, peer_version

KEYS = 100_000


def _make_test(workload):
    def test(benchmark):
        if workload.peer:
            try:
                peer_version(workload.peer)
            except PeerMissing as missing:
                pytest.skip(str(missing))
        benchmark.group = f"ttlcache: {workload.operation} (x{OPS})"
        benchmark.extra_info["ops_per_call"] = workload.ops
        benchmark(workload.setup())
    return test


for _workload in workloads(KEYS, 1):
    _name = re.sub(r"\W+", "_", f"test_{_workload.operation}__{_workload.subject}").strip("_")
    globals()[_name.lower()] = _make_test(_workload)
