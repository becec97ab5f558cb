"""Runs the selected structures' workloads over the keys x batch sweep and collects figures.

Each sweep point asks the structure module for ``workloads(keys, batch)`` afresh and drops
the list before the next point, so a 10-million-key point does not keep the keys of the
others alive. A workload that does not depend on the point (a hot key, ``keys=None``) is
timed once. Peers run only when asked; a missing peer becomes a "missing" figure, a failing
workload an "error" figure: both are reported, never dropped.
"""

from __future__ import annotations

import gc
import importlib.metadata
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Optional

from fastcore.benchmark import environment, registry
from fastcore.benchmark.workload import PeerMissing, Workload, measure, measure_threads

__all__ = ["MODES", "Settings", "Figure", "MemoryFigure", "Report", "run"]

# Timing and sweep presets: many short rounds (robust medians on a busy machine), cut off
# by max_time so slow peers cost a few calls. "tiny" exists for the test suite: the whole
# CLI in seconds.
MODES = {
    "default": {"rounds": 51, "round_time": 0.002, "max_time": 0.5,
                "keys": [1_000, 100_000, 1_000_000], "batch": [1, 64, 4096],
                "memory_keys": 1_000_000},
    # quick measures memory at 100,000 keys: building every cache at a million entries
    # under tracemalloc alone takes longer than the 30 s budget on a busy 2-CPU machine
    "quick": {"rounds": 21, "round_time": 0.001, "max_time": 0.15, "keys": [1_000, 100_000],
              "batch": [64], "memory_keys": 100_000},
    "tiny": {"rounds": 3, "round_time": 0.0005, "max_time": 0.01, "keys": [64], "batch": [16],
             "memory_keys": 1_000},
}


@dataclass
class Settings:
    """What to run. ``memory_keys=0`` skips the memory pass."""

    structures: list
    keys: list
    batch: list
    rounds: int
    round_time: float
    max_time: Optional[float]
    memory_keys: int
    mode: str = "default"
    threads: int = 1
    peers: bool = False
    redis_url: Optional[str] = None


@dataclass
class Figure:
    """One timed row: a subject doing an operation at one sweep point.

    ``status``: "ok", "missing" (peer not installed) or "error" (the workload raised).
    ``ratio_to_fastcore`` / ``ratio_to_floor``: this row's ns/op over the group's first
    fastcore / floor row (same structure, operation, keys, batch and threads).
    ``memory_bytes``: the structure's own accounting after timing (``memory_bytes()``).
    """

    structure: str
    group: str
    operation: str
    subject: str
    kind: str
    keys: Optional[int]
    batch: Optional[int]
    threads: int
    ops_per_call: int
    peer: Optional[str] = None
    peer_version: Optional[str] = None
    status: str = "ok"
    detail: str = ""
    samples_ns: list = field(default_factory=list)
    median_ns: Optional[float] = None
    q1_ns: Optional[float] = None
    q3_ns: Optional[float] = None
    spread: Optional[float] = None
    ops_per_s: Optional[float] = None
    ratio_to_fastcore: Optional[float] = None
    ratio_to_floor: Optional[float] = None
    memory_bytes: Optional[int] = None

    @property
    def group_key(self) -> tuple:
        return (self.structure, self.operation, self.keys, self.batch, self.threads)

    @property
    def identity(self) -> tuple:
        """What ``--compare`` matches a figure by."""
        return (self.structure, self.operation, self.subject, self.keys, self.batch,
                self.threads)


@dataclass
class MemoryFigure:
    """Memory of one structure built by a workload's setup.

    ``python_bytes``: tracemalloc's count of Python allocations the setup left alive (the
    key objects themselves are built before and not counted); ``core_bytes``: the
    structure's ``memory_bytes()`` (its C allocations), None when it reports none. ``per``
    names the unit of ``bytes_per_unit`` ("key", "entry"), None for a per-structure figure.
    """

    structure: str
    group: str
    operation: str
    subject: str
    keys: Optional[int]
    python_bytes: int
    core_bytes: Optional[int]
    total_bytes: int
    per: Optional[str]
    bytes_per_unit: float


