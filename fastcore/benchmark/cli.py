"""``fastcore bench``: turns parsed options into a run, then prints, writes and compares.

Exit codes: 0 done; 1 a figure got slower than ``--tolerance`` against ``--compare``;
2 bad options (argparse's code); 3 a structure module failed to import or a workload
raised (the run is incomplete; the report says what broke). An absent structure module or
a peer that is not installed is reported, not an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

from fastcore.benchmark import compare, plot, progress, registry, report, runner, schema

__all__ = ["parse_counts", "parse_count", "parse_names", "parse_fraction", "options_error", "run",
           "EXIT_OK", "EXIT_SLOWER", "EXIT_USAGE", "EXIT_BROKEN"]

EXIT_OK, EXIT_SLOWER, EXIT_USAGE, EXIT_BROKEN = 0, 1, 2, 3
MAX_COUNT = 10**9


def parse_counts(text: str) -> list:
    """``"1e3,1e5,100_000"`` -> ``[1000, 100000]`` (sorted, unique); for argparse ``type=``."""
    counts = set()
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if not value.is_integer() or not 1 <= value <= MAX_COUNT:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a whole number between 1 and {MAX_COUNT:,}")
        counts.add(int(value))
    return sorted(counts)


def parse_count(text: str) -> int:
    """One count, 0 allowed (``"1e6"`` -> ``1000000``); for argparse ``type=``."""
    if text.strip() in ("0", "0.0", "0e0"):
        return 0
    counts = parse_counts(text)
    if len(counts) != 1:
            raise argparse.ArgumentTypeError(f"{text!r}: give one number")
    return counts[0]


def parse_names(text: str) -> list:
    """``"token,cache"`` -> structure names; for argparse ``type=``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one structure")
    try:
        return registry.expand_groups(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_fraction(text: str) -> float:
    """A tolerance such as ``0.2`` (20 % slower allowed); for argparse ``type=``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction such as 0.2 (20%)")
    return value


def _writable(path: str) -> str | None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"folder {folder} is not writable"
    if os.path.isdir(path):
        return f"{path} is a folder"
    return None


def options_error(args) -> str | None:
    """What is wrong with the combination of options, checked before anything runs."""
    if args.tolerance is not None and args.compare is None:
        return "--tolerance needs --compare OLD.json"
    if args.threads < 1:
        return f"--threads must be at least 1, got {args.threads}"
    if args.redis is not None and not args.redis.startswith(("redis://", "rediss://",
                                                             "unix://")):
        return f"--redis takes a URL such as redis://localhost:6379/0, got {args.redis!r}"
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None and (problem := _writable(path)):
            return f"{option} {path}: {problem}"
    if args.plot is not None and not plot.available():
        return "--plot needs matplotlib: pip install 'fastcore-edge[bench]'"
    if args.progress == "rich" and importlib.util.find_spec("rich") is None:
        return "--progress rich needs rich: pip install 'fastcore-edge[bench]'"
    if args.compare is not None:
        try:
            schema.read(args.compare)
        except schema.SchemaError as error:
            return f"--compare: {error}"
    return None


def settings_from(args) -> runner.Settings:
    mode = "tiny" if args.tiny else "quick" if args.quick else "default"
    preset = runner.MODES[mode]
    return runner.Settings(
        structures=args.only if args.only is not None else [
            name for name in registry.MODULES if name != registry.REDIS],
        keys=args.keys or preset["keys"],
        batch=args.batch or preset["batch"],
        rounds=preset["rounds"],
        round_time=preset["round_time"],
        max_time=preset["max_time"],
        memory_keys=preset["memory_keys"] if args.memory_keys is None else args.memory_keys,
        mode=mode,
        threads=args.threads,
        peers=args.peers,
        redis_url=args.redis,
    )


def run(args, argv: list) -> int:
    """Run the benchmark that ``args`` (already checked by ``options_error``) describe."""
    if args.schema:
        print(json.dumps(schema.SCHEMA, indent=1))
        return EXIT_OK
    old = schema.read(args.compare) if args.compare is not None else None
    result = runner.run(settings_from(args), progress.make(args.progress))
    sys.stdout.write(report.render(result))
    document = schema.to_document(result, ["fastcore", "bench", *argv])
    if args.json is not None:
        schema.write(document, args.json)
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot.write(result, args.plot)
        print(f"wrote {args.plot}")
    code = EXIT_OK
    if old is not None:
        tolerance = 0.2 if args.tolerance is None else args.tolerance
        comparison = compare.compare(old, document, tolerance)
        sys.stdout.write("\n" + compare.render(comparison, args.compare))
        if comparison.regressions:
            code = EXIT_SLOWER
    failures = result.failures
    if failures:
        sys.stderr.write("fastcore bench: incomplete run:\n  " + "\n  ".join(failures) + "\n")
        code = EXIT_BROKEN
    return code
