# KeyTable: the bounded key -> slot table under every keyed limiter.
#
# Promise: maps any hashable key to a slot index holding the owner's per-key state; never holds
# more than max_keys keys; hands out integer handles ((stamp << 32) | slot, stamp = the slot's
# generation XOR the table's salt, mod 2**31) that go stale when their key leaves the table
# and are refused by every other table (salts differ between tables). When full, a key whose state is indistinguishable from a
# fresh key ("idle": a full bucket, an empty window) goes first, exactly: no live key is
# evicted while an idle key exists (the IdleQueue, idlequeue.pxd, finds one at O(1)
# amortised cost). If every key is live, on_full="evict" drops the least recently used key
# (counted in `evictions`) and on_full="deny" refuses the new key.
# Safe against any Python key: __hash__, __eq__ and __del__ may run arbitrary code, switch
# threads or re-enter the limiter, and the table stays consistent (see Re-entrancy).
#
# Layout (bytes per key at 1,000,000 keys):
#   KeySlot array        24 B  key pointer (strong ref), hash, LRU links
#   IdleLink array       16 B  idle-queue time and links (idlequeue.pxd)
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
#   KeyedTokenBucket: 24 + 16 + 8 + 4 + 8 = 60 B per key beyond the key object.
#
# Invariants:
#   live <= max_keys; slots_used <= slot_capacity <= max_keys
#   every occupied slot is in the index, the LRU list and the idle queue exactly once
#   a slot's generation is odd while it holds a key and even while free; it grows by one at
#     every insert and every removal, so a handle ((generation ^ salt) & 0x7FFFFFFF) << 32 |
#     slot names exactly one stay of one key of one table. Salts are (n * 0x9E3779B1) mod 2**31
#     for the n-th table of the process: distinct for the first 2**31 tables (an odd
#     multiplier is a bijection mod 2**31), so a handle of another limiter is refused.
#   while no key has ever left the table (lost_a_key == 0), every slot below slots_used holds
#     the first stay of its first key, generation 1 (free slots exist only after a removal),
#     so a handle is valid iff it is first_stay_handle + slot with slot < slots_used, where
#     first_stay_handle = ((1 ^ salt) & 0x7FFFFFFF) << 32: a batch then validates handles from
#     the handle array alone, without reading generations. A table sized above its live keys
#     never removes one.
#   a key idle at `now` is queued at or before `now` (its queued time is when it was inserted,
#     reset, or last found not idle at its idle time then; idle times only grow with
#     admissions), so it is in the idle queue's DUE list after idlequeue_advance(now)
#   keys are removed only while no nogil batch is in flight (batches_in_flight == 0)
#   `version` grows at every insert, removal and index rebuild: a slot found before a call
#     into Python is trusted after it only if the version did not move
#
# Re-entrancy. Python code runs in a key's __hash__ and __eq__, in a removed key's __del__,
# and whenever the GIL is released (other threads then run anything). The rules:
#   1. keytable_lookup re-reads the version after every __eq__ and restarts the probe when it
#      moved (CPython's dict does the same), so the slot it returns holds the key now.
#   2. Between a lookup and the use of its slot no Python code runs and the GIL is not
#      released; a wait for batches (the only GIL release in a write) comes before the
#      lookup it protects, or is followed by a new lookup when the version moved.
#   3. A removed key's reference is parked in `dead` and released by keytable_release() at
#      the end of the public call, when the table is consistent and the decision is made.
#   4. Batches resolve every key first (all Python code: hashes, equality, duplicates) and
#      change nothing until all of it succeeded, then commit with the GIL held and no
#      Python code: an error leaves the table exactly as it was.
#
# Batches and removals. A nogil kernel reads slots it was given, so no key may leave the
# table while one runs: a removal waits (without the GIL) until batches_in_flight is 0.
# Writer preference bounds that wait: a remover raises removers_waiting while it waits, and
# a batch that starts meanwhile runs its kernel holding the GIL instead of joining the
# running ones, so the wait ends with the batches that were in flight when it began.
#
# Cost: lookup O(1) expected (one hash, ~1.5 probes); touch O(1) (LRU relink); insert O(1)
# amortised, including the idle queue's work (each key's queue entry is re-placed at most
# once per admission that moved its idle time, and moves down at most 64 buckets per push).
#
# Math: bucket = (hash * 0x9E3779B97F4A7C15) >> (64 - log2(index size)) (Fibonacci hashing:
# the top bits of the product, i.e. floor(frac(hash * phi^-1) * size)), which spreads
# sequential integer hashes. Example: index size 32 (shift 59), hash 1 ->
# 0x9E3779B97F4A7C15 >> 59 = 19.
from cpython.object cimport PyObject, PyObject_Hash, PyObject_RichCompareBool, Py_EQ
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from fastcore._core.clock cimport Clock
from fastcore._core.decision cimport Decision
from fastcore._core.idlequeue cimport IdleQueue, idlequeue_move

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
    const uint32_t KEYTABLE_STAMP_MASK "0x7FFFFFFFu"     # stamp & MASK == stamp % 2**31

