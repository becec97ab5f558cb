"""fastcore against its peers: every structure's fastcore, floor and peer workloads in one
process, printed as ratios (peer ns/op over fastcore ns/op: how many times faster fastcore is).

    python bench/peers.py                 # 100,000 keys, every structure in this build
    python bench/peers.py --quick --only token --keys 1e3,1e5

Uses the same workloads as ``python -m fastcore bench --peers``; a peer that is not
installed is printed as missing, and a structure module absent from this build as absent.
"""

import argparse
import sys

from fastcore.benchmark import cli, progress, registry, runner
from fastcore.benchmark.report import format_ns, format_ratio, header_lines, not_run_lines, table


def ratio_rows(result: runner.Report) -> list:
    """One row per peer: its group, fastcore's and the floor's ns/op, the peer's, the ratio."""
    groups: dict = {}
    for figure in result.figures:
        groups.setdefault(figure.group_key, []).append(figure)
    rows = []
    for members in groups.values():
        peers = [f for f in members if f.kind == "peer"]
        if not peers:
            continue
        fastcore = next((f for f in members if f.kind == "fastcore" and f.status == "ok"), None)
        floor = next((f for f in members if f.kind == "floor" and f.status == "ok"), None)
        first = members[0]
        for peer in peers:
            measured = peer.status == "ok"
            rows.append([
                first.structure, first.operation, "-" if first.keys is None else f"{first.keys:,}",
                format_ns(fastcore.median_ns) if fastcore else "",
                format_ns(floor.median_ns) if floor else "",
                peer.subject,
                format_ns(peer.median_ns) if measured else peer.status,
                format_ratio(peer.median_ns / fastcore.median_ns) if measured and fastcore else "",
            ])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=cli.parse_names, metavar="NAMES")
    parser.add_argument("--keys", type=cli.parse_counts, default=[100_000], metavar="COUNTS")
    parser.add_argument("--quick", action="store_true", help="short rounds")
    args = parser.parse_args(argv)
    preset = runner.MODES["quick" if args.quick else "default"]
    settings = runner.Settings(
        structures=args.only or [n for n in registry.MODULES if n != registry.REDIS],
        keys=args.keys, batch=[preset["batch"][-1]], rounds=preset["rounds"],
        round_time=preset["round_time"], max_time=preset["max_time"], memory_keys=0,
        mode="quick" if args.quick else "default", peers=True)
    result = runner.run(settings, progress.make())
    print("\n".join(header_lines(result)))
    print()
    print(table(["structure", "operation", "keys", "fastcore ns/op", "floor ns/op", "peer",
                 "peer ns/op", "peer / fastcore"], ratio_rows(result)))
    missing = not_run_lines(result)
    if missing:
        print("\nnot run (reported, never dropped):\n" + "\n".join(missing))
    return 3 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
