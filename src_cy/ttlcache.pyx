"""TTLCache: cachetools.TTLCache's behaviour on a C hash table with intrusive orders."""
cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_REFCNT
from cpython.float cimport PyFloat_AsDouble
from libc.math cimport isnan, isinf, floor
from libc.stdint cimport int64_t, intptr_t, uint8_t, uint32_t, uint64_t, INT64_MAX
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

import operator
import time as _time
from datetime import timedelta as _timedelta
from fractions import Fraction
from collections.abc import ItemsView, KeysView, Mapping, MutableMapping, ValuesView
from types import GenericAlias

from fastcore._core.clock cimport Clock, CLOCK_KIND_MANUAL, clock_now_ns, clock_resolve
from fastcore._core.debug cimport FASTCORE_DEBUG
from fastcore._core.clock import CoarseClock, ManualClock
from fastcore._units import as_real, seconds_to_ns, shown

cdef extern from *:
    const uint32_t TTL_NIL "((uint32_t)0xFFFFFFFFu)"
    const uint64_t TTL_GOLDEN "((uint64_t)0x9E3779B97F4A7C15ull)"   # 2**64 / golden ratio
    const int64_t TTL_SIGN_MASK "((int64_t)0x7FFFFFFFFFFFFFFFll)"
    void _prefetch "__builtin_prefetch"(const void *p) noexcept nogil

cdef extern from "Python.h":
    # Declared here without Cython's `except` so plain C functions can fill the slots.
    ctypedef int (*fc_visitproc "visitproc")(PyObject *, void *) noexcept
    ctypedef int (*fc_traverseproc "traverseproc")(PyObject *, fc_visitproc, void *) noexcept
    ctypedef int (*fc_inquiry "inquiry")(PyObject *) noexcept
    ctypedef struct fc_type "PyTypeObject":
        fc_traverseproc tp_traverse
        fc_inquiry tp_clear
    Py_hash_t PyObject_Hash(object) except? -1
    int PyObject_RichCompareBool(object, object, int) except -1
    int Py_EQ
    int Py_LT

cdef enum:
    LRU = 0                 # list ids: links[L] = prev, links[L + 1] = next
    EXP = 2
    INS = 4
    MIN_ENTRIES = 8         # entries
    MAX_ENTRIES = 0x7FFFFFFF  # entries: keeps slot indices (+1) and TTL_NIL inside 32 bits
    GRAVE_MIN = 32          # references
    CACHE_LINE = 64         # bytes: one ttl_entry per line
    SLOT_BYTES = 9          # bytes per index slot: ctrl 1, entry index 4, high word 4

cdef object _MARKER = object()


# ---------------------------------------------------------------------------------------
# Time

cdef inline int64_t _order_key(double x) noexcept nogil:
    """Order-preserving int64 image of a non-NaN double (see the .pxd header)."""
    cdef int64_t bits
    x = x + 0.0  # -0.0 -> +0.0: the two compare equal as floats, so give them one key
    memcpy(&bits, &x, 8)
    return bits ^ ((bits >> 63) & TTL_SIGN_MASK)


cdef inline int64_t _add_sat(int64_t a, int64_t b) noexcept nogil:
    """a + b for b >= 0, saturating at INT64_MAX (ttl=inf never expires)."""
    if a > INT64_MAX - b:
        return INT64_MAX
    return a + b


cdef int _read_timer(TTLCache c, ttl_now *out) except -1:
    """Call the user timer: out.obj takes a new reference to its value (object mode keeps
    only that; with a number ttl it is also read as a double)."""
    cdef double raw
    t = c._timer()
    if not c.obj_mode:
        raw = PyFloat_AsDouble(t)
        if isnan(raw):
            raise ValueError("TTLCache timer returned NaN")
        out.raw = raw
        out.key = _order_key(raw)
    else:
        out.raw = 0.0       # unused; defined for a cache re-initialised during the call
        out.key = 0
    Py_INCREF(t)
    out.obj = <PyObject *>t
    return 0


cdef inline int _now(TTLCache c, ttl_now *out) except -1:
    """Read the time once: the frozen time inside a compound call, else the clock/timer.

    In timer mode out.obj is then a reference the caller owns: take it over with _keep()
    right away. A clock's time has out.obj NULL, so a time read before the cache was
    re-initialised (by Python code the call ran) with a timer is refused, not dereferenced."""
    if c.freeze_depth:
        out[0] = c.frozen
        if c.timer_mode and out.obj != NULL:
            Py_INCREF(<object>out.obj)
    elif not c.timer_mode:
        out.key = clock_now_ns(c.clock)
        out.obj = NULL
    else:
        _read_timer(c, out)
    return 0


cdef inline object _keep(ttl_now *now):
    """Take over the reference _now() gave in now.obj (timer mode): the returned object owns
    it, and now.obj stays valid as a borrowed pointer while that object is held."""
    if now.obj == NULL:
        return None
    o = <object>now.obj
    Py_DECREF(o)
    return o


cdef inline object _time_of(ttl_now *now):
    """A timer's value read into `now`. NULL means it was read as a clock's: the cache got a
    timer while the call ran Python code (a key's __eq__ or a hook calling __init__)."""
    if now.obj == NULL:
        raise RuntimeError("TTLCache was re-initialised with another time source during the call")
    return <object>now.obj


cdef inline object _read_now(TTLCache c, ttl_now *out):
    """_now() for calls off the hot path: returns what holds a timer's value while `out` is
    used (None for a compiled clock)."""
    _now(c, out)
    if c.timer_mode:
        return _keep(out)
    return None


cdef inline PyObject *_exp_obj(ttl_entry *e) noexcept:
    """Object mode: the entry's expiry object (owned by the entry)."""
    return <PyObject *><intptr_t>e.expires


cdef inline int64_t _expires_at(TTLCache c, ttl_now *now) noexcept:
    """Clock mode and timer mode with a number ttl (object mode: _expiry_object)."""
    if c.timer_mode:
        return _order_key(now.raw + c.ttl_f)
    return _add_sat(now.key, c.ttl_ns)


cdef object _expiry_object(TTLCache c, ttl_now *now):
    """Object mode: time + ttl, as cachetools computes it (may raise, e.g. OverflowError
    for datetime.max + timedelta; called before anything changes)."""
    return _time_of(now) + c._ttl


cdef int _alive_obj(TTLCache c, ttl_now *now, uint32_t i) except -1:
    """Object mode: now < entry i's expiry, with Python's `<`. The comparison may run Python
    code; should that code change the cache, entry indices held by the caller could be stale,
    so that raises RuntimeError instead."""
    cdef uint64_t version = c.version
    expires = <object>_exp_obj(&c.entries[i])     # held across the comparison
    alive = PyObject_RichCompareBool(_time_of(now), expires, Py_LT)
    if c.version != version:
        raise RuntimeError("TTLCache changed while comparing an item's expiry time")
    return alive


cdef inline int _alive(TTLCache c, ttl_now *now, uint32_t i) except -1:
    """1 if entry i has not expired at `now` (cachetools' `time < expires`), else 0."""
    if c.obj_mode:
        return _alive_obj(c, now, i)
    return now.key < c.entries[i].expires


cdef object _time_object(TTLCache c, ttl_now *now):
    """The time as cachetools passes it around: the timer's value, or float seconds."""
    if c.timer_mode:
        return _time_of(now)
    return now.key / 1e9


