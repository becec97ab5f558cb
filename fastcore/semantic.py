"""``SemanticCache``: the compiled core plus loaders, single flight and asyncio.

``lookup``, ``set``, ``delete`` and eviction are the compiled methods of
``SemanticCacheCore`` (``src_cy/semantic.pyx``), inherited, never forwarded. This layer adds
what needs Python objects anyway: calling loaders, waiting for another caller's load,
background refreshes on a thread pool or as asyncio tasks, and the ``memoize`` decorator.

Single flight: one ``_Flight`` per key being loaded, registered under ``_flight_lock``.
A caller that finds a flight waits for it; the one that registered it (the leader) first
re-checks the cache, because a load that finished between its lookup and its registration
has already stored its value. A finished load stores its value before it unregisters, so
no caller can miss both. Each caller judges an error by its own intent: it falls back to
the entry when the intent may (stale-if-error), else the error propagates.
"""

import asyncio
import functools
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor

from fastcore._core.semantic import (
    CacheState,
    Freshness,
    Intent,
    Loaded,
    Lookup,
    SemanticCacheCore,
)

__all__ = ["SemanticCache", "CacheState", "Freshness", "Intent", "Loaded", "Lookup"]

_MISS = CacheState.MISS
_FRESH = CacheState.FRESH
REFRESH_WORKERS = 4


class _Flight:
    """One load in progress: waiters block on ``event``; the outcome is value or error."""

    __slots__ = ("event", "value", "error")

    def __init__(self):
        self.event = threading.Event()
        self.value = None
        self.error = None


def _default_key(fn, args, kwargs):
    return (fn, args, tuple(sorted(kwargs.items()))) if kwargs else (fn, args)


