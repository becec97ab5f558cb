"""Bounded key -> slot table shared by the keyed limiters (see keytable.pxd for the layout,
the invariants and the re-entrancy rules)."""
from cpython.object cimport PyObject_Hash
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport INT64_MAX, uint64_t
from libc.stdlib cimport abort, calloc, free, malloc, realloc
from posix.stdlib cimport posix_memalign
from libc.string cimport memset
from posix.unistd cimport usleep

import numbers
import operator

import numpy as np

from fastcore._core.atomic cimport fc_atomic_add_i64, fc_atomic_load_i64
from fastcore._core.clock cimport clock_now_ns, clock_resolve
from fastcore._core.debug cimport FASTCORE_DEBUG
from fastcore._core.decision cimport decision_new
from fastcore._core.idlequeue cimport (
    IDLEQUEUE_DUE, IDLEQUEUE_LISTS, IdleLink, idlequeue_advance, idlequeue_init,
    idlequeue_list_of, idlequeue_move, idlequeue_next_ns, idlequeue_push, idlequeue_unlink,
)

from fastcore._units import seconds_to_ns, shown
from fastcore.errors import FastcoreError

_ON_FULL = {"evict": KEYTABLE_ON_FULL_EVICT, "deny": KEYTABLE_ON_FULL_DENY}
# Slots are int32 and handles carry the slot in 32 bits.
_MAX_KEYS_LIMIT = (1 << 31) - 1
cdef uint32_t tables_made = 0       # numbers each table for its handle salt


cdef int64_t batch_now_ns(object now) except -1:
    """acquire_many's ``now`` (seconds) in ns; ValueError past 2**62 ns (about 146 years)."""
    cdef object ns = seconds_to_ns(now, "now")
    if ns > (1 << 62):
        raise ValueError(f"now must be at most 2**62 ns (about 146 years), got {shown(now)}")
    return ns


