"""Which benchmark modules exist: structure name -> module, and the ``--only`` group names.

Every structure module exposes ``workloads(keys, batch) -> list[Workload]``; the Redis module
takes the server URL as a third argument. A module that is not in this build ("absent") or
that fails to import is reported with the reason, never skipped silently.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

__all__ = ["MODULES", "GROUPS", "REDIS", "Structure", "load", "expand_groups"]

# structure name -> module path, in the order the report lists them
MODULES = {
    "token": "fastcore.benchmark.token",
    "window": "fastcore.benchmark.window",
    "ttlcache": "fastcore.benchmark.ttlcache",
    "semantic": "fastcore.benchmark.semantic",
    "histogram": "fastcore.benchmark.histogram",
    "redis": "fastcore.benchmark.redis",
}

# ``--only`` names -> structures; "redis" is not a group: ``--redis URL`` selects it
GROUPS = {
    "token": ("token",),
    "window": ("window",),
    "cache": ("ttlcache", "semantic"),
    "histogram": ("histogram",),
}

REDIS = "redis"


@dataclass
class Structure:
    """One structure module and whether it could be loaded.

    ``status``: "ok", "absent" (the module is not in this build) or "import-error".
    """

    name: str
    module_path: str
    status: str
    detail: str = ""
    module: Optional[ModuleType] = None


def expand_groups(names: list) -> list:
    """Structure names for ``--only`` names (group or structure names), in registry order.

    Raises ``ValueError`` naming the unknown name and the accepted ones.
    """
    chosen = set()
    for name in names:
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in MODULES and name != REDIS:
            chosen.add(name)
        else:
            accepted = sorted(set(GROUPS) | (set(MODULES) - {REDIS}))
            raise ValueError(f"unknown structure {name!r}; choose from {', '.join(accepted)}"
                             + (" (Redis is selected with --redis URL)" if name == REDIS else ""))
    return [name for name in MODULES if name in chosen]


def load(name: str) -> Structure:
    """Import the module of structure ``name``; never raises for a broken or absent module."""
    path = MODULES[name]
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as error:
        if error.name == path:
            return Structure(name, path, "absent", f"{path} is not in this build")
        return Structure(name, path, "import-error", f"{type(error).__name__}: {error}")
    except Exception as error:  # any import failure is reported, with its message
        return Structure(name, path, "import-error", f"{type(error).__name__}: {error}")
    if not callable(getattr(module, "workloads", None)):
        return Structure(name, path, "import-error", f"{path} has no workloads() function")
    return Structure(name, path, "ok", module=module)
