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

Timeouts (``load_timeout``): waits are wall-clock (``Event.wait`` / ``asyncio.wait``); the
freshness rules stay on the cache's clock. A caller whose wait runs out abandons the flight:
under ``_flight_lock`` it marks the flight done, unregisters it and wakes every waiter with
the timeout outcome. A load completing stores its value and publishes it under the same
lock only if the flight is not done yet, so exactly one of the two wins and an abandoned
load never overwrites what a newer load stored. (The store runs under ``_flight_lock``:
``getsizeof`` and value finalizers must not call back into the loader methods.)
"""

import asyncio
import contextvars
import functools
import inspect
import reprlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Optional

from fastcore._core.semantic import (
    CacheState,
    Freshness,
    Intent,
    Loaded,
    Lookup,
    SemanticCacheCore,
    _load_timeout_arg,
)
from fastcore.errors import LoadTimeout

__all__ = ["SemanticCache", "CacheState", "Freshness", "Intent", "Loaded", "Lookup",
           "LoadResult"]

_MISS = CacheState.MISS
_FRESH = CacheState.FRESH
_ERROR = CacheState.ERROR
REFRESH_WORKERS = 4          # the default refresh_workers (SemanticCacheCore.__init__)

# Wall-clock seconds for how long a flight has run (tests replace it); never the cache clock.
_monotonic = time.monotonic


class LoadResult(NamedTuple):
    """What ``get_or_load``/``aget_or_load`` return with ``with_state=True``.

    ``value``: what the call returns without ``with_state``. ``state``: ``FRESH`` or
    ``STALE`` (served from the cache; STALE starts a background refresh), ``MISS`` (loaded
    by this call or by the load it waited for), or ``ERROR`` (the load failed or timed out
    and the cached entry was served in its place, stale-if-error). ``age``: seconds since
    the served entry was stored plus its upstream ``Age``; for a MISS, the loaded value's
    upstream ``Age`` (``Loaded(...).freshness.age``, else 0.0). ``negative``: a cached "not
    found". ``error``: on ERROR, the loader's exception or a ``LoadTimeout``; else None.

    Example::

        r = cache.get_or_load("user:7", load_user, with_state=True)
        response.headers["X-Cache"] = r.state          # FRESH, STALE, MISS or ERROR
    """

    value: Any
    state: CacheState
    age: Optional[float]
    negative: bool = False
    error: Optional[BaseException] = None


def _hit_result(found):
    return LoadResult(found.value, found.state, found.age, found.negative, None)


class _Flight:
    """One sync load in progress. Waiters block on ``event``; under ``_flight_lock`` the
    flight becomes ``done`` once, with ``result`` (a LoadResult) or ``error``, or abandoned
    (``abandoned_after``: the timeout, seconds). ``started``: ``_monotonic()`` at creation."""

    __slots__ = ("event", "started", "done", "result", "error", "abandoned_after")

    def __init__(self):
        self.event = threading.Event()
        self.started = _monotonic()
        self.done = False
        self.result = None
        self.error = None
        self.abandoned_after = None


class _AsyncFlight:
    """One asyncio load in progress: its task (-> (error, LoadResult)), when it started, and
    ``abandoned_after`` once a waiter gave up on it (the task is then cancelled)."""

    __slots__ = ("task", "started", "abandoned_after")

    def __init__(self):
        self.task = None
        self.started = _monotonic()
        self.abandoned_after = None


def _default_key(fn, args, kwargs):
    return (fn, args, tuple(sorted(kwargs.items()))) if kwargs else (fn, args)


def _bad_call(loader, name, with_state):
    """The error for the loader methods' bad ``loader``/``with_state`` (checked inline)."""
    if not callable(loader):
        return TypeError(f"{name} must be callable, got {loader!r}")
    return TypeError(f"with_state must be True or False, got {with_state!r}")


def _timeout_error(key, after):
    return LoadTimeout(f"load of {reprlib.repr(key)} abandoned after load_timeout={after:g} s",
                       key=key, timeout=after)


