# TTLCache: a compiled drop-in for cachetools.TTLCache.
#
# Promise: the behaviour of cachetools.TTLCache (8.x) -- the same results, errors, iteration
# order, eviction order (expired items first, then the least recently used) and expiry rule
# (an item is gone once now >= its expiry, expiry = time of the last set + ttl) -- with the
# table, the orders and the clock read kept in C. Keys and values are held by strong
# references. Every public call holds the GIL from start to end and never leaves the table
# half-updated while Python code (a key's __hash__/__eq__, a user timer or getsizeof, a
# time object's + or <, a __del__ run by a DECREF, a subclass hook) can run, so it is safe
# under threads and reentrant calls.
#
# State layout (per cache; ecap = entry capacity, tsize = slot count = 1.6 * ecap rounded up):
#   entries  ecap * 64 B   ttl_entry, one cache line each: key 8, value 8, hash 8, expires 8,
#                          size 8 (getsizeof's result, else NULL), six uint32 links 24
#   ctrl     tsize * 1 B   open-addressing index, linear probing: 0 = empty, else
#                          0x80 | 7 hash bits, so most misses never leave this byte array
#   slot     tsize * 4 B   entry index: all a hit reads besides ctrl
#   high     tsize * 4 B   high 32 bits of mix: deletion's back-shift finds each slot's home
#                          here without reading entries
#   grave    references waiting for their DECREF until the structure is consistent again
# ctrl, slot and high share one block. With ecap = maxsize that is 64 + 9 * 1.6 = 78.4 bytes
# per entry (while growing towards maxsize, up to twice that), plus the key and value objects
# themselves (memory_bytes() reports the exact figure). At maxsize 100,000: 6.4 MB of entries
# + 1.44 MB of index, of which a lookup touches 0.8 MB (ctrl + slot): that part stays in a
# 1 MB L2 cache where the 1.44 MB did not, which made hits over 100,000 keys ~15% faster.
#
# Three intrusive doubly linked lists thread the live entries (links[L] = prev, links[L+1]
# = next, TTL_NIL ends a list; head/tail indexed by L >> 1):
#   LRU (L=0)  least recently used first: get/set move an entry to the tail
#   EXP (L=2)  order of the last set: with one ttl and a monotonic clock it is expiry order
#   INS (L=4)  order of first insertion: what iteration and repr show (a Python dict's order)
#
# Hashing: mix = hash * 0x9E3779B97F4A7C15 (mod 2**64); home slot = ((mix >> 32) * tsize)
# >> 32, the high word scaled to [0, tsize); ctrl byte = 0x80 | bits 25..31 of mix. Example:
# tsize 16, hash 1 gives mix = 0x9E3779B97F4A7C15, home = (0x9E3779B9 * 16) >> 32 = 9,
# ctrl = 0x80 | ((mix >> 25) & 0x7F) = 0xBF.
#
# Invariants: every live entry is in all three lists and in exactly one slot; count = live
# entries <= max_count (without getsizeof); with getsizeof currsize = sum of sizes <= maxsize;
# a linear-probe run holds no empty slot between an entry's home slot and its slot
# (deletion shifts later entries back instead of leaving tombstones); `version` changes
# whenever slots change, so a lookup interrupted by a key's __eq__ restarts.
#
# Cost: get/contains/delete O(1) expected (one hash, ~1.8 probes at load <= 5/8, one clock
# read); set O(1) amortised plus O(number of expired items it removes); len/currsize/repr
# first remove expired items like cachetools; iteration O(n) over a snapshot of keys.
#
# Time: `expires` is int64. With a compiled clock (the default CLOCK_MONOTONIC, CoarseClock
# or ManualClock) it is ns: expires = now_ns + ttl_ns, saturating at INT64_MAX (ttl=inf).
# With a user `timer` callable and a ttl that is not a number (timer=datetime.now,
# ttl=timedelta(...): "object mode") it holds an owned PyObject * to the Python object
# time + ttl, compared with Python's `<` as cachetools compares (only on the timer path;
# a comparison whose Python code changes the cache raises RuntimeError, since the caller's
# entry index may be stale).
# Freezing (cachetools' `with self.timer as time:`): while freeze_depth > 0 every time read
# returns `frozen`; in timer mode the cache owns the frozen value in _frozen_obj.
# With a user `timer` and a number ttl it is the order-preserving int64 image of the double
# time + ttl, so comparisons equal cachetools' float comparisons exactly:
#   key(x) = bits(x) ^ ((bits(x) >> 63) & 0x7FFF_FFFF_FFFF_FFFF)
# i.e. non-negative doubles keep their bit pattern (already ordered as integers) and
# negative ones have their magnitude bits flipped, so a larger magnitude sorts lower.
# Worked example (clock mode): ttl=600 s gives ttl_ns = 600_000_000_000; set at
# now_ns = 5_000_000_000 stores expires = 605_000_000_000; a get at 604_999_999_999 hits,
# a get at 605_000_000_000 misses (now >= expires), exactly as cachetools' `time < expires`.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from cpython.object cimport PyObject

from fastcore._core.clock cimport Clock


ctypedef struct ttl_entry:
    PyObject *key
    PyObject *value
    Py_hash_t hash
    int64_t expires
    PyObject *size
    uint32_t links[6]


ctypedef struct ttl_now:
    int64_t key          # ns (clock mode) or order key of `raw` (timer mode)
    double raw           # the timer's value in seconds (timer mode, number ttl)
    PyObject *obj        # timer mode only: the timer's value itself, a reference the reader
                         # owns (see _now); garbage in clock mode, never read there


cdef class TTLCache:
    cdef ttl_entry *entries
    cdef uint8_t *ctrl
    cdef uint32_t *slot
    cdef uint32_t *high
    cdef uint64_t tsize
    cdef uint32_t ecap
    cdef uint32_t used_top
    cdef uint32_t free_head
    cdef uint32_t count
    cdef uint32_t head[3]
    cdef uint32_t tail[3]
    cdef uint64_t version
    cdef int64_t max_count
    cdef int64_t ttl_ns
    cdef double ttl_f
    cdef bint timer_mode
    cdef bint obj_mode
    cdef bint sized
    cdef bint hook_missing
    cdef bint hook_getitem
    cdef bint hook_contains
    cdef bint hook_delitem
    cdef bint hook_popitem
    cdef bint hook_expire
    cdef bint hook_setitem
    cdef int freeze_depth
    cdef ttl_now frozen
    cdef object _frozen_obj     # owns frozen.obj (timer mode)
    cdef PyObject **grave
    cdef Py_ssize_t grave_len
    cdef Py_ssize_t grave_cap
    cdef Clock clock
    cdef object _timer
    cdef object _maxsize
    cdef object _ttl
    cdef object _getsizeof
    cdef object _currsize
    cdef object __weakref__
