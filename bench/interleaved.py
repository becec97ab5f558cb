"""Ratios on a shared machine: every workload of one structure, interleaved, CPU time, best round.

The wall-clock harness (``fastcore.benchmark.workload.measure``) times each workload on its
own; when other jobs share the machine, subjects measured a minute apart see different
loads. This runner builds every workload first, then times one call of each in turn, round
after round, with the thread's CPU time, and keeps each workload's fastest round: all
subjects see the same conditions, so the ratios hold even when absolute figures do not.

    python bench/interleaved.py ttlcache --keys 100000 --rounds 25
"""

import argparse
import gc
import importlib
import time

from fastcore.benchmark.workload import PeerMissing, peer_version


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="a module of fastcore.benchmark, e.g. ttlcache")
    parser.add_argument("--keys", type=float, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    module = importlib.import_module(f"fastcore.benchmark.{args.module}")
    runs = []
    for workload in module.workloads(int(args.keys), args.batch):
        try:
            if workload.peer:
                peer_version(workload.peer)
        except PeerMissing as missing:
            print(f"skipped {workload.subject}: {missing}")
            continue
        run = workload.setup()
        run()
        runs.append((workload, run))
    best = {}
    gc.collect()
    for _ in range(args.rounds):
        for workload, run in runs:
            start = time.thread_time_ns()
            run()
            elapsed = (time.thread_time_ns() - start) / workload.ops
            best[workload] = min(best.get(workload, elapsed), elapsed)
    groups = {}
    for workload, _ in runs:
        groups.setdefault(workload.operation, []).append(workload)
    for operation, workloads in groups.items():
        first = best[workloads[0]]
        print(f"\n{operation}")
        for workload in workloads:
            print(f"  {workload.subject:36s} {best[workload]:9.1f} ns  {best[workload] / first:6.2f}x")


if __name__ == "__main__":
    main()
