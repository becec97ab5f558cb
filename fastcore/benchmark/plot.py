"""``--plot PATH``: a PNG meant to be read at a glance, drawn with matplotlib (from the
``[bench]`` extra).

* One small panel per operation measured at several key counts: ns per operation against
  live keys (log axes), with at most three lines: fastcore (the group's first fastcore
  subject), the floor, and the fastest peer (named in the panel's legend). An operation
  swept over several batch sizes is drawn at its largest batch, and a panel per structure
  shows ns per decision against the batch size.
* One dot chart for the operations that do not depend on the key count (a hot key, a
  histogram query): a row each, fastcore, floor and fastest peer on one log axis.

Colours are the Okabe-Ito palette (distinct for colour-blind readers too); every axis says
its unit. The tables printed by the run hold every subject; the plot shows the comparison.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import tempfile

from fastcore.benchmark import schema
from fastcore.benchmark.report import operation_family
from fastcore.benchmark.runner import Report

__all__ = ["available", "write", "panels"]

FASTCORE, FLOOR, PEER = "#0072B2", "#505050", "#D55E00"
STYLE = {
    "fastcore": {"color": FASTCORE, "linestyle": "-", "marker": "o"},
    "floor": {"color": FLOOR, "linestyle": "--", "marker": "s"},
    "peer": {"color": PEER, "linestyle": "-.", "marker": "^"},
}
COLUMNS = 4


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _ok(report: Report) -> list:
    return [f for f in report.figures if f.status == "ok" and f.median_ns]


def _family_key(figure) -> tuple:
    family = operation_family(figure)
    if family.startswith(f"{figure.structure}: "):     # "semantic: get hit" in "semantic"
        family = family[len(figure.structure) + 2:]
    return (figure.structure, family, figure.threads)


def _without_batch(figure, family: str) -> str:
    """The family with the batch size taken out ("... (batch B)"), however it is spelled."""
    for spelled in (f"{figure.batch:,}", str(figure.batch)):
        family = re.sub(rf"(?<![\d,]){re.escape(spelled)}(?![\d,])", "B", family)
    return family


def _pick(members: list) -> dict:
    """The lines of one panel: kind -> (subject, [figures]) for the first fastcore subject,
    the first floor and the fastest peer (fastest at the most keys any peer reached)."""
    by_subject: dict = {}
    for figure in members:
        by_subject.setdefault((figure.kind, figure.subject), []).append(figure)
    lines: dict = {}
    for kind in ("fastcore", "floor"):
        for (found_kind, subject), figures in by_subject.items():
            if found_kind == kind:
                lines[kind] = (subject, figures)
                break
    peers = {subject: figures for (kind, subject), figures in by_subject.items()
             if kind == "peer"}
    if peers:
        most = max((f.keys or 0) for figures in peers.values() for f in figures)

        def cost(item):
            at_most = [f.median_ns for f in item[1] if (f.keys or 0) == most]
            return (0, min(at_most)) if at_most else (1, min(f.median_ns for f in item[1]))
        subject, figures = min(peers.items(), key=cost)
        lines["peer"] = (subject, figures)
    return lines


def panels(report: Report) -> dict:
    """What is drawn: {"keys": [(title, lines)], "batch": [(title, lines)],
    "dots": [(label, lines)]}, ``lines`` as in ``_pick`` (figures sorted by keys or batch)."""
    figures = _ok(report)
    largest_batch: dict = {}
    for figure in figures:
        if figure.batch is not None and figure.keys is not None:
            key = (figure.structure, _without_batch(figure, _family_key(figure)[1]))
            largest_batch[key] = max(largest_batch.get(key, 0), figure.batch)
    families: dict = {}
    for figure in figures:
        families.setdefault(_family_key(figure), []).append(figure)
    keyed, dots = [], []
    batches: dict = {}
    for (structure, family, threads), members in families.items():
        threaded = f", ×{threads} threads" if threads > 1 else ""
        key_counts = {f.keys for f in members if f.keys is not None}
        batch = members[0].batch
        if batch is not None and members[0].keys is not None:
            generic = (structure, _without_batch(members[0], family))
            batches.setdefault((generic, threads), []).extend(members)
            if batch != largest_batch.get(generic):
                continue
        if len(key_counts) > 1:
            lines = _pick(members)
            for _, found in lines.values():
                found.sort(key=lambda f: f.keys)
            keyed.append((f"{structure}: {family}{threaded}", lines))
        else:
            keys = next(iter(key_counts), None)
            at = f" @ {keys:,} keys" if keys is not None and f"{keys:,}" not in family else ""
            dots.append((f"{structure}: {family}{at}{threaded}", _pick(members)))
    batch_panels = []
    for ((structure, family), threads), members in batches.items():
        if len({f.batch for f in members}) < 2:
            continue
        most = max(f.keys for f in members)
        at_most = [f for f in members if f.keys == most]
        lines = _pick(at_most)
        for _, found in lines.values():
            found.sort(key=lambda f: f.batch)
        threaded = f", ×{threads} threads" if threads > 1 else ""
        title = re.sub(r"\s*\(batch B\)", "", re.sub(r"\bN\b", f"{most:,}", family))
        at = "" if f"{most:,}" in title else f" at {most:,} keys"
        batch_panels.append((f"{structure}: {title}{at}, by batch size B{threaded}", lines))
    return {"keys": keyed, "batch": batch_panels, "dots": dots}


def _count(value: float) -> str:
    if value >= 1e6 and value % 1e6 == 0:
        return f"{value / 1e6:g}M"
    if value >= 1e3 and value % 1e3 == 0:
        return f"{value / 1e3:g}k"
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def _ns(value: float) -> str:
    """A tick label with its unit: 50 ns, 2 µs, 1.5 ms."""
    if value <= 0:
        return ""
    for factor, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if value >= factor:
            return f"{value / factor:g} {unit}"
    return f"{value:g} ns"


def _ns_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda value, _: _ns(value))


def _log_axis(axis, which: str, time: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    scale = axis.xaxis if which == "x" else axis.yaxis
    (axis.set_xscale if which == "x" else axis.set_yscale)("log")
    low, high = (axis.get_xlim if which == "x" else axis.get_ylim)()
    wide = low > 0 and high / low > 300          # over 2.5 decades: decades only, legible
    scale.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0),
                                       numticks=8))
    scale.set_minor_locator(NullLocator())       # minor ticks cost most of the drawing time
    scale.set_major_formatter(_ns_formatter() if time else
                              FuncFormatter(lambda value, _: _count(value)))


def _draw_lines(axis, lines: dict, x) -> None:
    """The panel's lines, and above the plotting area who they are: fastcore's subject
    (blue) and the fastest peer (orange); the floor is the grey dashed line."""
    for kind in ("peer", "floor", "fastcore"):          # fastcore drawn last, on top
        if kind in lines:
            figures = lines[kind][1]
            axis.plot([x(f) for f in figures], [f.median_ns for f in figures], linewidth=2,
                      markersize=5, **STYLE[kind])
    names = [(lines[kind][0] if kind == "fastcore" else f"fastest peer: {lines[kind][0]}",
              STYLE[kind]["color"]) for kind in ("peer", "fastcore") if kind in lines]
    for row, (name, colour) in enumerate(names):
        axis.text(0, 1.03 + 0.085 * row, _clip(name, 52), transform=axis.transAxes,
                  fontsize=7, color=colour, va="bottom")
    return len(names)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _short(title: str, width: int = 40) -> str:
    """Break a long panel title on a space near ``width`` characters."""
    if len(title) <= width:
        return title
    cut = title.rfind(" ", 0, width)
    cut = cut if cut > 0 else width
    return title[:cut] + "\n" + _short(title[cut:].lstrip(), width)


def _draw_dots(axis, dots: list, report: Report) -> None:
    rows = list(range(len(dots)))
    for row, (label, lines) in zip(rows, dots):
        values = [lines[k][1][0].median_ns for k in lines]
        axis.plot([min(values), max(values)], [row, row], color="#c8c8c8", linewidth=1.5,
                  zorder=1)
        for kind in ("floor", "peer", "fastcore"):
            if kind in lines:
                figure = lines[kind][1][0]
                axis.scatter([figure.median_ns], [row], s=48, zorder=3,
                             color=STYLE[kind]["color"], marker=STYLE[kind]["marker"])
        if "peer" in lines and "fastcore" in lines:
            peer = lines["peer"][1][0]
            ratio = peer.median_ns / lines["fastcore"][1][0].median_ns
            axis.annotate(f"{lines['peer'][0]}: {ratio:,.1f}x fastcore",
                          (peer.median_ns, row), xytext=(6, 0), textcoords="offset points",
                          va="center", fontsize=7, color=PEER)
    axis.set_yticks(rows, [_short(label, 60) for label, _ in dots], fontsize=8)
    axis.invert_yaxis()
    _log_axis(axis, "x", time=True)
    axis.set_xlabel("time per operation (log scale; lower is faster)")
    axis.grid(True, axis="x", which="major", alpha=0.3)
    axis.set_title("operations that do not depend on the key count", fontsize=10,
                   loc="left")
    left, right = axis.get_xlim()
    axis.set_xlim(left, right * 8)                      # room for the peer labels


def _legend_handles():
    from matplotlib.lines import Line2D
    return [Line2D([], [], linewidth=2, markersize=6, label=label, **STYLE[kind])
            for kind, label in (("fastcore", "fastcore"), ("floor", "floor (least possible)"),
                                ("peer", "fastest peer library"))]


# Layout in inches. Fixed margins rather than matplotlib's constrained layout, which
# measures every tick label several times: most of the drawing time on a busy machine.
PANEL_W, PANEL_H = 3.6, 2.75           # one panel with its title and axis labels
TOP, BOTTOM = 0.95, 0.55               # title and legend; the dot chart's axis label
DOT_ROW, DOT_LABELS = 0.3, 3.7         # a dot chart row; room for its row labels


def write(report: Report, path: str) -> None:
    """Write the PNG (atomically: a temporary file renamed over ``path``); raises
    ``ImportError`` without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    drawn = panels(report)
    grid = drawn["keys"] + drawn["batch"]
    grid_rows = math.ceil(len(grid) / COLUMNS)
    dots = drawn["dots"]
    grid_height = PANEL_H * grid_rows
    dots_height = (0.6 + DOT_ROW * len(dots)) if dots else 0.0
    width = PANEL_W * COLUMNS
    height = TOP + grid_height + dots_height + BOTTOM
    figure = pyplot.figure(figsize=(width, height), dpi=100)
    settings = report.settings
    state = "" if report.state == "complete" else f" ({report.state}: partial)"
    figure.suptitle(f"fastcore bench, {settings.mode} mode{state}: {report.machine['cpu']}, "
                    f"{report.machine['cpus_usable']} CPUs, Python "
                    f"{report.versions['python']}, fastcore {report.versions['fastcore']}  "
                    "·  lower is faster", fontsize=12, y=1 - 0.15 / height, va="top")
    figure.legend(handles=_legend_handles(), loc="upper center", ncols=3, fontsize=10,
                  frameon=False, bbox_to_anchor=(0.5, 1 - 0.42 / height))
    if not grid and not dots:
        axis = figure.add_axes((0.1, 0.1, 0.8, 0.6))
        axis.text(0.5, 0.5, "no figures to plot", ha="center", va="center")
        axis.set_axis_off()
    if grid:
        layout = figure.add_gridspec(
            grid_rows, COLUMNS, left=0.75 / width, right=1 - 0.15 / width,
            top=1 - (TOP + 0.35) / height, bottom=(BOTTOM + dots_height + 0.55) / height,
            hspace=0.72, wspace=0.4)
        batch_titles = {title for title, _ in drawn["batch"]}
        for place, (title, lines) in enumerate(grid):
            axis = figure.add_subplot(layout[place // COLUMNS, place % COLUMNS])
            by_batch = title in batch_titles
            named = _draw_lines(axis, lines,
                                (lambda f: f.batch) if by_batch else (lambda f: f.keys))
            _log_axis(axis, "x", time=False)
            _log_axis(axis, "y", time=True)
            axis.set_xlabel("batch size (calls per acquire_many)" if by_batch else "live keys",
                            fontsize=8)
            axis.set_ylabel("time per operation", fontsize=8)
            axis.tick_params(labelsize=8)
            axis.set_title(_short(title), fontsize=9, loc="left", pad=4 + 11 * named)
            axis.grid(True, which="major", alpha=0.3)
    if dots:
        layout = figure.add_gridspec(1, 1, left=DOT_LABELS / width, right=1 - 0.15 / width,
                                     top=(BOTTOM + dots_height - 0.3) / height,
                                     bottom=BOTTOM / height)
        _draw_dots(figure.add_subplot(layout[0, 0]), dots, report)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".fastcore-bench-", suffix=".png", dir=folder)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=100)
        schema.publish(temporary, path)
    finally:
        pyplot.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
