"""The printed report: a header (machine, versions, structures, sweep), one
Markdown-compatible table per structure, then memory, everything that did not run, the
peers and how noisy the run was.

The parts print as the run goes (``start``, ``structure_section``, ``closing``): a run
stopped early has printed every structure it finished. ``render`` is all of them at once.
Tables are plain text with ``|`` columns so they read in a terminal and paste into a
README unchanged.
"""

from __future__ import annotations

import time

from fastcore.benchmark import runner
from fastcore.benchmark.runner import Figure, Report

__all__ = ["render", "start", "structure_section", "closing", "operation_family", "series_name", "format_ns", "format_rate",
           "format_ratio", "format_bytes", "table"]


def format_ns(ns: float) -> str:
    if ns < 10:
        return f"{ns:.2f}"
    if ns < 100:
        return f"{ns:.1f}"
    return f"{ns:,.0f}"


def format_rate(per_s: float) -> str:
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= factor:
            return f"{per_s / factor:.1f} {unit}"
    return f"{per_s:.0f}"


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    if ratio < 10:
        return f"{ratio:.2f}x"
    if ratio < 100:
        return f"{ratio:.1f}x"
    return f"{ratio:,.0f}x"


def format_bytes(count: float) -> str:
    for factor, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count:.1f} B" if count != int(count) else f"{int(count)} B"


def _count(value) -> str:
    return "-" if value is None else f"{value:,}"


def table(header: list, rows: list) -> str:
    """A Markdown pipe table, padded so the columns line up; numeric columns right-aligned."""
    numeric = [all(_looks_numeric(row[i]) for row in rows if row[i]) for i in range(len(header))]
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in range(len(header))]

    def line(cells):
        padded = [cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
                  for i, cell in enumerate(cells)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if numeric[i] else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(row) for row in rows])


def _looks_numeric(cell: str) -> bool:
    """Figures, placeholders, and the status words that stand in a figure's place."""
    return (cell in ("-", "missing", "error", "skipped", "failed") or cell[:1].isdigit()
            or cell[:1] == "±")


def _memory_cell(figure: Figure) -> str:
    if figure.memory_bytes is None:
        return ""
    if figure.keys:
        unit = "entry" if figure.group == "cache" else "key"
        return f"{format_bytes(figure.memory_bytes / figure.keys)}/{unit}"
    return format_bytes(figure.memory_bytes)


def _figure_row(figure: Figure, first_in_group: bool, threads: bool) -> list:
    row = [figure.operation if first_in_group else "", figure.subject,
           _count(figure.keys), _count(figure.batch)]
    if threads:
        row.append(str(figure.threads))
    if figure.status == "ok":
        row += [format_ns(figure.median_ns), f"±{100 * figure.spread:.1f}%",
                format_rate(figure.ops_per_s), format_ratio(figure.ratio_to_fastcore),
                format_ratio(figure.ratio_to_floor), _memory_cell(figure)]
    else:
        row += [figure.status, "", "", "", "", ""]
    return row


def operation_family(figure: Figure) -> str:
    """The operation with its key count taken out ("try_acquire N keys round robin")."""
    return runner.operation_family(figure.operation, figure.keys)


def series_name(figure: Figure) -> str:
    """Operation family, subject and threads: one line of the keys sweep."""
    name = f"{operation_family(figure)} · {figure.subject}"
    return name + (f" ×{figure.threads} threads" if figure.threads > 1 else "")


def scaling_table(figures: list) -> str | None:
    """ns/op of each series (operation and subject) against live keys, when swept."""
    series: dict = {}
    for figure in figures:
        if figure.status == "ok" and figure.keys is not None:
            series.setdefault(series_name(figure), {})[figure.keys] = figure.median_ns
    swept = {name: points for name, points in series.items() if len(points) > 1}
    if not swept:
        return None
    columns = sorted({keys for points in swept.values() for keys in points})
    rows = [[name] + [format_ns(points[k]) if k in points else "" for k in columns]
            for name, points in swept.items()]
    return table(["ns/op by live keys"] + [f"{k:,}" for k in columns], rows)


def structure_table(figures: list, threads: bool) -> str:
    header = ["operation", "subject", "keys", "batch"] + (["threads"] if threads else []) + [
        "ns/op", "spread", "ops/s", "vs fastcore", "vs floor", "core memory"]
    order: dict = {}
    for figure in figures:
        order.setdefault(operation_family(figure), len(order))
    # sweep points interleave operations: list each operation's rows together, by batch,
    # then live keys, then threads
    figures = sorted(figures, key=lambda f: (order[operation_family(f)], f.batch or 0,
                                             f.keys or 0, f.threads))
    rows = []
    previous = None
    for figure in figures:
        rows.append(_figure_row(figure, figure.group_key != previous, threads))
        previous = figure.group_key
    return table(header, rows)


def memory_table(report: Report) -> str:
    header = ["structure", "operation", "subject", "keys", "Python", "core", "total",
              "per unit"]
    rows = []
    for item in report.memory:
        if item.status != "ok":
            rows.append([item.structure, item.operation, item.subject, _count(item.keys),
                         item.status, "", "", ""])
            continue
        per = (f"{format_bytes(item.bytes_per_unit)}/{item.per}" if item.per
               else f"{format_bytes(item.total_bytes)} each")
        rows.append([item.structure, item.operation, item.subject, _count(item.keys),
                     format_bytes(item.python_bytes),
                     "-" if item.core_bytes is None else format_bytes(item.core_bytes),
                     format_bytes(item.total_bytes), per])
    return table(header, rows)