cdef int _time_from_object(TTLCache c, object time, ttl_now *out) except -1:
    """expire(time=...): from the caller's timeline to the stored representation. In timer
    mode out.obj is a new reference, as from _now()."""
    cdef object value
    if c.timer_mode:
        if not c.obj_mode:
            value = as_real(time)
            if value is None:
                raise TypeError(f"time must be a number, got {shown(time)}")
            out.raw = _as_double(value)
            if isnan(out.raw):
                raise ValueError("time must not be NaN")
            out.key = _order_key(out.raw)
        else:
            out.raw = 0.0
            out.key = 0
        Py_INCREF(time)
        out.obj = <PyObject *>time
    else:
        # a time past the int64 range expires everything, as INT64_MAX ns does
        out.key = min(seconds_to_ns(time, "time"), INT64_MAX)
        out.obj = NULL
    return 0


cdef double _as_double(object number):
    """An int, float or Fraction as a double; an int past the float range is +-inf."""
    try:
        return float(number)
    except OverflowError:
        return float("inf") if number > 0 else float("-inf")


cdef int _freeze_at(TTLCache c, ttl_now *now) except -1:
    """Enter a compound call at `now` (cachetools' `with self.timer as time:`): every time
    read until the matching _thaw() sees this one. The cache holds its own reference to a
    timer's value while frozen."""
    if c.freeze_depth == 0:
        old = c._frozen_obj     # released only on return, once the freeze is consistent
        if c.timer_mode:
            c._frozen_obj = <object>now.obj
        c.frozen = now[0]
    c.freeze_depth += 1
    return 0


cdef int _freeze(TTLCache c) except -1:
    """Enter a compound call at the time read now (or the frozen time, when nested)."""
    cdef ttl_now now
    _now(c, &now)
    if c.timer_mode:
        keep = _keep(&now)
    _freeze_at(c, &now)
    return 0


cdef inline void _thaw(TTLCache c) noexcept:
    if c.freeze_depth > 0:
        c.freeze_depth -= 1


cdef object _timer_value(TTLCache c):
    """cache.timer(): the frozen time inside a compound call, else a fresh read -- the timer's
    own value (any type) or the clock's seconds."""
    if c.freeze_depth:
        if c.timer_mode:
            return c._frozen_obj
        return c.frozen.key / 1e9
    if c.timer_mode:
        return c._timer()
    return clock_now_ns(c.clock) / 1e9


@cython.final
cdef class _Timer:
    """``cache.timer``, as cachetools' ``_Timer``: ``cache.timer()`` returns the current time
    (the cache's timer's value, or seconds from its clock); ``with cache.timer as now:``
    freezes the cache's time for a compound operation (nested blocks see the outer time);
    other attributes are the wrapped timer's or clock's (``cache.timer.advance(1)`` on a
    ManualClock)."""
    cdef TTLCache _cache

    def __cinit__(self, TTLCache cache not None):
        self._cache = cache

    def __call__(self):
        return _timer_value(self._cache)

    def __enter__(self):
        _freeze(self._cache)
        return _timer_value(self._cache)

    def __exit__(self, *exc):
        _thaw(self._cache)
        return None

    def __getattr__(self, name):
        return getattr(self._cache._timer, name)

    def __reduce__(self):
        return getattr, (self._cache, "timer")

    def __repr__(self):
        return f"<timer of a {type(self._cache).__name__}: {self._cache._timer!r}>"


# ---------------------------------------------------------------------------------------
# Deferred DECREF: a released key or value may run __del__, which may call back into this
# cache, so references are parked here and released only once the structure is consistent.

