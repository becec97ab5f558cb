"""pytest-benchmark suites over the package's workloads (``fastcore/benchmark/<concept>.py``).

Run from this folder: ``cd bench && python -m pytest -q .`` (the default test run never
collects it: ``testpaths`` is ``tests/``). Files are ``bench_<concept>.py``; this conftest
collects them. Each suite builds the same ``Workload`` records as ``python -m fastcore
bench``, one pytest-benchmark group per operation. pytest-benchmark times whole calls of
``ops`` operations; the summary at the end divides by ``ops`` and prints ns/op with the
ratio to each group's fastcore row.
"""

import sys
from pathlib import Path

import pytest

from fastcore.benchmark.report import format_ns, format_ratio, table
from fastcore.benchmark.workload import PeerMissing, peer_version

_RESULTS = []       # (group, subject, kind, ns/op), in run order

# --import-mode=importlib puts no test folder on sys.path; the suites import _suite.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def run_workload(benchmark):
    """Benchmark one ``Workload``: skip (reported) when its peer is not installed."""

    def run(workload):
        if workload.peer:
            try:
                peer_version(workload.peer)
            except PeerMissing as missing:
                pytest.skip(str(missing))
        call = workload.setup()
        call()
        benchmark.extra_info.update(ops=workload.ops, subject=workload.subject,
                                    kind=workload.kind, keys=workload.keys,
                                    batch=workload.batch)
        benchmark(call)
        if benchmark.stats is not None:          # None under --benchmark-disable
            ns = benchmark.stats.stats.median * 1e9 / workload.ops
            benchmark.extra_info["ns_per_op"] = ns
            _RESULTS.append((workload.operation, workload.subject, workload.kind, ns))

    return run


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    reference = {}
    for group, _, kind, ns in _RESULTS:
        if kind == "fastcore":
            reference.setdefault(group, ns)
    rows = []
    previous = None
    for group, subject, kind, ns in sorted(_RESULTS, key=lambda r: list(reference).index(r[0])
                                           if r[0] in reference else len(reference)):
        rows.append([group if group != previous else "", subject, format_ns(ns),
                     format_ratio(ns / reference[group]) if group in reference else ""])
        previous = group
    terminalreporter.write_sep("-", "ns per operation (median call / ops)")
    terminalreporter.write_line(table(["operation", "subject", "ns/op", "vs fastcore"], rows))
