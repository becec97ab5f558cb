"""Runs the selected structures' workloads over the keys x batch sweep and collects figures.

Each sweep point asks the structure module for ``workloads(keys, batch)`` afresh and drops
the list before the next point, so a 10-million-key point does not keep the keys of the
others alive. A workload that does not depend on the point (a hot key, ``keys=None``) is
timed once. Peers run only when asked; a missing peer becomes a "missing" figure, a failing
workload an "error" figure, a subject that could not be reached (a Redis server that is down)
a "failed" one: all are reported, never dropped.

Every row (setup, warm-up and timing together) runs under a time cap (``Settings.row_cap``).
A row that reaches it is stopped and reported "skipped"; so is a row whose cost, projected
from the same series at smaller key counts, is clearly over it (a peer whose every call
walks all 1,000,000 keys in Python), and a row whose series went over the cap at fewer keys
already, so the run seldom spends the cap on a row it cannot finish.
``on_update`` sees the report after every row, so output can be written as results come.
"""

from __future__ import annotations

import gc
import importlib.metadata
import re
import statistics
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Optional

from fastcore.benchmark import environment, registry
from fastcore.benchmark.workload import (
    MIN_ROUNDS, OverCap, PeerMissing, Unavailable, Workload, measure, measure_threads, prepare,
    time_cap, time_rounds,
)

__all__ = ["MODES", "Settings", "Figure", "MemoryFigure", "Report", "run", "retime",
           "operation_family"]

