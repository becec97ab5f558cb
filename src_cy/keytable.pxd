# KeyTable: the bounded key -> slot table under every keyed limiter.
#
# Promise: maps any hashable key to a slot index holding the owner's per-key state; never holds
# more than max_keys keys; hands out integer handles ((generation << 32) | slot) that go stale
# when their key leaves the table. When full, keys whose state is indistinguishable from a
# fresh key ("idle": a full bucket, an empty window) go first, which changes no decision; if
# every key is live, on_full="evict" drops the least recently used key (counted in
# `evictions`) and on_full="deny" refuses the new key.
#
# Layout (bytes per key at 1,000,000 keys):
#   KeySlot array        24 B  key pointer (strong ref), hash, LRU links
#   index (int32)        ~8 B  open addressing, linear probing, load factor <= 1/2
#   state pages     4 + state_bytes: pages of 1024 slots that never move, so nogil batch
#                              loops may touch state while another thread grows the table under
#                              the GIL. A page holds the 1024 uint32 generations first (4 KiB),
#                              then the 1024 state entries (state_bytes each, a multiple of 8;
#                              pages start on a cache line, so 8-byte states never straddle
#                              two). Generations are kept apart from the state because a batch
#                              validates every handle before deciding any: that pass then reads
#                              4 bytes per key instead of the state's lines (and none at all
#                              while no key ever left the table, see Invariants), and the
#                              deciding pass reads only the state.
#   KeyedTokenBucket: 24 + 8 + 4 + 8 = 44 B per key beyond the key object.
#
# Invariants:
#   live <= max_keys; slots_used <= slot_capacity <= max_keys
#   every occupied slot is in the index exactly once and in the LRU list exactly once
#   a slot's generation is odd while it holds a key and even while free; it grows by one at
#     every insert and every removal, so a handle (generation & 0x7FFFFFFF) << 32 | slot
#     names exactly one stay of one key
#   while no key has ever left the table (lost_a_key == 0), every slot below slots_used holds
#     the first stay of its first key, generation 1 (free slots exist only after a removal),
#     so a handle is valid iff it is FIRST_STAY_HANDLE + slot with slot < slots_used: a batch
#     then validates handles from the handle array alone, without reading generations. A
#     table sized above its live keys never removes one.
#   idle_not_before_ns <= min over keys of owner.slot_idle_at_ns(slot): no key is idle
#     earlier, so make_room() skips its O(n) sweep while now < idle_not_before_ns.
#     Owners lower it (keytable_note_idle_at) whenever a key's idle time may have dropped.
#   keys are removed only while no nogil batch is in flight (batches_in_flight == 0).
#
# Batches: acquire_batch() is the one driver behind every limiter's acquire_many(). It
# converts costs (owner hook batch_costs), resolves keys or validates handles, then runs the
# owner's nogil kernel decide_range() (which writes every entry of `allowed`, and of `retry`
# where denied) over runs of slots with batches_in_flight raised, so no
# key leaves the table under a running kernel. Keys resolved so far are decided before an
# insert into a full table could evict, so a slot a pending decision names is never recycled.
#
# Cost: lookup O(1) expected (one hash, ~1.5 probes); touch O(1) (LRU relink); insert O(1)
# amortized. make_room: a full sweep O(max_keys) happens only when now >= idle_not_before_ns
# and at least max(1, live/16) full-table insert attempts came since the last sweep, so a
# flood of unique keys costs O(16) slot checks per new key, amortized; between sweeps the
# KEYTABLE_LRU_PROBE least recently used keys are checked for idleness, then the next
# KEYTABLE_HAND_PROBE slots from a hand that moves round the table (a clock hand: idle keys
# that recent light use keeps away from the LRU tail are still reached, one stretch of the
# table per insert). Below 32 keys every full-table insert may sweep, so the policy is exact
# there.
#
# Math: bucket = (hash * 0x9E3779B97F4A7C15) >> (64 - log2(index size)) (Fibonacci hashing:
# the top bits of the product, i.e. floor(frac(hash * phi^-1) * size)), which spreads
# sequential integer hashes. Example: index size 32 (shift 59), hash 1 ->
# 0x9E3779B97F4A7C15 >> 59 = 19.
from cpython.object cimport PyObject, PyObject_Hash, PyObject_RichCompareBool, Py_EQ
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from fastcore._core.atomic cimport fc_atomic_min_i64
from fastcore._core.clock cimport Clock
from fastcore._core.decision cimport Decision

cdef extern from *:
    """
    #define keytable_prefetch_for_write(p) __builtin_prefetch((p), 1)
    """
    # Hints to load the cache line at p ahead of use; batch loops issue them a few
    # iterations early so random slot accesses overlap instead of waiting one by one. The
    # kernels, which update the state with an atomic, ask for the line in a writable state so
    # the compare-and-swap does not wait for an ownership upgrade.
    void keytable_prefetch_line "__builtin_prefetch"(const void* p) nogil
    void keytable_prefetch_for_write(const void* p) nogil
    const uint64_t KEYTABLE_FIB_MULT "0x9E3779B97F4A7C15ULL"
    const int64_t KEYTABLE_SLOT_MASK "0xFFFFFFFFLL"      # handle & MASK == handle % 2**32
    const int64_t KEYTABLE_FIRST_STAY_HANDLE "0x100000000LL"   # generation 1 << 32

