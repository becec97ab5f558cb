"""``--compare OLD.json``: the change of every figure against an earlier run.

Figures are matched by (structure, operation, subject, keys, batch, threads). A figure is
a regression when its ns/op grew by more than the tolerance (0.2 = 20 % slower); the CLI
exits non-zero when there is any, so a user's CI can gate on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastcore.benchmark.report import format_ns, table

__all__ = ["Change", "Comparison", "compare", "render"]


@dataclass
class Change:
    identity: tuple
    old_ns: float
    new_ns: float

    @property
    def ratio(self) -> float:
        """new / old ns/op: above 1 is slower."""
        return self.new_ns / self.old_ns


@dataclass
class Comparison:
    tolerance: float
    changes: list = field(default_factory=list)
    only_old: list = field(default_factory=list)     # measured before, not now
    only_new: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def regressions(self) -> list:
        return [c for c in self.changes if c.ratio > 1 + self.tolerance]

    @property
    def improvements(self) -> list:
        return [c for c in self.changes if c.ratio < 1 / (1 + self.tolerance)]


def _identity(figure: dict) -> tuple:
    return (figure["structure"], figure["operation"], figure["subject"], figure.get("keys"),
            figure.get("batch"), figure.get("threads", 1))


def _measured(document: dict) -> dict:
    return {_identity(f): f["median_ns"] for f in document["figures"]
            if f.get("status") == "ok" and f.get("median_ns")}


def compare(old: dict, new: dict, tolerance: float) -> Comparison:
    """Compare two results documents (``schema.to_document`` / ``schema.read``)."""
    before, after = _measured(old), _measured(new)
    comparison = Comparison(tolerance)
    for identity, new_ns in after.items():
        if identity in before:
            comparison.changes.append(Change(identity, before[identity], new_ns))
        else:
            comparison.only_new.append(identity)
    comparison.only_old = [identity for identity in before if identity not in after]
    old_cpu = old.get("machine", {}).get("cpu")
    if old_cpu and old_cpu != new.get("machine", {}).get("cpu"):
        comparison.notes.append(f"the old run was on another CPU ({old_cpu}): changes mix "
                                "machine and code")
    if old.get("settings", {}).get("mode") != new.get("settings", {}).get("mode"):
        comparison.notes.append("the runs used different modes: spreads are not comparable")
    return comparison


def _label(identity: tuple) -> list:
    structure, operation, subject, keys, batch, threads = identity
    return [structure, operation, subject, "-" if keys is None else f"{keys:,}",
            "-" if batch is None else f"{batch:,}", str(threads)]


def render(comparison: Comparison, old_name: str) -> str:
    limit = 1 + comparison.tolerance
    rows = []
    for change in comparison.changes:
        verdict = ("SLOWER" if change.ratio > limit
                   else "faster" if change.ratio < 1 / limit else "")
        rows.append(_label(change.identity) + [
            format_ns(change.old_ns), format_ns(change.new_ns),
            f"{100 * (change.ratio - 1):+.1f}%", verdict])
    parts = [f"compared with {old_name} (tolerance {100 * comparison.tolerance:g}% slower)"]
    if rows:
        parts.append(table(["structure", "operation", "subject", "keys", "batch", "threads",
                            "old ns/op", "new ns/op", "change", "verdict"], rows))
    parts += [f"note: {note}" for note in comparison.notes]
    parts += ["only in the old run: " + " / ".join(str(p) for p in identity if p is not None)
              for identity in comparison.only_old]
    parts += ["new in this run: " + " / ".join(str(p) for p in identity if p is not None)
              for identity in comparison.only_new]
    slower, faster = len(comparison.regressions), len(comparison.improvements)
    parts.append(f"{slower} slower beyond tolerance, {faster} faster, "
                 f"{len(comparison.changes) - slower - faster} within tolerance")
    return "\n".join(parts) + "\n"
