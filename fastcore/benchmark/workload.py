"""The workload record and the timing harness behind every fastcore benchmark.

A ``Workload`` builds its state once (fixed seeds, pre-generated keys) and returns a
zero-argument callable that performs ``ops`` operations; the harness times whole calls
and divides. Loops inside workloads use ``deque(map(f, args), 0)`` style iteration so the
per-operation loop overhead is a few ns.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["Workload", "Timing", "measure", "measure_threads", "peer_version", "PeerMissing",
           "Unavailable", "OverCap", "time_cap", "time_rounds", "prepare", "MIN_ROUNDS"]


class PeerMissing(Exception):
    """A peer library needed by a workload is not installed (reported, never dropped)."""


class Unavailable(Exception):
    """What a workload times could not be reached (a Redis server that is down): the row
    has no figure, and the run says it failed."""


class OverCap(Exception):
    """Raised into the main thread when a row runs past its time cap (see ``time_cap``)."""

    def __init__(self, cap: float):
        super().__init__(f"over {cap:g} s cap")
        self.cap = cap


# After the first alarm, the cap fires again this often until the row has stopped: an
# OverCap raised where Python swallows exceptions (a __del__, a weakref callback) is lost.
_CAP_REPEAT_S = 0.5


@contextlib.contextmanager
def time_cap(seconds: Optional[float]):
    """Raise ``OverCap`` in this (main) thread once ``seconds`` have passed inside the block.

    A real-time interval timer (SIGALRM): it stops Python code between two bytecodes, so a
    peer's long setup loop ends at the cap; one C call that never returns to Python (a
    single huge numpy call) ends only when that call returns. Without a cap, outside the
    main thread, or where the platform has no ``setitimer``, the block runs unbounded.
    """
    if (seconds is None or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    state = {"armed": True}

    def fire(signum, frame):
        if not state["armed"]:          # a late alarm after the block: nothing to stop
            return
        signal.setitimer(signal.ITIMER_REAL, _CAP_REPEAT_S)
        raise OverCap(seconds)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-6))
    try:
        yield
    finally:
        state["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
    """ns per operation over the timed rounds of one workload.

    With ``threads > 1`` each sample is wall time divided by the operations of all threads:
    the aggregate cost, so ``ops_per_s`` is the aggregate throughput.
    """

    workload: Workload
    samples_ns: list = field(default_factory=list)
    memory_bytes: Optional[int] = None
    threads: int = 1
    setup_s: Optional[float] = None        # seconds ``workload.setup()`` took
    first_call_s: Optional[float] = None   # seconds of the first (warm-up) call of run()

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def quartiles(self) -> tuple:
        """(first, third) quartile of the rounds; (min, max) below 4 rounds, where quartiles
        mean nothing."""
        if len(self.samples_ns) < 4:
            return min(self.samples_ns), max(self.samples_ns)
        q1, _, q3 = statistics.quantiles(self.samples_ns, n=4)
        return q1, q3

    @property
    def spread(self) -> float:
        """Relative interquartile range of the rounds: how noisy this figure is."""
        if not self.median_ns:
            return 0.0
        q1, q3 = self.quartiles
        return (q3 - q1) / self.median_ns

    @property
    def ops_per_s(self) -> float:
        return 1e9 / self.median_ns if self.median_ns else float("inf")


def peer_version(distribution: str) -> str:
    """The installed version of a peer, or raise ``PeerMissing``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PeerMissing(f"{distribution} is not installed (pip install 'fastcore-edge[bench]')")


def _stage(on_stage, name: str) -> None:
    if on_stage is not None:
        on_stage(name)


def _set_up(workload: Workload, timing: "Timing", on_stage) -> Callable[[], object]:
    _stage(on_stage, "setup")
    start = time.perf_counter()
    run = workload.setup()
    timing.setup_s = time.perf_counter() - start
    return run


def _warm_and_calibrate(run: Callable[[], object], round_time: float,
                        timing: Optional["Timing"] = None, on_stage=None) -> int:
    """Call ``run`` once to warm caches and lazily built state, then return the calls per
    round that make one round last about ``round_time`` seconds (1 without further calls
    when the warm-up call alone lasted a round: a slow peer then costs no extra calls)."""
    _stage(on_stage, "warm-up call")
    start = time.perf_counter_ns()
    run()
    first = time.perf_counter_ns() - start
    if timing is not None:
        timing.first_call_s = first / 1e9
    if first >= round_time * 1e9:
        return 1
    calls = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter_ns() - start
        if elapsed >= round_time * 1e9 or calls >= 1 << 20:
            return calls
        calls = max(calls * 2, int(calls * round_time * 1e9 / max(elapsed, 1)))


MIN_ROUNDS = 5    # rounds kept even past max_time, so a median and quartiles mean something


def _out_of_time(deadline_ns, rounds_done: int, rounds: int) -> bool:
    return (deadline_ns is not None and rounds_done >= min(MIN_ROUNDS, rounds)
            and time.perf_counter_ns() >= deadline_ns)