cdef enum:
    KEYTABLE_PAGE_SHIFT = 10                       # slots per state page = 1 << 10
    KEYTABLE_PAGE_MASK = (1 << 10) - 1             # slot & MASK == slot % 1024
    KEYTABLE_LRU_PROBE = 8                         # keys checked at the LRU tail between sweeps
    KEYTABLE_HAND_PROBE = 16                       # slots checked from the hand between sweeps
    KEYTABLE_MIN_CAPACITY = 16                     # slots allocated at first
    KEYTABLE_PREFETCH_AHEAD = 16                   # batch entries between prefetch and use
    KEYTABLE_CACHE_LINE = 64                       # bytes; state pages are aligned to it
    KEYTABLE_GENERATIONS_BYTES = 4 << 10           # a page's uint32 generations, 1024 * 4
    KEYTABLE_ON_FULL_EVICT = 0
    KEYTABLE_ON_FULL_DENY = 1


cdef struct KeySlot:
    PyObject* key          # strong reference; NULL while the slot is free
    Py_hash_t hash
    int32_t newer          # LRU neighbour used more recently, -1 at the head
    int32_t older          # LRU neighbour used less recently, -1 at the tail; free-list link


cdef class KeyTable:
    cdef KeySlot* slots
    cdef Py_ssize_t slot_capacity
    cdef Py_ssize_t slots_used           # slots ever handed out; free ones are on free_slot
    cdef int32_t free_slot
    cdef int32_t* index
    cdef Py_ssize_t index_mask
    cdef int index_shift                 # 64 - log2(index size)
    cdef Py_ssize_t live
    cdef int32_t lru_head
    cdef int32_t lru_tail
    cdef char** state_pages
    cdef bint lost_a_key                 # set by the first removal, never cleared
    cdef Py_ssize_t state_stride         # the owner's state bytes per slot
    cdef Py_ssize_t pages_allocated
    cdef Py_ssize_t max_keys_
    cdef int on_full_policy
    cdef uint64_t evictions_
    cdef int64_t idle_not_before_ns
    cdef Py_ssize_t full_inserts_since_sweep
    cdef Py_ssize_t hand                 # next slot the between-sweeps check looks at
    cdef int64_t batches_in_flight
    cdef Clock clock_

    cdef int keytable_init(self, object max_keys, object on_full, object clock,
                           Py_ssize_t state_bytes) except -1
    cdef Py_ssize_t insert(self, object key, Py_hash_t h, int64_t now_ns) except -2
    cdef bint make_room(self, int64_t now_ns) except -1
    cdef bint room_available(self, int64_t now_ns)
    cdef int remove_slot(self, Py_ssize_t s) except -1
    cdef int sweep_idle(self, int64_t now_ns) except -1
    cdef int wait_for_batches(self) except -1
    cdef int clear_all(self) except -1
    cdef int check_invariants(self) except -1
    cdef int grow_slots(self) except -1
    cdef int ensure_page(self, Py_ssize_t s) except -1
    cdef int grow_index(self) except -1
    cdef bint sweep_due(self, int64_t now_ns) noexcept
    cdef Py_ssize_t idle_near(self, int64_t now_ns) noexcept
    cdef int64_t room_wait_ns(self, int64_t now_ns) noexcept nogil
    cdef Decision full_denial(self, int64_t now_ns)
    cdef object acquire_batch(self, object keys, object costs, object now,
                              bint with_retry_after)
    cdef int decide_handles(self, int64_t[::1] handles, int64_t[::1] costs, int64_t now_ns,
                            uint8_t[::1] allowed, double[::1] retry) except -1
    cdef int check_handles(self, int64_t[::1] handles) except -1
    cdef Py_ssize_t first_bad_handle(self, const int64_t* handles, Py_ssize_t n) noexcept nogil
    cdef int decide_keys(self, object keys, Py_ssize_t n, int64_t* slots, int64_t[::1] costs,
                         int64_t now_ns, uint8_t[::1] allowed, double[::1] retry) except -1
    cdef int decide_pending(self, int64_t* slots, int64_t[::1] costs, Py_ssize_t start,
                            Py_ssize_t stop, int64_t now_ns, uint8_t[::1] allowed,
                            double[::1] retry) except -1
    # Owner hooks: when the key in slot s becomes idle (ns), and how to make it fresh.
    cdef int64_t slot_idle_at_ns(self, Py_ssize_t s) noexcept nogil
    cdef void slot_reset(self, Py_ssize_t s) noexcept nogil
    # Owner hooks for batches: per-decision costs in the owner's integer unit, validated whole
    # (None: the default cost everywhere); work under the GIL before a batch at now_ns, run
    # only once the batch is known valid, returning 1 when it may have released the GIL
    # (other threads may then have removed keys); the nogil kernel; and a bound on how long
    # from now_ns until every key is idle.
    cdef int64_t[::1] batch_costs(self, object costs, Py_ssize_t n)
    cdef int batch_begin(self, int64_t now_ns) except -1
    cdef void decide_range(self, const int64_t* slots_or_handles, int64_t slot_mask,
                           Py_ssize_t n, const int64_t* costs, int64_t now_ns,
                           uint8_t* allowed, double* retry) noexcept nogil
    cdef int64_t idle_horizon_ns(self, int64_t now_ns) noexcept nogil


