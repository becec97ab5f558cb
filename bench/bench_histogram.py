"""pytest-benchmark suite for LatencyHistogram, built from fastcore.benchmark.histogram.

    pytest bench/bench_histogram.py --benchmark-only        # one group per operation
    python bench/interleaved.py histogram --batch 1000000       # the README's ratio table

Every workload is a test with a unique name (no parametrisation); peers that are not
installed are skipped with the reason.
"""

import re

import pytest

from fastcore.benchmark.histogram import workloads
from fastcore.benchmark.workload import PeerMissing, peer_version

KEYS, BATCH = 1, 1_000_000


def _name(workload):
    slug = re.sub(r"[^a-z0-9]+", "_", f"{workload.operation} {workload.subject}".lower())
    return "test_" + slug.strip("_")


def _bench(workload):
    def test(benchmark):
        if workload.peer:
            try:
                peer_version(workload.peer)
            except PeerMissing as missing:
                pytest.skip(str(missing))
        run = workload.setup()
        benchmark.group = workload.operation
        benchmark.extra_info["ops_per_call"] = workload.ops
        benchmark(run)
    test.__name__ = _name(workload)
    return test


for _workload in workloads(KEYS, BATCH):
    globals()[_name(_workload)] = _bench(_workload)
