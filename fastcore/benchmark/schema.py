"""The ``--json`` document: a stable, versioned schema (``SCHEMA``, a JSON Schema).

``schema_version`` changes only when a field changes meaning or disappears; new optional
fields may appear without a new version, so readers must ignore fields they do not know.
``python -m fastcore bench --schema`` prints ``SCHEMA``. Field meanings are documented in
the README ("Benchmark tool") and in bench/README.md.

Version 2 (from version 1): a figure's ``status`` may also be "skipped" (over the row time
cap) or "failed" (its subject could not be reached); a memory figure has ``status`` and
``detail``, and null byte counts when skipped; the document has ``state`` ("running" while
the run is still writing it, "complete", "interrupted") and ``settings.row_cap_s``.
``read`` accepts both versions (``--compare`` against a version 1 file works).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time

from fastcore.benchmark.runner import Report

__all__ = ["SCHEMA_VERSION", "READABLE_VERSIONS", "SCHEMA", "to_document", "write", "read",
           "publish", "SchemaError"]

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)        # what ``read`` (``--compare``) accepts

_number_or_null = {"type": ["number", "null"]}
_int_or_null = {"type": ["integer", "null"]}
_string_or_null = {"type": ["string", "null"]}

_FIGURE = {
    "type": "object",
    "required": ["structure", "group", "operation", "subject", "kind", "keys", "batch",
                 "threads", "ops_per_call", "peer", "peer_version", "status", "detail",
                 "median_ns", "q1_ns", "q3_ns", "spread", "ops_per_s", "samples_ns",
                 "ratio_to_fastcore", "ratio_to_floor", "memory_bytes"],
    "properties": {
        "structure": {"type": "string"},
        "group": {"type": "string"},
        "operation": {"type": "string"},
        "subject": {"type": "string"},
        "kind": {"enum": ["fastcore", "floor", "peer"]},
        "keys": _int_or_null,
        "batch": _int_or_null,
        "threads": {"type": "integer", "minimum": 1},
        "ops_per_call": {"type": "integer", "minimum": 1},
        "peer": _string_or_null,
        "peer_version": _string_or_null,
        "status": {"enum": ["ok", "missing", "error", "skipped", "failed"]},
        "detail": {"type": "string"},
        "median_ns": _number_or_null,
        "q1_ns": _number_or_null,
        "q3_ns": _number_or_null,
        "spread": _number_or_null,
        "ops_per_s": _number_or_null,
        "samples_ns": {"type": "array", "items": {"type": "number"}},
        "ratio_to_fastcore": _number_or_null,
        "ratio_to_floor": _number_or_null,
        "memory_bytes": _int_or_null,
    },
}

_MEMORY = {
    "type": "object",
    "required": ["structure", "group", "operation", "subject", "keys", "python_bytes",
                 "core_bytes", "total_bytes", "per", "bytes_per_unit", "status", "detail"],
    "properties": {
        "structure": {"type": "string"},
        "group": {"type": "string"},
        "operation": {"type": "string"},
        "subject": {"type": "string"},
        "keys": _int_or_null,
        "python_bytes": {"type": ["integer", "null"], "minimum": 0},
        "core_bytes": {"type": ["integer", "null"], "minimum": 0},
        "total_bytes": {"type": ["integer", "null"], "minimum": 0},
        "per": {"enum": ["key", "entry", None]},
        "bytes_per_unit": _number_or_null,
        "status": {"enum": ["ok", "skipped"]},
        "detail": {"type": "string"},
    },
    "if": {"properties": {"status": {"const": "ok"}}},
    "then": {"properties": {"python_bytes": {"type": "integer"},
                            "total_bytes": {"type": "integer"},
                            "bytes_per_unit": {"type": "number"}}},
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fastcore bench results",
    "type": "object",
    "required": ["schema_version", "state", "created", "command", "duration_s", "settings",
                 "machine", "versions", "peers", "noise", "structures", "figures", "memory"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "state": {"enum": ["running", "complete", "interrupted"]},
        "created": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "duration_s": {"type": "number"},
        "settings": {
            "type": "object",
            "required": ["mode", "structures", "keys", "batch", "threads", "peers", "redis",
                         "rounds", "round_time_s", "max_time_s", "memory_keys", "row_cap_s"],
            "properties": {
                "mode": {"enum": ["default", "quick", "tiny"]},
                "structures": {"type": "array", "items": {"type": "string"}},
                "keys": {"type": "array", "items": {"type": "integer"}},
                "batch": {"type": "array", "items": {"type": "integer"}},
                "threads": {"type": "integer", "minimum": 1},
                "peers": {"type": "boolean"},
                "redis": {"type": "boolean"},
                "rounds": {"type": "integer"},
                "round_time_s": {"type": "number"},
                "max_time_s": {"type": ["number", "null"]},
                "memory_keys": {"type": "integer"},
                "row_cap_s": {"type": ["number", "null"]},
            },
        },
        "machine": {
            "type": "object",
            "required": ["cpu", "arch", "cpus", "cpus_usable", "memory_bytes", "os"],
        },
        "versions": {
            "type": "object",
            "required": ["python", "implementation", "numpy", "fastcore"],
            "properties": {key: {"type": "string"}
                           for key in ("python", "implementation", "numpy", "fastcore")},
        },
        "peers": {"type": "object", "additionalProperties": _string_or_null},
        "noise": {
            "type": "object",
            "required": ["verdict", "median_spread", "max_spread", "reference_drift",
                         "load_average_start", "load_average_end"],
            "properties": {"verdict": {"enum": ["quiet", "noisy"]}},
        },
        "structures": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "module", "status", "detail"],
                "properties": {
                    "name": {"type": "string"},
                    "module": {"type": "string"},
                    "status": {"enum": ["ok", "absent", "import-error", "error"]},
                    "detail": {"type": "string"},
                },
            },
        },
        "figures": {"type": "array", "items": _FIGURE},
        "memory": {"type": "array", "items": _MEMORY},
    },
}


class SchemaError(ValueError):
    """A results file that is not a fastcore bench document of a version this code reads."""


def _finite(value):
    """JSON has no NaN or infinity: such figures are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_document(report: Report, command: list | None = None) -> dict:
    """The report as a JSON-ready dict following ``SCHEMA``."""
    settings = report.settings
    return {
        "schema_version": SCHEMA_VERSION,
        "state": report.state,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.started)),
        "command": list(sys.argv if command is None else command),
        "duration_s": report.duration_s,
        "settings": {
            "mode": settings.mode,
            "structures": list(settings.structures),
            "keys": list(settings.keys),
            "batch": list(settings.batch),
            "threads": settings.threads,
            "peers": settings.peers,
            "redis": settings.redis_url is not None,   # the URL may hold a password
            "rounds": settings.rounds,
            "round_time_s": settings.round_time,
            "max_time_s": settings.max_time,
            "memory_keys": settings.memory_keys,
            "row_cap_s": settings.row_cap,
        },
        "machine": report.machine,
        "versions": report.versions,
        "peers": report.peers,
        "noise": report.noise,
        "structures": report.structures,
        "figures": [{key: _finite(value) for key, value in dataclasses.asdict(f).items()}
                    for f in report.figures],
        "memory": [{key: _finite(value) for key, value in dataclasses.asdict(m).items()}
                   for m in report.memory],
    }


