"""SemanticCache core: Freshness, Intent, Lookup, Loaded and the compiled entry table.

The header of semantic.pxd states the rules, the layout and a worked example. The loaders,
single flight and asyncio live in fastcore/semantic.py on top of SemanticCacheCore.
"""
import enum
import math
import numbers
import operator
import random as _random_module
import threading
from collections.abc import Mapping

from libc.math cimport log
from libc.stdint cimport int64_t

cimport cython
from cpython.pythread cimport PyThread_get_thread_ident
from fastcore._core.clock cimport clock_now_ns, clock_resolve

from fastcore._units import as_real, ns_to_seconds, seconds_to_ns, shown
from fastcore.errors import InvalidFreshness, UnknownIntent, ValueTooLarge


class CacheState(str, enum.Enum):
    """What a lookup found: ``FRESH``, ``STALE`` (usable for the lookup's intent) or ``MISS``.

    ``ERROR`` is never a lookup's answer: ``get_or_load(..., with_state=True)`` reports it
    when a load failed or timed out and the cached entry was served in its place
    (stale-if-error).
    """

    FRESH = "FRESH"
    STALE = "STALE"
    MISS = "MISS"
    ERROR = "ERROR"

    def __str__(self):
        return self.value


cdef object _FRESH = CacheState.FRESH
cdef object _STALE = CacheState.STALE
cdef object _MISS = CacheState.MISS


cdef int64_t _span_ns(object seconds, str name) except -1:
    """Float seconds -> int ns for a freshness span, at most FRESHNESS_MAX_NS."""
    try:
        ns = seconds_to_ns(seconds, name)
    except ValueError as exc:
        raise InvalidFreshness(str(exc)) from None
    if ns > FRESHNESS_MAX_NS:
        raise InvalidFreshness(
            f"{name} must be at most {FRESHNESS_MAX_NS / 1e9:.0f} s, got {shown(seconds)}")
    return ns


def _load_timeout_arg(object seconds, str name="load_timeout"):
    """A load timeout in seconds -> float seconds, or None for "wait for ever" (``inf``, or
    anything beyond ``threading.TIMEOUT_MAX``). Raises ``TypeError`` for a non-number,
    ``ValueError`` for zero, a negative number or NaN; both name ``name``."""
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, got {shown(seconds)}")
    cdef double value
    try:
        value = float(seconds)
    except OverflowError:        # an int past the largest float: for ever
        return None
    if not value > 0.0:          # also NaN
        raise ValueError(f"{name} must be > 0 seconds, got {shown(seconds)}")
    return None if value >= threading.TIMEOUT_MAX else value


