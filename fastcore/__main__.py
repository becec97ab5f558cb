"""``python -m fastcore bench`` (also the ``fastcore`` console script): command-line options.

The work happens in ``fastcore.benchmark.cli``; this module only declares the options.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "parsers"]

EPILOG = """\
exit codes (the highest applies): 0 done; 1 a fastcore row got slower than --tolerance
against --compare; 2 bad options; 3 a structure module failed to import or a workload raised;
4 a row failed: what it times could not be reached (e.g. --redis server down);
130 interrupted (Ctrl-C, SIGTERM): what ran is printed and written.

examples:
  fastcore bench --quick
  fastcore bench --only token --keys 1e3,1e5,1e7 --batch 1,64,4096 --threads 2
  fastcore bench --peers --json bench.json --plot bench.png
  fastcore bench --quick --compare bench.json --tolerance 0.2
"""


def _version() -> str:
    """``fastcore.__version__``: the one place the version is written (pyproject.toml reads
    it from there too)."""
    import fastcore
    return fastcore.__version__


def parsers() -> tuple:
    """The top-level parser and the ``bench`` subcommand's parser."""
    from fastcore.benchmark import cli

    top = argparse.ArgumentParser(
        prog="fastcore", description="fastcore command line.",
        epilog="fastcore bench --help lists the benchmark's options.")
    top.add_argument("--version", action="version", version=f"fastcore {_version()}",
                     help="print fastcore's version and exit")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="time fastcore's structures on this machine",
        description="Time every structure's hot operations on this machine and print "
                    "ns/op, ops/s, ratios to peers and floors, and memory.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--quick", action="store_true",
                       help="short rounds and a small sweep: under 30 s in total")
    bench.add_argument("--tiny", action="store_true",
                       help="tiny sweep and rounds for tests, overriding --quick: the whole "
                            "run in seconds (figures are noisy)")
    bench.add_argument("--only", type=cli.parse_names, metavar="NAMES",
                       help="comma-separated structures: token, window, cache (ttlcache + "
                            "semantic), histogram, or ttlcache / semantic alone "
                            "(default: all)")
    bench.add_argument("--keys", type=cli.parse_counts, metavar="COUNTS",
                       help="live-key counts to sweep, e.g. 1e3,1e5,1e7")
    bench.add_argument("--batch", type=cli.parse_counts, metavar="SIZES",
                       help="batch sizes to sweep, e.g. 1,64,4096")
    bench.add_argument("--threads", type=int, default=1, metavar="N",
                       help="also run the batch calls from N threads at once on one "
                            "structure and report the aggregate throughput")
    bench.add_argument("--peers", action="store_true",
                       help="add the peer libraries (pip install 'fastcore-edge[bench]'); "
                            "missing ones are reported")
    bench.add_argument("--redis", metavar="URL",
                       help="add the Redis-backed limiters against this server, "
                            "e.g. redis://localhost:6379/0")
    bench.add_argument("--json", metavar="PATH", help="write every figure as JSON "
                       "(schema: fastcore bench --schema)")
    bench.add_argument("--plot", metavar="PATH",
                       help="write a PNG: ns/op against live keys, fastcore against peers")
    bench.add_argument("--compare", metavar="OLD.json",
                       help="print the change against an earlier --json run (version 1 or "
                            "2); exit 1 when a fastcore row got slower than --tolerance")
    bench.add_argument("--tolerance", type=cli.parse_fraction, metavar="FRACTION",
                       help="slowdown allowed by --compare, 0.2 = 20%% (default 0.2); a "
                            "fastcore row is slower only beyond it after the machine speed "
                            "factor, beyond the rounds' spread, in every --retime repetition "
                            "and beyond the comparison's noise")
    bench.add_argument("--retime", type=cli.parse_repeats, metavar="N",
                       help="with --compare: time each fastcore row that looks slower again "
                            "N times, between timings of its floors; it is reported slower "
                            "only if every repetition is (default 3; 0: off)")
    bench.add_argument("--memory-keys", type=cli.parse_count, metavar="N",
                       help="keys (entries) at which memory is measured; 0 skips it "
                            "(default 1,000,000; 100,000 with --quick; 1,000 with --tiny)")
    bench.add_argument("--row-cap", type=cli.parse_seconds, metavar="SECONDS",
                       help="stop a row (setup, warm-up and timing) after this long and "
                            "report it skipped; a row projected from fewer keys to twice it "
                            "is skipped without running (default 15; 5 with --quick; 0: no "
                            "cap)")
    bench.add_argument("--progress", choices=("auto", "rich", "plain", "none"),
                       default="auto", help="progress on stderr (default: rich on a "
                                            "terminal when installed, else one plain line)")
    bench.add_argument("--schema", action="store_true",
                       help="print the JSON schema of --json output and exit")
    return top, bench


def main(argv: list | None = None) -> int:
    """Run the command line; returns the exit code."""
    from fastcore.benchmark import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    top, bench = parsers()
    args = top.parse_args(argv)           # exits 2 with a message on a bad option
    if args.command is None:              # `fastcore` alone: what it can do
        top.print_help()
        return 0
    problem = cli.options_error(args)
    if problem:
        bench.error(problem)              # exits 2
    try:
        return cli.run(args, argv[1:])
    except KeyboardInterrupt:
        sys.stderr.write("fastcore bench: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
