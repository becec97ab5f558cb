"""What a benchmark ran on: machine, versions, and how noisy the machine was meanwhile.

Figures only mean something beside the machine and versions that produced them, and a noisy
run (other load, frequency scaling) should say so instead of passing for a slow one.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time

__all__ = ["machine", "versions", "reference_ns", "load_average", "noise"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict:
    """The machine: CPU model and count, memory, OS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Python, numpy and fastcore versions."""
    import numpy

    import fastcore
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": numpy.__version__,
        "fastcore": fastcore.__version__,
        "fastcore_distribution": _version("fastcore-edge"),
    }


def reference_ns(rounds: int = 5) -> float:
    """Median ns of a fixed pure-Python loop: timed at start and end of a run to see drift."""
    samples = []
    numbers = range(10_000)
    for _ in range(rounds):
        start = time.perf_counter_ns()
        sum(numbers)
        samples.append((time.perf_counter_ns() - start) / len(numbers))
    return statistics.median(samples)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# A run is "quiet" when its figures repeat within these bounds.
QUIET_SPREAD = 0.05   # median relative interquartile range of the rows
QUIET_DRIFT = 0.10    # change of the reference loop between the start and the end


def noise(spreads: list, reference_start_ns: float, reference_end_ns: float,
          load_start: float | None, load_end: float | None, cpus: int | None) -> dict:
    """How noisy the run was: row spreads, drift of the reference loop, load average.

    "noisy" when the rows' median spread or the drift exceeds its bound, or when the load
    average exceeded the usable CPUs (other processes were competing for them).
    """
    drift = reference_end_ns / reference_start_ns - 1 if reference_start_ns else 0.0
    median_spread = statistics.median(spreads) if spreads else 0.0
    worst = max(spreads) if spreads else 0.0
    loads = [load for load in (load_start, load_end) if load is not None]
    crowded = bool(loads and cpus and max(loads) > cpus)
    quiet = median_spread <= QUIET_SPREAD and abs(drift) <= QUIET_DRIFT and not crowded
    return {
        "verdict": "quiet" if quiet else "noisy",
        "median_spread": median_spread,
        "max_spread": worst,
        "reference_drift": drift,
        "load_average_start": load_start,
        "load_average_end": load_end,
    }