cdef int _grave_reserve(TTLCache c, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap
    cdef PyObject **grown
    if c.grave_len + n <= c.grave_cap:
        return 0
    cap = max(GRAVE_MIN, 2 * (c.grave_len + n))
    grown = <PyObject **>realloc(c.grave, cap * sizeof(PyObject *))
    if grown == NULL:
        raise MemoryError()
    c.grave = grown
    c.grave_cap = cap
    return 0


cdef inline void _drain(TTLCache c) noexcept:
    """Release parked references one at a time; reentrant calls push and pop safely."""
    cdef PyObject *o
    while c.grave_len:
        c.grave_len -= 1
        o = c.grave[c.grave_len]
        Py_DECREF(<object>o)


# ---------------------------------------------------------------------------------------
# Intrusive lists

cdef inline void _append(TTLCache c, uint32_t i, int L) noexcept:
    cdef int h = L >> 1
    cdef uint32_t t = c.tail[h]
    c.entries[i].links[L] = t
    c.entries[i].links[L + 1] = TTL_NIL
    if t == TTL_NIL:
        c.head[h] = i
    else:
        c.entries[t].links[L + 1] = i
    c.tail[h] = i


cdef inline void _unlink(TTLCache c, uint32_t i, int L) noexcept:
    cdef int h = L >> 1
    cdef uint32_t p = c.entries[i].links[L]
    cdef uint32_t n = c.entries[i].links[L + 1]
    if p == TTL_NIL:
        c.head[h] = n
    else:
        c.entries[p].links[L + 1] = n
    if n == TTL_NIL:
        c.tail[h] = p
    else:
        c.entries[n].links[L] = p


cdef inline void _to_end(TTLCache c, uint32_t i, int L) noexcept:
    if c.tail[L >> 1] != i:
        _unlink(c, i, L)
        _append(c, i, L)


# ---------------------------------------------------------------------------------------
# Hash index

cdef inline uint64_t _mix(Py_hash_t h) noexcept nogil:
    # Fibonacci hashing: h * 2**64/phi mixes even sequential ints (hash(i) == i) into the
    # high bits, which pick the home slot.
    return <uint64_t>h * TTL_GOLDEN


cdef inline uint64_t _home(TTLCache c, uint64_t mix) noexcept nogil:
    # Multiply-shift range reduction: floor(hi32 * tsize / 2**32), i.e. hi32 scaled from
    # [0, 2**32) to [0, tsize) -- any table size works, not only powers of two.
    return ((mix >> 32) * c.tsize) >> 32


cdef inline uint64_t _next(TTLCache c, uint64_t pos) noexcept nogil:
    pos += 1
    return 0 if pos == c.tsize else pos


cdef inline uint64_t _distance(TTLCache c, uint64_t start, uint64_t end) noexcept nogil:
    """Slots from start forward to end, wrapping around: (end - start) mod tsize."""
    return end - start if end >= start else end + c.tsize - start


cdef inline uint8_t _ctrl(uint64_t mix) noexcept nogil:
    # 0x80 | 7 bits of the hash from below the home bits (bits 25..31): a miss is decided
    # from the byte array alone (160 KB for 100,000 entries: it stays in L2).
    return <uint8_t>(0x80 | ((mix >> 25) & 0x7F))


cdef Py_ssize_t _find(TTLCache c, object key, Py_hash_t h) except -2:
    """Entry index holding `key`, or -1. A key's __eq__ may run Python code that changes the
    table; the probe then restarts from the top."""
    cdef uint64_t mix = _mix(h)
    cdef uint8_t tag = _ctrl(mix)
    cdef uint64_t pos, version
    cdef uint8_t b
    cdef uint32_t i
    cdef int equal
    cdef object stored
    _prefetch(&c.slot[_home(c, mix)])   # fetched alongside the ctrl byte, not after it
    while True:
        pos = _home(c, mix)
        while True:
            b = c.ctrl[pos]
            if b == 0:
                return -1
            if b == tag:
                i = c.slot[pos]
                if c.entries[i].key == <PyObject *>key:
                    return i
                if c.entries[i].hash == h:
                    version = c.version
                    stored = <object>c.entries[i].key
                    equal = PyObject_RichCompareBool(stored, key, Py_EQ)
                    stored = None
                    if c.version != version:
                        break
                    if equal:
                        return i
            pos = _next(c, pos)


cdef inline bint _tag_in_run(TTLCache c, uint64_t mix) noexcept:
    """Whether the probe run from mix's home holds a slot with mix's ctrl byte before its first
    empty slot: False proves the key absent from the ctrl bytes alone. Also starts fetching
    the home slot's entry index, so a hit's next load overlaps this one instead of following
    it."""
    cdef uint64_t pos = _home(c, mix)
    cdef uint8_t tag = _ctrl(mix)
    cdef uint8_t b
    _prefetch(&c.slot[pos])
    while True:
        b = c.ctrl[pos]
        if b == tag:
            return True
        if b == 0:
            return False
        pos = _next(c, pos)


cdef inline Py_ssize_t _find_timed(TTLCache c, object key, int64_t *now,
                                   bint read_first) except -2:
    """_find with a compiled clock read into *now, as cachetools reads its timer: before the
    lookup (`read_first`: get) or after it (cache[key]). *now may be unset if the key is
    absent.

    Only a ManualClock can move while the key's __hash__/__eq__ run, so only it is read at
    exactly those points (a plain load). The system clocks are read where it costs least:
    clock_gettime's TSC read (rdtscp, or lfence; rdtsc) waits until every earlier load has
    completed, so it goes after the ctrl bytes (a miss they decide reads no time) and before
    the entry index and the entry, which then arrive while the call goes on instead of
    stalling it twice."""
    cdef bint manual = c.clock.kind == CLOCK_KIND_MANUAL
    cdef Py_hash_t h
    cdef Py_ssize_t i
    if manual and read_first:
        now[0] = clock_now_ns(c.clock)
    h = PyObject_Hash(key)
    if not _tag_in_run(c, _mix(h)):
        return -1
    if not manual:
        now[0] = clock_now_ns(c.clock)
    i = _find(c, key, h)
    if manual and not read_first:
        now[0] = clock_now_ns(c.clock)
    return i


cdef inline void _slot_insert(TTLCache c, uint64_t mix, uint32_t i) noexcept:
    cdef uint64_t pos = _home(c, mix)
    while c.ctrl[pos] != 0:
        pos = _next(c, pos)
    c.ctrl[pos] = _ctrl(mix)
    c.slot[pos] = i
    c.high[pos] = <uint32_t>(mix >> 32)


cdef void _slot_delete(TTLCache c, uint32_t i) noexcept:
    """Remove entry i's slot, shifting later entries of its probe run back (no tombstones)."""
    cdef uint64_t hole = _home(c, _mix(c.entries[i].hash))
    cdef uint64_t j, home
    while c.ctrl[hole] == 0 or c.slot[hole] != i:
        hole = _next(c, hole)
    j = hole
    while True:
        j = _next(c, j)
        if c.ctrl[j] == 0:
            break
        home = _home(c, <uint64_t>c.high[j] << 32)   # mix's high word: no entry is read
        # The entry at j may fill the hole unless its home lies cyclically in (hole, j]:
        # distance(home -> j) < distance(hole -> j).
        if _distance(c, home, j) < _distance(c, hole, j):
            continue
        c.ctrl[hole] = c.ctrl[j]
        c.slot[hole] = c.slot[j]
        c.high[hole] = c.high[j]
        hole = j
    c.ctrl[hole] = 0


cdef inline void _point_table(TTLCache c, uint8_t *block, uint64_t tsize) noexcept:
    """Point ctrl, slot and high into one block of tsize * SLOT_BYTES: the ctrl bytes, then
    the uint32 entry indices, then the uint32 high words (4-aligned: tsize is a multiple
    of 8)."""
    c.ctrl = block
    c.slot = <uint32_t *>(block + tsize)
    c.high = <uint32_t *>(block + 5 * tsize)
    c.tsize = tsize


cdef int _alloc_table(TTLCache c, uint64_t tsize) except -1:
    """A fresh empty index of tsize slots (a multiple of 8), in one block."""
    cdef uint8_t *block = <uint8_t *>malloc(tsize * SLOT_BYTES)
    if block == NULL:
        raise MemoryError()
    memset(block, 0, tsize)
    free(c.ctrl)
    _point_table(c, block, tsize)
    c.version += 1
    return 0


cdef int _rebuild_slots(TTLCache c, uint64_t tsize) except -1:
    """Move to an index of tsize slots holding every live entry."""
    cdef uint32_t i
    _alloc_table(c, tsize)
    i = c.head[INS >> 1]
    while i != TTL_NIL:
        _slot_insert(c, _mix(c.entries[i].hash), i)
        i = c.entries[i].links[INS + 1]
    return 0


cdef uint64_t _table_size_for(uint32_t ecap) noexcept:
    """Slots for ecap entries: 1.6 per entry (load <= 0.625), a multiple of 8, at least 16.
    Linear probing then averages ~1.8 probes per hit and ~4 ctrl bytes per miss."""
    cdef uint64_t tsize = (<uint64_t>ecap * 8 + 4) // 5
    tsize = (tsize + 7) & ~(<uint64_t>7)     # round up to a multiple of 8
    return tsize if tsize > 16 else 16


cdef ttl_entry *_alloc_entries(uint64_t n) noexcept:
    """n entries aligned to a cache line, so each entry is one line. NULL if out of memory."""
    cdef void *block = NULL
    if posix_memalign(&block, CACHE_LINE, n * sizeof(ttl_entry)) != 0:
        return NULL
    return <ttl_entry *>block


cdef int _grow(TTLCache c) except -1:
    """Make room for one more entry: double the entry array (capped at max_count)."""
    cdef uint64_t want = 2 * <uint64_t>c.ecap
    cdef ttl_entry *entries
    if c.ecap >= MAX_ENTRIES:
        raise OverflowError(f"TTLCache holds at most {MAX_ENTRIES} entries")
    if not c.sized and want > <uint64_t>c.max_count:
        want = <uint64_t>c.max_count
    if want > MAX_ENTRIES:
        want = MAX_ENTRIES
    if want <= c.ecap:
        want = c.ecap + 1
    entries = _alloc_entries(want)
    if entries == NULL:
        raise MemoryError()
    memcpy(entries, c.entries, c.ecap * sizeof(ttl_entry))
    free(c.entries)
    c.entries = entries
    c.ecap = <uint32_t>want
    if _table_size_for(c.ecap) > c.tsize:
        _rebuild_slots(c, _table_size_for(c.ecap))
    return 0


cdef inline Py_ssize_t _alloc(TTLCache c) except -1:
    cdef uint32_t i
    if c.free_head != TTL_NIL:
        i = c.free_head
        c.free_head = c.entries[i].links[1]
        return i
    if c.used_top == c.ecap:
        _grow(c)
    i = c.used_top
    c.used_top += 1
    return i


# ---------------------------------------------------------------------------------------
# Entry life cycle

cdef inline void _link_new(TTLCache c, uint32_t i, object key, Py_hash_t h, object value,
                           int64_t expires) noexcept:
    cdef ttl_entry *e = &c.entries[i]
    Py_INCREF(key)
    Py_INCREF(value)
    e.key = <PyObject *>key
    e.value = <PyObject *>value
    e.hash = h
    e.expires = expires
    e.size = NULL
    _slot_insert(c, _mix(h), i)
    _append(c, i, LRU)
    _append(c, i, EXP)
    _append(c, i, INS)
    c.count += 1
    c.version += 1


cdef int _drop(TTLCache c, uint32_t i) except -1:
    """Unlink entry i everywhere; its key and value references go to the grave."""
    cdef ttl_entry *e = &c.entries[i]
    cdef PyObject *size
    _grave_reserve(c, 3)
    if c.sized:
        size = e.size
        c._currsize = c._currsize - <object>size
        e.size = NULL
        Py_DECREF(<object>size)   # an int or float: releasing it runs no Python code
    _slot_delete(c, i)
    _unlink(c, i, LRU)
    _unlink(c, i, EXP)
    _unlink(c, i, INS)
    c.grave[c.grave_len] = e.key
    c.grave[c.grave_len + 1] = e.value
    c.grave_len += 2
    if c.obj_mode:
        c.grave[c.grave_len] = _exp_obj(e)
        c.grave_len += 1
        e.expires = 0
    e.key = NULL
    e.value = NULL
    e.links[1] = c.free_head
    c.free_head = i
    c.count -= 1
    c.version += 1
    return 0


cdef int _expire_until(TTLCache c, ttl_now *now, list out) except -1:
    """Remove items with expires <= now from the front of the EXP list (cachetools expire)."""
    cdef uint32_t i
    while c.head[EXP >> 1] != TTL_NIL:
        i = c.head[EXP >> 1]
        if _alive(c, now, i):
            break
        if out is not None:
            out.append((<object>c.entries[i].key, <object>c.entries[i].value))
        _drop(c, i)
    return 0


cdef inline int _expire(TTLCache self, ttl_now *now) except -1:
    """Expire at `now`, through a subclass's expire() when it overrides it."""
    cdef uint32_t head
    if self.hook_expire:
        self.expire(_time_object(self, now))
        return 0
    if not self.obj_mode:
        head = self.head[EXP >> 1]
        if head == TTL_NIL or now.key < self.entries[head].expires:
            return 0        # nothing has expired (the common case), decided without a call
    _expire_until(self, now, None)
    return 0


cdef int _evict(TTLCache self) except -1:
    """Make room once: popitem() semantics (expire at the frozen time, then drop the LRU)."""
    cdef uint32_t i
    if self.hook_popitem:
        self.popitem()
        return 0
    i = self.head[LRU >> 1]
    if i == TTL_NIL:
        raise KeyError(f"{type(self).__name__} is empty")
    _drop(self, i)
    return 0


cdef object _checked_size(TTLCache c, object value):
    """getsizeof(value) as an exact int or a float, validated against maxsize."""
    size = c._getsizeof(value)
    if type(size) is not int and type(size) is not float:
        if isinstance(size, float):
            size = float(size)
        else:
            try:
                size = operator.index(size)
            except TypeError:
                raise TypeError(f"getsizeof must return a number, got {shown(size)}") from None
    if size != size:
        raise ValueError("value size must not be NaN")
    if size > c._maxsize:
        raise ValueError("value too large")
    if size < 0:
        raise ValueError("value size must be non-negative")
    return size


cdef inline void _prefetch_heads(TTLCache c) noexcept:
    """Start fetching, before the key is even hashed, what a set reads and writes besides the
    key's own slot: the expiry-list head (the expiry check) and, when the cache is full, the
    LRU head (the likely victim) with the lines that evicting it writes: its key object
    (released at the end) and its home slot (ctrl, index and high word, emptied by the
    back-shift). They arrive while the key is hashed and looked up instead of one cache miss
    after another. If the set turns out to be an overwrite the victim's lines are wasted (a
    few lines of bandwidth), unless the key is the LRU head itself (a round robin)."""
    cdef ttl_entry *victim
    cdef uint64_t home
    if c.head[EXP >> 1] != TTL_NIL:
        _prefetch(&c.entries[c.head[EXP >> 1]])
    if c.count >= c.max_count and not c.sized and c.head[LRU >> 1] != TTL_NIL:
        victim = &c.entries[c.head[LRU >> 1]]
        home = _home(c, _mix(victim.hash))
        _prefetch(victim.key)
        _prefetch(&c.ctrl[home])
        _prefetch(&c.slot[home])
        _prefetch(&c.high[home])


cdef inline void _prefetch_insert(TTLCache c, uint64_t mix) noexcept:
    """A miss about to insert: fetch its home's entry index and high word (the probe just
    read the ctrl byte), alongside the eviction's misses."""
    cdef uint64_t home = _home(c, mix)
    _prefetch(&c.slot[home])
    _prefetch(&c.high[home])


cdef int _set_entry(TTLCache self, object key, object value, ttl_now *given) except -1:
    """cachetools TTLCache.__setitem__: validate, expire, evict, then insert or overwrite."""
    cdef Py_hash_t h
    cdef ttl_now now
    cdef Py_ssize_t i
    cdef int64_t expires
    cdef PyObject *old
    cdef bint obj_mode
    # The time is read first, as cachetools reads its timer first; for a compiled clock it is
    # also where the read costs least: clock_gettime's TSC read waits for every load in
    # flight, and here none of this call's cache misses (key, slots, entries) has started.
    # The cache's time then stays frozen until the set is done, as in cachetools' `with
    # self.timer`: Python code the set runs (a key's __hash__ or __eq__, getsizeof, a hook)
    # sees this time too, so an item it stores gets no later expiry than this one, which is
    # linked after it, and the expiry list stays in order.
    if given != NULL:
        now = given[0]              # the caller holds now.obj
    else:
        _now(self, &now)
        if self.timer_mode:
            keep = _keep(&now)
    if self.timer_mode:
        _freeze_at(self, &now)
    else:
        if self.freeze_depth == 0:
            self.frozen = now       # a clock's time: now.obj is NULL
        self.freeze_depth += 1
    try:
        _prefetch_heads(self)
        h = PyObject_Hash(key)
        size = None
        if self.sized:
            size = _checked_size(self, value)
        elif self.max_count < 1:
            raise ValueError("value too large")
        obj_mode = self.obj_mode
        if obj_mode:
            exp_obj = _expiry_object(self, &now)
        else:
            expires = _expires_at(self, &now)
        i = _find(self, key, h)
        if i < 0:
            _prefetch_insert(self, _mix(h))
        _expire(self, &now)
        if i >= 0 and (self.entries[i].key == NULL or self.hook_expire):
            i = _find(self, key, h)   # the key itself expired (or a hook ran): look again
        if not self.sized:
            if i < 0:
                while self.count >= self.max_count:
                    _evict(self)
                if self.hook_popitem:
                    i = _find(self, key, h)
        else:
            if i < 0:
                diff = size
            else:
                diff = size - <object>self.entries[i].size
            while self._currsize + diff > self._maxsize:
                _evict(self)
                if self.hook_popitem:
                    i = _find(self, key, h)
                elif i >= 0 and self.entries[i].key == NULL:
                    i = -1
                if i < 0:
                    diff = size
        if self.obj_mode != obj_mode:
            # Python code run above (a key's __eq__, a hook) re-initialised the cache with
            # another kind of ttl: the expiry computed for the old one cannot be stored.
            raise RuntimeError("TTLCache was re-initialised with another ttl during the call")
        if i >= 0:
            if obj_mode:
                _grave_reserve(self, 2)     # the old value and the old expiry
            old = self.entries[i].value
            if Py_REFCNT(<object>old) > 1:
                # Someone else holds the old value: this DECREF cannot free it or run code.
                Py_INCREF(value)
                self.entries[i].value = <PyObject *>value
                Py_DECREF(<object>old)
            else:
                _grave_reserve(self, 1)
                Py_INCREF(value)
                self.entries[i].value = <PyObject *>value
                self.grave[self.grave_len] = old
                self.grave_len += 1
            if obj_mode:
                self.grave[self.grave_len] = _exp_obj(&self.entries[i])
                self.grave_len += 1
                Py_INCREF(exp_obj)
                self.entries[i].expires = <int64_t><intptr_t><PyObject *>exp_obj
            else:
                self.entries[i].expires = expires
            _to_end(self, i, LRU)
            _to_end(self, i, EXP)
            if self.sized:
                Py_DECREF(<object>self.entries[i].size)
        else:
            i = _alloc(self)
            if obj_mode:
                Py_INCREF(exp_obj)
                expires = <int64_t><intptr_t><PyObject *>exp_obj
            _link_new(self, i, key, h, value, expires)
            diff = size
        if self.sized:
            Py_INCREF(size)
            self.entries[i].size = <PyObject *>size
            self._currsize = self._currsize + diff
    finally:
        _thaw(self)
        _drain(self)
    if FASTCORE_DEBUG:
        _check_invariants(self)
    return 0


cdef int _alive_lookup(TTLCache self, object key, Py_ssize_t *index, ttl_now *now,
                       bint have_now) except -1:
    """Find `key`: 1 if present and alive at `now`, else 0 (*index = -1 when absent).

    Without `have_now` the time is read only when the key is present, as cachetools'
    __getitem__/__contains__ do; a timer call that changed the cache makes the lookup repeat.
    The time read here is the caller's to use only when it is a clock's (now.obj, a timer's
    value, is released on return).
    """
    cdef Py_hash_t h = PyObject_Hash(key)
    cdef Py_ssize_t i = _find(self, key, h)
    cdef uint64_t version
    cdef int alive
    index[0] = i
    if i < 0:
        return 0
    if have_now:
        return _alive(self, now, i)
    version = self.version
    _now(self, now)
    if self.timer_mode:
        keep = _keep(now)
    if self.version != version:
        i = _find(self, key, h)
        index[0] = i
    alive = 0 if i < 0 else _alive(self, now, i)
    now.obj = NULL      # released with `keep` on return: not the caller's
    return alive


# ---------------------------------------------------------------------------------------
# GC support: the entries hold references the generated tp_traverse does not know about.

cdef fc_traverseproc _base_traverse = NULL
cdef fc_inquiry _base_clear = NULL


cdef int _ttl_traverse(PyObject *o, fc_visitproc visit, void *arg) noexcept:
    cdef TTLCache c = <TTLCache>o
    cdef uint32_t i
    cdef int r
    i = c.head[INS >> 1] if c.entries != NULL else TTL_NIL
    while i != TTL_NIL:
        r = visit(c.entries[i].key, arg)
        if r:
            return r
        r = visit(c.entries[i].value, arg)
        if r:
            return r
        if c.obj_mode:
            r = visit(_exp_obj(&c.entries[i]), arg)
            if r:
                return r
        i = c.entries[i].links[INS + 1]
    return _base_traverse(o, visit, arg)


cdef int _ttl_clear(PyObject *o) noexcept:
    """Break reference cycles through the cache: release the items, then the callables that
    may refer back to it. The typed clock stays (clocks hold no references), so a call that
    reaches a cleared cache raises instead of crashing."""
    cdef TTLCache c = <TTLCache>o
    _release_all(c)
    if c.timer_mode:
        c._timer = None
    c.freeze_depth = 0          # frozen.obj points into _frozen_obj
    c._frozen_obj = None
    c._getsizeof = None
    if _base_clear != NULL:
        return _base_clear(o)
    return 0


cdef void _release_all(TTLCache c) noexcept:
    """Empty the cache: reset to fresh arrays first, then release the old references, so a
    __del__ running meanwhile sees a consistent (empty) cache."""
    cdef ttl_entry *entries = c.entries
    cdef uint8_t *ctrl = c.ctrl
    cdef uint64_t tsize = c.tsize
    cdef uint32_t i = c.head[INS >> 1] if entries != NULL else TTL_NIL
    cdef uint32_t nxt
    cdef bint obj_mode = c.obj_mode
    c.entries = NULL
    c.ctrl = NULL
    if _reset(c) < 0:
        # Out of memory while emptying: keep the old arrays; the caller reports it.
        c.entries = entries
        _point_table(c, ctrl, tsize)
        return
    while i != TTL_NIL:
        nxt = entries[i].links[INS + 1]
        Py_DECREF(<object>entries[i].key)
        Py_DECREF(<object>entries[i].value)
        if entries[i].size != NULL:
            Py_DECREF(<object>entries[i].size)
        if obj_mode:
            Py_DECREF(<object>_exp_obj(&entries[i]))
        i = nxt
    free(entries)
    free(ctrl)


cdef int _reset(TTLCache c) noexcept:
    """Fresh empty arrays (MIN_ENTRIES entries). Returns -1 if out of memory."""
    c.entries = _alloc_entries(MIN_ENTRIES)
    if c.entries == NULL:
        return -1
    try:
        _alloc_table(c, _table_size_for(MIN_ENTRIES))
    except MemoryError:
        free(c.entries)
        c.entries = NULL
        return -1
    c.ecap = MIN_ENTRIES
    c.used_top = 0
    c.free_head = TTL_NIL
    c.count = 0
    for k in range(3):
        c.head[k] = TTL_NIL
        c.tail[k] = TTL_NIL
    c._currsize = 0
    return 0


# ---------------------------------------------------------------------------------------

def _unit_size(value):
    """The size of a value in a cache without getsizeof: 1 (cachetools' Cache.getsizeof)."""
    return 1


@cython.final
cdef class _GetSizeOf:
    """``TTLCache.getsizeof``, as cachetools has it: on a cache, the ``getsizeof`` callable
    it was given (the object itself), else a function returning 1; on the class, that
    function."""

    def __get__(self, obj, owner):
        if obj is None:
            return _unit_size
        getsizeof = (<TTLCache?>obj)._getsizeof
        return _unit_size if getsizeof is None else getsizeof


@cython.no_gc_clear   # _ttl_clear clears what can form cycles; see there
cdef class TTLCache:
    """TTLCache(maxsize, ttl, timer=None, getsizeof=None, *, clock=None)
--

LRU cache with a per-item time to live: a compiled drop-in for ``cachetools.TTLCache``.

    ``TTLCache(maxsize, ttl, timer=time.monotonic, getsizeof=None, *, clock=None)``.
    ``ttl`` is in seconds (``math.inf``: never expires). Time comes from ``clock`` (a
    ``fastcore`` clock, read in C: ``None``/``time.monotonic`` mean ``CLOCK_MONOTONIC``,
    ``CoarseClock()`` is cheaper at millisecond resolution, ``ManualClock`` for tests), or
    from a ``timer`` callable (slower: one Python call per time read) returning seconds, or
    any time its ``ttl`` adds to, as cachetools (``timer=datetime.now`` with a
    ``timedelta``). An item is gone once ``now >= set_time + ttl``; when full, expired items
    go first, then the least recently used. ``cache.timer`` is cachetools' timer wrapper
    (``with cache.timer as now:`` freezes the time for a compound operation).

    Raises ``ValueError`` for a negative or NaN ``maxsize``/``ttl`` and ``value too large``
    for an item larger than ``maxsize``; ``KeyError`` like a dict; ``TypeError`` for an
    unhashable key. A failed call changes nothing.

    Example::

        cache = TTLCache(maxsize=1024, ttl=600)
        cache["user:1"] = profile
        cache.get("user:1")
    """

    def __cinit__(self, *args, **kwargs):
        cls = type(self)
        if cls is not TTLCache:
            self.hook_missing = cls.__missing__ is not TTLCache.__missing__
            self.hook_getitem = cls.__getitem__ is not TTLCache.__getitem__
            self.hook_contains = cls.__contains__ is not TTLCache.__contains__
            self.hook_delitem = cls.__delitem__ is not TTLCache.__delitem__
            self.hook_popitem = cls.popitem is not TTLCache.popitem
            self.hook_expire = cls.expire is not TTLCache.expire
            self.hook_setitem = cls.__setitem__ is not TTLCache.__setitem__
        self.clock = clock_resolve(None)
        self._timer = self.clock
        self._maxsize = 0
        self._ttl = 0
        self._getsizeof = None
        if _reset(self) < 0:
            raise MemoryError()

    def __init__(self, maxsize, ttl, timer=_time.monotonic, getsizeof=None, *, clock=None):
        cdef int64_t ttl_ns = 0
        number = as_real(maxsize)
        if number is None or isinstance(number, Fraction):
            raise TypeError(f"maxsize must be a number, got {shown(maxsize)}")
        maxsize = number
        if maxsize != maxsize:
            raise ValueError("maxsize must not be NaN")
        if maxsize < 0:
            raise ValueError("maxsize must be non-negative")
        if isinstance(timer, Clock):
            if clock is not None and clock is not timer:
                raise TypeError("pass either timer= or clock=, not both")
            clock = timer
        elif timer is None or timer is _time.monotonic:
            pass
        elif not callable(timer):
            raise TypeError(f"timer must be callable, got {shown(timer)}")
        elif clock is not None:
            raise TypeError("pass either timer= or clock=, not both")
        timer_mode = not (timer is None or timer is _time.monotonic or isinstance(timer, Clock))
        # An int or float ttl (numpy scalars included) counts seconds. With a timer, any
        # other ttl but None and bool (a timedelta, a Fraction, a Decimal) is added to the
        # timer's values as it is, as cachetools does ("object mode").
        number = as_real(ttl)
        number_ttl = number is not None and not isinstance(number, Fraction)
        if number_ttl:
            ttl = number
            if ttl != ttl or ttl < 0:
                raise ValueError(f"ttl must be a number of seconds >= 0, got {shown(ttl)}")
            ttl_ns = INT64_MAX if ttl == float("inf") else min(seconds_to_ns(ttl, "ttl"),
                                                                 INT64_MAX)
        elif not timer_mode or ttl is None or isinstance(ttl, bool):
            raise TypeError(
                f"ttl must be a number of seconds, got {shown(ttl)} (a ttl of another type "
                "needs a timer whose values it adds to, as timer=datetime.now with a timedelta)")
        elif isinstance(ttl, _timedelta) and ttl < _timedelta(0):
            raise ValueError(f"ttl must be >= 0, got {shown(ttl)}")
        if getsizeof is None and type(self).getsizeof is not TTLCache.getsizeof:
            getsizeof = self.getsizeof
        if getsizeof is not None and not callable(getsizeof):
            raise TypeError(f"getsizeof must be callable, got {shown(getsizeof)}")
        resolved = clock_resolve(clock)
        # __init__ again empties the cache. Items stored meanwhile (by a __del__ the release
        # runs) are released too, so none is left in the old time representation; the old
        # settings are released only on return, once the new ones are in place.
        while True:
            _release_all(self)
            if self.entries == NULL:
                raise MemoryError()
            if self.count == 0:
                break
        previous = (self.clock, self._timer, self._ttl, self._getsizeof, self._frozen_obj)
        self.freeze_depth = 0       # a frozen time belongs to the old settings
        self._frozen_obj = None
        self.sized = getsizeof is not None
        self.clock = resolved
        self.timer_mode = timer_mode
        self.obj_mode = timer_mode and not number_ttl
        self._timer = timer if timer_mode else resolved
        self._maxsize = maxsize
        self._ttl = ttl
        self.ttl_ns = ttl_ns
        self.ttl_f = _as_double(ttl) if number_ttl else 0.0
        self._getsizeof = getsizeof
        self.max_count = <int64_t>floor(min(<double>maxsize, <double>MAX_ENTRIES)) \
            if maxsize < MAX_ENTRIES else MAX_ENTRIES
        self._currsize = 0

    def __dealloc__(self):
        _release_all(self)
        free(self.entries)
        free(self.ctrl)
        self.entries = NULL
        self.ctrl = NULL
        _drain(self)
        free(self.grave)

    @classmethod
    def __class_getitem__(cls, item):
        return GenericAlias(cls, item)

    # -- reading ---------------------------------------------------------------------

    def __getitem__(self, key):
        cdef Py_ssize_t i
        cdef ttl_now now
        if not self.timer_mode and not self.freeze_depth:
            # The hot path: compiled clock, read only when the key may be present.
            i = _find_timed(self, key, &now.key, False)
            if i >= 0:
                _to_end(self, i, LRU)
                if now.key < self.entries[i].expires:
                    return <object>self.entries[i].value
        else:
            alive = _alive_lookup(self, key, &i, &now, False)
            if i >= 0:
                _to_end(self, i, LRU)
                if alive:
                    return <object>self.entries[i].value
        if self.hook_missing:
            return self.__missing__(key)
        raise KeyError(key)

    def __missing__(self, key):
        raise KeyError(key)

    def __contains__(self, key):
        cdef Py_ssize_t i
        cdef ttl_now now
        return _alive_lookup(self, key, &i, &now, False) == 1

    def get(self, key, default=None):
        """The value for ``key`` if present and not expired (marking it recently used), else
        ``default``."""
        cdef Py_ssize_t i
        cdef ttl_now now
        if self.hook_getitem or self.hook_contains:
            _freeze(self)
            try:
                return self[key] if key in self else default
            finally:
                _thaw(self)
        if not self.timer_mode and not self.freeze_depth:
            i = _find_timed(self, key, &now.key, True)
            if i >= 0 and now.key < self.entries[i].expires:
                _to_end(self, i, LRU)
                return <object>self.entries[i].value
            return default
        keep = _read_now(self, &now)   # once, before looking (cachetools: a frozen timer)
        if _alive_lookup(self, key, &i, &now, True):
            _to_end(self, i, LRU)
            return <object>self.entries[i].value
        return default

    def __len__(self):
        cdef ttl_now now
        keep = _read_now(self, &now)
        _freeze_at(self, &now)
        try:
            _expire(self, &now)
        finally:
            _thaw(self)
            _drain(self)
        return self.count

    @property
    def currsize(self):
        """The current size: the item count, or the sum of getsizeof() over the items.
        Expired items are removed first."""
        cdef ttl_now now
        keep = _read_now(self, &now)
        _freeze_at(self, &now)
        try:
            _expire(self, &now)
        finally:
            _thaw(self)
            _drain(self)
        return self.count if not self.sized else self._currsize

    @property
    def maxsize(self):
        """The maximum size of the cache (as given)."""
        return self._maxsize

    @property
    def ttl(self):
        """The time to live of the items, as given (seconds, or e.g. a timedelta)."""
        return self._ttl

    @property
    def timer(self):
        """The time source wrapped as cachetools wraps it: ``cache.timer()`` returns the time
        (seconds from a compiled clock, else the timer's own value), ``with cache.timer as
        now:`` freezes it for a compound operation, and other attributes are the clock's or
        timer's own (``cache.timer.advance(1)``). A new wrapper on every access."""
        return _Timer.__new__(_Timer, self)

    getsizeof = _GetSizeOf()

    def __iter__(self):
        return _iterate(self)

    def keys(self):
        return KeysView(self)

    def values(self):
        return ValuesView(self)

    def items(self):
        return ItemsView(self)

    def __eq__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    def __ne__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) != dict(other.items())

    __hash__ = None
    __reversed__ = None     # as for every Mapping: not a sequence of len() indices

    def __repr__(self):
        cdef ttl_now now
        cdef uint32_t i
        keep = _read_now(self, &now)
        _freeze_at(self, &now)
        try:
            _expire(self, &now)
            data = {}
            i = self.head[INS >> 1]
            while i != TTL_NIL:
                data[<object>self.entries[i].key] = <object>self.entries[i].value
                i = self.entries[i].links[INS + 1]
            return "%s(%r, maxsize=%r, currsize=%r)" % (
                type(self).__name__, data, self._maxsize,
                self.count if not self.sized else self._currsize)
        finally:
            _thaw(self)
            _drain(self)

    def _check_invariants(self):
        """Verify the .pxd invariants (O(n)); raises AssertionError naming the first broken
        one. For tests and FASTCORE_DEBUG builds."""
        _check_invariants(self)

    def __sizeof__(self):
        return self.memory_bytes()

    def memory_bytes(self):
        """Bytes held by the cache's own arrays (entries and index), excluding the key, value
        and size objects."""
        cdef size_t total = sizeof(TTLCache)
        total += self.ecap * sizeof(ttl_entry) + self.tsize * SLOT_BYTES
        total += self.grave_cap * sizeof(PyObject *)
        return total

    # -- writing ---------------------------------------------------------------------

    def __setitem__(self, key, value):
        _set_entry(self, key, value, NULL)

    def __delitem__(self, key):
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef Py_ssize_t i = _find(self, key, h)
        cdef ttl_now now
        cdef int64_t expires
        cdef bint obj_mode = self.obj_mode
        if i < 0:
            raise KeyError(key)
        expires = self.entries[i].expires
        if obj_mode:
            expiry = <object>_exp_obj(&self.entries[i])
        try:
            _drop(self, i)
        finally:
            _drain(self)
        keep = _read_now(self, &now)     # after the removal, as cachetools reads it
        if obj_mode:
            alive = PyObject_RichCompareBool(_time_of(&now), expiry, Py_LT)
        else:
            alive = now.key < expires
        if not alive:
            raise KeyError(key)

    def pop(self, key, default=_MARKER):
        """Remove ``key`` and return its value; if absent or expired return ``default``, or
        raise ``KeyError`` without one."""
        cdef Py_ssize_t i
        cdef ttl_now now
        cdef bint have_now = self.timer_mode
        if have_now:
            keep = _read_now(self, &now)
        if self.hook_getitem or self.hook_contains or self.hook_delitem:
            if have_now:
                _freeze_at(self, &now)  # the time just read: one timer call, as cachetools
            else:
                _freeze(self)
            try:
                if key in self:
                    value = self[key]
                    del self[key]
                    return value
            finally:
                _thaw(self)
        elif _alive_lookup(self, key, &i, &now, have_now):
            value = <object>self.entries[i].value
            try:
                _drop(self, i)
            finally:
                _drain(self)
            return value
        if default is not _MARKER:
            return default
        raise KeyError(key)

    def setdefault(self, key, default=None):
        """The value for ``key`` if present and alive; else set it to ``default`` and return
        ``default``."""
        cdef Py_ssize_t i
        cdef ttl_now now
        if self.hook_getitem or self.hook_contains or self.hook_setitem:
            _freeze(self)
            try:
                if key in self:
                    return self[key]
                self[key] = default
                return default
            finally:
                _thaw(self)
        if not self.timer_mode:
            if _alive_lookup(self, key, &i, &now, False):
                _to_end(self, i, LRU)
                return <object>self.entries[i].value
            _set_entry(self, key, default, &now if i >= 0 else NULL)
            return default
        keep = _read_now(self, &now)    # once, frozen for the call (cachetools' `with`)
        _freeze_at(self, &now)
        try:
            if _alive_lookup(self, key, &i, &now, True):
                _to_end(self, i, LRU)
                return <object>self.entries[i].value
            _set_entry(self, key, default, &now)
            return default
        finally:
            _thaw(self)

    def popitem(self):
        """Remove and return the least recently used ``(key, value)`` pair that has not
        expired; ``KeyError`` if there is none."""
        cdef ttl_now now
        cdef uint32_t i
        _freeze(self)
        try:
            keep = _read_now(self, &now)    # the frozen time
            _expire(self, &now)
            i = self.head[LRU >> 1]
            if i == TTL_NIL:
                raise KeyError(f"{type(self).__name__} is empty") from None
            key = <object>self.entries[i].key
            value = <object>self.entries[i].value
            if self.hook_delitem:
                del self[key]
            else:
                _drop(self, i)
            return (key, value)
        finally:
            _thaw(self)
            _drain(self)

    def expire(self, time=None):
        """Remove expired items and return them as a list of ``(key, value)`` pairs.

        ``time`` (on the cache's timeline, as ``cache.timer()`` returns it: seconds, or the
        timer's values) defaults to now; items with ``time >= expiry`` go, in expiry order.
        """
        cdef ttl_now now
        cdef list out = []
        if time is None:
            keep = _read_now(self, &now)
        else:
            _time_from_object(self, time, &now)
            if self.timer_mode:
                keep = _keep(&now)
        try:
            _expire_until(self, &now, out)
        finally:
            _drain(self)
        if FASTCORE_DEBUG:
            _check_invariants(self)
        return out

    def clear(self):
        """Remove every item (expired or not)."""
        _release_all(self)
        if self.entries == NULL:
            raise MemoryError()

    def update(self, other=(), /, **kwds):
        """``D.update(other, **kwds)`` as for any MutableMapping (each item set in turn)."""
        if isinstance(other, Mapping):
            for key in other:
                self[key] = other[key]
        elif hasattr(other, "keys"):
            for key in other.keys():
                self[key] = other[key]
        else:
            for key, value in other:
                self[key] = value
        for key, value in kwds.items():
            self[key] = value

    def __reduce__(self):
        """Pickle support: configuration, then the items with their expiries and sizes in
        insertion order, and the LRU and expiry orders as positions in that list."""
        cdef uint32_t i
        cdef dict position = {}
        items, lru, exp = [], [], []
        i = self.head[INS >> 1]
        while i != TTL_NIL:
            position[i] = len(items)
            items.append((<object>self.entries[i].key, <object>self.entries[i].value,
                          <object>_exp_obj(&self.entries[i]) if self.obj_mode
                          else self.entries[i].expires,
                          <object>self.entries[i].size if self.sized else None))
            i = self.entries[i].links[INS + 1]
        for order, L in ((lru, LRU), (exp, EXP)):
            i = self.head[L >> 1]
            while i != TTL_NIL:
                order.append(position[i])
                i = self.entries[i].links[L + 1]
        timer, clock = (self._timer, None) if self.timer_mode else (None, _clock_state(self.clock))
        config = (self._maxsize, self._ttl, timer, self._getsizeof, clock)
        state = getattr(self, "__dict__", None)
        return (_restore, (type(self), config, items, lru, exp), state)

    def __copy__(self):
        cls = type(self)
        other = cls.__new__(cls)
        _copy_into(<TTLCache>other, self)
        if hasattr(self, "__dict__"):
            other.__dict__.update(self.__dict__)
        return other