cdef class Freshness:
    """Freshness(max_age, stale_while_revalidate=0.0, stale_if_error=0.0, *, must_revalidate=False, age=0.0, negative=False)
--

How long a cached value stays fresh, and how long it may be served stale.

    ``max_age``: seconds the value is FRESH after it is stored. ``stale_while_revalidate``:
    seconds after that during which it may be served while one refresh runs (RFC 5861).
    ``stale_if_error``: seconds after ``max_age`` during which a failing load may return it.
    ``must_revalidate``: never served stale, not even on error. ``age``: seconds the value
    had already aged upstream (the ``Age`` header); only added to ``Lookup.age``.
    ``negative``: a "not found" result (404/410), cached with this freshness.
    All spans are finite seconds in [0, 2**59 ns] (about 18 years).

    Raises ``TypeError`` for a non-number, ``InvalidFreshness`` (a ``ValueError``) for a
    negative, NaN, infinite or too long span.

    Example::

        Freshness(60, stale_while_revalidate=30)
        Freshness.from_cache_control("max-age=60, stale-if-error=300", age=10)
    """

    def __init__(self, max_age, stale_while_revalidate=0.0, stale_if_error=0.0, *,
                 must_revalidate=False, age=0.0, negative=False):
        cdef int64_t max_age_ns = _span_ns(max_age, "max_age")
        cdef int64_t swr_ns = _span_ns(stale_while_revalidate, "stale_while_revalidate")
        cdef int64_t sie_ns = _span_ns(stale_if_error, "stale_if_error")
        cdef int64_t age_ns = _span_ns(age, "age")
        self.max_age_ns = max_age_ns
        self.stale_while_revalidate_ns = swr_ns
        self.stale_if_error_ns = sie_ns
        self.age_ns = age_ns
        self.must_revalidate = bool(must_revalidate)
        self.negative = bool(negative)

    @classmethod
    def from_cache_control(cls, header, age=0.0, *, shared=True):
        """Parse a ``Cache-Control`` header (RFC 9111 + RFC 5861) into a Freshness.

        ``header``: a str (or bytes, or a list of field values, joined by commas);
        ``age``: the response's ``Age`` in seconds or as the header string. ``shared``:
        whether this cache is shared (``s-maxage`` wins, ``private`` is not stored).
        Returns ``None`` when the response must not be stored. Never raises on a header
        string; see ``fastcore.freshness`` for every rule.

        Example::

            Freshness.from_cache_control("max-age=60", age=10).max_age   # 50.0
        """
        from fastcore.freshness import parse_cache_control
        return parse_cache_control(header, age, shared=shared, cls=cls)

    @classmethod
    def from_response(cls, status, headers, *, shared=True, heuristic=0.0):
        """Freshness of a whole response: ``Cache-Control`` and ``Age`` plus status rules.

        2xx and the heuristically cacheable statuses are stored (``heuristic`` seconds of
        freshness when the headers carry none); ``404``/``410`` become negative entries;
        other statuses only with an explicit ``max-age``/``s-maxage``; 1xx and 5xx never.
        Returns ``None`` when the response must not be stored.

        Example::

            Freshness.from_response(404, {"Cache-Control": "max-age=30"}).negative  # True
        """
        from fastcore.freshness import freshness_from_response
        return freshness_from_response(status, _response_headers(headers), shared=shared,
                                       heuristic=heuristic, cls=cls)

    @property
    def max_age(self):
        """Seconds the value is FRESH after it is stored (float)."""
        return ns_to_seconds(self.max_age_ns)

    @property
    def stale_while_revalidate(self):
        """Seconds after max_age the value may be served while it is refreshed (float)."""
        return ns_to_seconds(self.stale_while_revalidate_ns)

    @property
    def stale_if_error(self):
        """Seconds after max_age a failing load may still return the value (float)."""
        return ns_to_seconds(self.stale_if_error_ns)

    @property
    def age(self):
        """Seconds the value had aged before it was stored (float)."""
        return ns_to_seconds(self.age_ns)

    def _key(self):
        return (self.max_age_ns, self.stale_while_revalidate_ns, self.stale_if_error_ns,
                self.age_ns, self.must_revalidate, self.negative)

    def __eq__(self, other):
        if not isinstance(other, Freshness):
            return NotImplemented
        return self._key() == (<Freshness>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __reduce__(self):
        return (_make_freshness, (type(self), self.max_age, self.stale_while_revalidate,
                                  self.stale_if_error, self.must_revalidate, self.age,
                                  self.negative))

    def __repr__(self):
        extra = ""
        if self.must_revalidate:
            extra += ", must_revalidate=True"
        if self.age_ns:
            extra += f", age={self.age!r}"
        if self.negative:
            extra += ", negative=True"
        return (f"{type(self).__name__}({self.max_age!r}, {self.stale_while_revalidate!r}, "
                f"{self.stale_if_error!r}{extra})")


cdef object _response_headers(object headers):
    """``from_response``'s ``headers``, checked here so that an error names them: a mapping,
    or an iterable of ``(name, value)`` pairs with str or bytes names (passed on as a list)."""
    if isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, (str, bytes, bytearray)) or not hasattr(headers, "__iter__"):
        raise TypeError(f"headers must be a mapping or a list of (name, value) pairs, "
                        f"got {shown(headers)}")
    else:
        items = list(headers)
    for item in items:
        if (not isinstance(item, (tuple, list)) or len(item) != 2
                or not isinstance(item[0], (str, bytes, bytearray))):
            raise TypeError(f"headers must hold (name, value) pairs with str or bytes "
                            f"names, got {shown(item)}")
    return headers if isinstance(headers, Mapping) else items


