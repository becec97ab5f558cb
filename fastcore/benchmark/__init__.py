"""Benchmark workloads shared by ``python -m fastcore bench`` and the suites in ``bench/``.

Each structure has a module here (``token``, ``window``, ``cache``, ...) exposing
``workloads(keys, batch) -> list[Workload]``; ``workload.py`` holds the timing harness.
"""
