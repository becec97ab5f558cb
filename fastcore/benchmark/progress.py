"""Progress while a benchmark runs, on stderr so the table on stdout stays pipeable.

``rich`` (from the ``[bench]`` extra) draws a bar when stderr is a terminal; otherwise a
plain one-line progress: rewritten in place on a terminal, one line per sweep point when
stderr is a file or a pipe.
"""

from __future__ import annotations

import sys
import time

__all__ = ["make", "PlainProgress", "NullProgress"]


class NullProgress:
    """Shows nothing."""

    def start(self, total: float) -> None:
        pass

    def point(self, text: str) -> None:
        pass

    def describe(self, text: str) -> None:
        pass

    def advance(self, amount: float) -> None:
        pass

    def finish(self) -> None:
        pass


class PlainProgress:
    """``[ 42%] 12 s  token keys=1,000 batch=64: ...`` on one line."""

    def __init__(self, stream):
        self.stream = stream
        self.inline = stream.isatty()
        self.total = 1.0
        self.done = 0.0
        self.text = ""
        self.began = time.perf_counter()
        self.width = 0

    def start(self, total: float) -> None:
        self.total = max(total, 1e-9)
        self.began = time.perf_counter()

    def _line(self) -> str:
        percent = min(100.0, 100.0 * self.done / self.total)
        elapsed = time.perf_counter() - self.began
        return f"[{percent:3.0f}%] {elapsed:5.1f} s  {self.text}"

    def point(self, text: str) -> None:
        """A new sweep point: its own line when stderr is not a terminal."""
        if self.inline:
            self.describe(text)
        else:
            self.text = text
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def describe(self, text: str) -> None:
        """The workload now running: shown only on a terminal, where the line is rewritten."""
        self.text = text
        if self.inline:
            line = self._line()[:119]
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.stream.flush()

    def advance(self, amount: float) -> None:
        self.done += amount

    def finish(self) -> None:
        self.done = self.total
        if self.inline:
            self.stream.write("\r" + " " * self.width + "\r")
        self.stream.flush()


class RichProgress:
    """A ``rich`` progress bar with the current workload and an estimate of time left."""

    def __init__(self, stream):
        from rich.console import Console
        from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}", table_column=None),
            BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(file=stream), transient=True)
        self.task = None

    def start(self, total: float) -> None:
        self.progress.start()
        self.task = self.progress.add_task("starting", total=max(total, 1e-9))

    def point(self, text: str) -> None:
        self.describe(text)

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text[:70])

    def advance(self, amount: float) -> None:
        self.progress.advance(self.task, amount)

    def finish(self) -> None:
        self.progress.stop()


def make(kind: str = "auto", stream=None):
    """A progress display: ``kind`` is "auto" (rich on a terminal if installed, else plain),
    "rich", "plain" or "none". Raises ``ImportError`` for "rich" when rich is missing."""
    stream = stream if stream is not None else sys.stderr
    if kind == "none":
        return NullProgress()
    if kind == "plain":
        return PlainProgress(stream)
    if kind == "rich":
        return RichProgress(stream)
    if stream.isatty():
        try:
            return RichProgress(stream)
        except ImportError:
            pass
    return PlainProgress(stream)
