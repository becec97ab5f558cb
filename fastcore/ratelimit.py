"""Rate-limited callables: a decorator that admits each call through a limiter.

Operations:

- ``rate_limited(limiter, *, key=None, cost=1)``: decorates a plain or ``async def``
  function; every call takes ``cost`` from ``key``'s budget first and raises
  ``RateLimitExceeded(retry_after=...)`` without calling the function when denied.
- ``limiter_acquire(limiter, *, event_loop)``: the limiter's ``acquire`` and whether its
  answer must be awaited, refusing combinations that would block an event loop. Shared with
  ``fastcore.asgi``, which admits requests the same way.
- ``cost_is_callable(cost, limiter)``: validates a cost argument (a number or a function),
  shared too: a constant cost must be finite, >= 0 and within the limiter's quota.
- ``refused_argument(error, key, cost, where)``: the ``TypeError`` a limiter raised for a
  key or cost, re-raised naming which argument it was (by type only: keys may be secrets).
- ``DegradedDecision``: the ``Decision`` subclass a distributed limiter answers when its
  backend did not decide (``on_error``), so callers can tell an outage from a quota denial.

Decisions:

- Any limiter with ``acquire(key, cost) -> Decision`` works: the local keyed limiters, and
  ``fastcore.redis`` / ``fastcore.redis.asyncio`` limiters (the asyncio ones' ``acquire`` is
  a coroutine function, so its result is awaited). An unkeyed ``fastcore.TokenBucket``
  (``acquire(cost)``) works too, as one budget shared by every call; the decorator then
  takes no ``key``.
- ``acquire`` rather than ``try_acquire``: a denial must carry ``retry_after``.
- The sync Redis limiter does network I/O on every call, so it is refused (``TypeError``) for
  ``async def`` functions and in the middleware: it would stall every task of the event loop
  for a round trip. Local limiters are fine everywhere: they decide in well under a
  microsecond and never wait. An asyncio Redis limiter cannot serve a plain function (nothing
  could await it), which is refused too.
- The default key is the function's ``module.qualname``, so one keyed limiter can hold a
  separate budget for each decorated function.
- ``DegradedDecision`` is a Python subclass of the compiled ``Decision``: the local limiters
  never build one, so telling the two apart costs callers one ``type(d) is Decision`` test
  and the local limiters nothing.
"""

import functools
import inspect
import math
import numbers
import sys

from fastcore._core.decision import Decision
from fastcore._core.gcra import TokenBucket
from fastcore.errors import CostExceedsBurst, CostExceedsLimit, InvalidCost, RateLimitExceeded

__all__ = ["rate_limited", "limiter_acquire", "cost_is_callable", "refused_argument",
           "DegradedDecision"]

ON_ERROR_MODES = ("fail_closed", "fail_open", "fallback")


class DegradedDecision(Decision):
    """A ``Decision`` that a distributed limiter's backend did not make (Redis failed, timed
    out, or its circuit breaker is open), answered by the limiter's ``on_error`` mode.

    ``on_error`` says which: ``"fail_closed"`` (denied: ``retry_after`` is the limiter's
    ``error_retry_after``; not a quota denial), ``"fail_open"`` (admitted without counting)
    or ``"fallback"`` (the local ``fallback`` limiter's own decision, field for field).
    Fields, ``bool()`` and equality are ``Decision``'s (equality ignores ``on_error``): test
    ``isinstance(d, DegradedDecision)`` to tell an outage from a real decision.
    ``fastcore.asgi.RateLimitMiddleware`` answers fail_closed with 503, not 429.
    Raises ``ValueError`` for another ``on_error``.

    Example::

        d = await limiter.acquire("tenant-7")
        if isinstance(d, DegradedDecision) and d.on_error == "fail_closed":
            return 503, {"Retry-After": str(math.ceil(d.retry_after))}
    """

    __slots__ = ("on_error",)

    def __init__(self, allowed, remaining, retry_after_ns, reset_after_ns, on_error):
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        super().__init__(allowed, remaining, retry_after_ns, reset_after_ns)
        self.on_error = on_error

    def __repr__(self):
        return (f"DegradedDecision(allowed={bool(self.allowed)}, remaining={self.remaining}, "
                f"retry_after={self.retry_after_ns / 1e9!r}, "
                f"reset_after={self.reset_after_ns / 1e9!r}, on_error={self.on_error!r})")

    def __reduce__(self):
        return (DegradedDecision, (bool(self.allowed), self.remaining, self.retry_after_ns,
                                   self.reset_after_ns, self.on_error))


def limiter_acquire(limiter, *, event_loop):
    """``(acquire, awaits)``: the limiter's ``acquire`` and whether its result is awaitable.

    ``event_loop``: True when the caller runs on an event loop (``async def`` code), where a
    limiter that blocks on network I/O is refused. Raises ``TypeError`` for an object without
    ``acquire``, a sync Redis limiter on an event loop, and an asyncio limiter outside one.
    """
    acquire = getattr(limiter, "acquire", None)
    if not callable(acquire):
        raise TypeError(f"limiter must have an acquire(key, cost) method, got "
                        f"{type(limiter).__name__}")
    awaits = inspect.iscoroutinefunction(acquire)
    # Only a process that imported fastcore.redis can hold one of its limiters: look it up
    # rather than import it, so redis stays an optional dependency.
    redis_common = sys.modules.get("fastcore.redis._common")
    if (event_loop and not awaits and redis_common is not None
            and isinstance(limiter, redis_common.LimiterBase)):
        raise TypeError(
            f"{type(limiter).__module__}.{type(limiter).__name__} waits for Redis on every "
            "call and would block the event loop: use the same class from "
            "fastcore.redis.asyncio with a redis.asyncio client")
    if awaits and not event_loop:
        raise TypeError(
            f"{type(limiter).__module__}.{type(limiter).__name__}.acquire is a coroutine "
            "function: it can only limit async def functions")
    if isinstance(limiter, TokenBucket):
        # One bucket for every caller: the key is not the bucket's business.
        bucket_acquire = acquire

        def acquire(_key, cost):
            return bucket_acquire(cost)
    return acquire, awaits


