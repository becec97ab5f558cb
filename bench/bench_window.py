"""Sliding-window benchmarks: the workloads of fastcore/benchmark/window.py.

    pytest bench/bench_window.py --benchmark-group-by=group      # pytest-benchmark tables
    python bench/bench_window.py [--large 10000000]               # one run, ns/op and ratios

Never collected by the default test run (tests/ only). Ratios are quoted within one run.
"""

import argparse
import sys

import pytest

from fastcore.benchmark.window import workloads
from fastcore.benchmark.workload import PeerMissing, measure

KEYS = 100_000
BATCH = 1_000_000


def _cases():
    for w in workloads(KEYS, BATCH):
        yield pytest.param(w, id=f"{w.operation} | {w.subject}")


@pytest.mark.parametrize("workload", list(_cases()))
def test_window(benchmark, workload):
    if workload.peer:
        pytest.importorskip(workload.peer.replace("-py", "").replace("-", "_"))
    benchmark.group = workload.operation
    benchmark.extra_info["ops"] = workload.ops
    run = workload.setup()
    benchmark.pedantic(run, rounds=7, warmup_rounds=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=KEYS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--large", type=int, default=0, help="also a table of this many keys")
    args = parser.parse_args(argv)
    reference = {}
    group = None
    for w in workloads(args.keys, args.batch, args.large or None):
        if w.operation != group:
            group = w.operation
            print(f"\n{group}")
        try:
            timing = measure(w)
        except PeerMissing as missing:
            print(f"  {w.subject:40} skipped: {missing}")
            continue
        if w.subject.startswith("fastcore.KeyedTokenBucket"):
            reference[group] = timing.median_ns
        memory = (f"  {timing.memory_bytes / w.keys:6.1f} B/key"
                  if timing.memory_bytes and w.keys else "")
        print(f"  {w.subject:40} {timing.median_ns:9.1f} ns/op  (spread {timing.spread:.0%})"
              f"{memory}", flush=True)
        timing.workload = w
        main.timings = getattr(main, "timings", []) + [timing]
    print("\nratios (same run)")
    for group in dict.fromkeys(t.workload.operation for t in main.timings):
        rows = [t for t in main.timings if t.workload.operation == group]
        mine = {t.workload.subject: t.median_ns for t in rows if t.workload.kind == "fastcore"}
        for subject, ns in mine.items():
            if "reference" in subject:
                continue
            parts = [f"{ns / reference[group]:.2f}x token bucket"] if group in reference else []
            parts += [f"{t.median_ns / ns:.0f}x faster than {t.workload.subject}"
                      for t in rows if t.workload.kind == "peer"]
            print(f"  {group} | {subject}: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