cdef int _check_invariants(TTLCache c) except -1:
    cdef uint32_t i, prev, n
    cdef uint64_t pos, home, filled = 0
    cdef int L
    seen = {}
    for L in (LRU, EXP, INS):
        n = 0
        prev = TTL_NIL
        i = c.head[L >> 1]
        while i != TTL_NIL:
            assert i < c.used_top and c.entries[i].key != NULL, f"list {L}: dead entry {i}"
            assert c.entries[i].links[L] == prev, f"list {L}: bad prev link at {i}"
            seen[i] = seen.get(i, 0) + 1
            prev = i
            i = c.entries[i].links[L + 1]
            n += 1
            assert n <= c.count, f"list {L} is longer than count {c.count}"
        assert c.tail[L >> 1] == prev, f"list {L}: tail is not the last entry"
        assert n == c.count, f"list {L} holds {n} entries, count is {c.count}"
    assert all(k == 3 for k in seen.values()), "an entry is missing from a list"
    total = 0
    for pos in range(c.tsize):
        if c.ctrl[pos] == 0:
            continue
        filled += 1
        i = c.slot[pos]
        assert i in seen, f"slot {pos} points at dead entry {i}"
        mix = _mix(c.entries[i].hash)
        assert c.ctrl[pos] == _ctrl(mix) and c.high[pos] == (mix >> 32), \
            f"slot {pos} does not match entry {i}'s hash"
        home = _home(c, mix)
        while home != pos:       # no empty slot between an entry's home and its slot
            assert c.ctrl[home] != 0, f"hole in the probe run of entry {i}"
            home = _next(c, home)
        if c.sized:
            total = total + <object>c.entries[i].size
        if c.obj_mode:
            assert _exp_obj(&c.entries[i]) != NULL, f"entry {i} has no expiry object"
    assert filled == c.count, f"{filled} slots for {c.count} entries"
    if c.sized:
        assert total == c._currsize, f"sizes sum to {total}, currsize is {c._currsize}"
    assert c.count <= c.max_count or c.sized, "more entries than maxsize"
    return 0