@dataclass
class Report:
    settings: Settings
    machine: dict
    versions: dict
    peers: dict                    # distribution -> version, None when not installed
    noise: dict
    structures: list               # dicts: name, module, status, detail
    figures: list
    memory: list
    started: float
    duration_s: float

    @property
    def failures(self) -> list:
        """Human-readable lines for everything that broke (not absent modules or peers)."""
        lines = [f"{s['name']}: {s['status']}: {s['detail']}" for s in self.structures
                 if s["status"] in ("import-error", "error")]
        lines += [f"{f.structure} / {f.operation} / {f.subject}: {f.detail}"
                  for f in self.figures if f.status == "error"]
        return lines


def _identity(structure: str, workload: Workload) -> tuple:
    return (structure, workload.operation, workload.subject, workload.keys, workload.batch)


def _peer_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _time(structure: str, workload: Workload, settings: Settings, threads: int) -> Figure:
    figure = Figure(structure, workload.structure, workload.operation, workload.subject,
                    workload.kind, workload.keys, workload.batch, threads, workload.ops,
                    peer=workload.peer)
    if workload.peer:
        figure.peer_version = _peer_version(workload.peer)
    try:
        if threads > 1:
            timing = measure_threads(workload, threads, rounds=settings.rounds,
                                     round_time=settings.round_time,
                                     max_time=settings.max_time)
        else:
            timing = measure(workload, rounds=settings.rounds, round_time=settings.round_time,
                             max_time=settings.max_time)
    except PeerMissing as missing:
        figure.status, figure.detail = "missing", str(missing)
        return figure
    except Exception as error:  # a broken workload is a reported row, not a crashed run
        figure.status, figure.detail = "error", f"{type(error).__name__}: {error}"
        return figure
    figure.samples_ns = timing.samples_ns
    figure.median_ns = timing.median_ns
    figure.q1_ns, figure.q3_ns = timing.quartiles
    figure.spread = timing.spread
    figure.ops_per_s = timing.ops_per_s
    figure.memory_bytes = timing.memory_bytes
    return figure


def _memory(structure: str, workload: Workload) -> MemoryFigure:
    gc.collect()
    tracemalloc.start()
    try:
        run = workload.setup()
        python_bytes = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    core = workload.memory(run)       # None: the structure does not account for C memory
    core_bytes = None if core is None else int(core)
    total = python_bytes + (core_bytes or 0)
    per = None
    if workload.keys:
        per = "entry" if workload.structure == "cache" else "key"
    return MemoryFigure(structure, workload.structure, workload.operation, workload.subject,
                        workload.keys, python_bytes, core_bytes, total, per,
                        total / workload.keys if workload.keys else float(total))


def _workloads(structure: registry.Structure, keys: int, batch: int, redis_url) -> list:
    if structure.name == registry.REDIS:
        return list(structure.module.workloads(keys, batch, redis_url))
    return list(structure.module.workloads(keys, batch))


def _set_ratios(figures: list) -> None:
    fastcore_ns: dict = {}
    floor_ns: dict = {}
    for figure in figures:
        if figure.status != "ok":
            continue
        if figure.kind == "fastcore":
            fastcore_ns.setdefault(figure.group_key, figure.median_ns)
        elif figure.kind == "floor":
            floor_ns.setdefault(figure.group_key, figure.median_ns)
    for figure in figures:
        if figure.status != "ok":
            continue
        if figure.group_key in fastcore_ns:
            figure.ratio_to_fastcore = figure.median_ns / fastcore_ns[figure.group_key]
        if figure.group_key in floor_ns:
            figure.ratio_to_floor = figure.median_ns / floor_ns[figure.group_key]