def _deadline(max_time) -> Optional[int]:
    return None if max_time is None else time.perf_counter_ns() + int(max_time * 1e9)


def measure(workload: Workload, *, rounds: int = 7, round_time: float = 0.05,
            max_time: Optional[float] = None, on_stage=None) -> Timing:
    """Time ``workload``: ``rounds`` rounds of at least ``round_time`` seconds each.

    With ``max_time`` (seconds), stop after that long once ``MIN_ROUNDS`` rounds are done:
    many short rounds for fast operations, a few whole calls for slow peers. Short rounds
    make the median robust on a busy machine: most rounds then run without being
    preempted. Garbage collection stays on (as in production) but runs once before timing
    starts. Raises ``PeerMissing`` when the workload's peer is not installed.
    ``on_stage(name)`` is told "setup", "warm-up call" and "timing" as each begins.
    """
    if workload.peer:
        peer_version(workload.peer)
    timing = Timing(workload)
    run = _set_up(workload, timing, on_stage)
    calls = _warm_and_calibrate(run, round_time, timing, on_stage)
    gc.collect()
    _stage(on_stage, "timing")
    timing.samples_ns = time_rounds(run, calls, workload.ops, rounds=rounds,
                                    max_time=max_time)
    if workload.memory is not None:
        timing.memory_bytes = workload.memory(run)
    return timing


def time_rounds(run: Callable[[], object], calls: int, ops: int, *, rounds: int,
                max_time: Optional[float] = None) -> list:
    """ns per operation of up to ``rounds`` rounds of ``calls`` calls of ``run`` (each
    ``ops`` operations), stopping after ``max_time`` seconds once ``MIN_ROUNDS`` are done."""
    samples = []
    deadline_ns = _deadline(max_time)
    for done in range(1, rounds + 1):
        start = time.perf_counter_ns()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter_ns() - start
        samples.append(elapsed / (calls * ops))
        if _out_of_time(deadline_ns, done, rounds):
            break
    return samples


def prepare(workload: Workload, round_time: float) -> tuple:
    """``(run, calls per round)``: the workload set up, warmed and calibrated, ready for
    ``time_rounds`` as often as wanted (``--compare`` re-times rows this way)."""
    if workload.peer:
        peer_version(workload.peer)
    run = workload.setup()
    return run, _warm_and_calibrate(run, round_time)


def measure_threads(workload: Workload, threads: int, *, rounds: int = 7,
                    round_time: float = 0.05, max_time: Optional[float] = None,
                    on_stage=None) -> Timing:
    """Time ``workload`` called from ``threads`` threads at once on one shared structure.

    Each round releases all threads together and times the wall clock until the last one
    finishes; a sample is that wall time over every thread's operations (aggregate ns/op).
    Each thread makes as many calls per round as one thread makes in ``round_time``, so a
    round lasts ``round_time`` if the calls scale perfectly and ``threads`` times longer if
    they serialise. ``max_time`` and ``on_stage`` as in ``measure``. Raises ``PeerMissing``
    like ``measure``, and re-raises the first error a thread hit. An exception raised into
    this thread meanwhile (``OverCap``, KeyboardInterrupt) stops the workers first.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if workload.peer:
        peer_version(workload.peer)
    timing = Timing(workload, threads=threads)
    run = _set_up(workload, timing, on_stage)
    calls = _warm_and_calibrate(run, round_time, timing, on_stage)
    start_line = threading.Barrier(threads + 1)
    finish_line = threading.Barrier(threads + 1)
    stopping = threading.Event()
    errors: list = []

    def worker():
        try:
            while True:
                start_line.wait()
                if stopping.is_set():
                    return
                for _ in range(calls):
                    run()
                finish_line.wait()
        except threading.BrokenBarrierError:
            pass
        except BaseException as error:  # handed to the main thread, which re-raises it
            errors.append(error)
            start_line.abort()
            finish_line.abort()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    gc.collect()
    _stage(on_stage, "timing")
    deadline_ns = _deadline(max_time)
    try:
        for done in range(1, rounds + 1):
            start_line.wait()
            start = time.perf_counter_ns()
            finish_line.wait()
            elapsed = time.perf_counter_ns() - start
            timing.samples_ns.append(elapsed / (calls * workload.ops * threads))
            if _out_of_time(deadline_ns, done, rounds):
                break
    except threading.BrokenBarrierError:
        pass
    except BaseException:
        # Interrupted mid-round (a time cap, Ctrl-C): the workers may be anywhere between
        # the two lines, so break both; each returns after its current call.
        start_line.abort()
        finish_line.abort()
        for thread in workers:
            thread.join()
        raise
    stopping.set()
    try:
        start_line.wait()          # releases the workers, which see `stopping` and return
    except threading.BrokenBarrierError:
        pass
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    if workload.memory is not None:
        timing.memory_bytes = workload.memory(run)
    return timing