# Timing and sweep presets: many short rounds (robust medians on a busy machine), cut off
# by max_time so slow peers cost a few calls. "tiny" exists for the test suite: the whole
# CLI in seconds.
# row_cap: seconds per row (setup, warm-up and timing); a row past it is skipped.
MODES = {
    "default": {"rounds": 51, "round_time": 0.002, "max_time": 0.5,
                "keys": [1_000, 100_000, 1_000_000], "batch": [1, 64, 4096],
                "memory_keys": 1_000_000, "row_cap": 15.0},
    # quick measures memory at 100,000 keys: building every cache at a million entries
    # under tracemalloc alone takes longer than the 30 s budget on a busy 2-CPU machine
    "quick": {"rounds": 21, "round_time": 0.001, "max_time": 0.15, "keys": [1_000, 100_000],
              "batch": [64], "memory_keys": 100_000, "row_cap": 5.0},
    "tiny": {"rounds": 3, "round_time": 0.0005, "max_time": 0.01, "keys": [64], "batch": [16],
             "memory_keys": 1_000, "row_cap": 30.0},
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
    row_cap: Optional[float] = None       # seconds per row; None: unbounded


@dataclass
class Figure:
    """One timed row: a subject doing an operation at one sweep point.

    ``status``: "ok", "missing" (peer not installed), "error" (the workload raised),
    "skipped" (stopped at, or projected past, the row's time cap) or "failed" (what it
    times could not be reached); ``detail`` says why.
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
    A build stopped by the time cap has ``status`` "skipped" and no byte counts.
    """

    structure: str
    group: str
    operation: str
    subject: str
    keys: Optional[int]
    python_bytes: Optional[int]
    core_bytes: Optional[int]
    total_bytes: Optional[int]
    per: Optional[str]
    bytes_per_unit: Optional[float]
    status: str = "ok"            # "ok", or "skipped" (over the time cap; bytes are None)
    detail: str = ""


@dataclass
class Report:
    """The run so far. ``state``: "running" (a partial report handed to ``on_update``),
    "complete", or "interrupted" (Ctrl-C or SIGTERM: the rows done until then)."""

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
    state: str = "complete"

    @property
    def failures(self) -> list:
        """Human-readable lines for everything that broke (not absent modules or peers)."""
        lines = [f"{s['name']}: {s['status']}: {s['detail']}" for s in self.structures
                 if s["status"] in ("import-error", "error")]
        lines += [f"{f.structure} / {f.operation} / {f.subject}: {f.detail}"
                  for f in self.figures if f.status == "error"]
        return lines

    @property
    def failed(self) -> list:
        """Lines for rows whose subject could not be reached (status "failed")."""
        return [f"{f.structure} / {f.operation} / {f.subject}: {f.detail}"
                for f in self.figures if f.status == "failed"]


def _identity(structure: str, workload: Workload) -> tuple:
    return (structure, workload.operation, workload.subject, workload.keys, workload.batch)


def _peer_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def operation_family(operation: str, keys: Optional[int]) -> str:
    """The operation with its key count taken out ("try_acquire N keys round robin")."""
    if keys is not None:
        for spelled in (f"{keys:,}", str(keys)):
            operation = re.sub(rf"(?<![\d,]){re.escape(spelled)}(?![\d,])", "N", operation)
    return operation


@dataclass
class _Cost:
    """What one row cost: the base of the projection for the same series at more keys."""

    keys: int
    ops: int
    setup_s: Optional[float] = None
    first_call_s: Optional[float] = None
    over_cap: bool = False


class Costs:
    """Setup and call times of each series (structure, operation family, subject, batch,
    threads) by key count, and the projection of a row's time from them.

    A call's time is projected in proportion to the operations it makes (a call over every
    key grows with the keys); the setup along the line through the two largest smaller key
    counts measured (a fixed part, such as a warm-up over a fixed number of operations, does
    not scale; from one key count nothing is projected: it cannot tell fixed from per-key
    work). Projections are rough, so a row is skipped only when clearly over the cap
    (``MARGIN`` times it); a row projected between the cap and that runs, and the cap stops
    it if it must.
    """

    MARGIN = 2.0

    def __init__(self):
        self.series: dict = {}

    @staticmethod
    def _series(structure: str, workload: Workload, threads: int) -> tuple:
        return (structure, operation_family(workload.operation, workload.keys),
                workload.subject, workload.batch, threads)

    def record(self, structure: str, workload: Workload, threads: int, timing=None,
               over_cap: bool = False) -> None:
        if workload.keys is None:
            return
        cost = _Cost(workload.keys, workload.ops, over_cap=over_cap)
        if timing is not None:
            cost.setup_s, cost.first_call_s = timing.setup_s, timing.first_call_s
        self.series.setdefault(self._series(structure, workload, threads), {})[
            workload.keys] = cost

    def projected_setup(self, structure: str, workload: Workload, threads: int):
        """Seconds of setup at ``workload.keys`` (None when not projectable): measured at
        that key count (the memory pass), or along the line through the two largest smaller
        key counts measured."""
        known = self.series.get(self._series(structure, workload, threads), {})
        below = sorted(keys for keys, cost in known.items()
                       if keys <= (workload.keys or 0) and cost.setup_s is not None)
        if below and below[-1] == workload.keys:
            return known[below[-1]].setup_s
        if len(below) < 2:
            return None
        first, last = known[below[-2]], known[below[-1]]
        slope = max(0.0, (last.setup_s - first.setup_s) / (last.keys - first.keys))
        return last.setup_s + slope * (workload.keys - last.keys)

    def reason_to_skip(self, structure: str, workload: Workload, threads: int,
                       settings: Settings) -> Optional[str]:
        """Why a row need not run: over the cap at fewer keys already, or projected past
        ``MARGIN`` times it. None when it may run (it still stops at the cap)."""
        cap = settings.row_cap
        if cap is None or workload.keys is None:
            return None
        known = self.series.get(self._series(structure, workload, threads), {})
        for keys in sorted(known):
            if keys <= workload.keys and known[keys].over_cap:
                return f"over {cap:g} s cap at {keys:,} keys already"
        below = [cost for keys, cost in sorted(known.items())
                 if keys <= workload.keys and cost.first_call_s is not None]
        if not below:
            return None
        base = below[-1]
        setup = self.projected_setup(structure, workload, threads) or 0.0
        call = base.first_call_s * workload.ops / max(base.ops, 1)
        round_s = max(call, settings.round_time)
        least_rounds = min(settings.rounds, MIN_ROUNDS)
        timing = max(least_rounds * round_s,
                     min(settings.rounds * round_s, settings.max_time or float("inf")))
        total = setup + call + timing
        if total <= self.MARGIN * cap:
            return None
        return (f"projected {total:,.0f} s > {cap:g} s cap (setup {setup:.1f} s, one call "
                f"{call:.2f} s, from {base.keys:,} keys)")


def _time(structure: str, workload: Workload, settings: Settings, threads: int,
          costs: Optional[Costs] = None) -> Figure:
    figure = Figure(structure, workload.structure, workload.operation, workload.subject,
                    workload.kind, workload.keys, workload.batch, threads, workload.ops,
                    peer=workload.peer)
    if workload.peer:
        figure.peer_version = _peer_version(workload.peer)
    costs = costs if costs is not None else Costs()
    reason = costs.reason_to_skip(structure, workload, threads, settings)
    if reason:
        figure.status, figure.detail = "skipped", reason
        costs.record(structure, workload, threads, over_cap=True)
        return figure
    stage = ["setup"]
    options = dict(rounds=settings.rounds, round_time=settings.round_time,
                   max_time=settings.max_time, on_stage=lambda name: stage.__setitem__(0, name))
    try:
        with time_cap(settings.row_cap):
            if threads > 1:
                timing = measure_threads(workload, threads, **options)
            else:
                timing = measure(workload, **options)
    except OverCap as over:
        figure.status, figure.detail = "skipped", f"{over} in {stage[0]}"
        costs.record(structure, workload, threads, over_cap=True)
        return figure
    except PeerMissing as missing:
        figure.status, figure.detail = "missing", str(missing)
        return figure
    except Unavailable as unavailable:
        figure.status, figure.detail = "failed", str(unavailable)
        return figure
    except Exception as error:  # a broken workload is a reported row, not a crashed run
        figure.status, figure.detail = "error", f"{type(error).__name__}: {error}"
        return figure
    costs.record(structure, workload, threads, timing)
    figure.samples_ns = timing.samples_ns
    figure.median_ns = timing.median_ns
    figure.q1_ns, figure.q3_ns = timing.quartiles
    figure.spread = timing.spread
    figure.ops_per_s = timing.ops_per_s
    figure.memory_bytes = timing.memory_bytes
    return figure


def _memory(structure: str, workload: Workload, settings: Settings,
            costs: Costs) -> MemoryFigure:
    per = None
    if workload.keys:
        per = "entry" if workload.structure == "cache" else "key"
    skipped = MemoryFigure(structure, workload.structure, workload.operation,
                           workload.subject, workload.keys, None, None, None, per, None,
                           status="skipped")
    reason = costs.reason_to_skip(structure, workload, 1, settings)
    if reason:
        skipped.detail = reason
        return skipped
    gc.collect()
    try:
        with time_cap(settings.row_cap):
            tracemalloc.start()
            try:
                run = workload.setup()
                python_bytes = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
    except OverCap as over:
        skipped.detail = f"{over} in setup (under tracemalloc)"
        return skipped
    core = workload.memory(run)       # None: the structure does not account for C memory
    core_bytes = None if core is None else int(core)
    total = python_bytes + (core_bytes or 0)
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


def _time_points(structures: list, settings: Settings, progress, report: Report,
                 costs: Costs, update) -> None:
    """Time every sweep point of every structure into ``report.figures`` (peer versions into
    ``report.peers``), calling ``update(event, structure name)`` after each row ("figure")
    and after each structure ("structure")."""
    seen: set = set()
    for structure in structures:
        done_points: list = []
        uses = None            # (any workload with keys, any with a batch), from the first point
        for keys in settings.keys:
            for batch in settings.batch:
                if uses is not None and any((k == keys or not uses[0])
                                            and (b == batch or not uses[1])
                                            for k, b in done_points):
                    # nothing here depends on what changed since a point already run
                    # (a cache has no batch call): building its workloads again (a million
                    # keys take seconds) would only find rows already timed
                    progress.advance(1)
                    continue
                done_points.append((keys, batch))
                progress.point(f"{structure.name} keys={keys:,} batch={batch:,}")
                try:
                    found = _workloads(structure, keys, batch, settings.redis_url)
                except Exception as error:  # reported; the other points still run
                    structure.status = "error"
                    structure.detail = (f"workloads({keys}, {batch}): "
                                        f"{type(error).__name__}: {error}")
                    progress.advance(1)
                    continue
                if uses is None:
                    uses = (any(w.keys is not None for w in found),
                            any(w.batch is not None for w in found))
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
                    figure = _time(structure.name, workload, settings, threads, costs)
                    if figure.peer:
                        report.peers[figure.peer] = figure.peer_version
                    report.figures.append(figure)
                    update("figure", structure.name)
                    progress.advance(1 / len(todo))
                if not todo:
                    progress.advance(1)
        update("structure", structure.name)


def _measure_memory(structures: list, settings: Settings, progress, report: Report,
                    costs: Costs, update) -> None:
    """Memory of each fastcore subject that reports it, built at ``memory_keys``.

    One build per subject (its workload with the most live keys): the operations of one
    subject build the same structure, and each build at a million keys takes seconds.
    Each build runs under the row cap, and is skipped when the subject's setup times in the
    sweep project it past the cap.
    """
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
                report.memory.append(_memory(structure.name, workload, settings, costs))
                update("memory", structure.name)
        except Exception as error:  # reported against the structure
            structure.status = "error"
            structure.detail = f"memory pass: {type(error).__name__}: {error}"
        progress.advance(1)


class _Run:
    """The state a run keeps to refresh its report (ratios, noise, duration) at any time."""

    def __init__(self, settings: Settings, structures: list):
        self.started = time.time()
        self.clock_start = time.perf_counter()
        self.reference_start = environment.reference_ns()
        self.load_start = environment.load_average()
        self.structures = structures
        machine = environment.machine()
        self.report = Report(settings=settings, machine=machine,
                             versions=environment.versions(), peers={}, noise={},
                             structures=[], figures=[], memory=[], started=self.started,
                             duration_s=0.0, state="running")
        self.refresh()

    def refresh(self) -> Report:
        report = self.report
        _set_ratios(report.figures)
        spreads = [f.spread for f in report.figures if f.status == "ok"]
        report.noise = environment.noise(
            spreads, self.reference_start, environment.reference_ns(), self.load_start,
            environment.load_average(), report.machine["cpus_usable"])
        report.structures = [{"name": s.name, "module": s.module_path, "status": s.status,
                              "detail": s.detail} for s in self.structures]
        report.duration_s = time.perf_counter() - self.clock_start
        return report


def run(settings: Settings, progress, on_update=None) -> Report:
    """Run every selected workload, telling ``progress`` (see ``progress.py``) how far it is.

    ``on_update(report, event, structure)``, when given, sees the report refreshed before
    anything runs ("start", structure None) and after every row ("figure"), structure
    ("structure") and memory build ("memory"): the report is then in state "running". Ctrl-C (or a SIGTERM turned into KeyboardInterrupt)
    ends the run early: the report returned is then in state "interrupted" and holds the
    rows done so far.
    """
    names = list(settings.structures) + ([registry.REDIS] if settings.redis_url else [])
    structures = [registry.load(name) for name in names]
    state = _Run(settings, structures)
    usable = [s for s in structures if s.status == "ok"]
    # Redis keeps its state in the server: there is nothing in this process to measure
    measurable = [s for s in usable if s.name != registry.REDIS] if settings.memory_keys else []
    progress.start(len(usable) * len(settings.keys) * len(settings.batch) + len(measurable))
    costs = Costs()

    def update(event: str, structure: str) -> None:
        if on_update is not None:
            on_update(state.refresh(), event, structure)

    try:
        update("start", None)
        _time_points(usable, settings, progress, state.report, costs, update)
        _measure_memory(measurable, settings, progress, state.report, costs, update)
        state.report.state = "complete"
    except KeyboardInterrupt:
        state.report.state = "interrupted"
    finally:
        progress.finish()
    return state.refresh()


def _find(settings: Settings, identities: set) -> dict:
    """The workloads of these figure identities (threads ignored), built afresh by their
    structure modules at the sweep points that hold them."""
    wanted = {identity[:5]: identity for identity in identities}
    found: dict = {}
    for name in dict.fromkeys(identity[0] for identity in identities):
        structure = registry.load(name)
        if structure.status != "ok":
            continue
        for keys in settings.keys:
            for batch in settings.batch:
                if all(key in found for key in wanted if key[0] == name):
                    break
                try:
                    workloads = _workloads(structure, keys, batch, settings.redis_url)
                except Exception:
                    continue
                for workload in workloads:
                    key = _identity(name, workload)
                    if key in wanted and key not in found:
                        found[key] = workload
    return {identity: found[identity[:5]] for identity in identities
            if identity[:5] in found}


def retime(settings: Settings, plan: list, repeats: int, progress=None) -> dict:
    """Time rows again, each beside its reference rows (floors), for ``--compare``.

    ``plan``: ``[(identity, [reference identities])]``. ``repeats`` passes over the plan,
    so the repetitions of one row are a whole pass apart (a burst of load seldom lasts that
    long); in each, every row is set up with its references, then timed between two
    timings of them. Returns identity -> ``[(row ns/op, [reference ns/op: the mean of
    before and after])]``, one per pass, or a string saying why the row could not be timed
    again. Each row with its references runs under ``row_cap`` per pass.
    """
    results: dict = {identity: [] for identity, _ in plan}
    workloads = _find(settings, {identity for identity, refs in plan for identity in
                                 [identity, *refs]})
    options = dict(rounds=settings.rounds, max_time=settings.max_time)

    def median_ns(prepared, workload) -> float:
        run, calls = prepared
        return statistics.median(time_rounds(run, calls, workload.ops, **options))

    for identity, references in plan:
        missing = [i for i in [identity, *references] if i not in workloads]
        if identity[5] != 1:
            results[identity] = "rows timed from several threads are not re-timed"
        elif missing:
            results[identity] = f"no workload for {' / '.join(map(str, missing[0][:3]))}"
    for _ in range(repeats):
        for identity, references in plan:
            if isinstance(results[identity], str):
                continue
            if progress is not None:
                progress.describe(f"re-timing {identity[0]} / {identity[1]} / {identity[2]}")
            prepared = {}
            try:
                with time_cap(settings.row_cap):
                    for item in [identity, *references]:
                        prepared[item] = prepare(workloads[item], settings.round_time)
                    before = [median_ns(prepared[r], workloads[r]) for r in references]
                    row = median_ns(prepared[identity], workloads[identity])
                    after = [median_ns(prepared[r], workloads[r]) for r in references]
                results[identity].append((row, [(b + a) / 2 for b, a in zip(before, after)]))
            except OverCap as over:
                results[identity] = f"re-timing {over}"
            except Exception as error:
                results[identity] = f"re-timing failed: {type(error).__name__}: {error}"
            finally:
                prepared.clear()
            if progress is not None:
                progress.advance(1 / max(repeats, 1))
    return results
