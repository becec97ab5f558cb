"""Shared by the ``bench_<concept>.py`` suites: one uniquely named benchmark per workload."""

import re

import pytest

__all__ = ["slug", "define_benchmarks"]


def slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def define_benchmarks(namespace: dict, found: list) -> None:
    """Add one uniquely named test per workload to a bench module's ``namespace``.

    A workload that does not depend on the sweep point (same operation and subject) is
    defined once; a name collision is an error, never a silent overwrite.
    """
    for workload in found:
        name = f"test_{slug(workload.operation)}__{slug(workload.subject)}"
        if workload.keys is not None and f"{workload.keys:,}" not in workload.operation:
            name += f"__{workload.keys}_keys"
        identity = (workload.operation, workload.subject, workload.keys, workload.batch)
        if name in namespace:
            if namespace[name].identity == identity:
                continue
            raise ValueError(f"two workloads map to the benchmark name {name}")

        def test(run_workload, workload=workload):
            run_workload(workload)

        test.__name__ = name
        test.identity = identity
        namespace[name] = pytest.mark.benchmark(group=workload.operation)(test)