def header_lines(report: Report) -> list:
    """What is known before anything is timed: machine, versions, structures, sweep."""
    machine, versions = report.machine, report.versions
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.started))
    memory = (f" · {machine['memory_bytes'] / 2**30:.1f} GiB"
              if machine.get("memory_bytes") else "")
    lines = [
        f"fastcore bench · {report.settings.mode} mode · {when}",
        f"machine    {machine['cpu']} · {machine['arch']} · {machine['cpus']} CPUs "
        f"({machine['cpus_usable']} usable){memory} · {machine['os']}",
        f"versions   {versions['implementation']} {versions['python']} · "
        f"numpy {versions['numpy']} · fastcore {versions['fastcore']}",
    ]
    lines.append("structures " + " · ".join(
        s["name"] if s["status"] == "ok" else f"{s['name']} {s['status']}"
        for s in report.structures))
    settings = report.settings
    sweep = (f"sweep      keys {', '.join(f'{k:,}' for k in settings.keys)} · batch "
             f"{', '.join(f'{b:,}' for b in settings.batch)} · up to {settings.rounds} "
             f"rounds of {1000 * settings.round_time:g} ms"
             + (f" within {settings.max_time:g} s" if settings.max_time else "")
             + " per figure")
    if settings.row_cap is not None:
        sweep += f" · at most {settings.row_cap:g} s per row"
    if settings.threads > 1:
        sweep += f" · batch calls also from {settings.threads} threads (aggregate)"
    lines.append(sweep)
    return lines


def summary_lines(report: Report) -> list:
    """What is known at the end: peers, noise, duration."""
    machine, noise = report.machine, report.noise
    lines = []
    if report.settings.peers:
        installed = [f"{name} {version}" for name, version in sorted(report.peers.items())
                     if version]
        missing = [name for name, version in sorted(report.peers.items()) if not version]
        lines.append("peers      " + (" · ".join(installed) or "none installed")
                     + (f" · MISSING: {', '.join(missing)}" if missing else ""))
    load = ""
    if noise["load_average_start"] is not None:
        load = (f"; load average {noise['load_average_start']:.1f} -> "
                f"{noise['load_average_end']:.1f} on {machine['cpus_usable']} CPUs")
    lines.append(
        f"noise      {noise['verdict']}: rounds within ±{100 * noise['median_spread']:.1f}% "
        f"(median spread), worst ±{100 * noise['max_spread']:.1f}%; reference loop drift "
        f"{100 * noise['reference_drift']:+.1f}%{load}")
    done = {"complete": "done in", "interrupted": "INTERRUPTED after",
            "running": "running for"}[report.state]
    lines.append(f"duration   {done} {report.duration_s:.1f} s")
    return lines


def not_run_lines(report: Report) -> list:
    lines = [f"  {s['name']}: {s['status']}: {s['detail']}" for s in report.structures
             if s["status"] != "ok"]
    lines += [f"  {f.structure} / {f.operation} / {f.subject}: {f.status}: {f.detail}"
              for f in report.figures if f.status != "ok"]
    lines += [f"  {m.structure} memory / {m.subject} at {_count(m.keys)} keys: {m.status}: "
              f"{m.detail}" for m in report.memory if m.status != "ok"]
    return lines


def start(report: Report) -> str:
    """The header, printed before anything is timed."""
    return "\n".join(header_lines(report)) + "\n"


def structure_section(report: Report, name: str) -> str | None:
    """One structure's table (and its scaling table when keys were swept)."""
    figures = [f for f in report.figures if f.structure == name]
    if not figures:
        return None
    parts = [f"{name}\n" + structure_table(figures, report.settings.threads > 1)]
    scaling = scaling_table(figures)
    if scaling:
        parts.append(f"{name}: scaling with live keys\n" + scaling)
    return "\n\n".join(parts) + "\n"


def closing(report: Report) -> str:
    """Memory, what did not run, peers, noise and the duration: printed at the end."""
    parts = []
    if report.memory:
        parts.append(f"memory: structures built at {report.settings.memory_keys:,} keys "
                     "(Python objects by tracemalloc, C allocations by memory_bytes(); "
                     "key objects not counted)\n" + memory_table(report))
    missing = not_run_lines(report)
    if missing:
        parts.append("not run (reported, never dropped):\n" + "\n".join(missing))
    parts.append("\n".join(summary_lines(report)))
    parts.append("ns/op: median over rounds; spread: interquartile range / median; "
                 "vs fastcore / vs floor: ns/op over the group's fastcore / floor row "
                 "(above 1 is slower)")
    return "\n\n".join(parts) + "\n"


def render(report: Report) -> str:
    """The whole printed report."""
    parts = [start(report)]
    for structure in report.structures:
        section = structure_section(report, structure["name"])
        if section:
            parts.append(section)
    parts.append(closing(report))
    return "\n".join(parts)
