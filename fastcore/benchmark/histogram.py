"""Latency-histogram workloads: fastcore's LatencyHistogram, the compiled floor and the peers.

Groups (one ``operation`` each), all on the same seeded log-normal latencies (median about
0.44 ms): ``record`` one value from Python (ManualClock, then the real clocks),
``record_many`` per value on 1,000,000 values, ``percentile(99.9)`` after 1,000,000 values
(fastcore with every value in one slice and spread over all 60 slices), and
``to_prometheus``. Peers: hdrhistogram (``record_value``, ``get_value_at_percentile``) and
ddsketch (``add``, ``get_quantile_value``), both configured for 1 % relative error like
fastcore's default ``significant_figures=2``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

import fastcore
from fastcore._core.histfloor import FloorHistogram
from fastcore.benchmark.workload import Workload

SEED = 20261127
OPS = 10_000                        # record calls per timed call
MANY = 1_000_000                    # values for record_many and the query groups
HOUR_NS = 3_600_000_000_000


def latencies(count: int) -> np.ndarray:
    """Seeded log-normal latencies in ns (median e**13 ns, about 0.44 ms)."""
    return np.random.default_rng(SEED).lognormal(13.0, 1.0, count).astype(np.int64)


def _loop(function, arguments):
    def run():
        deque(map(function, arguments), 0)
    return run


def _memory(run) -> int:
    return run.hist.memory_bytes()


def _hdrh():
    from hdrh.histogram import HdrHistogram
    return HdrHistogram(1, HOUR_NS, 2)


def _ddsketch():
    from ddsketch import DDSketch
    return DDSketch(relative_accuracy=0.01)


def _record_workloads() -> list:
    values = latencies(OPS).tolist()
    operation = "record one value (ManualClock)"

    def fastcore_setup(clock_factory, name):
        def setup():
            hist = fastcore.LatencyHistogram(clock=clock_factory())
            run = _loop(hist.record, values)
            run.hist = hist
            return run
        return setup

    found = [
        Workload("histogram", operation, "fastcore.LatencyHistogram",
                 fastcore_setup(fastcore.ManualClock, "manual"), OPS, memory=_memory),
        Workload("histogram", operation, "floor: Cython log-bucket record (no clock, no atomic)",
                 lambda: _loop(FloorHistogram().record, values), OPS, kind="floor"),
        Workload("histogram", operation, "hdrhistogram record_value",
                 lambda: _loop(_hdrh().record_value, values), OPS, kind="peer",
                 peer="hdrhistogram"),
        Workload("histogram", operation, "ddsketch add",
                 lambda: _loop(_ddsketch().add, values), OPS, kind="peer", peer="ddsketch"),
    ]
    for name, factory in (("monotonic", fastcore.MonotonicClock),
                          ("coarse", fastcore.CoarseClock)):
        found.append(Workload("histogram", "record one value (real clock)",
                              f"fastcore.LatencyHistogram ({name})",
                              fastcore_setup(factory, name), OPS))
    return found


def _record_many_workloads(batch: int) -> list:
    found = []
    for size in sorted({MANY, batch}):
        values = latencies(size)
        operation = f"record_many per value ({size:,} values)"

        def fastcore_setup(values=values):
            hist = fastcore.LatencyHistogram(clock=fastcore.ManualClock())
            return lambda: hist.record_many(values)

        def floor_setup(values=values):
            floor = FloorHistogram()
            return lambda: floor.record_many(values)

        found += [
            Workload("histogram", operation, "fastcore.LatencyHistogram", fastcore_setup,
                     size, batch=size),
            Workload("histogram", operation, "floor: nogil loop, plain increments",
                     floor_setup, size, kind="floor", batch=size),
        ]
    return found


def _filled(spread: bool):
    """A LatencyHistogram holding MANY values, in one slice or spread over all 60."""
    clock = fastcore.ManualClock()
    hist = fastcore.LatencyHistogram(clock=clock)
    values = latencies(MANY)
    if spread:
        for part in np.array_split(values, 60):
            clock.advance(1)
            hist.record_many(part)
    else:
        hist.record_many(values)
    return hist


def _query_workloads() -> list:
    operation = f"percentile(99.9) after {MANY:,} values"

    def fastcore_setup(spread):
        def setup():
            percentile = _filled(spread).percentile
            return lambda: percentile(99.9)
        return setup

    def hdrh_setup():
        hist = _hdrh()
        record = hist.record_value
        deque(map(record, latencies(MANY).tolist()), 0)
        return lambda: hist.get_value_at_percentile(99.9)

    def ddsketch_setup():
        sketch = _ddsketch()
        deque(map(sketch.add, latencies(MANY).tolist()), 0)
        return lambda: sketch.get_quantile_value(0.999)

    def numpy_setup():
        values = latencies(MANY)
        return lambda: np.percentile(values, 99.9, method="inverted_cdf")

    def prometheus_setup():
        hist = _filled(True)
        return lambda: hist.to_prometheus("request_duration_seconds", labels={"route": "/"})

    return [
        Workload("histogram", operation, "fastcore.LatencyHistogram (60 slices filled)",
                 fastcore_setup(True), 1),
        Workload("histogram", operation, "fastcore.LatencyHistogram (1 slice filled)",
                 fastcore_setup(False), 1),
        Workload("histogram", operation, "hdrhistogram get_value_at_percentile", hdrh_setup, 1,
                 kind="peer", peer="hdrhistogram"),
        Workload("histogram", operation, "ddsketch get_quantile_value", ddsketch_setup, 1,
                 kind="peer", peer="ddsketch"),
        Workload("histogram", operation, "numpy.percentile on the raw values (exact)",
                 numpy_setup, 1, kind="peer", peer="numpy"),
        Workload("histogram", f"to_prometheus after {MANY:,} values (60 slices filled)",
                 "fastcore.LatencyHistogram", prometheus_setup, 1),
    ]


def workloads(keys: int, batch: int) -> list:
    """Every histogram workload; ``keys`` does not apply, ``batch`` adds a record_many size."""
    return _record_workloads() + _record_many_workloads(batch) + _query_workloads()
