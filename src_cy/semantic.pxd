# SemanticCache core: entries whose freshness depends on what the request means.
#
# Promise: lookup(key, intent) answers FRESH, STALE (usable for this intent) or MISS from
# integer-ns state with one clock read, no Python call and no lock on a hit. Writers (set,
# delete, eviction, dropping a dead entry) hold one PyMutex. An overwrite updates the entry
# in place with no Python code between its field writes; lookups hold the GIL too, so a
# lookup racing a writer reads all old or all new fields, never a mix.
#
# State layout, per entry: one _Entry object of 128 bytes + 16 of GC header, plus its dict
# slot; measured with tracemalloc: 182 bytes per entry at 100,000 entries (keys not counted).
#   PyObject header                                                         16 B
#   key, value                   2 object refs                              16 B
#   stored_ns, fresh_until_ns    int64: when stored, stored + max_age       16 B
#   swr_ns, sie_ns               int64 stale windows (RFC 5861)             16 B
#   keep_until_ns                int64: no configured intent can use it after this    8 B
#   age_ns, delta_ns, weight     int64: Age at store, last load time (XFetch), size  24 B
#   must_revalidate, negative, visited   bint (int)                         16 B (padded)
#   newer, older                 2 refs: the SIEVE FIFO queue               16 B
#
# Rules (a = now - stored_ns; I = the lookup's intent):
#   FRESH  while a < max_age                       <=> now < fresh_until_ns
#   STALE  while a < max_age + max(I.max_staleness, swr if I.serve_stale_while_revalidate
#          else 0), unless must_revalidate
#   MISS   otherwise.
#   error fallback while a < max_age + sie when I.serve_stale_on_error and not must_revalidate.
#   dead   once now >= keep_until_ns = fresh_until_ns + (0 if must_revalidate else
#          max(max over configured intents of max_staleness,
#              swr if any intent serves stale-while-revalidate,
#              sie if any intent serves stale on error))
#   A dead entry is absent for every lookup (even an ad-hoc Intent with a longer
#   max_staleness): it is dropped when a lookup finds it, when the SIEVE hand reaches it,
#   or by expire().
#
# Invariants:
#   currsize == sum(entry.weight for entries in _map) <= maxsize; weight >= 1.
#   The FIFO queue (head = newest, tail = oldest, linked by newer/older) holds exactly the
#   entries of _map; `hand` is None or one of them.
#   All times are in [0, 2**62]; every span is <= FRESHNESS_MAX_NS (2**59 ns, 18 years), so
#   stored_ns + max_age + two windows < 2**63 never overflows.
#
# Eviction: SIEVE (Zhang et al., NSDI 2024). A hit sets `visited` (one store, no list
# move). To make room the hand walks from the oldest entry toward the newest, clearing
# `visited` bits, and evicts the first entry that is unvisited or dead; it wraps to the
# oldest. New entries enter at the head unvisited; an overwrite keeps the entry's place and
# bit (if it grew, the hand skips it while making room). On skewed traffic SIEVE keeps popular keys like LRU does without
# moving them on every hit, and beats LRU's hit ratio (README: "SemanticCache").
#
# Cost: lookup hit = one dict probe + ~10 integer compares + one Lookup from a freelist.
#   set = getsizeof (optional) + one lock + one dict probe (+ one store and one allocation
#   for a new key) + amortised O(1) hand steps.
#
# Worked example: Freshness(max_age=60, stale_while_revalidate=30, stale_if_error=300),
# stored at t=1000 s, intents {"default": Intent("default"),
# "context": Intent("context", max_staleness=600)}:
#   fresh_until = 1060 s; keep_until = 1060 + max(600, 30, 300) = 1660 s.
#   t=1059: FRESH for both (age 59).   t=1070: STALE for both (default via swr 30 s).
#   t=1100: default MISS (1100 >= 1090), context STALE (< 1660); a failing load for default
#           falls back to the entry (1100 < 1060 + 300 = 1360).
#   t=1700: dead: MISS for every intent, dropped.
from libc.stdint cimport int64_t, uint64_t

cimport cython
from fastcore._core.clock cimport Clock

cdef extern from *:
    # 2**59 ns, about 18.3 years: the longest max_age, window, staleness or Age accepted.
    const int64_t FRESHNESS_MAX_NS "((int64_t)1 << 59)"

cdef enum:
    SEM_FRESH = 0
    SEM_STALE = 1
    SEM_MISS = 2


