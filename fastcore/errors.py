"""fastcore's exceptions: one small hierarchy rooted at ``FastcoreError``.

Argument problems are also ``ValueError`` (or ``TypeError``) so callers can catch what they
expect. Every structure validates before it changes anything: an error leaves it exactly as
it was.
"""

__all__ = [
    "FastcoreError",
    "InvalidRate",
    "InvalidCost",
    "CostExceedsBurst",
    "CostExceedsLimit",
    "InvalidKey",
    "RateLimitExceeded",
    "BackendError",
    "HistogramValueError",
    "HistogramTypeError",
    "HistogramOverflowError",
    "InvalidFreshness",
    "UnknownIntent",
    "ValueTooLarge",
    "LoadTimeout",
]


class FastcoreError(Exception):
    """Root of every exception fastcore raises on purpose."""


class InvalidRate(FastcoreError, ValueError):
    """A rate, burst, limit or window that is zero, negative, NaN, infinite or unparsable."""


class InvalidCost(FastcoreError, ValueError):
    """A cost that is negative, NaN or infinite."""


class CostExceedsBurst(FastcoreError, ValueError):
    """A token-bucket cost above the burst: it could never be admitted, so it is an error."""


class CostExceedsLimit(FastcoreError, ValueError):
    """A sliding-window cost above the limit: it could never be admitted."""


class InvalidKey(FastcoreError, ValueError):
    """A limiter key that is too long or not valid UTF-8 text (the Redis limiters refuse
    such keys; ``fastcore.asgi``'s key functions never produce one)."""


class RateLimitExceeded(FastcoreError):
    """Raised by ``fastcore.rate_limited`` when a call is denied (``fastcore.asgi``'s
    middleware answers 429 with ``Retry-After`` instead of raising it).

    ``retry_after`` is the wait in seconds after which the same call would be admitted.
    """

    def __init__(self, message="rate limit exceeded", *, retry_after=0.0):
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(FastcoreError):
    """A distributed backend failed; ``__cause__`` and ``error`` hold the underlying error."""

    def __init__(self, message, error=None):
        super().__init__(message)
        self.error = error


class InvalidFreshness(FastcoreError, ValueError):
    """A freshness span, staleness or intent that is negative, NaN, infinite or too long."""


class UnknownIntent(FastcoreError, ValueError):
    """A lookup named an intent the cache was not configured with."""


class ValueTooLarge(FastcoreError, ValueError):
    """A cache value whose ``getsizeof`` weight exceeds the cache's ``maxsize``."""


class LoadTimeout(FastcoreError, TimeoutError):
    """A ``SemanticCache`` load outlived ``load_timeout`` and no cached entry could stand in
    for it (the caller's intent allows no stale-if-error fallback). The load was abandoned:
    the next caller for the key starts a new one.

    ``key`` is the cache key, ``timeout`` the seconds after which the load was abandoned.
    """

    def __init__(self, message, *, key=None, timeout=None):
        super().__init__(message)
        self.key = key
        self.timeout = timeout

    def __reduce__(self):
        return (_load_timeout, (type(self), str(self), self.key, self.timeout))


def _load_timeout(cls, message, key, timeout):
    return cls(message, key=key, timeout=timeout)


class HistogramValueError(FastcoreError, ValueError):
    """A histogram argument with a bad value: a negative latency, a window that is not a whole
    number of slices, a percentile outside [0, 100], an incompatible histogram to merge."""


class HistogramTypeError(FastcoreError, TypeError):
    """A histogram argument of the wrong type (a float latency, a non-int64 array)."""


class HistogramOverflowError(FastcoreError, OverflowError):
    """A 64-bit count wrapped (more than 2**64 values in one bucket): queries refuse to answer."""
