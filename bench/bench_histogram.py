"""pytest-benchmark suite for LatencyHistogram, built from fastcore.benchmark.histogram.

    pytest bench/bench_histogram.py --benchmark-only        # one group per operation
    python bench/bench_histogram.py                         # interleaved ratio table (README)

Every workload is a test with a unique name (no parametrisation); peers that are not
installed are skipped with the reason.
"""

import re
import sys

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


def main(rounds=21, round_time=0.02):
    """Print ns/op and the ratio to the group's first (fastcore) row.

    Rounds are interleaved across all workloads (one round of each in turn, ``rounds`` times)
    so that load from other processes hits every subject alike; the median is reported.
    """
    import statistics
    import time

    runs = []
    for workload in workloads(KEYS, BATCH):
        try:
            if workload.peer:
                peer_version(workload.peer)
        except PeerMissing as missing:
            print(f"skipped {workload.subject}: {missing}", file=sys.stderr)
            continue
        run = workload.setup()
        run()
        calls = 1
        while True:     # calls per round so that a round lasts about round_time
            start = time.perf_counter_ns()
            for _ in range(calls):
                run()
            if time.perf_counter_ns() - start >= round_time * 1e9 or calls >= 1 << 20:
                break
            calls *= 2
        runs.append((workload, run, calls, []))
    for _ in range(rounds):
        for workload, run, calls, samples in runs:
            start = time.perf_counter_ns()
            for _ in range(calls):
                run()
            samples.append((time.perf_counter_ns() - start) / (calls * workload.ops))
    print("| operation | subject | ns/op | ratio to first row |")
    print("|---|---|---:|---:|")
    reference = {}
    for workload, _, _, samples in runs:
        median = statistics.median(samples)
        first = reference.setdefault(workload.operation, median)
        print(f"| {workload.operation} | {workload.subject} | {median:,.1f} | "
              f"{median / first:.3f} |")


if __name__ == "__main__":
    main()