cdef inline Py_ssize_t keytable_bucket(KeyTable t, Py_hash_t h) noexcept nogil:
    return <Py_ssize_t>((<uint64_t>h * KEYTABLE_FIB_MULT) >> t.index_shift)


cdef inline Py_ssize_t keytable_lookup(KeyTable t, object key, Py_hash_t h) except -2:
    """Slot of `key` (hash `h`), or -1 when absent. Raises what the key's __eq__ raises."""
    cdef Py_ssize_t i = keytable_bucket(t, h)
    cdef int32_t s
    cdef KeySlot* slot
    while True:
        s = t.index[i]
        if s < 0:
            return -1
        slot = &t.slots[s]
        if slot.key == <PyObject*>key:
            return s
        if slot.hash == h and PyObject_RichCompareBool(<object>slot.key, key, Py_EQ):
            return s
        i = (i + 1) & t.index_mask


cdef inline void keytable_touch(KeyTable t, Py_ssize_t s) noexcept:
    """Mark slot s most recently used (GIL held)."""
    cdef KeySlot* slot
    if t.lru_head == s:
        return
    slot = &t.slots[s]
    # unlink: s is not the head, so it has a newer neighbour
    t.slots[slot.newer].older = slot.older
    if slot.older >= 0:
        t.slots[slot.older].newer = slot.newer
    else:
        t.lru_tail = slot.newer
    slot.newer = -1
    slot.older = t.lru_head
    t.slots[t.lru_head].newer = <int32_t>s
    t.lru_head = <int32_t>s


cdef inline Py_ssize_t keytable_slot_for(KeyTable t, object key, int64_t now_ns) except -2:
    """The slot of `key` made most recently used, inserted fresh if absent; -1 when a full
    table denies the new key. Raises TypeError for an unhashable key before any change."""
    cdef Py_hash_t h = PyObject_Hash(key)
    cdef Py_ssize_t s = keytable_lookup(t, key, h)
    if s >= 0:
        keytable_touch(t, s)
        return s
    return t.insert(key, h, now_ns)


cdef inline char* keytable_state_at(char** pages, Py_ssize_t stride, Py_ssize_t s) noexcept nogil:
    """Slot s's state: page s >> 10 (s // 1024), past its generations, entry s & 1023 (s % 1024).

    Batch loops pass `pages` and `stride` as locals: the atomics in their bodies are compiler
    barriers, which would otherwise reload both from the table on every decision.
    """
    return pages[s >> KEYTABLE_PAGE_SHIFT] + KEYTABLE_GENERATIONS_BYTES + (s & KEYTABLE_PAGE_MASK) * stride


cdef inline uint32_t* keytable_generation_at(char** pages, Py_ssize_t s) noexcept nogil:
    """Slot s's generation: entry s & 1023 of the generations that open page s >> 10."""
    return <uint32_t*>pages[s >> KEYTABLE_PAGE_SHIFT] + (s & KEYTABLE_PAGE_MASK)


cdef inline uint32_t* keytable_generation(KeyTable t, Py_ssize_t s) noexcept nogil:
    return keytable_generation_at(t.state_pages, s)


cdef inline char* keytable_state(KeyTable t, Py_ssize_t s) noexcept nogil:
    """The owner's state bytes of slot s."""
    return keytable_state_at(t.state_pages, t.state_stride, s)


cdef inline void keytable_note_idle_at(KeyTable t, int64_t idle_at_ns) noexcept nogil:
    """Keep idle_not_before_ns a lower bound after a key's idle time was set to idle_at_ns."""
    if idle_at_ns < t.idle_not_before_ns:
        fc_atomic_min_i64(&t.idle_not_before_ns, idle_at_ns)


cdef inline int64_t keytable_handle(KeyTable t, Py_ssize_t s) noexcept nogil:
    """(generation & 0x7FFFFFFF) << 32 | s, i.e. generation mod 2**31 times 2**32 plus s."""
    return (<int64_t>(keytable_generation(t, s)[0] & 0x7FFFFFFF) << 32) | s


cdef inline Py_ssize_t keytable_handle_slot(KeyTable t, int64_t handle,
                                            Py_ssize_t slots_used) noexcept nogil:
    """The slot a handle names, or -1 when it is malformed or stale (its key left)."""
    cdef Py_ssize_t s = handle & KEYTABLE_SLOT_MASK
    cdef uint32_t generation
    if handle < 0 or s >= slots_used:
        return -1
    if not t.lost_a_key:                      # generation 1 (see Invariants)
        return s if (handle >> 32) == 1 else -1
    generation = keytable_generation(t, s)[0]
    if (generation & 1) == 0 or <int64_t>(generation & 0x7FFFFFFF) != (handle >> 32):
        return -1
    return s