def publish(temporary: str, path: str) -> None:
    """Rename a finished temporary file over ``path`` with the permissions a plain
    ``open(path, "w")`` would have given it (a temporary file is private to its owner)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def write(document: dict, path: str) -> None:
    """Write atomically (a temporary file renamed over ``path``): a run killed while writing
    leaves the previous complete file, never a truncated one."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".fastcore-bench-", suffix=".json",
                                         dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1, allow_nan=False)
            out.write("\n")
        publish(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read(path: str) -> dict:
    """Load a results file for ``--compare``; raises ``SchemaError`` with the reason."""
    try:
        with open(path, encoding="utf-8") as source:
            document = json.load(source)
    except OSError as error:
        raise SchemaError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise SchemaError(f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict) or "schema_version" not in document:
        raise SchemaError(f"{path} is not a fastcore bench results file (no schema_version)")
    if document["schema_version"] not in READABLE_VERSIONS:
        raise SchemaError(f"{path} has schema_version {document['schema_version']!r}; "
                          f"this fastcore reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))}")
    figures = document.get("figures")
    if not isinstance(figures, list) or not all(
            isinstance(f, dict) and {"structure", "operation", "subject", "status",
                                     "median_ns"} <= f.keys() for f in figures):
        raise SchemaError(f"{path}: 'figures' is missing or malformed")
    return document