class SemanticCache(SemanticCacheCore):
    """A cache whose answers depend on freshness (``Freshness``) and on what the request
    means (``Intent``), with loaders that coalesce, refresh in the background and fall
    back to stale values on errors.

    ``maxsize``: entries, or total ``getsizeof(value)`` weight. ``default``: the
    ``Freshness`` of ``set`` without one and of plain loader results (60 s).
    ``intents``: ``{name: Intent}`` or a list of ``Intent``; ``default_intent``: an
    ``Intent`` or a configured name (``Intent("default")``). ``negative_ttl``: seconds a
    ``set_negative`` entry is fresh (10). ``clock``: a fastcore clock (``ManualClock`` in
    tests). ``xfetch_beta`` (1.0, 0 disables) and ``random`` (a ``[0, 1)`` callable, for
    seeding) drive early refresh. ``executor``: where sync background refreshes run
    (default: a 4-thread pool made on first use).

    Raises ``TypeError``/``ValueError`` (``InvalidFreshness``, ``UnknownIntent``) for bad
    arguments.

    Example::

        cache = SemanticCache(10_000, default=Freshness(60, stale_while_revalidate=30),
                              intents=[Intent("context", max_staleness=600)])
        user = cache.get_or_load(("user", 7), load_user, intent="context")
    """

    __slots__ = ()

    # -- sync ----------------------------------------------------------------------------

    def get_or_load(self, key, loader, *, intent=None):
        """The value for ``key``, calling ``loader(key)`` at most once across concurrent
        callers when the entry is missing or unusable for ``intent``.

        A usable stale entry is returned at once while one background refresh runs; a
        loader error falls back to the entry inside ``stale_if_error`` for this intent,
        else propagates. The loader may return ``Loaded(value, freshness)``.

        Example::

            cache.get_or_load("config", lambda key: fetch_config())
        """
        intent = self.intent(intent)
        if not callable(loader):
            raise TypeError(f"loader must be callable, got {loader!r}")
        found = self._probe(key, intent)
        if found.state is _MISS:
            return self._load_through(key, loader, intent)
        if found.state is not _FRESH or found._refresh:
            self._refresh_in_background(key, loader)
        return found.value

    def _load_through(self, key, loader, intent):
        with self._flight_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:
            self._count("coalesced_waits")
            flight.event.wait()
        else:
            again = self._probe(key, intent, False)
            if again.state is not _MISS:
                flight.value = again.value
                self._finish(key, flight)
                return again.value
            self._run(key, loader, flight)
        if flight.error is None:
            return flight.value
        fallback = self._fallback(key, intent)
        if fallback is not None:
            return fallback.value
        raise flight.error

    def _run(self, key, loader, flight):
        """Call the loader for ``flight`` and store its result (leader or background)."""
        self._count("loads")
        start_ns = self.clock.now_ns
        try:
            result = loader(key)
            flight.value = self._accept(key, result, self.clock.now_ns - start_ns)
        except BaseException as exc:
            self._count("load_errors")
            flight.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._finish(key, flight)

    def _finish(self, key, flight):
        with self._flight_lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.event.set()

    def _refresh_in_background(self, key, loader):
        with self._flight_lock:
            if key in self._flights:
                return
            flight = self._flights[key] = _Flight()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    REFRESH_WORKERS, thread_name_prefix="fastcore-refresh")
            executor = self._executor
        try:
            executor.submit(self._run, key, loader, flight)
        except BaseException:
            self._finish(key, flight)
            raise

    # -- asyncio -------------------------------------------------------------------------

    async def aget_or_load(self, key, aloader, *, intent=None):
        """``get_or_load`` for asyncio: ``aloader(key)`` is awaited (a plain result is
        accepted too); concurrent tasks share one load, which runs as its own task so a
        cancelled caller does not cancel the others; background refreshes are tasks.

        Example::

            user = await cache.aget_or_load(("user", 7), fetch_user, intent="verify")
        """
        intent = self.intent(intent)
        if not callable(aloader):
            raise TypeError(f"aloader must be callable, got {aloader!r}")
        found = self._probe(key, intent)
        if found.state is _MISS:
            task = self._aflights.get(key)
            if task is None:
                task = self._start_async(key, aloader)
            else:
                self._count("coalesced_waits")
            error, value = await asyncio.shield(task)
            if error is None:
                return value
            fallback = self._fallback(key, intent)
            if fallback is not None:
                return fallback.value
            raise error
        if (found.state is not _FRESH or found._refresh) and key not in self._aflights:
            self._start_async(key, aloader)
        return found.value

    def _start_async(self, key, aloader):
        task = asyncio.get_running_loop().create_task(self._aload(key, aloader))
        self._aflights[key] = task
        return task

    async def _aload(self, key, aloader):
        """-> (error, value); errors are returned, so an unawaited refresh logs nothing."""
        self._count("loads")
        start_ns = self.clock.now_ns
        try:
            result = aloader(key)
            if inspect.isawaitable(result):
                result = await result
            return None, self._accept(key, result, self.clock.now_ns - start_ns)
        except Exception as exc:
            self._count("load_errors")
            return exc, None
        finally:
            if self._aflights.get(key) is asyncio.current_task():
                del self._aflights[key]

    # -- decorator -----------------------------------------------------------------------

    def memoize(self, intent=None, key=None):
        """Decorator caching a sync or async function through ``get_or_load`` /
        ``aget_or_load``; ``key(*args, **kwargs)`` builds the cache key (default: the
        function and its arguments). The function may return ``Loaded``.

        Example::

            @cache.memoize(intent="context")
            async def profile(user_id): ...
        """
        if callable(intent) and not isinstance(intent, (str, Intent)):
            return self.memoize()(intent)
        self.intent(intent)      # an unknown intent fails at decoration time
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable or None, got {key!r}")

        def decorate(fn):
            def make_key(args, kwargs):
                return key(*args, **kwargs) if key is not None else _default_key(fn, args,
                                                                                  kwargs)

            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def async_wrapper(*args, **kwargs):
                    return await self.aget_or_load(
                        make_key(args, kwargs), lambda _: fn(*args, **kwargs), intent=intent)
                return async_wrapper

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                return self.get_or_load(
                    make_key(args, kwargs), lambda _: fn(*args, **kwargs), intent=intent)
            return wrapper

        return decorate