def _time_points(structures: list, settings: Settings, progress, peers: dict) -> list:
    """Figures of every sweep point of every structure; ``peers`` collects peer versions."""
    figures: list = []
    seen: set = set()
    for structure in structures:
        for keys in settings.keys:
            for batch in settings.batch:
                progress.point(f"{structure.name} keys={keys:,} batch={batch:,}")
                try:
                    found = _workloads(structure, keys, batch, settings.redis_url)
                except Exception as error:  # reported; the other points still run
                    structure.status = "error"
                    structure.detail = (f"workloads({keys}, {batch}): "
                                        f"{type(error).__name__}: {error}")
                    progress.advance(1)
                    continue
                todo = []
                for workload in found:
                    identity = _identity(structure.name, workload)
                    if (workload.kind == "peer" and not settings.peers) or identity in seen:
                        continue
                    seen.add(identity)
                    todo.append((workload, 1))
                    if settings.threads > 1 and workload.batch is not None:
                        todo.append((workload, settings.threads))
                del found         # the point's keys go before the next point builds its own
                for workload, threads in todo:
                    threaded = f" ×{threads} threads" if threads > 1 else ""
                    progress.describe(
                        f"{structure.name} keys={keys:,} batch={batch:,}: {workload.operation}"
                        f" · {workload.subject}{threaded}")
                    figure = _time(structure.name, workload, settings, threads)
                    if figure.peer:
                        peers[figure.peer] = figure.peer_version
                    figures.append(figure)
                    progress.advance(1 / len(todo))
                if not todo:
                    progress.advance(1)
    return figures


def _measure_memory(structures: list, settings: Settings, progress) -> list:
    """Memory of each fastcore subject that reports it, built at ``memory_keys``.

    One build per subject (its workload with the most live keys): the operations of one
    subject build the same structure, and each build at a million keys takes seconds.
    """
    memory: list = []
    for structure in structures:
        progress.point(f"{structure.name} memory at {settings.memory_keys:,} keys")
        try:
            found = _workloads(structure, settings.memory_keys, settings.batch[0],
                               settings.redis_url)
            chosen: dict = {}
            for workload in found:
                if workload.memory is None or workload.kind != "fastcore":
                    continue
                best = chosen.get(workload.subject)
                if best is None or (workload.keys or 0) > (best.keys or 0):
                    chosen[workload.subject] = workload
            del found
            for workload in chosen.values():
                memory.append(_memory(structure.name, workload))
        except Exception as error:  # reported against the structure
            structure.status = "error"
            structure.detail = f"memory pass: {type(error).__name__}: {error}"
        progress.advance(1)
    return memory


def run(settings: Settings, progress) -> Report:
    """Run every selected workload, telling ``progress`` (see ``progress.py``) how far it is."""
    started = time.time()
    clock_start = time.perf_counter()
    reference_start = environment.reference_ns()
    load_start = environment.load_average()

    names = list(settings.structures) + ([registry.REDIS] if settings.redis_url else [])
    structures = [registry.load(name) for name in names]
    usable = [s for s in structures if s.status == "ok"]
    # Redis keeps its state in the server: there is nothing in this process to measure
    measurable = [s for s in usable if s.name != registry.REDIS] if settings.memory_keys else []
    progress.start(len(usable) * len(settings.keys) * len(settings.batch) + len(measurable))
    peers: dict = {}
    try:
        figures = _time_points(usable, settings, progress, peers)
        memory = _measure_memory(measurable, settings, progress)
    finally:
        progress.finish()

    _set_ratios(figures)
    spreads = [f.spread for f in figures if f.status == "ok"]
    machine = environment.machine()
    noise = environment.noise(spreads, reference_start, environment.reference_ns(),
                              load_start, environment.load_average(), machine["cpus_usable"])
    return Report(
        settings=settings,
        machine=machine,
        versions=environment.versions(),
        peers=peers,
        noise=noise,
        structures=[{"name": s.name, "module": s.module_path, "status": s.status,
                     "detail": s.detail} for s in structures],
        figures=figures,
        memory=memory,
        started=started,
        duration_s=time.perf_counter() - clock_start,
    )

