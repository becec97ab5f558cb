"""The workload record and the timing harness behind every fastcore benchmark.

A ``Workload`` builds its state once (fixed seeds, pre-generated keys) and returns a
zero-argument callable that performs ``ops`` operations; the harness times whole calls
and divides. Loops inside workloads use ``deque(map(f, args), 0)`` style iteration so the
per-operation loop overhead is a few ns, as in the peer figures of PEERS.md.
"""

from __future__ import annotations

import gc
import importlib.metadata
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["Workload", "Timing", "measure", "peer_version", "PeerMissing"]


class PeerMissing(Exception):
    """A peer library needed by a workload is not installed (reported, never dropped)."""


@dataclass(frozen=True)
class Workload:
    """One timed operation on one subject.

    ``structure``: "token", "window", "cache", "histogram" (what ``--only`` selects).
    ``operation``: the group, e.g. "try_acquire hot key"; subjects in one group are compared.
    ``subject``: who runs it, e.g. "fastcore.KeyedTokenBucket" or "limits MovingWindow".
    ``kind``: "fastcore", "floor" (a minimal baseline) or "peer".
    ``setup()``: builds the state and returns ``run()``, which performs ``ops`` operations.
    ``peer``: distribution name of the peer library (checked before ``setup`` runs).
    ``keys`` / ``batch``: the live-key count and batch size the workload was built for.
    ``memory``: optional ``(run) -> bytes`` measuring the structure that ``setup`` built.
    """

    structure: str
    operation: str
    subject: str
    setup: Callable[[], Callable[[], object]]
    ops: int
    kind: str = "fastcore"
    peer: Optional[str] = None
    keys: Optional[int] = None
    batch: Optional[int] = None
    memory: Optional[Callable[[Callable[[], object]], int]] = None


@dataclass
class Timing:
    """ns per operation over the timed rounds of one workload."""

    workload: Workload
    samples_ns: list = field(default_factory=list)
    memory_bytes: Optional[int] = None

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def spread(self) -> float:
        """Relative interquartile range of the rounds: how noisy this figure is."""
        if len(self.samples_ns) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples_ns, n=4)
        return (q3 - q1) / self.median_ns if self.median_ns else 0.0

    @property
    def ops_per_s(self) -> float:
        return 1e9 / self.median_ns if self.median_ns else float("inf")


def peer_version(distribution: str) -> str:
    """The installed version of a peer, or raise ``PeerMissing``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PeerMissing(f"{distribution} is not installed (pip install 'fastcore-edge[bench]')")


def measure(workload: Workload, *, rounds: int = 7, round_time: float = 0.05) -> Timing:
    """Time ``workload``: ``rounds`` rounds of at least ``round_time`` seconds each.

    Garbage collection stays on (as in production) but runs once before timing starts.
    """
    if workload.peer:
        peer_version(workload.peer)
    run = workload.setup()
    run()  # warm caches and lazily built state
    calls = 1
    while True:  # calibrate: calls per round so a round lasts about round_time
        start = time.perf_counter_ns()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter_ns() - start
        if elapsed >= round_time * 1e9 or calls >= 1 << 20:
            break
        calls = max(calls * 2, int(calls * round_time * 1e9 / max(elapsed, 1)))
    timing = Timing(workload)
    gc.collect()
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter_ns() - start
        timing.samples_ns.append(elapsed / (calls * workload.ops))
    if workload.memory is not None:
        timing.memory_bytes = workload.memory(run)
    return timing