cdef object _clock_state(Clock clock):
    """A compiled clock as picklable data: None (CLOCK_MONOTONIC), "coarse", or a
    ManualClock's time in ns (the copy gets its own ManualClock at that time)."""
    if isinstance(clock, ManualClock):
        return clock.now_ns
    if isinstance(clock, CoarseClock):
        return "coarse"
    return None


def _restore(cls, config, items, lru, exp):
    """Rebuild a pickled cache (see TTLCache.__reduce__)."""
    cdef TTLCache c = cls.__new__(cls)
    cdef Py_ssize_t i
    cdef uint32_t at
    cdef int64_t e64
    cdef Py_hash_t h
    maxsize, ttl, timer, getsizeof, clock = config
    if clock == "coarse":
        clock = CoarseClock()
    elif clock is not None:
        manual = ManualClock()
        manual.set_ns(clock)
        clock = manual
    TTLCache.__init__(c, maxsize, ttl, timer, getsizeof, clock=clock)
    if sorted(lru) != list(range(len(items))) or sorted(exp) != list(range(len(items))):
        raise ValueError("corrupt TTLCache pickle: orders do not match the items")
    slots = []
    for key, value, expires, size in items:
        h = PyObject_Hash(key)
        if c.obj_mode:
            at = _alloc(c)
            Py_INCREF(expires)
            _link_new(c, at, key, h, value, <int64_t><intptr_t><PyObject *>expires)
        else:
            e64 = expires
            at = _alloc(c)
            _link_new(c, at, key, h, value, e64)
        if c.sized:
            Py_INCREF(size)
            c.entries[at].size = <PyObject *>size
            c._currsize = c._currsize + size
        slots.append(at)
    for order, L in ((lru, LRU), (exp, EXP)):
        c.head[L >> 1] = c.tail[L >> 1] = TTL_NIL
        for i in order:
            _append(c, <uint32_t>slots[i], L)
    return c