def cost_is_callable(cost, limiter=None):
    """True for a cost function, False for a number; ``TypeError`` for anything else (a
    bool is refused: ``cost=True`` is a mistake, not one token). A constant cost is checked
    once here, so it cannot fail on every request: ``InvalidCost`` when it is negative, NaN
    or infinite, ``CostExceedsBurst`` / ``CostExceedsLimit`` when it exceeds ``limiter``'s
    burst or limit (it could never be admitted)."""
    if callable(cost):
        return True
    if not isinstance(cost, numbers.Real) or isinstance(cost, bool):
        raise TypeError(f"cost must be a number or a callable, got {cost!r}")
    value = float(cost)
    if not value >= 0.0 or math.isinf(value):
        raise InvalidCost(f"cost must be finite and >= 0, got {cost!r}")
    burst, limit = getattr(limiter, "burst", None), getattr(limiter, "limit", None)
    if isinstance(burst, numbers.Real) and value > burst:
        raise CostExceedsBurst(f"cost {cost!r} exceeds the limiter's burst {burst!r}: no "
                               f"request could ever be admitted")
    if isinstance(limit, numbers.Real) and value > limit:
        raise CostExceedsLimit(f"cost {cost!r} exceeds the limiter's limit {limit!r}: no "
                               f"request could ever be admitted")
    return False


def refused_argument(error, key, cost, where):
    """A ``TypeError`` naming the argument a limiter refused with ``error`` (a ``TypeError``):
    the cost when it is not a number, else the key. Only the key's type is named, never its
    value: keys are often API keys, and tracebacks reach logs."""
    if not isinstance(cost, numbers.Real):
        return TypeError(f"{where}: cost must be a number, got {type(cost).__name__} ({error})")
    return TypeError(f"{where}: the limiter refused the key ({type(key).__name__}): {error}")


def _exceeded(name, decision):
    return RateLimitExceeded(
        f"rate limit exceeded for {name}: retry after {decision.retry_after:.3f} s",
        retry_after=decision.retry_after)


def rate_limited(limiter, *, key=None, cost=1):
    """Decorate a function so that each call is admitted by ``limiter`` first.

    ``key``: a callable taking the call's arguments (``key(*args, **kwargs)``) and returning
    the limiter key, or any other value used as the key of every call; default the
    function's ``module.qualname``. ``cost``: a number, or a callable taking the call's
    arguments. A denied call raises ``RateLimitExceeded`` with ``retry_after`` in seconds and
    never runs the function. Works on plain and ``async def`` functions (see the module
    docstring for which limiters each accepts). A constant ``cost`` that is not a finite
    number >= 0 within the limiter's burst/limit raises here, at decoration. Limiter errors
    at call time propagate as the limiter raised them (``InvalidCost``,
    ``CostExceedsBurst``, ``InvalidKey``), except a ``TypeError`` (an unhashable key, a cost
    that is not a number), re-raised naming ``key`` or ``cost`` and the function.
    ``functools.wraps`` keeps the name, docstring and signature.

    Example::

        limiter = fastcore.KeyedTokenBucket("10/second", max_keys=10_000)

        @fastcore.rate_limited(limiter, key=lambda tenant, prompt: tenant, cost=2)
        async def complete(tenant, prompt): ...

        try:
            await complete("tenant-7", "hi")
        except fastcore.RateLimitExceeded as denied:
            await asyncio.sleep(denied.retry_after)
    """
    cost_callable = cost_is_callable(cost, limiter)
    if isinstance(limiter, TokenBucket) and key is not None:
        raise TypeError("a TokenBucket holds one bucket and takes no key: use "
                        "KeyedTokenBucket for a budget per key")

    def decorate(func):
        is_async = inspect.iscoroutinefunction(func)
        acquire, awaits = limiter_acquire(limiter, event_loop=is_async)
        name = getattr(func, "__qualname__", repr(func))
        key_of = key if key is not None else f"{getattr(func, '__module__', None)}.{name}"
        key_callable = callable(key_of)

        where = f"rate_limited({name})"

        def admit_args(args, kwargs):
            return (key_of(*args, **kwargs) if key_callable else key_of,
                    cost(*args, **kwargs) if cost_callable else cost)

        if is_async:
            @functools.wraps(func)
            async def async_wrapper(*args, **kwargs):
                call_key, call_cost = admit_args(args, kwargs)
                try:
                    decision = acquire(call_key, call_cost)
                    if awaits:
                        decision = await decision
                except TypeError as error:
                    raise refused_argument(error, call_key, call_cost, where) from error
                if not decision.allowed:
                    raise _exceeded(name, decision)
                return await func(*args, **kwargs)
            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            call_key, call_cost = admit_args(args, kwargs)
            try:
                decision = acquire(call_key, call_cost)
            except TypeError as error:
                raise refused_argument(error, call_key, call_cost, where) from error
            if not decision.allowed:
                raise _exceeded(name, decision)
            return func(*args, **kwargs)
        return wrapper

    return decorate
