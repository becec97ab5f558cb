"""Bounded key -> slot table shared by the keyed limiters (see keytable.pxd for the layout)."""
from cpython.object cimport PyObject_Hash
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport INT64_MAX, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from posix.stdlib cimport posix_memalign
from libc.string cimport memset
from posix.unistd cimport usleep

import numpy as np

from fastcore._core.atomic cimport fc_atomic_add_i64, fc_atomic_load_i64
from fastcore._core.clock cimport clock_now_ns, clock_resolve
from fastcore._core.debug cimport FASTCORE_DEBUG
from fastcore._core.decision cimport decision_new

from fastcore._units import seconds_to_ns
from fastcore.errors import FastcoreError

_ON_FULL = {"evict": KEYTABLE_ON_FULL_EVICT, "deny": KEYTABLE_ON_FULL_DENY}
# Slots are int32 and handles carry the slot in 32 bits.
_MAX_KEYS_LIMIT = (1 << 31) - 1


cdef class KeyTable:
    """Base of the keyed limiters: a bounded table of keys, each with a slot of state.

    Not used directly: ``KeyedTokenBucket``, ``SlidingWindowCounter`` and ``SlidingWindow``
    derive from it and share its protocol (``len``, ``in``, ``handle``, ``evictions``...).
    """

    def __cinit__(self, *args, **kwargs):
        self.slots = NULL
        self.index = NULL
        self.state_pages = NULL
        self.free_slot = -1
        self.lru_head = -1
        self.lru_tail = -1
        self.idle_not_before_ns = INT64_MAX

    cdef int keytable_init(self, object max_keys, object on_full, object clock,
                           Py_ssize_t state_bytes) except -1:
        """Validate everything first, then allocate: a bad argument leaves nothing behind."""
        if isinstance(max_keys, bool) or not isinstance(max_keys, int):
            raise TypeError(f"max_keys must be an int, got {max_keys!r}")
        if not 1 <= max_keys <= _MAX_KEYS_LIMIT:
            raise ValueError(f"max_keys must be between 1 and {_MAX_KEYS_LIMIT}, got {max_keys}")
        if on_full not in _ON_FULL:
            raise ValueError(f"on_full must be 'evict' or 'deny', got {on_full!r}")
        cdef Clock resolved = clock_resolve(clock)
        if self.slots != NULL:
            raise TypeError(f"{type(self).__name__} is already initialised")
        self.clock_ = resolved
        self.max_keys_ = max_keys
        self.on_full_policy = _ON_FULL[on_full]
        self.state_stride = state_bytes
        cdef Py_ssize_t pages = (self.max_keys_ + KEYTABLE_PAGE_MASK) >> KEYTABLE_PAGE_SHIFT
        self.state_pages = <char**>calloc(pages, sizeof(char*))
        self.slot_capacity = min(<Py_ssize_t>KEYTABLE_MIN_CAPACITY, self.max_keys_)
        self.slots = <KeySlot*>calloc(self.slot_capacity, sizeof(KeySlot))
        self.index_shift = 59                   # 32 buckets = 2 * KEYTABLE_MIN_CAPACITY
        self.index_mask = 31
        self.index = <int32_t*>malloc(32 * sizeof(int32_t))
        if self.state_pages == NULL or self.slots == NULL or self.index == NULL:
            raise MemoryError()
        memset(self.index, 0xFF, 32 * sizeof(int32_t))   # every bucket -1 (empty)
        return 0

    def __dealloc__(self):
        cdef Py_ssize_t s, p
        if self.slots != NULL:
            for s in range(self.slots_used):
                Py_XDECREF(self.slots[s].key)
            free(self.slots)
        free(self.index)
        if self.state_pages != NULL:
            for p in range(self.pages_allocated):
                free(self.state_pages[p])
            free(self.state_pages)

    # -- owner hooks (overridden by every limiter) -------------------------------------

    cdef int64_t slot_idle_at_ns(self, Py_ssize_t s) noexcept nogil:
        return 0

    cdef void slot_reset(self, Py_ssize_t s) noexcept nogil:
        pass

    cdef int64_t[::1] batch_costs(self, object costs, Py_ssize_t n):
        return None

    cdef int batch_begin(self, int64_t now_ns) except -1:
        return 0

    cdef void decide_range(self, const int64_t* slots_or_handles, int64_t slot_mask,
                           Py_ssize_t n, const int64_t* costs, int64_t now_ns,
                           uint8_t* allowed, double* retry) noexcept nogil:
        pass

    cdef int64_t idle_horizon_ns(self, int64_t now_ns) noexcept nogil:
        return 1

    # -- growth --------------------------------------------------------------------------

    cdef int grow_slots(self) except -1:
        cdef Py_ssize_t capacity = min(self.slot_capacity * 2, self.max_keys_)
        cdef KeySlot* grown = <KeySlot*>realloc(self.slots, capacity * sizeof(KeySlot))
        if grown == NULL:
            raise MemoryError()
        memset(grown + self.slot_capacity, 0, (capacity - self.slot_capacity) * sizeof(KeySlot))
        self.slots = grown
        self.slot_capacity = capacity
        return 0

    cdef int ensure_page(self, Py_ssize_t s) except -1:
        """Allocate the state page holding slot s; pages never move once allocated.

        Pages start on a cache line and the generations take whole lines, so an entry whose
        stride divides 64 (8 for GCRA and the counter) never straddles two lines.
        """
        cdef Py_ssize_t page = s >> KEYTABLE_PAGE_SHIFT
        cdef Py_ssize_t size = (KEYTABLE_GENERATIONS_BYTES
                                + (KEYTABLE_PAGE_MASK + 1) * self.state_stride)
        cdef void* memory
        while self.pages_allocated <= page:
            if posix_memalign(&memory, KEYTABLE_CACHE_LINE, size) != 0:
                raise MemoryError()
            memset(memory, 0, size)
            self.state_pages[self.pages_allocated] = <char*>memory
            self.pages_allocated += 1
        return 0

    cdef int grow_index(self) except -1:
        """Double the index and re-place every key (load factor back to <= 1/4)."""
        cdef Py_ssize_t size = (self.index_mask + 1) * 2
        cdef int32_t* grown = <int32_t*>malloc(size * sizeof(int32_t))
        cdef Py_ssize_t s, i
        if grown == NULL:
            raise MemoryError()
        memset(grown, 0xFF, size * sizeof(int32_t))
        free(self.index)
        self.index = grown
        self.index_mask = size - 1
        self.index_shift -= 1
        for s in range(self.slots_used):
            if self.slots[s].key != NULL:
                i = keytable_bucket(self, self.slots[s].hash)
                while self.index[i] >= 0:
                    i = (i + 1) & self.index_mask
                self.index[i] = <int32_t>s
        return 0

    # -- insertion and removal -------------------------------------------------------------

    cdef Py_ssize_t insert(self, object key, Py_hash_t h, int64_t now_ns) except -2:
        """Insert an absent key with fresh state as most recently used; -1 when denied."""
        cdef Py_ssize_t s, i
        cdef KeySlot* slot
        if self.live >= self.max_keys_ and not self.make_room(now_ns):
            return -1
        if (self.live + 1) * 2 > self.index_mask + 1:
            self.grow_index()
        if self.free_slot >= 0:
            s = self.free_slot
            self.free_slot = self.slots[s].older
        else:
            if self.slots_used == self.slot_capacity:
                self.grow_slots()
            s = self.slots_used
            self.ensure_page(s)
            self.slots_used += 1
        slot = &self.slots[s]
        Py_INCREF(key)
        slot.key = <PyObject*>key
        slot.hash = h
        slot.newer = -1
        slot.older = self.lru_head
        if self.lru_head >= 0:
            self.slots[self.lru_head].newer = <int32_t>s
        else:
            self.lru_tail = <int32_t>s
        self.lru_head = <int32_t>s
        i = keytable_bucket(self, h)
        while self.index[i] >= 0:
            i = (i + 1) & self.index_mask
        self.index[i] = <int32_t>s
        self.live += 1
        keytable_generation(self, s)[0] += 1      # odd: occupied
        self.slot_reset(s)
        if FASTCORE_DEBUG:
            self.check_invariants()
        return s

    cdef int remove_slot(self, Py_ssize_t s) except -1:
        """Take slot s out of the index and the LRU list; its key is released last, once the
        table is consistent, because releasing it may run arbitrary Python code."""
        cdef KeySlot* slot = &self.slots[s]
        cdef PyObject* key = slot.key
        cdef Py_ssize_t i = keytable_bucket(self, slot.hash)
        cdef Py_ssize_t j, home
        while self.index[i] != s:
            i = (i + 1) & self.index_mask
        # Backward-shift deletion (linear probing, no tombstones): move later entries of the
        # probe run into the hole unless their home bucket lies cyclically in (i, j].
        j = i
        while True:
            j = (j + 1) & self.index_mask
            if self.index[j] < 0:
                break
            home = keytable_bucket(self, self.slots[self.index[j]].hash)
            if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue
            self.index[i] = self.index[j]
            i = j
        self.index[i] = -1
        if slot.newer >= 0:
            self.slots[slot.newer].older = slot.older
        else:
            self.lru_head = slot.older
        if slot.older >= 0:
            self.slots[slot.older].newer = slot.newer
        else:
            self.lru_tail = slot.newer
        slot.key = NULL
        keytable_generation(self, s)[0] += 1      # even: free; the key's handles go stale
        self.lost_a_key = True
        slot.newer = -1
        slot.older = self.free_slot
        self.free_slot = <int32_t>s
        self.live -= 1
        if FASTCORE_DEBUG:
            self.check_invariants()
        Py_XDECREF(key)
        return 0

    cdef int check_invariants(self) except -1:
        """Debug builds only: the index, the LRU list and the live count agree."""
        cdef Py_ssize_t s, i, in_index = 0, in_lru = 0
        for i in range(self.index_mask + 1):
            if self.index[i] >= 0:
                in_index += 1
                assert self.slots[self.index[i]].key != NULL
        s = self.lru_head
        while s >= 0:
            in_lru += 1
            s = self.slots[s].older
        assert in_index == in_lru == self.live <= self.max_keys_, (in_index, in_lru, self.live)
        if not self.lost_a_key:
            for s in range(self.slots_used):
                assert keytable_generation(self, s)[0] == 1, (s, keytable_generation(self, s)[0])
        return 0

    cdef int wait_for_batches(self) except -1:
        """Block (without the GIL) until no nogil batch uses slot state: removal is safe."""
        while fc_atomic_load_i64(&self.batches_in_flight) > 0:
            with nogil:
                while fc_atomic_load_i64(&self.batches_in_flight) > 0:
                    usleep(50)
        return 0

    cdef int sweep_idle(self, int64_t now_ns) except -1:
        """Drop every idle key and recompute idle_not_before_ns exactly."""
        cdef Py_ssize_t s
        cdef int64_t idle_at, earliest = INT64_MAX
        self.wait_for_batches()
        for s in range(self.slots_used):
            if self.slots[s].key == NULL:
                continue
            idle_at = self.slot_idle_at_ns(s)
            if idle_at <= now_ns:
                self.remove_slot(s)
            elif idle_at < earliest:
                earliest = idle_at
        self.idle_not_before_ns = earliest
        self.full_inserts_since_sweep = 0
        return 0

    cdef bint sweep_due(self, int64_t now_ns) noexcept:
        return (now_ns >= self.idle_not_before_ns
                and self.full_inserts_since_sweep >= max(1, self.live >> 4))

    cdef Py_ssize_t idle_near(self, int64_t now_ns) noexcept:
        """An idle key's slot among the KEYTABLE_LRU_PROBE least recently used keys, then the
        KEYTABLE_HAND_PROBE slots from the hand; -1 when none is idle. Reads only."""
        cdef Py_ssize_t s = self.lru_tail, probed
        for probed in range(KEYTABLE_LRU_PROBE):
            if s < 0:
                break
            if self.slot_idle_at_ns(s) <= now_ns:
                return s
            s = self.slots[s].newer
        s = self.hand
        for probed in range(min(<Py_ssize_t>KEYTABLE_HAND_PROBE, self.slots_used)):
            if s >= self.slots_used:
                s = 0
            if self.slots[s].key != NULL and self.slot_idle_at_ns(s) <= now_ns:
                return s
            s += 1
        return -1

    cdef bint make_room(self, int64_t now_ns) except -1:
        """Free one slot of a full table by the documented policy; False means deny."""
        cdef Py_ssize_t s
        self.full_inserts_since_sweep += 1
        if self.sweep_due(now_ns):
            self.sweep_idle(now_ns)
            if self.live < self.max_keys_:
                return True
        elif now_ns >= self.idle_not_before_ns:
            s = self.idle_near(now_ns)
            # the hand moves on by a stretch per insert, so between sweeps it goes round
            self.hand = (self.hand + KEYTABLE_HAND_PROBE) % self.slots_used
            if s >= 0:
                self.wait_for_batches()
                self.remove_slot(s)
                return True
        if self.on_full_policy == KEYTABLE_ON_FULL_DENY:
            return False
        self.wait_for_batches()
        self.remove_slot(self.lru_tail)
        self.evictions_ += 1
        return True

    cdef bint room_available(self, int64_t now_ns):
        """Whether an insert now would get a slot (what make_room would decide, read-only)."""
        cdef Py_ssize_t s
        if self.live < self.max_keys_ or self.on_full_policy == KEYTABLE_ON_FULL_EVICT:
            return True
        if now_ns < self.idle_not_before_ns:
            return False
        if self.full_inserts_since_sweep + 1 >= max(1, self.live >> 4):
            for s in range(self.slots_used):
                if self.slots[s].key != NULL and self.slot_idle_at_ns(s) <= now_ns:
                    return True
            return False
        return self.idle_near(now_ns) >= 0

    cdef int clear_all(self) except -1:
        cdef Py_ssize_t s
        self.wait_for_batches()
        for s in range(self.slots_used):
            if self.slots[s].key != NULL:
                self.remove_slot(s)
        self.idle_not_before_ns = INT64_MAX
        self.full_inserts_since_sweep = 0
        return 0

    # -- decisions shared by every keyed limiter ----------------------------------------------

    cdef int64_t room_wait_ns(self, int64_t now_ns) noexcept nogil:
        """retry_after for a new key denied for room (every key live, on_full="deny").

        A lower bound on when some key turns idle and frees a slot (idle_not_before_ns), cut
        to the owner's horizon by which every key is idle, and at least 1 ns.
        """
        cdef int64_t wait_ns = self.idle_not_before_ns - now_ns
        cdef int64_t horizon_ns = self.idle_horizon_ns(now_ns)
        if wait_ns > horizon_ns:
            wait_ns = horizon_ns
        return 1 if wait_ns < 1 else wait_ns

    cdef Decision full_denial(self, int64_t now_ns):
        """The Decision for a new key denied for room."""
        return decision_new(False, 0, self.room_wait_ns(now_ns), 0)

    cdef object acquire_batch(self, object keys, object costs, object now,
                              bint with_retry_after):
        """acquire_many() of every keyed limiter: validate everything, then decide.

        ``keys`` is a sequence of keys or an integer numpy array of handles; costs are checked
        and converted by the owner (batch_costs) before any key is inserted or decided.
        """
        cdef Py_ssize_t n = len(keys)
        cdef int64_t[::1] unit_costs = self.batch_costs(costs, n)
        cdef int64_t now_ns = seconds_to_ns(now, "now") if now is not None else clock_now_ns(self.clock_)
        allowed = np.empty(n, dtype=np.bool_)        # every entry is written by the kernel
        retry = np.zeros(n, dtype=np.float64) if with_retry_after else None
        cdef uint8_t[::1] allowed_view = allowed.view(np.uint8)
        cdef double[::1] retry_view = retry if retry is not None else None
        cdef int64_t[::1] handles
        cdef int64_t* slots
        if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
            handles = np.ascontiguousarray(keys, dtype=np.int64)
            self.decide_handles(handles, unit_costs, now_ns, allowed_view, retry_view)
        else:
            slots = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
            if slots == NULL:
                raise MemoryError()
            try:
                self.decide_keys(keys, n, slots, unit_costs, now_ns, allowed_view, retry_view)
            finally:
                free(slots)
        return (allowed, retry) if with_retry_after else allowed

    cdef int decide_handles(self, int64_t[::1] handles, int64_t[::1] costs, int64_t now_ns,
                            uint8_t[::1] allowed, double[::1] retry) except -1:
        """Validate every handle, run the owner's batch_begin, then decide in one nogil loop.

        batch_begin may change state (the counter's maintenance pass), so it runs only once
        the whole batch is known valid; if it released the GIL, keys may have left the table
        meanwhile and the handles are checked again.
        """
        cdef Py_ssize_t n = handles.shape[0]
        if n == 0:
            return 0
        self.check_handles(handles)
        if self.batch_begin(now_ns):
            self.check_handles(handles)
        # From here to the end of the kernel no key may leave the table: the GIL is held until
        # batches_in_flight is raised, and removals wait for it to drop.
        fc_atomic_add_i64(&self.batches_in_flight, 1)
        try:
            with nogil:
                self.decide_range(&handles[0], KEYTABLE_SLOT_MASK, n,
                                  &costs[0] if costs is not None else NULL,
                                  now_ns, &allowed[0],
                                  &retry[0] if retry is not None else NULL)
        finally:
            fc_atomic_add_i64(&self.batches_in_flight, -1)
        return 0

    cdef int check_handles(self, int64_t[::1] handles) except -1:
        """Raise IndexError for the first malformed or stale handle (GIL released meanwhile)."""
        cdef Py_ssize_t bad, n = handles.shape[0]
        fc_atomic_add_i64(&self.batches_in_flight, 1)    # no key leaves while checking
        try:
            with nogil:
                bad = self.first_bad_handle(&handles[0], n)
        finally:
            fc_atomic_add_i64(&self.batches_in_flight, -1)
        if bad >= 0:
            raise IndexError(f"handle {handles[bad]} at position {bad} is unknown or stale "
                             "(its key left the table): call handle(key) again")
        return 0

    cdef Py_ssize_t first_bad_handle(self, const int64_t* handles, Py_ssize_t n) noexcept nogil:
        """Index of the first malformed or stale handle, or -1 when all are valid."""
        cdef Py_ssize_t i, used = self.slots_used
        cdef int64_t ahead
        cdef char** pages = self.state_pages
        if not self.lost_a_key:
            # valid iff FIRST_STAY_HANDLE <= handle < FIRST_STAY_HANDLE + used (Invariants):
            # one unsigned comparison per handle, no generation read
            for i in range(n):
                if <uint64_t>(handles[i] - KEYTABLE_FIRST_STAY_HANDLE) >= <uint64_t>used:
                    return i
            return -1
        for i in range(n):
            if i + KEYTABLE_PREFETCH_AHEAD < n:
                ahead = handles[i + KEYTABLE_PREFETCH_AHEAD] & KEYTABLE_SLOT_MASK
                if ahead < used:
                    keytable_prefetch_line(keytable_generation_at(pages, ahead))
            if keytable_handle_slot(self, handles[i], used) < 0:
                return i
        return -1

    cdef int decide_keys(self, object keys, Py_ssize_t n, int64_t* slots, int64_t[::1] costs,
                         int64_t now_ns, uint8_t[::1] allowed, double[::1] retry) except -1:
        """Resolve keys to slots (hashing every key before any insert), then decide.

        Decisions resolved so far are made before any key could leave a full table, so an
        eviction never recycles a slot that a pending decision still names.
        """
        cdef Py_ssize_t i, start = 0
        cdef list key_list = list(keys)
        cdef Py_hash_t[::1] hashes = np.empty(n, dtype=np.intp)
        cdef Py_hash_t h
        cdef Py_ssize_t s
        for i in range(n):
            hashes[i] = PyObject_Hash(key_list[i])
        # Every key hashed: the batch is valid, so the owner's pre-batch work may change state.
        # No slot is resolved yet, so a pass that lets other threads run cannot stale one.
        self.batch_begin(now_ns)
        for i in range(n):
            key = key_list[i]
            h = hashes[i]
            s = keytable_lookup(self, key, h)
            if s >= 0:
                keytable_touch(self, s)
            else:
                if self.live >= self.max_keys_ and i > start:
                    self.decide_pending(slots, costs, start, i, now_ns, allowed, retry)
                    start = i
                s = self.insert(key, h, now_ns)
            slots[i] = s
        self.decide_pending(slots, costs, start, n, now_ns, allowed, retry)
        return 0

    cdef int decide_pending(self, int64_t* slots, int64_t[::1] costs, Py_ssize_t start,
                            Py_ssize_t stop, int64_t now_ns, uint8_t[::1] allowed,
                            double[::1] retry) except -1:
        if stop <= start:
            return 0
        fc_atomic_add_i64(&self.batches_in_flight, 1)
        try:
            with nogil:
                self.decide_range(slots + start, -1, stop - start,
                                  &costs[start] if costs is not None else NULL,
                                  now_ns, &allowed[start],
                                  &retry[start] if retry is not None else NULL)
        finally:
            fc_atomic_add_i64(&self.batches_in_flight, -1)
        return 0

    # -- Python protocol shared by every keyed limiter ----------------------------------------

    def handle(self, key):
        """The integer handle of ``key`` (inserted with fresh state if absent).

        Handles feed ``acquire_many`` without hashing. A handle stays valid while its key
        stays in the table; once the key is dropped (idle and the table full), evicted or
        reset, the handle is stale and ``acquire_many`` raises ``IndexError``: ask again.
        Raises ``TypeError`` for an unhashable key and ``FastcoreError`` when the table is
        full of live keys and ``on_full="deny"``.
        """
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef Py_ssize_t s = keytable_lookup(self, key, h)
        if s < 0:
            s = self.insert(key, h, now_ns)
            if s < 0:
                raise FastcoreError(
                    f"cannot add key {key!r}: all {self.max_keys_} keys are live and on_full='deny'")
            keytable_note_idle_at(self, self.slot_idle_at_ns(s))
        return keytable_handle(self, s)

    def __len__(self):
        return self.live

    def __contains__(self, key):
        return keytable_lookup(self, key, PyObject_Hash(key)) >= 0

    @property
    def max_keys(self):
        """The most keys the limiter holds at once."""
        return self.max_keys_

    @property
    def on_full(self):
        """What happens when every key is live: "evict" (LRU) or "deny" (new keys)."""
        return "deny" if self.on_full_policy == KEYTABLE_ON_FULL_DENY else "evict"

    @property
    def evictions(self):
        """How many live keys were evicted to make room (idle keys dropped are not counted)."""
        return self.evictions_

    @property
    def clock(self):
        """The clock the limiter reads."""
        return self.clock_

    def memory_bytes(self):
        """Bytes of C memory the table holds (slots, index, state pages), keys excluded."""
        return (self.slot_capacity * sizeof(KeySlot)
                + (self.index_mask + 1) * sizeof(int32_t)
                + self.pages_allocated * (KEYTABLE_GENERATIONS_BYTES
                                          + (KEYTABLE_PAGE_MASK + 1) * self.state_stride)
                + ((self.max_keys_ + KEYTABLE_PAGE_MASK) >> KEYTABLE_PAGE_SHIFT) * sizeof(char*))