cdef enum:
    KEYTABLE_PAGE_SHIFT = 10                       # slots per state page = 1 << 10
    KEYTABLE_PAGE_MASK = (1 << 10) - 1             # slot & MASK == slot % 1024
    KEYTABLE_MIN_CAPACITY = 16                     # slots allocated at first
    KEYTABLE_PREFETCH_AHEAD = 16                   # batch entries between prefetch and use
    KEYTABLE_CACHE_LINE = 64                       # bytes; state pages are aligned to it
    KEYTABLE_GENERATIONS_BYTES = 4 << 10           # a page's uint32 generations, 1024 * 4
    KEYTABLE_ON_FULL_EVICT = 0
    KEYTABLE_ON_FULL_DENY = 1
    KEYTABLE_RESTART = -3                          # a probe saw the table change: start again


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
    cdef uint32_t handle_salt            # XORed into handles' generations (see Invariants)
    cdef int64_t first_stay_handle       # the handle of slot 0 in its first stay
    cdef Py_ssize_t state_stride         # the owner's state bytes per slot
    cdef Py_ssize_t pages_allocated
    cdef Py_ssize_t max_keys_
    cdef int on_full_policy
    cdef uint64_t evictions_
    cdef uint64_t version                # grows at every insert, removal and index rebuild
    cdef IdleQueue idle                  # live keys by the time they may turn idle
    cdef int64_t idle_not_before_ns      # lower bound on the next idle time, set by denials
    cdef int64_t batches_in_flight
    cdef int64_t removers_waiting
    cdef PyObject** dead                 # removed keys' references, released at the end of a call
    cdef Py_ssize_t dead_len
    cdef Py_ssize_t dead_capacity
    cdef Clock clock_

    cdef int keytable_init(self, object max_keys, object on_full, object clock,
                           Py_ssize_t state_bytes) except -1
    cdef Py_ssize_t insert(self, object key, Py_hash_t h, int64_t now_ns) except -2
    cdef Py_ssize_t place(self, object key, Py_hash_t h, int64_t now_ns) except -2
    cdef bint make_room(self, int64_t now_ns) except -1
    cdef Py_ssize_t idle_slot(self, int64_t now_ns) noexcept
    cdef bint room_available(self, int64_t now_ns)
    cdef void remove_slot(self, Py_ssize_t s) noexcept
    cdef int reserve(self, Py_ssize_t new_keys, Py_ssize_t removals) except -1
    cdef int release_dead(self) except -1
    cdef int wait_for_batches(self) except -1
    cdef int clear_all(self) except -1
    cdef int check_invariants(self) except -1
    cdef int grow_slots(self, Py_ssize_t capacity) except -1
    cdef int ensure_page(self, Py_ssize_t s) except -1
    cdef int grow_index(self) except -1
    cdef int64_t room_wait_ns(self, int64_t now_ns) noexcept nogil
    cdef Decision full_denial(self, int64_t now_ns)
    cdef object acquire_batch(self, object keys, object costs, object now,
                              bint with_retry_after)
    cdef int decide_handles(self, int64_t[::1] handles, int64_t[::1] costs, int64_t now_ns,
                            uint8_t[::1] allowed, double[::1] retry) except -1
    cdef int check_handles(self, int64_t[::1] handles) except -1
    cdef Py_ssize_t first_bad_handle(self, const int64_t* handles, Py_ssize_t n) noexcept nogil
    cdef int decide_keys(self, list keys, Py_ssize_t n, int64_t* slots, int64_t[::1] costs,
                         int64_t now_ns, uint8_t[::1] allowed, double[::1] retry) except -1
    cdef void run_kernel(self, const int64_t* slots_or_handles, int64_t slot_mask,
                         Py_ssize_t n, const int64_t* costs, int64_t now_ns,
                         uint8_t* allowed, double* retry) noexcept
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


