"""``fastcore bench``: turns parsed options into a run, then prints, writes and compares.

Exit codes: 0 done; 1 a fastcore row got slower than ``--tolerance`` against ``--compare``;
2 bad options (argparse's code); 3 a structure module failed to import or a workload
raised (the run is incomplete; the report says what broke); 4 a row failed because what it
times could not be reached (a Redis server that is down); 130 interrupted (Ctrl-C or
SIGTERM: what ran is printed and written). The highest applies. An absent structure module,
a peer that is not installed and a row skipped at its time cap are reported, not errors.

Output is written as the run goes: each structure's table when it is done, the ``--json``
file after every row (at most once a second; the file says ``"state": "running"`` until the
end) and the ``--plot`` PNG after a structure when a minute has passed since it was last
drawn, so a run stopped early leaves its results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import time

from fastcore.benchmark import compare, plot, progress, registry, report, runner, schema

__all__ = ["parse_counts", "parse_count", "parse_names", "parse_fraction", "parse_seconds",
           "parse_repeats",
           "options_error", "run", "EXIT_OK", "EXIT_SLOWER", "EXIT_USAGE", "EXIT_BROKEN",
           "EXIT_FAILED", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_SLOWER, EXIT_USAGE, EXIT_BROKEN, EXIT_FAILED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
MAX_COUNT = 10**9
JSON_EVERY_S = 1.0          # --json is rewritten at most this often while rows come in
PLOT_EVERY_S = 60.0         # --plot is redrawn after a structure at most this often (a few
                            # seconds of CPU each time): a --quick run draws it once, at the end


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


def parse_repeats(text: str) -> int:
    """A number of repetitions, 0 to 20; for argparse ``type=``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 20:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (off) to 20 repetitions")
    return value


def parse_seconds(text: str) -> float:
    """A time cap in seconds, ``0`` for none; for argparse ``type=``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, e.g. 15 (0: no cap)")
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
    if args.retime is not None and args.compare is None:
        return "--retime needs --compare OLD.json"
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
        row_cap=(preset["row_cap"] if args.row_cap is None
                 else args.row_cap or None),        # --row-cap 0: no cap
    )


class _Outputs:
    """Prints each structure's section when it is done and keeps ``--json`` and ``--plot``
    up to date while the run goes (``update`` is the runner's ``on_update``)."""

    def __init__(self, args, argv: list):
        self.args = args
        self.command = ["fastcore", "bench", *argv]
        self.last_json = float("-inf")
        self.last_plot = time.monotonic()
        self.printed: set = set()

    def _print(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def update(self, result, event: str, structure) -> None:
        if event == "start":
            self._print(report.start(result))
            return
        if event == "structure" and structure not in self.printed:
            self.printed.add(structure)
            section = report.structure_section(result, structure)
            if section:
                self._print("\n" + section)
        now = time.monotonic()
        if self.args.json is not None and (event != "figure"
                                           or now - self.last_json >= JSON_EVERY_S):
            self.write_json(result)
        if (self.args.plot is not None and event == "structure"
                and now - self.last_plot >= PLOT_EVERY_S):
            self.last_plot = now
            try:
                plot.write(result, self.args.plot)
            except Exception as error:  # a partial plot is a convenience: the end retries
                sys.stderr.write(f"fastcore bench: could not draw {self.args.plot} yet: "
                                 f"{type(error).__name__}: {error}\n")

    def write_json(self, result) -> dict:
        document = schema.to_document(result, self.command)
        if self.args.json is not None:
            schema.write(document, self.args.json)
            self.last_json = time.monotonic()
        return document

    def finish(self, result) -> dict:
        """The sections not printed yet, the closing part, and the files in their final
        state; returns the JSON document."""
        for structure in result.structures:
            if structure["name"] not in self.printed:
                self.printed.add(structure["name"])
                section = report.structure_section(result, structure["name"])
                if section:
                    self._print("\n" + section)
        self._print("\n" + report.closing(result))
        document = self.write_json(result)
        if self.args.json is not None:
            print(f"wrote {self.args.json}")
        if self.args.plot is not None:
            plot.write(result, self.args.plot)
            print(f"wrote {self.args.plot}")
        return document


def _retime(comparison, old: dict, document: dict, settings, repeats: int,
            progress_mode: str) -> None:
    """Time the rows that look slower again beside their floors (``compare.retime_plan``)."""
    plan = compare.retime_plan(comparison, old, document)
    if not plan:
        return
    shown = progress.make(progress_mode)
    shown.start(len(plan))
    shown.point(f"re-timing {len(plan)} rows that look slower, {repeats} times each")
    try:
        results = runner.retime(settings, plan, repeats, shown)
    finally:
        shown.finish()
    compare.apply_retimes(comparison, old, document, plan, results)


def _stop_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt, so ``timeout`` or a CI runner stopping the run
    still gets what ran printed and written; returns the previous handler."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:                  # not the main thread: leave signals alone
        return None


def run(args, argv: list) -> int:
    """Run the benchmark that ``args`` (already checked by ``options_error``) describe."""
    if args.schema:
        print(json.dumps(schema.SCHEMA, indent=1))
        return EXIT_OK
    old = schema.read(args.compare) if args.compare is not None else None
    outputs = _Outputs(args, argv)
    settings = settings_from(args)
    previous = _stop_on_sigterm()
    try:
        result = runner.run(settings, progress.make(args.progress), outputs.update)
        document = outputs.finish(result)
        comparison = None
        if old is not None:
            tolerance = 0.2 if args.tolerance is None else args.tolerance
            comparison = compare.compare(old, document, tolerance)
            repeats = compare.REPEATS if args.retime is None else args.retime
            if repeats and result.state == "complete":
                _retime(comparison, old, document, settings, repeats, args.progress)
            sys.stdout.write("\n" + compare.render(comparison, args.compare))
    except KeyboardInterrupt:
        if "result" not in locals():
            raise
        sys.stderr.write("fastcore bench: interrupted after the run; its output is written\n")
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    codes = [EXIT_OK]
    if comparison is not None and (comparison.regressions or comparison.overall_slower):
        codes.append(EXIT_SLOWER)
    if result.failed:
        sys.stderr.write("fastcore bench: failed rows (no figure):\n  "
                         + "\n  ".join(result.failed) + "\n")
        codes.append(EXIT_FAILED)
    if result.failures:
        sys.stderr.write("fastcore bench: incomplete run:\n  "
                         + "\n  ".join(result.failures) + "\n")
        codes.append(EXIT_BROKEN)
    if result.state == "interrupted":
        sys.stderr.write("fastcore bench: interrupted: the rows above are those that ran\n")
        codes.append(EXIT_INTERRUPTED)
    return max(codes)