cdef class Freshness:
    cdef readonly int64_t max_age_ns
    cdef readonly int64_t stale_while_revalidate_ns
    cdef readonly int64_t stale_if_error_ns
    cdef readonly int64_t age_ns
    cdef readonly bint must_revalidate
    cdef readonly bint negative


cdef class Intent:
    cdef readonly str name
    cdef readonly int64_t max_staleness_ns
    cdef readonly bint serve_stale_while_revalidate
    cdef readonly bint serve_stale_on_error


cdef class Lookup:
    cdef readonly object state
    cdef readonly object value
    cdef double age_s               # a float object is made only when .age is read
    cdef readonly bint negative
    # Set only by _probe: the XFetch rule says refresh this FRESH entry now.
    cdef readonly bint _refresh


cdef class Loaded:
    cdef readonly object value
    cdef readonly Freshness freshness


@cython.final
cdef class _Entry:
    cdef object key
    cdef object value
    cdef int64_t stored_ns
    cdef int64_t fresh_until_ns
    cdef int64_t swr_ns
    cdef int64_t sie_ns
    cdef int64_t keep_until_ns
    cdef int64_t age_ns
    cdef int64_t delta_ns
    cdef int64_t weight
    cdef bint must_revalidate
    cdef bint negative
    cdef bint visited
    cdef _Entry newer
    cdef _Entry older


cdef inline int semantic_state(_Entry e, Intent intent, int64_t now_ns) noexcept:
    """FRESH / STALE / MISS of a live entry for `intent` at `now_ns` (the rules above)."""
    cdef int64_t allowance
    if now_ns < e.fresh_until_ns:
        return SEM_FRESH
    if e.must_revalidate:
        return SEM_MISS
    allowance = intent.max_staleness_ns
    if intent.serve_stale_while_revalidate and e.swr_ns > allowance:
        allowance = e.swr_ns
    if now_ns < e.fresh_until_ns + allowance:
        return SEM_STALE
    return SEM_MISS


cdef inline bint semantic_error_fallback(_Entry e, Intent intent, int64_t now_ns) noexcept:
    """Whether a failed load may return this entry: usable now, or inside stale_if_error."""
    if semantic_state(e, intent, now_ns) != SEM_MISS:
        return True
    return (intent.serve_stale_on_error and not e.must_revalidate
            and now_ns < e.fresh_until_ns + e.sie_ns)


cdef class SemanticCacheCore:
    cdef dict _map
    cdef _Entry _head
    cdef _Entry _tail
    cdef _Entry _hand
    cdef cython.pymutex _lock
    cdef unsigned long _writer           # the thread inside a write (0: none); see _refuse_reentry
    cdef readonly int64_t maxsize
    cdef readonly int64_t currsize
    cdef readonly object getsizeof
    cdef readonly Clock clock
    cdef readonly Freshness default
    cdef readonly Freshness negative_default
    cdef readonly Intent default_intent
    cdef dict _intents
    # Longest stale allowances over the configured intents: they fix keep_until_ns.
    cdef int64_t _keep_staleness_ns
    cdef bint _any_swr
    cdef bint _any_soe
    cdef readonly double xfetch_beta
    cdef object _random
    cdef uint64_t _hits
    cdef uint64_t _stale_hits
    cdef uint64_t _misses
    cdef uint64_t _loads
    cdef uint64_t _load_errors
    cdef uint64_t _evictions
    cdef uint64_t _coalesced
    cdef uint64_t _load_timeouts
    cdef uint64_t _refreshes_skipped
    # State of the Python loader layer (fastcore/semantic.py), kept here so that the public
    # subclass can have __slots__ = ().
    cdef public object _flights
    cdef public object _aflights
    cdef public object _flight_lock
    cdef public object _executor
    # Sync background refreshes still running (abandoned ones too): key -> flight.
    cdef public object _refreshing
    cdef readonly object load_timeout          # float seconds, or None: wait for ever
    cdef readonly int refresh_workers

    cdef Intent _resolve(self, object intent)
    cdef Lookup _hit(self, _Entry e, int state, int64_t now_ns)
    cdef int64_t _weigh(self, object value) except -1
    cdef Freshness _freshness(self, object freshness, bint negative)
    cdef object _insert(self, object key, object value, Freshness f, bint negative,
                        int64_t delta_ns)
    cdef void _unlink(self, _Entry e) noexcept
    cdef _Entry _evict_one(self, int64_t now_ns, _Entry spare)
    cdef int _refuse_reentry(self) except -1
    cdef int _drop_dead(self, object key, _Entry e) except -1