cdef inline Py_ssize_t keytable_probe(KeyTable t, object key, Py_hash_t h) except -2:
    """One probe for `key`: its slot, -1 when absent, KEYTABLE_RESTART when an __eq__ call
    saw the table change (the slot it compared may have moved or been reused)."""
    cdef Py_ssize_t i = keytable_bucket(t, h)
    cdef int32_t s
    cdef PyObject* candidate
    cdef uint64_t version
    cdef int equal
    while True:
        s = t.index[i]
        if s < 0:
            return -1
        candidate = t.slots[s].key
        if candidate == <PyObject*>key:
            return s
        if t.slots[s].hash == h:
            version = t.version
            # <object> holds a reference to the candidate for the call's duration
            equal = PyObject_RichCompareBool(<object>candidate, key, Py_EQ)
            if t.version != version:
                return KEYTABLE_RESTART
            if equal:
                return s
        i = (i + 1) & t.index_mask


cdef inline Py_ssize_t keytable_lookup(KeyTable t, object key, Py_hash_t h) except -2:
    """Slot of `key` (hash `h`), or -1 when absent. Raises what the key's __eq__ raises.

    The result holds until the next call into Python: a probe whose __eq__ changed the
    table (re-entrantly or through another thread) starts again.
    """
    cdef Py_ssize_t s = keytable_probe(t, key, h)
    while s == KEYTABLE_RESTART:
        s = keytable_probe(t, key, h)
    return s


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
    table denies the new key. Raises TypeError for an unhashable key before any change.
    The caller ends its call with keytable_release(t) (an insert may have removed a key)."""
    cdef Py_hash_t h = PyObject_Hash(key)
    cdef Py_ssize_t s = keytable_lookup(t, key, h)
    if s >= 0:
        keytable_touch(t, s)
        return s
    return t.insert(key, h, now_ns)


cdef inline int keytable_release(KeyTable t) except -1:
    """Release the references of keys removed during this call (runs their __del__): the
    last step of every public call that may remove a key, once its decision is made."""
    if t.dead_len:
        t.release_dead()
    return 0


cdef inline void keytable_requeue(KeyTable t, Py_ssize_t s, int64_t now_ns) noexcept:
    """Slot s's key just became idle by other means than time (reset, refund): queue it now,
    so that it is found by the next eviction (GIL held)."""
    idlequeue_move(&t.idle, <int32_t>s, now_ns)


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


cdef inline int64_t keytable_stamp(KeyTable t, uint32_t generation) noexcept nogil:
    """(generation ^ salt) & 0x7FFFFFFF, i.e. (generation XOR salt) mod 2**31."""
    return (generation ^ t.handle_salt) & KEYTABLE_STAMP_MASK


cdef inline int64_t keytable_handle(KeyTable t, Py_ssize_t s) noexcept nogil:
    """stamp << 32 | s, i.e. the slot's stamp times 2**32 plus s."""
    return (keytable_stamp(t, keytable_generation(t, s)[0]) << 32) | s


cdef inline Py_ssize_t keytable_handle_slot(KeyTable t, int64_t handle,
                                            Py_ssize_t slots_used) noexcept nogil:
    """The slot a handle names, or -1 when it is malformed or stale (its key left)."""
    cdef Py_ssize_t s = handle & KEYTABLE_SLOT_MASK
    cdef uint32_t generation
    if handle < 0 or s >= slots_used:
        return -1
    if not t.lost_a_key:                      # generation 1 (see Invariants)
        return s if (handle >> 32) == (t.first_stay_handle >> 32) else -1
    generation = keytable_generation(t, s)[0]
    if (generation & 1) == 0 or keytable_stamp(t, generation) != (handle >> 32):
        return -1
    return s