class SemanticCache(SemanticCacheCore):
    """A cache whose answers depend on freshness (``Freshness``) and on what the request
    means (``Intent``), with loaders that coalesce, refresh in the background and fall
    back to stale values on errors and timeouts.

    ``maxsize``: entries, or total ``getsizeof(value)`` weight. ``default``: the
    ``Freshness`` of ``set`` without one and of plain loader results (60 s).
    ``intents``: ``{name: Intent}`` or a list of ``Intent``; ``default_intent``: an
    ``Intent`` or a configured name (``Intent("default")``). ``negative_ttl``: seconds a
    ``set_negative`` entry is fresh (10). ``clock``: a fastcore clock (``ManualClock`` in
    tests). ``xfetch_beta`` (1.0, 0 disables) and ``random`` (a ``[0, 1)`` callable, for
    seeding) drive early refresh. ``executor``: where sync background refreshes run
    (default: a pool of ``refresh_workers`` threads made on first use).
    ``refresh_workers``: how many sync background refreshes may run at once (4); more are
    skipped. ``load_timeout``: seconds a caller waits for a load (None: for ever), the
    default of the loader methods' ``load_timeout``.

    Raises ``TypeError``/``ValueError`` (``InvalidFreshness``, ``UnknownIntent``) naming
    the bad argument.

    Example::

        cache = SemanticCache(10_000, default=Freshness(60, stale_while_revalidate=30),
                              intents=[Intent("context", max_staleness=600)],
                              load_timeout=2.0)
        user = cache.get_or_load(("user", 7), load_user, intent="context")
    """

    __slots__ = ()

    # -- sync ----------------------------------------------------------------------------

    def get_or_load(self, key, loader, *, intent=None, load_timeout=None, with_state=False):
        """The value for ``key``, calling ``loader(key)`` at most once across concurrent
        callers when the entry is missing or unusable for ``intent``.

        A usable stale entry is returned at once while one background refresh runs; a
        loader error falls back to the entry inside ``stale_if_error`` for this intent,
        else propagates. The loader may return ``Loaded(value, freshness)``.
        ``load_timeout``: seconds to wait for the load (None: the cache's ``load_timeout``;
        ``math.inf``: for ever); when it runs out the load is abandoned and treated like a
        loader error that raises ``LoadTimeout``. With a timeout the loader runs on its own
        daemon thread, which Python cannot stop: a hung loader keeps it until it returns,
        and its result is then discarded. ``with_state=True`` returns a ``LoadResult``
        ``(value, state, age, negative, error)`` instead of the value.

        Raises ``TypeError``/``ValueError`` for bad arguments before touching the cache.

        Example::

            cache.get_or_load("config", lambda key: fetch_config(), load_timeout=1.5)
        """
        intent = self.intent(intent)
        if not callable(loader) or (with_state is not False and with_state is not True):
            raise _bad_call(loader, "loader", with_state)
        timeout = self.load_timeout if load_timeout is None else _load_timeout_arg(load_timeout)
        found = self._probe(key, intent)
        if found.state is _MISS:
            result = self._load_through(key, loader, intent, timeout)
            return result if with_state else result.value
        if found.state is not _FRESH or found._refresh:
            self._refresh_in_background(key, loader)
        return _hit_result(found) if with_state else found.value

    def _load_through(self, key, loader, intent, timeout):
        """A MISS: lead or join the key's flight; -> LoadResult, or raise."""
        with self._flight_lock:
            flight = self._flights.get(key)
            if (flight is not None and timeout is not None
                    and _monotonic() - flight.started >= timeout):
                # It has already run longer than this caller would wait: hung, for us.
                self._abandon_locked(key, flight, timeout)
                flight = None
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:
            self._count("coalesced_waits")
        else:
            again = self._probe(key, intent, False)
            if again.state is not _MISS:
                result = _hit_result(again)
                self._publish(key, flight, result, None)
                return result
            if timeout is None:                  # no timeout: run the loader right here
                result, error = self._run(key, loader, flight)
                return result if error is None else self._on_error(key, intent, error)
            self._start_load_thread(key, loader, flight)
        if not flight.event.wait(timeout):
            self._abandon(key, flight, timeout)
        # Done now (published or abandoned, under the lock): the fields are final.
        if flight.abandoned_after is not None:
            return self._on_error(key, intent, _timeout_error(key, flight.abandoned_after))
        if flight.error is not None:
            return self._on_error(key, intent, flight.error)
        return flight.result

    def _on_error(self, key, intent, error):
        """A failed or abandoned load: the entry ``intent`` may fall back to, else raise."""
        fallback = self._fallback(key, intent)
        if fallback is None:
            raise error
        return LoadResult(fallback.value, _ERROR, fallback.age, fallback.negative, error)

    def _start_load_thread(self, key, loader, flight):
        thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run, key, loader, flight),
            name="fastcore-load", daemon=True)
        try:
            thread.start()
        except BaseException as exc:
            self._publish(key, flight, None, exc)
            raise

    def _run(self, key, loader, flight):
        """Call the loader for ``flight``; store and publish its outcome unless the flight
        was abandoned meanwhile. -> ``(LoadResult, None)`` or ``(None, error)`` as this run
        saw it (a leader running the loader inline returns its own result either way)."""
        self._count("loads")
        start_ns = self.clock.now_ns
        try:
            raw = loader(key)
        except BaseException as exc:
            self._count("load_errors")
            self._publish(key, flight, None, exc)
            if not isinstance(exc, Exception):
                raise
            return None, exc
        delta_ns = self.clock.now_ns - start_ns
        error = result = None
        with self._flight_lock:
            abandoned = flight.done
            try:
                result = self._loaded(raw) if abandoned else self._store(key, raw, delta_ns)
            except Exception as exc:             # getsizeof failed, ValueTooLarge
                error = exc
            if not abandoned:
                self._settle_locked(key, flight, result, error)
        if error is not None:
            self._count("load_errors")
        if not abandoned:
            flight.event.set()
        return result, error

    def _store(self, key, raw, delta_ns):
        """Store a loader's result (a value or a ``Loaded``) -> its LoadResult (MISS)."""
        value = self._accept(key, raw, delta_ns)
        freshness = raw.freshness if isinstance(raw, Loaded) else self.default
        if freshness is None:
            return LoadResult(value, _MISS, 0.0, False, None)
        return LoadResult(value, _MISS, freshness.age, freshness.negative, None)

    def _loaded(self, raw):
        """The LoadResult of a loader's result that is not stored (an abandoned load)."""
        if not isinstance(raw, Loaded):
            return LoadResult(raw, _MISS, self.default.age, self.default.negative, None)
        freshness = raw.freshness
        if freshness is None:
            return LoadResult(raw.value, _MISS, 0.0, False, None)
        return LoadResult(raw.value, _MISS, freshness.age, freshness.negative, None)

    def _settle_locked(self, key, flight, result, error):
        flight.done = True
        flight.result = result
        flight.error = error
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _publish(self, key, flight, result, error):
        """Finish ``flight`` with ``result`` or ``error`` unless it is done already."""
        with self._flight_lock:
            if flight.done:
                return
            self._settle_locked(key, flight, result, error)
        flight.event.set()

    def _abandon_locked(self, key, flight, after):
        """Give up on a flight still running: its waiters wake with a timeout, the next
        caller starts a new load, and its loader's result will be discarded."""
        if flight.done:
            return
        flight.done = True
        flight.abandoned_after = after
        if self._flights.get(key) is flight:
            del self._flights[key]
        self._count("load_timeouts")
        flight.event.set()

    def _abandon(self, key, flight, after):
        with self._flight_lock:
            self._abandon_locked(key, flight, after)

    def _refresh_in_background(self, key, loader):
        """Start one background refresh of ``key`` unless a load of it is running, its
        previous refresh still holds a worker (even abandoned), or ``refresh_workers``
        refreshes are running: then the stale value is all the caller gets."""
        with self._flight_lock:
            if key in self._flights:
                return
            if key in self._refreshing or len(self._refreshing) >= self.refresh_workers:
                self._count("refreshes_skipped")
                return
            flight = self._flights[key] = self._refreshing[key] = _Flight()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.refresh_workers, thread_name_prefix="fastcore-refresh")
            executor = self._executor
        try:
            executor.submit(self._refresh_job, key, loader, flight)
        except BaseException as exc:
            self._end_refresh(key, flight)
            self._publish(key, flight, None, exc)
            raise

    def _refresh_job(self, key, loader, flight):
        try:
            self._run(key, loader, flight)
        finally:
            self._end_refresh(key, flight)

    def _end_refresh(self, key, flight):
        with self._flight_lock:
            if self._refreshing.get(key) is flight:
                del self._refreshing[key]

    # -- asyncio -------------------------------------------------------------------------

    async def aget_or_load(self, key, aloader, *, intent=None, load_timeout=None,
                           with_state=False):
        """``get_or_load`` for asyncio: ``aloader(key)`` is awaited (a plain result is
        accepted too); concurrent tasks share one load, which runs as its own task so a
        cancelled caller does not cancel the others; background refreshes are tasks.
        ``load_timeout`` and ``with_state`` as in ``get_or_load``; an abandoned load's task
        is cancelled.

        Example::

            user = await cache.aget_or_load(("user", 7), fetch_user, intent="verify",
                                            load_timeout=0.5)
        """
        intent = self.intent(intent)
        if not callable(aloader) or (with_state is not False and with_state is not True):
            raise _bad_call(aloader, "aloader", with_state)
        timeout = self.load_timeout if load_timeout is None else _load_timeout_arg(load_timeout)
        found = self._probe(key, intent)
        if found.state is _MISS:
            result = await self._await_load(key, aloader, intent, timeout)
            return result if with_state else result.value
        if (found.state is not _FRESH or found._refresh) and key not in self._aflights:
            self._start_async(key, aloader)
        return _hit_result(found) if with_state else found.value

    async def _await_load(self, key, aloader, intent, timeout):
        flight = self._aflights.get(key)
        if (flight is not None and timeout is not None
                and _monotonic() - flight.started >= timeout):
            self._abandon_async(key, flight, timeout)
            flight = None
        if flight is None:
            flight = self._start_async(key, aloader)
        else:
            self._count("coalesced_waits")
        task = flight.task
        if not task.done():
            # asyncio.wait neither cancels the load when this caller is cancelled nor
            # raises when another waiter's timeout cancelled it.
            await asyncio.wait((task,), timeout=timeout)
            if not task.done():
                self._abandon_async(key, flight, timeout)
        if flight.abandoned_after is not None:
            return self._on_error(key, intent, _timeout_error(key, flight.abandoned_after))
        error, result = task.result()
        if error is not None:
            return self._on_error(key, intent, error)
        return result

    def _abandon_async(self, key, flight, after):
        if flight.task.done() or flight.abandoned_after is not None:
            return
        flight.abandoned_after = after
        if self._aflights.get(key) is flight:
            del self._aflights[key]
        self._count("load_timeouts")
        flight.task.cancel()

    def _start_async(self, key, aloader):
        flight = _AsyncFlight()
        flight.task = asyncio.get_running_loop().create_task(self._aload(key, aloader, flight))
        self._aflights[key] = flight
        return flight

    async def _aload(self, key, aloader, flight):
        """-> (error, LoadResult); errors are returned, so an unawaited refresh logs nothing.
        A result that arrives after the flight was abandoned is not stored."""
        self._count("loads")
        start_ns = self.clock.now_ns
        try:
            raw = aloader(key)
            if inspect.isawaitable(raw):
                raw = await raw
            if flight.abandoned_after is not None:
                return None, self._loaded(raw)
            return None, self._store(key, raw, self.clock.now_ns - start_ns)
        except Exception as exc:
            self._count("load_errors")
            return exc, None
        finally:
            if self._aflights.get(key) is flight:
                del self._aflights[key]

    # -- decorator -----------------------------------------------------------------------

    def memoize(self, intent=None, key=None, load_timeout=None):
        """Decorator caching a sync or async function through ``get_or_load`` /
        ``aget_or_load``; ``key(*args, **kwargs)`` builds the cache key (default: the
        function and its arguments); ``load_timeout`` as in ``get_or_load``. The function
        may return ``Loaded``. Bad arguments raise at decoration time.

        Example::

            @cache.memoize(intent="context", load_timeout=2.0)
            async def profile(user_id): ...
        """
        if callable(intent) and not isinstance(intent, (str, Intent)):
            return self.memoize()(intent)
        self.intent(intent)      # an unknown intent fails at decoration time
        if key is not None and not callable(key):
            raise TypeError(f"key must be callable or None, got {key!r}")
        if load_timeout is not None:
            _load_timeout_arg(load_timeout)

        def decorate(fn):
            def make_key(args, kwargs):
                return key(*args, **kwargs) if key is not None else _default_key(fn, args,
                                                                                  kwargs)

            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def async_wrapper(*args, **kwargs):
                    return await self.aget_or_load(
                        make_key(args, kwargs), lambda _: fn(*args, **kwargs), intent=intent,
                        load_timeout=load_timeout)
                return async_wrapper

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                return self.get_or_load(
                    make_key(args, kwargs), lambda _: fn(*args, **kwargs), intent=intent,
                    load_timeout=load_timeout)
            return wrapper

        return decorate
