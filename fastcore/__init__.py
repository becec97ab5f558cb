"""fastcore: the compiled admission, caching and latency core for API gateways.

Distribution name ``fastcore-edge``; import name ``fastcore``. Every public class here is
the compiled class itself (see ``src_cy/``); this module only re-exports.
"""

import os as _os

if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "_core")):
    # The source tree's fastcore/ has no compiled core (it lives in src_cy/ and is built into
    # the installed package's fastcore/_core/): say so instead of a bare ModuleNotFoundError.
    raise ImportError(
        f"fastcore was imported from its source tree ({_os.path.dirname(__file__)}), which holds "
        "no compiled core: install it (pip install .) and run from another directory, or use "
        "the installed 'fastcore' command")

from fastcore._core.clock import (
    CoarseClock,
    ManualClock,
    MonotonicClock,
    monotonic_ns,
)
from fastcore._core.decision import Decision
from fastcore._core.gcra import KeyedTokenBucket, TokenBucket
from fastcore._core.histogram import HistogramSnapshot, LatencyHistogram
from fastcore._core.ttlcache import TTLCache
from fastcore._core.window import SlidingWindow, SlidingWindowCounter
from fastcore._units import Rate, parse_many, parse_rate
from fastcore.freshness import Freshness
from fastcore.ratelimit import DegradedDecision, rate_limited
from fastcore.semantic import CacheState, Intent, Loaded, LoadResult, Lookup, SemanticCache
from fastcore.errors import (
    BackendError,
    CostExceedsBurst,
    CostExceedsLimit,
    FastcoreError,
    HistogramOverflowError,
    HistogramTypeError,
    HistogramValueError,
    InvalidCost,
    InvalidFreshness,
    InvalidKey,
    InvalidRate,
    LoadTimeout,
    RateLimitExceeded,
    UnknownIntent,
    ValueTooLarge,
)

from fastcore import _cachetools

_cachetools.install()   # TTLCache counts as a cachetools.Cache once cachetools is imported

__version__ = "0.1.0"


def get_include() -> str:
    """The folder holding fastcore's ``.pxd`` and ``.h`` files, for ``include_dirs`` of
    Cython extensions that ``cimport fastcore._core...``."""
    return _os.path.join(_os.path.dirname(__file__), "_core")


__all__ = [
    "TTLCache",
    "TokenBucket",
    "KeyedTokenBucket",
    "SlidingWindowCounter",
    "SlidingWindow",
    "Decision",
    "DegradedDecision",
    "CoarseClock",
    "ManualClock",
    "MonotonicClock",
    "monotonic_ns",
    "Rate",
    "parse_rate",
    "parse_many",
    "get_include",
    "FastcoreError",
    "InvalidRate",
    "InvalidCost",
    "CostExceedsBurst",
    "CostExceedsLimit",
    "InvalidKey",
    "RateLimitExceeded",
    "rate_limited",
    "BackendError",
    "LatencyHistogram",
    "HistogramSnapshot",
    "HistogramValueError",
    "HistogramTypeError",
    "HistogramOverflowError",
    "Freshness",
    "Intent",
    "CacheState",
    "Lookup",
    "Loaded",
    "LoadResult",
    "SemanticCache",
    "InvalidFreshness",
    "UnknownIntent",
    "ValueTooLarge",
    "LoadTimeout",
]
