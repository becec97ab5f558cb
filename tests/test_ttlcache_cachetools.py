"""cachetools' own tests, run against fastcore.TTLCache.

tests/cachetools_suite/ holds files of cachetools 8.0.2's test suite (MIT License, notice in
that folder): the cache test mixin every cachetools cache passes (``__init__.py``), the
TTLCache test case (``ttl.py``, which imports fastcore's TTLCache instead of cachetools'),
and the ``@cached`` and ``@cachedmethod`` decorator tests (``cached.py``,
``cachedmethod.py``), whose cache cases run here with a fastcore.TTLCache as the cache.

Every test passes: fastcore.TTLCache has no deviation these tests see. One that appears
(a new cachetools release, a change here) is to be listed as a strict expected failure with
its reason, and in the README's TTLCache "Differences".
"""

import fastcore
from cachetools_suite import cached as upstream_cached
from cachetools_suite import cachedmethod as upstream_cachedmethod
from cachetools_suite import ttl as upstream_ttl


class TestCachetoolsTTLCacheSuite(upstream_ttl.TTLCacheTest):
    """cachetools' TTLCacheTest, with its CacheTestMixin, on fastcore.TTLCache."""


class TestCachetoolsCachedSuite(upstream_cached.CacheWrapperTest):
    """cachetools' @cached tests (cache_info, locks, conditions) on a fastcore.TTLCache."""

    def cache(self, minsize):
        return fastcore.TTLCache(maxsize=minsize, ttl=600)


class TestCachetoolsCachedMethodSuite(upstream_cachedmethod.CacheMethodTest):
    """cachetools' @cachedmethod tests on a fastcore.TTLCache."""

    def cache(self, minsize, **kwargs):
        return fastcore.TTLCache(maxsize=minsize, ttl=600, **kwargs)
