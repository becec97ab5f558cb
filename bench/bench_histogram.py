"""pytest-benchmark suite for LatencyHistogram, built from fastcore.benchmark.histogram.

    pytest bench/bench_histogram.py --benchmark-only        # one group per operation
    python bench/bench_histogram.py                         # ratio table, as in the README

Every workload is a test with a unique name (no parametrisation); peers that are not
installed are skipped with the reason.
"""

import re
import sys

import pytest

from fastcore.benchmark.histogram import workloads
from fastcore.benchmark.workload import PeerMissing, measure, peer_version

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


def main(rounds=9):
    """Print ns/op and the ratio to the group's fastcore (first) row, measured in one run."""
    groups = {}
    for workload in workloads(KEYS, BATCH):
        try:
            groups.setdefault(workload.operation, []).append(measure(workload, rounds=rounds))
        except PeerMissing as missing:
            print(f"skipped {workload.subject}: {missing}", file=sys.stderr)
    print("| operation | subject | ns/op | x fastcore |")
    print("|---|---|---:|---:|")
    for operation, timings in groups.items():
        reference = timings[0].median_ns
        for timing in timings:
            print(f"| {operation} | {timing.workload.subject} | {timing.median_ns:,.1f} | "
                  f"{timing.median_ns / reference:.2f} |")


if __name__ == "__main__":
    main()
