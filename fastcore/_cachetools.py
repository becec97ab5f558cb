"""fastcore.TTLCache as a virtual subclass of ``cachetools.Cache``, without importing cachetools.

cachetools' decorators report ``cache_info()`` with ``maxsize`` and ``currsize`` only for
instances of ``cachetools.Cache`` (``None`` and ``len(cache)`` otherwise). ``cachetools.Cache``
derives from ``collections.abc.MutableMapping``, an ABC, so it takes virtual subclasses:
``cachetools.Cache.register(TTLCache)`` makes ``isinstance(cache, cachetools.Cache)`` true
without changing either class.

cachetools stays optional and fastcore never imports it. ``install()`` registers at once when
cachetools is already imported, and puts a finder on ``sys.meta_path`` that watches for the
import (or reload) of ``cachetools`` alone: it lets the other finders find the module and
registers right after the module has run (the module then carries its own loader again).
Every other first import pays one call and a string comparison. The finder stays in place
(removing it could make an import running in another thread skip a finder).
"""

from __future__ import annotations

import sys

_NAME = "cachetools"


def _register(module) -> None:
    """Register TTLCache with ``module.Cache`` if that is an ABC."""
    base = getattr(module, "Cache", None)
    if isinstance(base, type) and callable(getattr(base, "register", None)):
        from fastcore._core.ttlcache import TTLCache
        base.register(TTLCache)


class _RegisteringLoader:
    """Wraps cachetools' own loader for one import: runs the module, then registers."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = self._loader
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = self._loader
        _register(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _CachetoolsFinder:
    """A ``sys.meta_path`` finder that only acts on ``import cachetools``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _NAME:
            return None
        meta_path = sys.meta_path
        try:
            later = meta_path[meta_path.index(self) + 1:]
        except ValueError:
            return None
        for finder in later:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _RegisteringLoader(spec.loader)
            return spec
        return None


def install() -> None:
    """Make fastcore.TTLCache a ``cachetools.Cache`` now, or once cachetools is imported."""
    module = sys.modules.get(_NAME)
    if module is not None:
        _register(module)
    if not any(isinstance(finder, _CachetoolsFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CachetoolsFinder())