def _iterate(TTLCache c):
    """cachetools' TTLCache.__iter__: a snapshot of keys in insertion order, taken at the first
    next(); each key is yielded if still present and alive when reached."""
    cdef uint32_t i = c.head[INS >> 1]
    cdef Py_ssize_t j
    cdef ttl_now now
    keys = []
    while i != TTL_NIL:
        keys.append(<object>c.entries[i].key)
        i = c.entries[i].links[INS + 1]
    for key in keys:
        keep = _read_now(c, &now)   # cachetools freezes the time per key
        if _alive_lookup(c, key, &j, &now, True):
            yield key


cdef int _copy_into(TTLCache dst, TTLCache src) except -1:
    """Make dst (fresh from __new__) an independent copy of src: same configuration, items,
    orders and expiries."""
    cdef uint32_t i
    cdef ttl_entry *entries = _alloc_entries(src.ecap)
    cdef uint64_t tsize = src.tsize
    cdef uint8_t *ctrl = <uint8_t *>malloc(tsize * SLOT_BYTES)
    if entries == NULL or ctrl == NULL:
        free(entries)
        free(ctrl)
        raise MemoryError()
    _release_all(dst)
    free(dst.entries)
    free(dst.ctrl)
    memcpy(entries, src.entries, src.ecap * sizeof(ttl_entry))
    memcpy(ctrl, src.ctrl, tsize * SLOT_BYTES)
    dst.entries = entries
    _point_table(dst, ctrl, tsize)
    dst.ecap = src.ecap
    dst.used_top = src.used_top
    dst.free_head = src.free_head
    dst.count = src.count
    for k in range(3):
        dst.head[k] = src.head[k]
        dst.tail[k] = src.tail[k]
    dst.sized = src.sized
    dst.timer_mode = src.timer_mode
    dst.obj_mode = src.obj_mode
    dst.clock = src.clock
    dst._timer = src._timer
    dst._maxsize = src._maxsize
    dst._ttl = src._ttl
    dst.ttl_ns = src.ttl_ns
    dst.ttl_f = src.ttl_f
    dst._getsizeof = src._getsizeof
    dst.max_count = src.max_count
    dst._currsize = src._currsize
    i = dst.head[INS >> 1]
    while i != TTL_NIL:
        Py_INCREF(<object>dst.entries[i].key)
        Py_INCREF(<object>dst.entries[i].value)
        if dst.entries[i].size != NULL:
            Py_INCREF(<object>dst.entries[i].size)
        if dst.obj_mode:
            Py_INCREF(<object>_exp_obj(&dst.entries[i]))
        i = dst.entries[i].links[INS + 1]
    return 0


MutableMapping.register(TTLCache)

_base_traverse = (<fc_type *>TTLCache).tp_traverse
_base_clear = (<fc_type *>TTLCache).tp_clear
(<fc_type *>TTLCache).tp_traverse = _ttl_traverse
(<fc_type *>TTLCache).tp_clear = _ttl_clear
