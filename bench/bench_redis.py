"""Redis limiter benchmarks: fastcore.redis beside limits' Redis storage, same server, same run.

Not collected by the default test run. Two ways to run the same workloads
(``fastcore/benchmark/redis.py``):

    python bench/bench_redis.py [--url redis://127.0.0.1:6379/0] [--keys 100000] [--batch 100]
        prints ns/op, decisions/s and every ratio against limits' one-by-one figures;
    REDIS_URL=redis://... pytest bench/bench_redis.py --benchmark-group-by=group
        the pytest-benchmark view, one group per operation.

Without a URL (``--url`` / ``REDIS_URL``) a redis-server from PATH is started on a free
loopback port for the run and stopped after.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from fastcore.benchmark import redis as redis_workloads
from fastcore.benchmark.workload import PeerMissing, Timing, peer_version

KEYS = 100_000
BATCH = 100


@contextmanager
def redis_url(url=None):
    """``url``, else REDIS_URL, else a redis-server of our own for the duration."""
    url = url or os.environ.get("REDIS_URL")
    if url:
        yield url
        redis_workloads.cleanup(url)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH: pass --url or set REDIS_URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis
        client = redis.Redis(port=port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@pytest.fixture(scope="session")
def url():
    with redis_url() as value:
        yield value


def _make_test(index, workload):
    def test(benchmark, url):
        chosen = redis_workloads.workloads(KEYS, BATCH, url)[index]
        if chosen.peer:
            try:
                peer_version(chosen.peer)
            except PeerMissing as missing:
                pytest.skip(str(missing))
        run = chosen.setup()
        benchmark.group = chosen.operation
        benchmark.extra_info["ops_per_call"] = chosen.ops
        benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    test.__name__ = f"test_{_slug(workload.subject)}_{_slug(workload.operation)}"
    return test


for _index, _workload in enumerate(redis_workloads.workloads(KEYS, BATCH)):
    _test = _make_test(_index, _workload)
    globals()[_test.__name__] = _test
del _index, _workload, _test


def measure_interleaved(workloads, rounds, round_time):
    """Time workloads round-robin, one round each in turn, so load that comes and goes on a
    shared machine hits every subject alike; medians per workload, as the harness reports."""
    runs, calls, timings = [], [], []
    for workload in workloads:
        try:
            if workload.peer:
                peer_version(workload.peer)
        except PeerMissing as missing:
            print(f"skipped {workload.subject}: {missing}", file=sys.stderr)
            continue
        run = workload.setup()
        run()
        start = time.perf_counter_ns()
        run()
        elapsed = max(time.perf_counter_ns() - start, 1)
        runs.append(run)
        calls.append(max(1, int(round_time * 1e9 / elapsed)))
        timings.append(Timing(workload))
    for _ in range(rounds):
        for run, count, timing in zip(runs, calls, timings):
            start = time.perf_counter_ns()
            for _ in range(count):
                run()
            timing.samples_ns.append((time.perf_counter_ns() - start) / (count * timing.workload.ops))
    return timings


def report(url, keys, batch, rounds=15, round_time=0.1):
    """Measure every workload in one run; print ns/op, decisions/s and the ratios."""
    timings = {}
    for timing in measure_interleaved(redis_workloads.workloads(keys, batch, url), rounds,
                                      round_time):
        workload = timing.workload
        timings[(workload.operation, workload.subject)] = timing
        print(f"{workload.operation:58s} {workload.subject:52s} "
              f"{timing.median_ns / 1e3:9.1f} us/op {timing.ops_per_s:10,.0f}/s "
              f"(spread {timing.spread:.0%})", flush=True)

    def ns(operation, subject):
        timing = timings.get((operation, subject))
        return timing.median_ns if timing else float("nan")

    print("\nratios (limits' one-by-one ns/op divided by fastcore's ns/op; higher is better):")
    for label, many in (("hot key", "hot key"), (f"{keys:,} keys round robin", f"{keys:,} keys")):
        one = f"redis one decision per round trip, {label}"
        fast = ns(one, "fastcore.redis.RedisTokenBucket.try_acquire")
        pipelined = ns(f"redis acquire_many pipelined, batch {batch}, {many}",
                       "fastcore.redis.RedisTokenBucket.acquire_many")
        lease = ns("redis lease=50, hot key",
                   "fastcore.redis.RedisTokenBucket(lease=50).try_acquire")
        for peer in ("limits MovingWindow (RedisStorage)",
                     "limits SlidingWindowCounter (RedisStorage)"):
            base = ns(one, peer)
            line = (f"  {label:28s} vs {peer:44s} try_acquire {base / fast:5.2f}x  "
                    f"acquire_many {base / pipelined:6.1f}x")
            if label == "hot key":
                line += f"  lease=50 {base / lease:6.1f}x"
            print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--keys", type=int, default=KEYS)
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args(argv)
    with redis_url(args.url) as url:
        report(url, args.keys, args.batch)


if __name__ == "__main__":
    main()