def _make_freshness(cls, max_age, swr, sie, must_revalidate, age, negative):
    return cls(max_age, swr, sie, must_revalidate=must_revalidate, age=age, negative=negative)


cdef class Intent:
    """Intent(name, max_staleness=0.0, serve_stale_while_revalidate=True, serve_stale_on_error=True)
--

A named class of requests and how stale an answer it accepts.

    ``max_staleness``: seconds past ``max_age`` this intent accepts any entry (0: only
    fresh ones, unless the entry's own stale-while-revalidate allows it).
    ``serve_stale_while_revalidate``: use the entry's RFC 5861 window.
    ``serve_stale_on_error``: when a load fails, fall back to an entry inside its
    stale-if-error window.

    Raises ``TypeError`` for a non-str name, ``InvalidFreshness`` for a bad staleness.

    Example::

        verify = Intent("verify", serve_stale_while_revalidate=False,
                        serve_stale_on_error=False)
        context = Intent("context", max_staleness=600)
    """

    def __init__(self, name, max_staleness=0.0, serve_stale_while_revalidate=True,
                 serve_stale_on_error=True):
        if not isinstance(name, str):
            raise TypeError(f"an intent name must be a str, got {shown(name)}")
        if not name:
            raise InvalidFreshness("an intent name must not be empty")
        cdef int64_t staleness_ns = _span_ns(max_staleness, "max_staleness")
        self.name = name
        self.max_staleness_ns = staleness_ns
        self.serve_stale_while_revalidate = bool(serve_stale_while_revalidate)
        self.serve_stale_on_error = bool(serve_stale_on_error)

    @property
    def max_staleness(self):
        """Seconds past max_age this intent accepts an entry (float)."""
        return ns_to_seconds(self.max_staleness_ns)

    def _key(self):
        return (self.name, self.max_staleness_ns, self.serve_stale_while_revalidate,
                self.serve_stale_on_error)

    def __eq__(self, other):
        if not isinstance(other, Intent):
            return NotImplemented
        return self._key() == (<Intent>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (f"Intent({self.name!r}, max_staleness={self.max_staleness!r}, "
                f"serve_stale_while_revalidate={self.serve_stale_while_revalidate!r}, "
                f"serve_stale_on_error={self.serve_stale_on_error!r})")


@cython.freelist(64)
cdef class Lookup:
    """Lookup()
--

The answer of ``SemanticCache.lookup``: ``state`` (a ``CacheState``), ``value``,
    ``age`` (seconds since stored plus the upstream ``Age``; ``None`` on a MISS) and
    ``negative`` (a cached "not found")."""

    @property
    def age(self):
        """Seconds since the entry was stored plus its upstream ``Age``; None on a MISS."""
        return None if self.state is _MISS else self.age_s

    def __repr__(self):
        return (f"Lookup(state={self.state!s}, value={self.value!r}, age={self.age!r}, "
                f"negative={self.negative!r})")

    def __eq__(self, other):
        if not isinstance(other, Lookup):
            return NotImplemented
        cdef Lookup o = <Lookup>other
        return (self.state is o.state and self.value == o.value and self.age == o.age
                and self.negative == o.negative)

    __hash__ = None


cdef Lookup _MISS_LOOKUP = Lookup.__new__(Lookup)
_MISS_LOOKUP.state = _MISS


cdef class Loaded:
    """Loaded(value, freshness)
--

What a loader may return to choose the freshness of one value.

    ``freshness``: a ``Freshness`` (a negative one caches a "not found"), or ``None`` for
    "do not store" (what ``Freshness.from_cache_control`` returns for ``no-store``); the
    value is returned to the callers either way.

    Example::

        def load(url):
            response = fetch(url)
            return Loaded(response.body, Freshness.from_response(response.status,
                                                                 response.headers))
    """

    def __init__(self, value, freshness):
        if freshness is not None and not isinstance(freshness, Freshness):
            raise TypeError(f"freshness must be a Freshness or None, got {shown(freshness)}")
        self.value = value
        self.freshness = freshness

    def __repr__(self):
        return f"Loaded({self.value!r}, {self.freshness!r})"


@cython.freelist(16)
@cython.final
cdef class _Entry:
    pass


cdef inline void _entry_fill(_Entry e, int64_t now_ns, Freshness f, bint negative,
                             int64_t delta_ns, int64_t weight, int64_t keep_ns) noexcept:
    """Every C field of an entry stored at ``now_ns`` (no Python code runs here)."""
    e.stored_ns = now_ns
    e.fresh_until_ns = now_ns + f.max_age_ns
    e.swr_ns = f.stale_while_revalidate_ns
    e.sie_ns = f.stale_if_error_ns
    e.keep_until_ns = e.fresh_until_ns + keep_ns
    e.age_ns = f.age_ns
    e.delta_ns = delta_ns
    e.weight = weight
    e.must_revalidate = f.must_revalidate
    e.negative = negative or f.negative


cdef class SemanticCacheCore:
    """SemanticCacheCore(maxsize, *, default=None, intents=None, default_intent=None, negative_ttl=10.0, getsizeof=None, clock=None, xfetch_beta=1.0, random=None, executor=None, load_timeout=None, refresh_workers=4)
--

The compiled part of ``fastcore.SemanticCache``: storage, lookup and eviction."""

    def __cinit__(self, *args, **kwargs):
        self._map = {}
        self._intents = {}
        self._flights = {}
        self._aflights = {}
        self._flight_lock = threading.Lock()
        self._executor = None
        self._refreshing = {}

    def __init__(self, maxsize, *, default=None, intents=None, default_intent=None,
                 negative_ttl=10.0, getsizeof=None, clock=None, xfetch_beta=1.0, random=None,
                 executor=None, load_timeout=None, refresh_workers=4):
        if isinstance(maxsize, bool) or not isinstance(maxsize, numbers.Integral):
            raise TypeError(f"maxsize must be an int, got {shown(maxsize)}")
        maxsize = operator.index(maxsize)
        if not 1 <= maxsize < (1 << 62):
            raise ValueError(f"maxsize must be between 1 and 2**62, got {shown(maxsize)}")
        if default is None:
            default = Freshness(60.0)
        elif not isinstance(default, Freshness):
            raise TypeError(f"default must be a Freshness, got {shown(default)}")
        _span_ns(negative_ttl, "negative_ttl")      # named here, not as Freshness's max_age
        negative_default = Freshness(negative_ttl, negative=True)
        if getsizeof is not None and not callable(getsizeof):
            raise TypeError(f"getsizeof must be callable or None, got {shown(getsizeof)}")
        beta = as_real(xfetch_beta)
        if beta is None:
            raise TypeError(f"xfetch_beta must be a number, got {shown(xfetch_beta)}")
        try:
            beta = float(beta)
        except OverflowError:       # an int past the largest float
            beta = math.inf
        if not (0.0 <= beta < math.inf):
            raise ValueError(f"xfetch_beta must be finite and >= 0, got {shown(xfetch_beta)}")
        if random is None:
            random = _random_module.Random().random
        elif not callable(random):
            raise TypeError(f"random must be a callable returning [0, 1), got {shown(random)}")
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise TypeError(
                f"executor must have a submit(fn, *args) method, got {shown(executor)}")
        timeout = None if load_timeout is None else _load_timeout_arg(load_timeout)
        if (isinstance(refresh_workers, bool)
                or not isinstance(refresh_workers, numbers.Integral)):
            raise TypeError(f"refresh_workers must be an int, got {shown(refresh_workers)}")
        refresh_workers = operator.index(refresh_workers)
        if not 1 <= refresh_workers <= 1024:
            raise ValueError(f"refresh_workers must be between 1 and 1024, "
                             f"got {shown(refresh_workers)}")
        registry = {}
        if intents is not None and (isinstance(intents, (str, bytes, Intent))
                                    or not hasattr(intents, "__iter__")):
            raise TypeError(f"intents must be a mapping of names to Intent objects or a list "
                            f"of Intent objects, got {shown(intents)}")
        if intents is not None:
            items = intents.items() if isinstance(intents, Mapping) else (
                (getattr(i, "name", None), i) for i in intents)
            for name, intent in items:
                if not isinstance(intent, Intent):
                    if isinstance(intents, Mapping):
                        raise TypeError(f"intents must map names to Intent objects, got "
                                        f"{shown(name)}: {shown(intent)}")
                    raise TypeError(f"intents must hold Intent objects, got {shown(intent)}")
                if name != (<Intent>intent).name:
                    raise InvalidFreshness(
                        f"intent registered as {shown(name)} is named "
                        f"{shown((<Intent>intent).name)}")
                registry[name] = intent
        if default_intent is None:
            default_intent = registry.get("default") or Intent("default")
        elif isinstance(default_intent, str):
            if default_intent not in registry:
                raise UnknownIntent(f"default_intent {shown(default_intent)} is not in intents")
            default_intent = registry[default_intent]
        elif not isinstance(default_intent, Intent):
            raise TypeError(
                f"default_intent must be an Intent or a name, got {shown(default_intent)}")
        if registry.get((<Intent>default_intent).name, default_intent) != default_intent:
            raise InvalidFreshness(
                f"default_intent {shown(default_intent)} differs from the registered intent "
                f"of that name")
        registry[(<Intent>default_intent).name] = default_intent

        self.clock = clock_resolve(clock)
        self.maxsize = maxsize
        self.getsizeof = getsizeof
        self.default = default
        self.negative_default = negative_default
        self.default_intent = default_intent
        self._intents = registry
        self._keep_staleness_ns = 0
        self._any_swr = False
        self._any_soe = False
        for intent in registry.values():
            self._keep_staleness_ns = max(self._keep_staleness_ns,
                                          (<Intent>intent).max_staleness_ns)
            self._any_swr |= (<Intent>intent).serve_stale_while_revalidate
            self._any_soe |= (<Intent>intent).serve_stale_on_error
        self.xfetch_beta = beta
        self._random = random
        self._executor = executor
        self.load_timeout = timeout
        self.refresh_workers = refresh_workers

    # -- reading -------------------------------------------------------------------------

    cdef Intent _resolve(self, object intent):
        if intent is None:
            return self.default_intent
        if type(intent) is Intent:
            return <Intent>intent
        if isinstance(intent, str):
            found = self._intents.get(intent)
            if found is None:
                raise UnknownIntent(
                    f"unknown intent {shown(intent)}; configured: {sorted(self._intents)}")
            return <Intent>found
        if isinstance(intent, Intent):
            return <Intent>intent
        raise TypeError(f"intent must be None, a name or an Intent, got {shown(intent)}")

    cdef Lookup _hit(self, _Entry e, int state, int64_t now_ns):
        cdef Lookup r = Lookup.__new__(Lookup)
        r.state = _FRESH if state == SEM_FRESH else _STALE
        r.value = e.value
        r.age_s = (now_ns - e.stored_ns + e.age_ns) / 1e9     # correctly rounded, unlike * 1e-9
        r.negative = e.negative
        return r

    def lookup(self, key, intent=None):
        """The entry for ``key`` as seen by ``intent`` (a name, an ``Intent`` or ``None``
        for the default intent): a ``Lookup`` whose ``state`` is FRESH, STALE or MISS.

        Raises ``TypeError`` for an unhashable key, ``UnknownIntent`` for an unknown name.

        Example::

            cache.set("k", 1, Freshness(60))
            cache.lookup("k").state      # CacheState.FRESH
        """
        cdef Intent it = self.default_intent if intent is None else self._resolve(intent)
        cdef int64_t now_ns = clock_now_ns(self.clock)
        cdef dict held = self._map       # kept alive while get() runs the key's __eq__
        cdef object found = held.get(key)
        cdef _Entry e
        cdef int state
        if found is None:
            self._misses += 1
            return _MISS_LOOKUP
        e = <_Entry>found
        if now_ns >= e.keep_until_ns:
            self._drop_dead(key, e)
            self._misses += 1
            return _MISS_LOOKUP
        e.visited = True
        state = semantic_state(e, it, now_ns)
        if state == SEM_FRESH:
            self._hits += 1
        elif state == SEM_STALE:
            self._stale_hits += 1
        else:
            self._misses += 1
            return _MISS_LOOKUP
        return self._hit(e, state, now_ns)

    def _probe(self, key, intent, bint count=True):
        """``lookup`` for the loader layer: also decides XFetch's early refresh, counted
        or not (a leader's re-check after registering its flight is not a new request)."""
        cdef Intent it = self._resolve(intent)
        cdef int64_t now_ns = clock_now_ns(self.clock)
        cdef dict held = self._map       # kept alive while get() runs the key's __eq__
        cdef object found = held.get(key)
        cdef _Entry e
        cdef int state
        cdef Lookup r
        cdef double gap
        if found is not None:
            e = <_Entry>found
            if now_ns >= e.keep_until_ns:
                self._drop_dead(key, e)
            else:
                e.visited = True
                state = semantic_state(e, it, now_ns)
                if state != SEM_MISS:
                    if count:
                        if state == SEM_FRESH:
                            self._hits += 1
                        else:
                            self._stale_hits += 1
                    r = self._hit(e, state, now_ns)
                    if state == SEM_FRESH and e.delta_ns > 0 and self.xfetch_beta > 0.0:
                        # XFetch: refresh when now - delta * beta * ln(U) >= expiry, U in
                        # (0, 1]; 1 - random() maps [0, 1) onto (0, 1].
                        gap = -e.delta_ns * self.xfetch_beta * log(1.0 - self._random())
                        r._refresh = now_ns + gap >= e.fresh_until_ns
                    return r
        if count:
            self._misses += 1
        return _MISS_LOOKUP

    def _fallback(self, key, intent):
        """After a failed load: the entry a caller with ``intent`` may fall back to, or None."""
        cdef Intent it = self._resolve(intent)
        cdef int64_t now_ns = clock_now_ns(self.clock)
        cdef dict held = self._map       # kept alive while get() runs the key's __eq__
        cdef object found = held.get(key)
        cdef _Entry e
        if found is None:
            return None
        e = <_Entry>found
        if now_ns >= e.keep_until_ns or not semantic_error_fallback(e, it, now_ns):
            return None
        return self._hit(e, SEM_STALE if now_ns >= e.fresh_until_ns else SEM_FRESH, now_ns)

    def __contains__(self, key):
        cdef dict held = self._map       # kept alive while get() runs the key's __eq__
        cdef object found = held.get(key)
        return found is not None and clock_now_ns(self.clock) < (<_Entry>found).keep_until_ns

    def __len__(self):
        return len(self._map)

    def intent(self, name):
        """The configured ``Intent`` called ``name``; raises ``UnknownIntent``."""
        return self._resolve(name)

    @property
    def intents(self):
        """The configured intents by name, including the default intent (a new dict)."""
        return dict(self._intents)

    # -- writing -------------------------------------------------------------------------

    cdef int64_t _weigh(self, object value) except -1:
        if self.getsizeof is None:
            return 1
        size = self.getsizeof(value)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"getsizeof must return an int >= 1, got {shown(size)}")
        if size > self.maxsize:
            raise ValueTooLarge(f"value of size {size} is larger than maxsize {self.maxsize}")
        return size

    cdef Freshness _freshness(self, object freshness, bint negative):
        if freshness is None:
            return self.negative_default if negative else self.default
        if not isinstance(freshness, Freshness):
            raise TypeError(f"freshness must be a Freshness or None, got {shown(freshness)}")
        return <Freshness>freshness

    cdef object _insert(self, object key, object value, Freshness f, bint negative,
                        int64_t delta_ns):
        """Store one entry, overwriting in place; an entry that would be dead at once is not
        stored (and replaces, i.e. removes, the old one)."""
        hash(key)
        cdef int64_t weight = self._weigh(value)
        cdef int64_t now_ns = clock_now_ns(self.clock)
        cdef int64_t keep = 0
        cdef _Entry e
        cdef list released = []      # what dies here is released after the lock
        if not f.must_revalidate:
            keep = self._keep_staleness_ns
            if self._any_swr and f.stale_while_revalidate_ns > keep:
                keep = f.stale_while_revalidate_ns
            if self._any_soe and f.stale_if_error_ns > keep:
                keep = f.stale_if_error_ns
        cdef bint dead = keep + f.max_age_ns == 0
        self._refuse_reentry()
        with self._lock:
            self._writer = PyThread_get_thread_ident()
            try:
                found = self._map.get(key)
                if found is not None:
                    e = <_Entry>found
                    if dead:
                        del self._map[key]              # the dict first: its __eq__ may raise
                        self._unlink(e)
                        self.currsize -= e.weight
                        released.append(e)
                        return None
                    # In place: the C fields first, the value last, and no Python code between
                    # them (the old value is kept alive in `released`), so a lookup, which also
                    # holds the GIL, sees all old or all new fields. Queue slot and visited bit stay.
                    released.append(e.value)
                    self.currsize += weight - e.weight
                    _entry_fill(e, now_ns, f, negative, delta_ns, weight, keep)
                    e.value = value
                    while self.currsize > self.maxsize:
                        released.append(self._evict_one(now_ns, e))
                    return None
                if dead:
                    return None
                while self.currsize + weight > self.maxsize:
                    released.append(self._evict_one(now_ns, None))
                e = _Entry.__new__(_Entry)
                _entry_fill(e, now_ns, f, negative, delta_ns, weight, keep)
                e.key = key
                e.value = value
                self._map[key] = e                  # the dict first: its __eq__ may raise
                e.older = self._head
                if self._head is not None:
                    self._head.newer = e
                self._head = e
                if self._tail is None:
                    self._tail = e
                self.currsize += weight
            finally:
                self._writer = 0
        return None

    cdef void _unlink(self, _Entry e) noexcept:
        if self._hand is e:
            self._hand = e.newer
        if e.newer is not None:
            e.newer.older = e.older
        else:
            self._head = e.older
        if e.older is not None:
            e.older.newer = e.newer
        else:
            self._tail = e.newer
        e.newer = None
        e.older = None

    cdef _Entry _evict_one(self, int64_t now_ns, _Entry spare):
        """SIEVE: the first unvisited or dead entry from the hand toward the head, never
        ``spare`` (an entry growing in place; the others outweigh the excess, so one is found)."""
        cdef _Entry o = self._hand if self._hand is not None else self._tail
        while o is spare or (o.visited and now_ns < o.keep_until_ns):
            if o is not spare:
                o.visited = False
            o = o.newer if o.newer is not None else self._tail
        del self._map[o.key]                    # the dict first: its __eq__ may raise
        self._hand = o.newer
        self._unlink(o)
        self.currsize -= o.weight
        self._evictions += 1
        return o

    cdef int _drop_dead(self, object key, _Entry e) except -1:
        """Drop an entry a read found dead; skipped inside this cache's own write (a key's
        __eq__ reading the cache), where the next write or expire() drops it instead."""
        cdef dict m
        if self._writer == PyThread_get_thread_ident():
            return 0
        with self._lock:
            self._writer = PyThread_get_thread_ident()
            try:
                m = self._map
                if m.get(key) is e:
                    del m[key]                  # the dict first: its __eq__ may raise
                    self._unlink(e)
                    self.currsize -= e.weight
            finally:
                self._writer = 0
        return 0

    cdef int _refuse_reentry(self) except -1:
        """Raise RuntimeError when this thread is inside a write of this cache already (a
        key's __eq__ or __hash__, run by the write's dict operation, writes to the cache):
        the lock is not re-entrant, and waiting for it would deadlock. The outer write then
        fails with that error before it has changed anything."""
        if self._writer == PyThread_get_thread_ident():
            raise RuntimeError("SemanticCache written to from inside one of its own writes "
                               "(a key's __eq__ or __hash__ writing to the cache): refused")
        return 0

    def set(self, key, value, freshness=None):
        """Store ``value`` under ``key`` with ``freshness`` (``None``: the cache's default).

        A negative ``freshness`` stores a negative entry. Raises ``TypeError`` (unhashable
        key, not a Freshness), ``ValueTooLarge`` (``getsizeof(value) > maxsize``); on error
        the cache is unchanged.

        Example::

            cache.set("user:1", row, Freshness(60, stale_if_error=600))
        """
        self._insert(key, value, self._freshness(freshness, False), False, 0)

    def set_negative(self, key, freshness=None):
        """Cache "``key`` does not exist" (value ``None``) with ``freshness`` (``None``: the
        cache's ``negative_ttl``). Raises like ``set``.

        Example::

            cache.set_negative("user:404")
            cache.lookup("user:404").negative    # True
        """
        self._insert(key, None, self._freshness(freshness, True), True, 0)

    def _accept(self, key, result, int64_t delta_ns):
        """Store what a loader returned (a value or a ``Loaded``); returns the value."""
        cdef Loaded loaded
        if isinstance(result, Loaded):
            loaded = <Loaded>result
            if loaded.freshness is None:
                self.delete(key)
            else:
                self._insert(key, loaded.value, loaded.freshness, False, delta_ns)
            return loaded.value
        self._insert(key, result, self.default, False, delta_ns)
        return result

    def delete(self, key):
        """Remove ``key``; returns whether a live entry was removed. ``TypeError`` if
        unhashable."""
        cdef int64_t now_ns = clock_now_ns(self.clock)
        cdef _Entry e
        hash(key)
        self._refuse_reentry()
        with self._lock:
            self._writer = PyThread_get_thread_ident()
            try:
                found = self._map.pop(key, None)
                if found is None:
                    return False
                e = <_Entry>found
                self._unlink(e)
                self.currsize -= e.weight
            finally:
                self._writer = 0
        return now_ns < e.keep_until_ns

    def clear(self):
        """Remove every entry (counters are kept)."""
        cdef dict old
        self._refuse_reentry()
        with self._lock:
            self._writer = PyThread_get_thread_ident()
            try:
                old = self._map
                self._map = {}
                self._head = self._tail = self._hand = None
                self.currsize = 0
            finally:
                self._writer = 0
        # Break the queue's reference cycles outside the lock.
        for found in old.values():
            (<_Entry>found).newer = None
            (<_Entry>found).older = None

    def expire(self):
        """Drop every entry that no configured intent can use any more; returns how many."""
        cdef int64_t now_ns = clock_now_ns(self.clock)
        cdef _Entry e
        cdef _Entry older
        cdef list released = []
        self._refuse_reentry()
        with self._lock:
            self._writer = PyThread_get_thread_ident()
            try:
                e = self._head
                while e is not None:
                    older = e.older
                    if now_ns >= e.keep_until_ns:
                        del self._map[e.key]            # the dict first: its __eq__ may raise
                        self._unlink(e)
                        self.currsize -= e.weight
                        released.append(e)
                    e = older
            finally:
                self._writer = 0
        return len(released)

    def keys(self):
        """The stored keys, oldest first (a list; includes entries not yet dropped)."""
        cdef list out = []
        self._refuse_reentry()
        with self._lock:
            self._writer = PyThread_get_thread_ident()
            try:
                e = self._tail
                while e is not None:
                    out.append((<_Entry>e).key)
                    e = (<_Entry>e).newer
            finally:
                self._writer = 0
        return out

    # -- counters ------------------------------------------------------------------------

    def _count(self, str what):
        if what == "loads":
            self._loads += 1
        elif what == "load_errors":
            self._load_errors += 1
        elif what == "coalesced_waits":
            self._coalesced += 1
        elif what == "load_timeouts":
            self._load_timeouts += 1
        elif what == "refreshes_skipped":
            self._refreshes_skipped += 1
        else:
            raise ValueError(what)

    def stats(self):
        """Counters since construction: hits, stale_hits, misses, loads, load_errors,
        evictions, coalesced_waits (callers that waited for another caller's load),
        load_timeouts (loads abandoned after ``load_timeout``), refreshes_skipped (background
        refreshes not started because ``refresh_workers`` were busy), plus len, currsize and
        maxsize."""
        return {
            "hits": self._hits,
            "stale_hits": self._stale_hits,
            "misses": self._misses,
            "loads": self._loads,
            "load_errors": self._load_errors,
            "evictions": self._evictions,
            "coalesced_waits": self._coalesced,
            "load_timeouts": self._load_timeouts,
            "refreshes_skipped": self._refreshes_skipped,
            "len": len(self._map),
            "currsize": self.currsize,
            "maxsize": self.maxsize,
        }

    def __repr__(self):
        return (f"{type(self).__name__}(maxsize={self.maxsize}, currsize={self.currsize}, "
                f"default={self.default!r}, intents={sorted(self._intents)})")
