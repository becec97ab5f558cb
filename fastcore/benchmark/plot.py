"""``--plot PATH``: a PNG of ns/op against live keys per structure (log axes) and of fastcore
against its peers and floors, drawn with matplotlib (from the ``[bench]`` extra).
"""

from __future__ import annotations

import importlib.util
import math

from fastcore.benchmark.report import format_ns, operation_family, series_name
from fastcore.benchmark.runner import Report

__all__ = ["available", "write"]

_COLOURS = {"fastcore": "tab:blue", "floor": "tab:gray", "peer": "tab:orange"}


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _scaling(report: Report) -> dict:
    """structure -> series name -> [(keys, ns/op, kind)], for keyed figures."""
    found: dict = {}
    for figure in report.figures:
        if figure.status == "ok" and figure.keys is not None:
            series = found.setdefault(figure.structure, {}).setdefault(series_name(figure), [])
            series.append((figure.keys, figure.median_ns, figure.kind))
    return found


def _closeness(keys) -> float:
    """How far a key count is from 100,000 (the usual comparison size), in decades."""
    return 0.0 if keys is None else abs(math.log10(keys) - 5)


def _comparisons(report: Report) -> dict:
    """structure -> [(label, ns/op, kind)] for groups that hold peers (or, without peers,
    floors); one keys point per operation, the one closest to 100,000, keeps it readable."""
    groups: dict = {}
    for figure in report.figures:
        if figure.status == "ok":
            groups.setdefault(figure.group_key, []).append(figure)
    wanted = "peer" if any(f.kind == "peer" and f.status == "ok" for f in report.figures) \
        else "floor"
    chosen: dict = {}
    for key, members in groups.items():
        if not any(f.kind == wanted for f in members):
            continue
        first = members[0]
        slot = (first.structure, operation_family(first), first.batch, first.threads)
        if slot not in chosen or _closeness(first.keys) < _closeness(chosen[slot][0].keys):
            chosen[slot] = members
    found: dict = {}
    for members in chosen.values():
        bars = found.setdefault(members[0].structure, [])
        for figure in members:
            keys = ("" if figure.keys is None or f"{figure.keys:,}" in figure.operation
                    else f" @{figure.keys:,} keys")
            threads = f" ×{figure.threads} threads" if figure.threads > 1 else ""
            bars.append((f"{figure.operation}{keys}: {figure.subject}{threads}",
                         figure.median_ns, figure.kind))
    return found


def write(report: Report, path: str) -> None:
    """Write the PNG; raises ``ImportError`` without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")

    scaling = _scaling(report)
    comparisons = _comparisons(report)
    panels = [("scaling", name, data) for name, data in scaling.items()]
    panels += [("bars", name, data) for name, data in comparisons.items()]
    if not panels:
        panels = [("empty", "", None)]
    heights = [4.0 if kind != "bars" else 1.0 + 0.22 * len(data)
               for kind, _, data in panels]
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(12, sum(heights) + 0.6),
                                   gridspec_kw={"height_ratios": heights}, squeeze=False,
                                   layout="constrained")
    figure.suptitle(f"fastcore bench ({report.settings.mode}): "
                    f"{report.machine['cpu']}, Python {report.versions['python']}",
                    fontsize=10)
    for axis, (kind, name, data) in zip(axes[:, 0], panels):
        if kind == "scaling":
            axis.set_prop_cycle(color=pyplot.get_cmap("tab20").colors)
            for label, points in data.items():
                points.sort()
                style = {"fastcore": "-", "floor": ":", "peer": "--"}[points[0][2]]
                axis.plot([p[0] for p in points], [p[1] for p in points], style, marker="o",
                          markersize=3, label=label)
            axis.set_xscale("log")
            axis.set_yscale("log")
            for scale in (axis.xaxis, axis.yaxis):
                scale.set_major_formatter(plain)
                scale.set_minor_formatter(NullFormatter())
            axis.set_xlabel("live keys")
            axis.set_ylabel("ns/op")
            axis.set_title(f"{name}: ns/op against live keys", fontsize=9)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif kind == "bars":
            labels = [bar[0] for bar in data]
            positions = range(len(data))
            drawn = axis.barh(positions, [bar[1] for bar in data],
                              color=[_COLOURS.get(bar[2], "tab:green") for bar in data])
            axis.bar_label(drawn, labels=[format_ns(bar[1]) for bar in data], fontsize=6,
                           padding=2)
            axis.set_yticks(list(positions), labels, fontsize=6)
            axis.invert_yaxis()
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(plain)
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_xlabel("ns/op (log)")
            axis.set_title(f"{name}: fastcore against peers and floors", fontsize=9)
            axis.grid(True, axis="x", which="both", alpha=0.3)
            axis.legend(handles=[Patch(color=c, label=k) for k, c in _COLOURS.items()],
                        fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            axis.text(0.5, 0.5, "no figures to plot", ha="center", va="center")
            axis.set_axis_off()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot.close(figure)