cdef class KeyTable:
    """Base of the keyed limiters: a bounded table of keys, each with a slot of state.

    Not used directly: ``KeyedTokenBucket``, ``SlidingWindowCounter`` and ``SlidingWindow``
    derive from it and share its protocol (``len``, ``in``, ``handle``, ``evictions``...).
    """

    def __cinit__(self, *args, **kwargs):
        self.slots = NULL
        self.index = NULL
        self.state_pages = NULL
        self.idle.links = NULL
        self.dead = NULL
        self.free_slot = -1
        self.lru_head = -1
        self.lru_tail = -1
        self.idle_not_before_ns = INT64_MAX
        idlequeue_init(&self.idle)

    cdef int keytable_init(self, object max_keys, object on_full, object clock,
                           Py_ssize_t state_bytes) except -1:
        """Validate everything first, then allocate: a bad argument leaves nothing behind."""
        if isinstance(max_keys, (bool, np.bool_)) or not isinstance(max_keys, numbers.Integral):
            raise TypeError(f"max_keys must be an int, got {shown(max_keys)}")
        max_keys = operator.index(max_keys)
        if not 1 <= max_keys <= _MAX_KEYS_LIMIT:
            raise ValueError(
                f"max_keys must be between 1 and {_MAX_KEYS_LIMIT}, got {shown(max_keys)}")
        if on_full not in _ON_FULL:
            raise ValueError(f"on_full must be 'evict' or 'deny', got {shown(on_full)}")
        cdef Clock resolved = clock_resolve(clock)
        if self.slots != NULL:
            raise TypeError(f"{type(self).__name__} is already initialised")
        global tables_made
        tables_made += 1
        self.handle_salt = (tables_made * <uint32_t>0x9E3779B1) & KEYTABLE_STAMP_MASK
        self.first_stay_handle = keytable_stamp(self, 1) << 32
        self.clock_ = resolved
        self.max_keys_ = max_keys
        self.on_full_policy = _ON_FULL[on_full]
        self.state_stride = state_bytes
        cdef Py_ssize_t pages = (self.max_keys_ + KEYTABLE_PAGE_MASK) >> KEYTABLE_PAGE_SHIFT
        self.state_pages = <char**>calloc(pages, sizeof(char*))
        self.slot_capacity = min(<Py_ssize_t>KEYTABLE_MIN_CAPACITY, self.max_keys_)
        self.slots = <KeySlot*>calloc(self.slot_capacity, sizeof(KeySlot))
        self.idle.links = <IdleLink*>calloc(self.slot_capacity, sizeof(IdleLink))
        self.index_shift = 59                   # 32 buckets = 2 * KEYTABLE_MIN_CAPACITY
        self.index_mask = 31
        self.index = <int32_t*>malloc(32 * sizeof(int32_t))
        if (self.state_pages == NULL or self.slots == NULL or self.index == NULL
                or self.idle.links == NULL):
            raise MemoryError()
        memset(self.index, 0xFF, 32 * sizeof(int32_t))   # every bucket -1 (empty)
        return 0

    def __dealloc__(self):
        cdef Py_ssize_t s, p
        if self.slots != NULL:
            for s in range(self.slots_used):
                Py_XDECREF(self.slots[s].key)
            free(self.slots)
        if self.dead != NULL:
            for s in range(self.dead_len):
                Py_XDECREF(self.dead[s])
            free(self.dead)
        free(self.idle.links)
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

    # -- growth (may raise MemoryError; changes no key, so an error leaves nothing half-done) --

    cdef int grow_slots(self, Py_ssize_t capacity) except -1:
        """Room for `capacity` slots (at most max_keys) in the slot and idle-link arrays."""
        cdef KeySlot* grown
        cdef IdleLink* links
        capacity = min(capacity, self.max_keys_)
        if capacity <= self.slot_capacity:
            return 0
        links = <IdleLink*>realloc(self.idle.links, capacity * sizeof(IdleLink))
        if links == NULL:
            raise MemoryError()
        self.idle.links = links
        grown = <KeySlot*>realloc(self.slots, capacity * sizeof(KeySlot))
        if grown == NULL:
            raise MemoryError()
        memset(grown + self.slot_capacity, 0, (capacity - self.slot_capacity) * sizeof(KeySlot))
        self.slots = grown
        self.slot_capacity = capacity
        return 0

    cdef int ensure_page(self, Py_ssize_t s) except -1:
        """Allocate the state pages up to the one holding slot s; pages never move.

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
        self.version += 1                          # a probe paused in __eq__ must start again
        for s in range(self.slots_used):
            if self.slots[s].key != NULL:
                i = keytable_bucket(self, self.slots[s].hash)
                while self.index[i] >= 0:
                    i = (i + 1) & self.index_mask
                self.index[i] = <int32_t>s
        return 0

    cdef int reserve(self, Py_ssize_t new_keys, Py_ssize_t removals) except -1:
        """Allocate ahead what `new_keys` inserts and `removals` removals need, so that the
        inserts and removals that follow cannot fail half-way."""
        cdef Py_ssize_t keys = min(self.live + new_keys, self.max_keys_)
        cdef Py_ssize_t slots = min(self.slots_used + new_keys, self.max_keys_)
        cdef Py_ssize_t capacity
        cdef PyObject** grown
        if slots > self.slot_capacity:
            capacity = self.slot_capacity
            while capacity < slots:
                capacity *= 2
            self.grow_slots(capacity)
        if slots > 0:
            self.ensure_page(slots - 1)
        while keys * 2 > self.index_mask + 1:
            self.grow_index()
        if self.dead_len + removals > self.dead_capacity:
            capacity = max(self.dead_len + removals, 2 * self.dead_capacity, 8)
            grown = <PyObject**>realloc(self.dead, capacity * sizeof(PyObject*))
            if grown == NULL:
                raise MemoryError()
            self.dead = grown
            self.dead_capacity = capacity
        return 0

    # -- insertion and removal -------------------------------------------------------------

    cdef Py_ssize_t insert(self, object key, Py_hash_t h, int64_t now_ns) except -2:
        """Insert `key`, which a lookup just found absent; -1 when a full table denies it.

        A full table must remove a key, which waits for running batches without the GIL;
        if the table changed meanwhile the key is looked up again (another thread may have
        inserted it), so the slot returned always holds `key` (re-entrancy rule 2).
        """
        cdef uint64_t version
        cdef Py_ssize_t s
        while (self.live >= self.max_keys_
               and fc_atomic_load_i64(&self.batches_in_flight) > 0):
            version = self.version
            self.wait_for_batches()
            if self.version != version:
                s = keytable_lookup(self, key, h)     # may run Python: loop to check again
                if s >= 0:
                    keytable_touch(self, s)
                    return s
        return self.place(key, h, now_ns)

    cdef Py_ssize_t place(self, object key, Py_hash_t h, int64_t now_ns) except -2:
        """Insert an absent key with fresh state as most recently used; -1 when denied.

        Runs no Python code and keeps the GIL: the caller guarantees that no batch is in
        flight if the table is full. Allocation comes first, so MemoryError changes nothing.
        """
        cdef Py_ssize_t s, i
        cdef KeySlot* slot
        self.reserve(1, 1)
        if self.live >= self.max_keys_ and not self.make_room(now_ns):
            return -1
        if self.free_slot >= 0:
            s = self.free_slot
            self.free_slot = self.slots[s].older
        else:
            s = self.slots_used
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
        self.version += 1
        keytable_generation(self, s)[0] += 1      # odd: occupied
        self.slot_reset(s)
        idlequeue_push(&self.idle, <int32_t>s, now_ns)   # fresh: idle from now
        if FASTCORE_DEBUG:
            self.check_invariants()
        return s

    cdef void remove_slot(self, Py_ssize_t s) noexcept:
        """Take slot s out of the index, the LRU list and the idle queue. The key's reference
        moves to `dead` (reserved beforehand), released at the end of the public call,
        because releasing it may run arbitrary Python code (re-entrancy rule 3)."""
        cdef KeySlot* slot = &self.slots[s]
        cdef Py_ssize_t i = keytable_bucket(self, slot.hash)
        cdef Py_ssize_t j, home
        if FASTCORE_DEBUG and (slot.key == NULL or self.dead_len >= self.dead_capacity
                               or fc_atomic_load_i64(&self.batches_in_flight) != 0):
            abort()                                # a stale choice: never continue past it
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
        idlequeue_unlink(&self.idle, <int32_t>s)
        self.dead[self.dead_len] = slot.key
        self.dead_len += 1
        slot.key = NULL
        keytable_generation(self, s)[0] += 1      # even: free; the key's handles go stale
        self.lost_a_key = True
        slot.newer = -1
        slot.older = self.free_slot
        self.free_slot = <int32_t>s
        self.live -= 1
        self.version += 1

    cdef int release_dead(self) except -1:
        """Drop the references of removed keys. Each release may run a __del__ that
        re-enters the table (and removes more keys): fields are re-read every round."""
        cdef PyObject* key
        while self.dead_len > 0:
            self.dead_len -= 1
            key = self.dead[self.dead_len]
            Py_XDECREF(key)
        if self.dead_capacity > 1024 and self.dead_len == 0:
            free(self.dead)                       # a large drop: give its reservation back
            self.dead = NULL
            self.dead_capacity = 0
        return 0

    cdef int check_invariants(self) except -1:
        """Debug builds only: the index, the LRU list, the idle queue and the live count
        agree, generations are odd exactly on occupied slots, queued entries sit in the
        list their time names."""
        cdef Py_ssize_t s, i, in_index = 0, in_lru = 0, queued = 0, due = 0
        cdef int lst
        for i in range(self.index_mask + 1):
            if self.index[i] >= 0:
                in_index += 1
                assert self.slots[self.index[i]].key != NULL
        s = self.lru_head
        while s >= 0:
            in_lru += 1
            assert self.slots[s].key != NULL
            s = self.slots[s].older
        for lst in range(IDLEQUEUE_LISTS):
            s = self.idle.heads[lst]
            if lst:
                assert (s >= 0) == bool(self.idle.occupied & ((<uint64_t>1) << (lst - 1)))
            while s >= 0:
                queued += 1
                due += lst == IDLEQUEUE_DUE
                assert self.slots[s].key != NULL
                assert idlequeue_list_of(&self.idle, self.idle.links[s].queued_ns) == lst
                if lst:
                    assert self.idle.links[s].queued_ns >= self.idle.floor_ns
                s = self.idle.links[s].next
        assert in_index == in_lru == queued == self.live <= self.max_keys_, (
            in_index, in_lru, queued, self.live)
        assert due == self.idle.due_count, (due, self.idle.due_count)
        assert self.dead_len <= self.dead_capacity
        for s in range(self.slots_used):
            assert (keytable_generation(self, s)[0] & 1) == (self.slots[s].key != NULL), s
        if not self.lost_a_key:
            for s in range(self.slots_used):
                assert keytable_generation(self, s)[0] == 1, (s, keytable_generation(self, s)[0])
        return 0

    cdef int wait_for_batches(self) except -1:
        """Wait without the GIL until no nogil batch uses slot state; 1 if it had to wait
        (other threads ran meanwhile: slots found before may be stale), else 0.

        Writer preference: removers_waiting tells batches that start meanwhile to run with
        the GIL held (run_kernel), so only the batches already running are waited for. On
        return the GIL is held and batches_in_flight is 0; it stays 0 until this thread
        releases the GIL or runs Python code.
        """
        if fc_atomic_load_i64(&self.batches_in_flight) == 0:
            return 0
        fc_atomic_add_i64(&self.removers_waiting, 1)
        try:
            while fc_atomic_load_i64(&self.batches_in_flight) > 0:
                with nogil:
                    while fc_atomic_load_i64(&self.batches_in_flight) > 0:
                        usleep(20)
        finally:
            fc_atomic_add_i64(&self.removers_waiting, -1)
        return 1

    cdef Py_ssize_t idle_slot(self, int64_t now_ns) noexcept:
        """The slot of a key idle at now_ns, or -1 when no key is (exact; see idlequeue.pxd).
        Reads only what a decision sees (room_available's question).

        Drains the DUE list: an entry whose key is not idle after all (admissions moved its
        idle time) is queued again at that time, later than now. Each such move is paid for
        by the admissions that moved the key's idle time, so the drain is O(1) amortised. A
        clock that went back (now_ns < cursor) can leave such an entry in DUE: at most
        due_count entries are looked at, so the loop always ends.
        """
        cdef Py_ssize_t budget
        cdef int32_t s
        cdef int64_t idle_at_ns
        idlequeue_advance(&self.idle, now_ns)
        budget = self.idle.due_count
        while budget > 0:
            budget -= 1
            s = self.idle.heads[IDLEQUEUE_DUE]
            idle_at_ns = self.slot_idle_at_ns(s)
            if idle_at_ns <= now_ns:
                return s
            idlequeue_move(&self.idle, s, idle_at_ns)
        self.idle_not_before_ns = idlequeue_next_ns(&self.idle)
        return -1

    cdef bint make_room(self, int64_t now_ns) except -1:
        """Free room in a full table by the documented policy; False means deny.

        Every idle key goes (what a sweep of the whole table would drop: the idle queue's DUE
        list holds them all, see idlequeue.pxd); the DUE entries that are not idle after all
        are queued again at their idle time. Only when no key is idle does the policy apply:
        evict the least recently used key, or deny. GIL held, no batch in flight (the caller
        waited), no Python code.
        """
        cdef Py_ssize_t budget, removed = 0
        cdef int32_t s
        cdef int64_t idle_at_ns
        if FASTCORE_DEBUG:
            assert fc_atomic_load_i64(&self.batches_in_flight) == 0
        idlequeue_advance(&self.idle, now_ns)
        budget = self.idle.due_count         # a clock that went back may re-queue into DUE
        while budget > 0:
            budget -= 1
            s = self.idle.heads[IDLEQUEUE_DUE]
            idle_at_ns = self.slot_idle_at_ns(s)
            if idle_at_ns <= now_ns:
                # room for the reference first; MemoryError part-way has dropped only idle
                # keys, which changes no decision
                self.reserve(0, 1)
                self.remove_slot(s)
                removed += 1
            else:
                idlequeue_move(&self.idle, s, idle_at_ns)
        if removed:
            return True
        self.idle_not_before_ns = idlequeue_next_ns(&self.idle)
        if self.on_full_policy == KEYTABLE_ON_FULL_DENY:
            return False
        self.reserve(0, 1)
        self.remove_slot(self.lru_tail)
        self.evictions_ += 1
        return True

    cdef bint room_available(self, int64_t now_ns):
        """Whether an insert now would get a slot (what make_room would decide). Removes
        nothing; may re-place idle-queue entries, which changes no decision."""
        if self.live < self.max_keys_ or self.on_full_policy == KEYTABLE_ON_FULL_EVICT:
            return True
        return self.idle_slot(now_ns) >= 0

    cdef int clear_all(self) except -1:
        cdef Py_ssize_t s
        self.wait_for_batches()
        self.reserve(0, self.live)
        for s in range(self.slots_used):
            if self.slots[s].key != NULL:
                self.remove_slot(s)
        if FASTCORE_DEBUG:
            self.check_invariants()
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
        cdef int64_t now_ns = (batch_now_ns(now) if now is not None
                               else clock_now_ns(self.clock_))
        allowed = np.empty(n, dtype=np.bool_)        # every entry is written by the kernel
        retry = np.zeros(n, dtype=np.float64) if with_retry_after else None
        cdef uint8_t[::1] allowed_view = allowed.view(np.uint8)
        cdef double[::1] retry_view = retry if retry is not None else None
        cdef int64_t[::1] handles
        cdef int64_t* slots
        cdef list key_list
        if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
            handles = np.ascontiguousarray(keys, dtype=np.int64)
            self.decide_handles(handles, unit_costs, now_ns, allowed_view, retry_view)
        else:
            key_list = list(keys)
            if len(key_list) != n:
                raise ValueError(f"keys changed length while read: {n} then {len(key_list)}")
            slots = <int64_t*>malloc(max(n, 1) * 3 * sizeof(int64_t))
            if slots == NULL:
                raise MemoryError()
            try:
                self.decide_keys(key_list, n, slots, unit_costs, now_ns, allowed_view,
                                 retry_view)
            finally:
                free(slots)
                keytable_release(self)
        return (allowed, retry) if with_retry_after else allowed

    cdef void run_kernel(self, const int64_t* slots_or_handles, int64_t slot_mask,
                         Py_ssize_t n, const int64_t* costs, int64_t now_ns,
                         uint8_t* allowed, double* retry) noexcept:
        """Run the owner's kernel on slots that are valid now (GIL held, no Python since).

        Normally without the GIL, with batches_in_flight raised so that no key leaves the
        table meanwhile. While a remover waits (writer preference) the kernel runs holding
        the GIL instead: it cannot then be overtaken by a removal, and the remover waits only
        for the batches that were already running.
        """
        if n <= 0:
            return
        if fc_atomic_load_i64(&self.removers_waiting) > 0:
            self.decide_range(slots_or_handles, slot_mask, n, costs, now_ns, allowed, retry)
            return
        fc_atomic_add_i64(&self.batches_in_flight, 1)
        with nogil:
            self.decide_range(slots_or_handles, slot_mask, n, costs, now_ns, allowed, retry)
        fc_atomic_add_i64(&self.batches_in_flight, -1)

    cdef int decide_handles(self, int64_t[::1] handles, int64_t[::1] costs, int64_t now_ns,
                            uint8_t[::1] allowed, double[::1] retry) except -1:
        """Validate every handle, run the owner's batch_begin, then decide in one nogil loop.

        batch_begin may change state (the counter's maintenance pass), so it runs only once
        the whole batch is known valid; if it released the GIL, keys may have left the table
        meanwhile and the handles are checked again. Between the last check and the kernel
        the GIL is held and no Python code runs, so no handle goes stale in between.
        """
        cdef Py_ssize_t n = handles.shape[0]
        if n == 0:
            return 0
        self.check_handles(handles)
        if self.batch_begin(now_ns):
            self.check_handles(handles)
        self.run_kernel(&handles[0], KEYTABLE_SLOT_MASK, n,
                        &costs[0] if costs is not None else NULL,
                        now_ns, &allowed[0], &retry[0] if retry is not None else NULL)
        return 0

    cdef int check_handles(self, int64_t[::1] handles) except -1:
        """Raise IndexError for the first malformed or stale handle. Reads only."""
        cdef Py_ssize_t bad, n = handles.shape[0]
        if fc_atomic_load_i64(&self.removers_waiting) > 0:
            bad = self.first_bad_handle(&handles[0], n)       # with the GIL, see run_kernel
        else:
            fc_atomic_add_i64(&self.batches_in_flight, 1)    # no key leaves while checking
            with nogil:
                bad = self.first_bad_handle(&handles[0], n)
            fc_atomic_add_i64(&self.batches_in_flight, -1)
        if bad >= 0:
            raise IndexError(f"handle {handles[bad]} at position {bad} is unknown or stale "
                             "(its key left the table): call handle(key) again")
        return 0

    cdef Py_ssize_t first_bad_handle(self, const int64_t* handles, Py_ssize_t n) noexcept nogil:
        """Index of the first malformed or stale handle, or -1 when all are valid."""
        cdef Py_ssize_t i, used = self.slots_used
        cdef int64_t ahead, first = self.first_stay_handle
        cdef char** pages = self.state_pages
        if not self.lost_a_key:
            # valid iff first <= handle < first + used (Invariants): one unsigned comparison
            # per handle, no generation read
            for i in range(n):
                if <uint64_t>(handles[i] - first) >= <uint64_t>used:
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

    cdef int decide_keys(self, list keys, Py_ssize_t n, int64_t* slots, int64_t[::1] costs,
                         int64_t now_ns, uint8_t[::1] allowed, double[::1] retry) except -1:
        """A batch of keys in three phases (re-entrancy rule 4).

        1. Resolve, changing nothing: hash every key, name each distinct key by its first
           position (a dict: equality as Python defines it) and look that one up. Any
           exception leaves the table as it was. When the table changed meanwhile (a key's
           Python code, another thread, the owner's batch_begin waiting), resolve again.
        2. Commit with the GIL held and no Python code: the slots and index the new keys need
           are allocated first, then each key is touched or inserted in order. An insert into a full
           table may evict a key that an earlier position still has to decide, so the
           positions since the last eviction are decided first, holding the GIL.
        3. Decide the rest in one kernel (run_kernel).

        Buffers (3n int64 in `slots`): slots[i] the slot of position i (-1 denied for room);
        first[i] the first position of the same key; stays[i] that key's generation when
        resolved, to see whether an eviction of this batch took it out meanwhile.
        """
        cdef int64_t* first = slots + n
        cdef int64_t* stays = slots + 2 * n
        cdef Py_hash_t[::1] hashes = np.empty(max(n, 1), dtype=np.intp)
        cdef Py_ssize_t i, j, s, start, new_keys
        cdef uint64_t version
        cdef dict positions
        cdef object key
        for i in range(n):
            hashes[i] = PyObject_Hash(keys[i])
        while True:                                   # 1. resolve
            version = self.version
            positions = {}
            new_keys = 0
            for i in range(n):
                key = keys[i]
                j = positions.setdefault(key, i)
                first[i] = j
                if j == i:
                    s = keytable_lookup(self, key, hashes[i])
                    slots[i] = s
                    stays[i] = keytable_generation(self, s)[0] if s >= 0 else 0
                    new_keys += s < 0
            if self.version != version:
                continue
            # the owner's pre-batch work runs once the batch is known valid
            if self.batch_begin(now_ns) and self.version != version:
                continue
            if self.live + new_keys > self.max_keys_ and self.wait_for_batches():
                if self.version != version:
                    continue
            break
        # 2. commit: from here to the kernel the GIL is held and no Python code runs
        self.reserve(new_keys, 0)
        start = 0
        for i in range(n):
            j = first[i]
            s = slots[j]
            if s >= 0 and keytable_generation(self, s)[0] == <uint32_t>stays[j]:
                keytable_touch(self, s)
            else:
                if self.live >= self.max_keys_ and i > start:
                    self.decide_range(slots + start, -1, i - start,
                                      &costs[start] if costs is not None else NULL,
                                      now_ns, &allowed[start],
                                      &retry[start] if retry is not None else NULL)
                    start = i
                s = self.place(keys[i], hashes[i], now_ns)
                slots[j] = s
                stays[j] = keytable_generation(self, s)[0] if s >= 0 else 0
            slots[i] = s
        # 3. decide
        self.run_kernel(slots + start, -1, n - start,
                        &costs[start] if costs is not None else NULL,
                        now_ns, &allowed[start], &retry[start] if retry is not None else NULL)
        return 0

    # -- Python protocol shared by every keyed limiter ----------------------------------------

    def handle(self, key):
        """The integer handle of ``key`` (inserted with fresh state if absent).

        Handles feed ``acquire_many`` without hashing; they belong to this limiter (another
        limiter's handles are refused with ``IndexError``). A handle stays valid while its key
        stays in the table; once the key is dropped (idle and the table full), evicted or
        reset, the handle is stale and ``acquire_many`` raises ``IndexError``: ask again.
        Raises ``TypeError`` for an unhashable key and ``FastcoreError`` when the table is
        full of live keys and ``on_full="deny"``.
        """
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef Py_ssize_t s = keytable_lookup(self, key, h)    # a present key is not touched
        if s < 0:
            s = self.insert(key, h, now_ns)
        cdef int64_t handle = keytable_handle(self, s) if s >= 0 else -1
        keytable_release(self)
        if s < 0:
            raise FastcoreError(
                f"cannot add key {key!r}: all {self.max_keys_} keys are live and on_full='deny'")
        return handle

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
        """Bytes of C memory the table holds (slots, idle-queue links, index, state pages), keys
        excluded, and so is the scratch list of removed keys' references kept during a call
        (at most 8 KiB between calls)."""
        return (self.slot_capacity * (sizeof(KeySlot) + sizeof(IdleLink))
                + (self.index_mask + 1) * sizeof(int32_t)
                + self.pages_allocated * (KEYTABLE_GENERATIONS_BYTES
                                          + (KEYTABLE_PAGE_MASK + 1) * self.state_stride)
                + ((self.max_keys_ + KEYTABLE_PAGE_MASK) >> KEYTABLE_PAGE_SHIFT) * sizeof(char*))
