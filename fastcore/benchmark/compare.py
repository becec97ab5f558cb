"""``--compare OLD.json``: the change of every figure against an earlier run, told apart from
the noise of a shared machine.

Figures are matched by (structure, operation, subject, keys, batch, threads). Two runs of
one build on a busy machine differ for two reasons that are not the code:

* **Machine speed.** Other load, frequency and cache sharing slow whole stretches of a run.
  The floors (minimal compiled baselines, timed in the same run as the rows beside them)
  measure it: each structure's speed factor is the median over its floors of new / old ns,
  and every row of that structure is divided by it (all floors of the run when a structure
  has none). A factor far from 1 is reported: floors are compiled too, so a build that
  slowed everything, floors included, shows there rather than in the rows.
* **Round-to-round spread.** Each figure is the median of many rounds, and ``q1_ns`` /
  ``q3_ns`` bound the middle half of them. A row looks slower only when even the new run's
  first quartile, after the speed factor, is above the old median times ``1 + tolerance``
  (faster: the old first quartile above the new median so); the fast side, because a
  preempted round is only ever slower. A change inside the measured spread is "within
  noise".
* **A burst of load on one row.** On a shared machine a whole row (a fraction of a second)
  can run several times slower, its rounds all alike. So a row that looks slower is timed
  again (``retime_plan``, ``runner.retime``): ``repeats`` times, each time between two
  timings of its reference floors (the nearest floors of its structure in the run), and
  compared through its cost relative to them, which a busy machine changes less than the
  cost itself. It stays slower only if every timing of the new build (the run's and each
  repetition's) is slower than the old by more than the tolerance, and by more than the
  repetitions differ among themselves (their max / min): a burst of load seldom repeats
  and shows as disagreement between timings, a slower build is slower every time.
* **How noisy the machine was between the runs.** The fastcore rows' changes scatter around
  their median; that scatter (a robust standard deviation of the log changes) says how far
  one row strays on this machine with nothing changed. A row is slower only beyond
  ``NOISE_SIGMAS`` of it, so a busy machine widens the bar instead of raising alarms; a
  build slower as a whole shows as the median itself moving beyond the tolerance and its
  own standard error (``overall_slower``), which noise does not do.

The CLI exits 1 when a fastcore row, or the fastcore rows as a whole, got slower, so a
user's CI can gate on it. Floor and peer rows are shown but never a verdict: floors are the
yardstick, peers someone else's code.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Optional

from fastcore.benchmark.report import format_ns, table

__all__ = ["Change", "Comparison", "compare", "render", "speed_factors", "retime_plan",
           "apply_retimes", "REPEATS", "MAX_RETIMED"]

REPEATS = 3          # default repetitions of each row re-timed (--retime)
MAX_RETIMED = 40     # rows re-timed at most; beyond, the first verdict stands
REFERENCES = 2       # reference floors per re-timed row
NOISE_SIGMAS = 4.0    # a verdict needs a change this many run-noise deviations from none
MIN_ROWS_FOR_NOISE = 8


@dataclass
class Change:
    """One row in both runs. ``*_low`` / ``*_high``: the first and third quartile of the
    rounds (the median when the file has none); ``speed``: new / old machine speed factor
    that the row is divided by."""

    identity: tuple
    old_ns: float
    new_ns: float
    kind: str = "fastcore"
    old_low: Optional[float] = None
    old_high: Optional[float] = None
    new_low: Optional[float] = None
    new_high: Optional[float] = None
    speed: float = 1.0
    tolerance: float = 0.2
    run_noise: float = 0.0             # the run's scatter of log changes (Comparison)
    references: tuple = ()             # floors it was re-timed beside
    retimed: Optional[list] = None     # new / old cost relative to them, per repetition
    first: Optional[float] = None      # the same for the run's own figures
    retime_note: str = ""              # why it was not re-timed

    def __post_init__(self):
        self.old_low = self.old_ns if self.old_low is None else min(self.old_low, self.old_ns)
        self.old_high = self.old_ns if self.old_high is None else max(self.old_high,
                                                                       self.old_ns)
        self.new_low = self.new_ns if self.new_low is None else min(self.new_low, self.new_ns)
        self.new_high = self.new_ns if self.new_high is None else max(self.new_high,
                                                                       self.new_ns)

    @property
    def ratio(self) -> float:
        """new / old ns/op as measured: above 1 is slower."""
        return self.new_ns / self.old_ns

    @property
    def normalised(self) -> float:
        """new / old ns/op after the machine speed factor."""
        return self.ratio / self.speed

    @property
    def looks_slower(self) -> bool:
        """Even the new run's fast quartile is slower than the old median by more than the
        tolerance (after the speed factor). The fast side of the rounds: a preempted round
        is only ever slower, so on a busy machine the slow quartile says little."""
        return self.new_low / self.speed > self.old_ns * (1 + self.tolerance)

    @property
    def spread_now(self) -> float:
        """How much the new build's cost (relative to its floors) varied between the
        repetitions: max / min, 1 when it was not re-timed. (The run's own figure is left
        out: it is the one that looked slower, maybe from a burst of load.)"""
        if not self.retimed:
            return 1.0
        return max(self.retimed) / min(self.retimed)

    @property
    def slower(self) -> bool:
        """Looks slower and, when re-timed, every timing of the new build (the run's and each
        repetition's, relative to its floors) is slower than the old by more than the
        tolerance and by more than those timings differ among themselves."""
        if not self.looks_slower:
            return False
        if not self.retimed:
            least = self.new_low / self.speed / self.old_ns
        else:
            least = min(self.retimed + ([self.first] if self.first else []))
            if not (least > 1 + self.tolerance and least > self.spread_now):
                return False
        return math.log(least) > NOISE_SIGMAS * self.run_noise

    @property
    def faster(self) -> bool:
        """The old run's fast quartile is slower than the new median by more than the
        tolerance (after the speed factor)."""
        return self.new_ns / self.speed * (1 + self.tolerance) < self.old_low

    @property
    def judged(self) -> bool:
        """Only fastcore's rows are verdicts: floors measure the machine (they are the
        yardstick), peers another library."""
        return self.kind == "fastcore"

    @property
    def verdict(self) -> str:
        if self.slower:
            return "SLOWER" if self.judged else f"slower ({self.kind}, not judged)"
        if self.faster:
            return "faster" if self.judged else f"faster ({self.kind})"
        if (self.looks_slower or self.normalised > 1 + self.tolerance
                or self.normalised < 1 / (1 + self.tolerance)):
            return "within noise"
        return ""


@dataclass
class Comparison:
    tolerance: float
    changes: list = field(default_factory=list)
    only_old: list = field(default_factory=list)     # measured before, not now
    only_new: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    speeds: dict = field(default_factory=dict)       # structure -> (factor, floors used)

    @property
    def judged(self) -> list:
        return [c for c in self.changes if c.judged]

    @property
    def run_noise(self) -> float:
        """How far one fastcore row's change strays from the others' on this machine: the
        robust standard deviation (1.4826 x median absolute deviation) of the log changes
        of the fastcore rows after the speed factor; 0 below ``MIN_ROWS_FOR_NOISE`` rows."""
        logs = [math.log(c.normalised) for c in self.judged]
        if len(logs) < MIN_ROWS_FOR_NOISE:
            return 0.0
        middle = statistics.median(logs)
        return 1.4826 * statistics.median(abs(value - middle) for value in logs)

    @property
    def overall(self) -> Optional[float]:
        """The median change of the fastcore rows after the speed factor (None below
        ``MIN_ROWS_FOR_NOISE`` rows): a build slower as a whole moves it, noise does not."""
        judged = self.judged
        if len(judged) < MIN_ROWS_FOR_NOISE:
            return None
        return statistics.median(c.normalised for c in judged)

    @property
    def overall_slower(self) -> bool:
        """The fastcore rows as a whole got slower: their median change is beyond the
        tolerance and beyond ``NOISE_SIGMAS`` standard errors of that median, counting the
        error of the speed factor it was divided by (the floors' own scatter)."""
        overall = self.overall
        if overall is None or overall <= 1 + self.tolerance:
            return False
        rows = 1.2533 * self.run_noise / math.sqrt(len(self.judged))
        floors = [math.log(c.ratio) for c in self.changes if c.kind == "floor"]
        factor = 0.0
        if len(floors) >= 2:
            middle = statistics.median(floors)
            spread = 1.4826 * statistics.median(abs(value - middle) for value in floors)
            factor = 1.2533 * spread / math.sqrt(len(floors))
        return math.log(overall) > NOISE_SIGMAS * math.hypot(rows, factor)

    @property
    def regressions(self) -> list:
        """fastcore rows slower beyond tolerance and noise: what makes the CLI exit 1."""
        return [c for c in self.judged if c.slower]

    @property
    def improvements(self) -> list:
        return [c for c in self.judged if c.faster]

    @property
    def within_noise(self) -> list:
        return [c for c in self.judged if c.verdict == "within noise"]


def _identity(figure: dict) -> tuple:
    return (figure["structure"], figure["operation"], figure["subject"], figure.get("keys"),
            figure.get("batch"), figure.get("threads", 1))


def _measured(document: dict) -> dict:
    return {_identity(f): f for f in document["figures"]
            if f.get("status") == "ok" and f.get("median_ns")}


def _positive(value) -> Optional[float]:
    return value if isinstance(value, (int, float)) and value > 0 else None


def speed_factors(before: dict, after: dict) -> dict:
    """structure -> (new / old speed factor, number of floors it is the median of); key None
    holds the factor over every floor of the run (1.0 and 0 floors when there are none)."""
    ratios: dict = {}
    for identity, new in after.items():
        old = before.get(identity)
        if old is not None and new.get("kind") == "floor" and old.get("kind") == "floor":
            ratios.setdefault(identity[0], []).append(new["median_ns"] / old["median_ns"])
    everything = [ratio for found in ratios.values() for ratio in found]
    factors = {structure: (statistics.median(found), len(found))
               for structure, found in ratios.items()}
    factors[None] = (statistics.median(everything), len(everything)) if everything else (1.0, 0)
    return factors


def compare(old: dict, new: dict, tolerance: float) -> Comparison:
    """Compare two results documents (``schema.to_document`` / ``schema.read``)."""
    before, after = _measured(old), _measured(new)
    comparison = Comparison(tolerance)
    comparison.speeds = speed_factors(before, after)
    for identity, figure in after.items():
        previous = before.get(identity)
        if previous is None:
            comparison.only_new.append(identity)
            continue
        speed = comparison.speeds.get(identity[0], comparison.speeds[None])[0]
        comparison.changes.append(Change(
            identity, previous["median_ns"], figure["median_ns"], kind=figure.get("kind", ""),
            old_low=_positive(previous.get("q1_ns")), old_high=_positive(previous.get("q3_ns")),
            new_low=_positive(figure.get("q1_ns")), new_high=_positive(figure.get("q3_ns")),
            speed=speed, tolerance=tolerance))
    comparison.only_old = [identity for identity in before if identity not in after]
    noise = comparison.run_noise
    for change in comparison.changes:
        change.run_noise = noise
    old_cpu = old.get("machine", {}).get("cpu")
    if old_cpu and old_cpu != new.get("machine", {}).get("cpu"):
        comparison.notes.append(f"the old run was on another CPU ({old_cpu}): changes mix "
                                "machine and code")
    if old.get("settings", {}).get("mode") != new.get("settings", {}).get("mode"):
        comparison.notes.append("the runs used different modes: spreads are not comparable")
    for document, name in ((old, "old"), (new, "new")):
        if document.get("state", "complete") != "complete":
            comparison.notes.append(f"the {name} run is {document['state']}: only the rows "
                                    "it holds are compared")
    factor, floors = comparison.speeds[None]
    if not floors:
        comparison.notes.append("no floor rows in both runs: machine speed not corrected")
    elif not 1 / (1 + tolerance) <= factor <= 1 + tolerance:
        comparison.notes.append(
            f"the floors ran {factor:.2f}x as long as before: the machine was busier or "
            "slower, or the compiled code as a whole changed; rows are corrected for it "
            "(column 'raw' has the change as measured)")
    return comparison


def retime_plan(comparison: Comparison, old: dict, new: dict,
                limit: int = MAX_RETIMED) -> list:
    """``[(identity, [reference identities])]`` for the fastcore rows that look slower, the
    worst first, at most ``limit``: each with up to ``REFERENCES`` floors measured in both
    runs, of its structure when it has any (else of any): its own group's floor first,
    then floors at the same key count, then the nearest in the new run."""
    before, after = _measured(old), _measured(new)
    order = {identity: place for place, identity in enumerate(after)}
    floors = [identity for identity, figure in after.items()
              if figure.get("kind") == "floor" and identity in before]
    plan = []
    suspects = sorted((c for c in comparison.judged if c.looks_slower),
                      key=lambda c: -c.normalised)
    for change in suspects[:limit]:
        identity = change.identity
        pool = [f for f in floors if f != identity and f[0] == identity[0]] or \
            [f for f in floors if f != identity]
        # the floor of its own group first (same operation, keys, batch, threads), then
        # floors at the same key count (the same memory footprint), then the nearest in
        # run order
        nearest = sorted(pool, key=lambda f: (f[:2] + f[3:] != identity[:2] + identity[3:],
                                              f[3] != identity[3],
                                              abs(order[f] - order[identity])))
        plan.append((identity, nearest[:REFERENCES]))
    return plan


def _geometric_mean(values: list) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def apply_retimes(comparison: Comparison, old: dict, new: dict, plan: list,
                  results: dict) -> None:
    """Record the re-timed rows (``runner.retime``'s results for ``plan``) in their changes:
    each repetition's cost relative to its references, over the old run's (``retimed``),
    and the same for the row as the run itself measured it (``first``)."""
    before, after = _measured(old), _measured(new)
    changes = {change.identity: change for change in comparison.changes}
    for identity, references in plan:
        change, result = changes[identity], results.get(identity, "not re-timed")
        if isinstance(result, str):
            change.retime_note = result
            continue
        change.references = tuple(references)
        if references:
            old_base = _geometric_mean([before[r]["median_ns"] for r in references])
            new_base = _geometric_mean([after[r]["median_ns"] for r in references])
            old_cost = change.old_ns / old_base
            change.retimed = [(row / _geometric_mean(refs)) / old_cost for row, refs in result]
            change.first = (change.new_ns / new_base) / old_cost
        else:                           # no floor in either run: the run's speed factor
            change.retimed = [row / (change.old_ns * change.speed) for row, _ in result]
            change.first = change.normalised
    unplanned = [c for c in comparison.changes if c.looks_slower
                 and c.identity not in {identity for identity, _ in plan}]
    if unplanned:
        comparison.notes.append(f"{len(unplanned)} rows that look slower were not re-timed "
                                f"(at most {len(plan)}): their first verdict stands")


def _label(identity: tuple) -> list:
    structure, operation, subject, keys, batch, threads = identity
    return [structure, operation, subject, "-" if keys is None else f"{keys:,}",
            "-" if batch is None else f"{batch:,}", str(threads)]


def _percent(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.1f}%"


def render(comparison: Comparison, old_name: str) -> str:
    rows = []
    retimed = any(change.retimed or change.retime_note for change in comparison.changes)
    for change in comparison.changes:
        row = _label(change.identity) + [
            format_ns(change.old_ns), format_ns(change.new_ns), _percent(change.ratio),
            f"{change.speed:.2f}", _percent(change.normalised)]
        if retimed:
            row.append(", ".join(_percent(r) for r in change.retimed) if change.retimed
                       else "not re-timed" if change.retime_note else "")
        rows.append(row + [change.verdict])
    parts = [f"compared with {old_name} (tolerance {100 * comparison.tolerance:g}% slower, "
             "beyond the rounds' interquartile ranges, after the machine speed factor)"]
    speeds = [f"{structure} {factor:.2f} ({count} floors)"
              for structure, (factor, count) in comparison.speeds.items() if structure]
    if speeds:
        parts.append("machine speed factor (new / old floor ns/op): " + ", ".join(speeds))
    if rows:
        parts.append(table(["structure", "operation", "subject", "keys", "batch", "threads",
                            "old ns/op", "new ns/op", "raw", "speed", "change"]
                           + (["re-timed"] if retimed else []) + ["verdict"], rows))
    parts += [f"note: {note}" for note in comparison.notes]
    parts += [f"not re-timed: {' / '.join(str(p) for p in change.identity[:3])}: "
              f"{change.retime_note}" for change in comparison.changes if change.retime_note]
    if retimed:
        parts.append("re-timed: the change of each repetition, relative to its floors timed "
                     "just before and after it; slower only if the run and every repetition "
                     "are, by more than the tolerance and than they differ among themselves")
    parts += ["only in the old run: " + " / ".join(str(p) for p in identity if p is not None)
              for identity in comparison.only_old]
    parts += ["new in this run: " + " / ".join(str(p) for p in identity if p is not None)
              for identity in comparison.only_new]
    if comparison.overall is not None:
        parts.append(
            f"fastcore rows as a whole: {_percent(comparison.overall)} (median of "
            f"{len(comparison.judged)} rows after the speed factor); one row's change strays "
            f"from the others' by a factor of {math.exp(comparison.run_noise):.2f} (one "
            f"standard deviation), so a row is a verdict beyond "
            f"{math.exp(NOISE_SIGMAS * comparison.run_noise):.2f}x"
            + ("; SLOWER AS A WHOLE" if comparison.overall_slower else ""))
    slower, faster = len(comparison.regressions), len(comparison.improvements)
    noise = len(comparison.within_noise)
    parts.append(f"fastcore rows: {slower} slower beyond tolerance, {faster} faster, {noise} "
                 f"beyond tolerance but within noise, "
                 f"{len(comparison.judged) - slower - faster - noise} within tolerance "
                 f"(floor and peer rows are shown, not judged)")
    return "\n".join(parts) + "\n"
