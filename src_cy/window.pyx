"""Sliding-window limiters (see window.pxd for the formulas, the bounds and their proofs)."""
from cpython.object cimport PyObject_Hash
from libc.math cimport isinf
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memset

import numbers
import operator

import numpy as np

from fastcore._core.cost cimport batch_cost_values, cost_arg
from fastcore._core.clock cimport clock_now_ns
from fastcore._core.decision cimport decision_new
from fastcore._core.keytable cimport (
    KEYTABLE_PREFETCH_AHEAD, keytable_lookup, keytable_prefetch_for_write, keytable_release,
    keytable_requeue, keytable_slot_for, keytable_state, keytable_state_at,
)

from fastcore._units import WINDOW_SLICES_MAX, shown, window_params
from fastcore.errors import CostExceedsLimit, InvalidCost


cdef int64_t window_checked_cost_units(double cost, int fraction_bits, int64_t limit_units,
                                       double limit) except -1:
    """The out-of-line path of window_cost_units: validates, then converts (cold)."""
    cdef int64_t units
    if not (cost >= 0.0) or isinf(cost):
        raise InvalidCost(f"cost must be finite and >= 0, got {cost!r}")
    if cost > limit:
        raise CostExceedsLimit(
            f"cost {cost!r} exceeds the limit {limit!r}: it could never be admitted")
    units = window_units(cost, fraction_bits)
    if units > limit_units:
        raise CostExceedsLimit(
            f"cost {cost!r} is {units} units of 2**-{fraction_bits} but the limit {limit!r} "
            f"holds {limit_units}: it could never be admitted")
    return units


cdef class WindowLimiter(KeyTable):
    """Base of the two sliding-window limiters: limit, window, cost units and batches."""

    cdef int window_setup(self, object limit, object window, Py_ssize_t slices,
                          object max_keys, object on_full, object clock,
                          Py_ssize_t state_bytes) except -1:
        limit_units, fraction_bits, window_ns, limit_value = window_params(limit, window, slices)
        self.keytable_init(max_keys, on_full, clock, state_bytes)
        self.limit_units = limit_units
        self.fraction_bits = fraction_bits
        self.window_ns = window_ns
        self.limit_ = limit_value
        self.limit_arg = limit
        self.window_arg = window
        self.one_units = (window_units(1.0, fraction_bits)
                          if 1.0 <= limit_value and (<int64_t>1 << fraction_bits) <= limit_units
                          else -1)
        return 0

    cdef int64_t[::1] batch_costs(self, object costs, Py_ssize_t n):
        """Per-decision units, validated whole before anything changes; None for cost 1."""
        cdef double[::1] values
        cdef int64_t[::1] units
        cdef Py_ssize_t i
        if costs is None:
            if self.one_units < 0:
                window_checked_cost_units(1.0, self.fraction_bits, self.limit_units, self.limit_)
            return None
        values = batch_cost_values(costs)
        if values.shape[0] != n:
            raise ValueError(f"keys and costs differ in length: {n} != {values.shape[0]}")
        units = np.empty(n, dtype=np.int64)
        for i in range(n):
            units[i] = window_cost_units(self, values[i])
        return units

    def acquire_many(self, keys, costs=None, *, now=None, with_retry_after=False):
        """Decide a whole batch in one nogil loop; a numpy bool array, one entry per key.

        ``keys``: a sequence of keys, or an int64 numpy array of handles (``handle(key)``),
        which skips hashing. ``costs``: None (1 each) or a sequence/array of the same length.
        ``now``: the time in seconds on the limiter's clock for the whole batch (default: the
        clock, read once). ``with_retry_after=True`` returns ``(allowed, retry_after)`` with
        a float64 array of seconds (0.0 where admitted).
        Raises ``ValueError`` when lengths differ, ``IndexError`` for a stale handle,
        ``InvalidCost``/``CostExceedsLimit``/``TypeError`` for bad costs or keys, all before
        any decision is made.
        """
        return self.acquire_batch(keys, costs, now, with_retry_after)

    @property
    def limit(self):
        """The limit per window, in cost units of 1."""
        return self.limit_

    @property
    def window(self):
        """The window in seconds (rounded to whole ns, and to whole ns per slice)."""
        return self.window_ns / 1e9

    @property
    def window_ns(self):
        """The window in ns."""
        return self.window_ns

    @property
    def cost_unit(self):
        """The fixed-point unit costs are counted in: 2**-F of a cost (see the README)."""
        return 2.0 ** -self.fraction_bits


cdef class SlidingWindowCounter(WindowLimiter):
    """SlidingWindowCounter(limit, window=None, *, max_keys=1_000_000, on_full="evict", clock=None)
--

The two-window approximation of a sliding window, per key, at most ``max_keys`` keys.

    Windows are aligned intervals of ``window`` seconds on the clock; at ``elapsed`` seconds
    into the current one, ``estimate = previous * (window - elapsed) / window + current`` and
    a call is admitted iff ``estimate + cost <= limit``. 8 bytes of state per key.
    ``limit``: a positive number (< 2**24) or a rate string ("100/minute": limit 100, window
    60 s, and then ``window`` is omitted). ``window``: seconds. ``max_keys``/``on_full``/
    ``clock`` as for ``KeyedTokenBucket``.
    Raises ``InvalidRate`` for a bad limit or window, ``InvalidCost``/``CostExceedsLimit``
    for a bad cost, ``TypeError`` for an unhashable key, ``IndexError`` for a stale handle;
    an error changes nothing.

    Example::

        limiter = SlidingWindowCounter("100/minute", max_keys=100_000)
        if not limiter.try_acquire(client_ip):
            ...
        d = limiter.acquire(tenant, cost=2.5)   # Decision(allowed=..., retry_after=...)
    """

    def __init__(self, limit, window=None, *, max_keys=1_000_000, on_full="evict", clock=None):
        self.window_setup(limit, window, 1, max_keys, on_full, clock, sizeof(uint64_t))
        self.clear_w = clock_now_ns(self.clock_) // self.window_ns
        self.cached_w = self.clear_w
        self.cached_start_ns = self.cached_w * self.window_ns

    cdef int64_t window_of(self, int64_t now_ns) except -1:
        """now // window_ns (cached while in one window); runs the pass when it is due."""
        cdef int64_t w
        if 0 <= now_ns - self.cached_start_ns < self.window_ns:
            return self.cached_w
        w = now_ns // self.window_ns
        if w >= self.clear_w + SWC_PASS_EVERY:
            self.clear_pass(w)
        self.cached_w = w
        self.cached_start_ns = w * self.window_ns
        return w

    cdef int clear_pass(self, int64_t w) except -1:
        """Zero every key last written before w - 2**13 and move the tag anchor to w.

        Those keys are idle (their counts expired long ago), so no decision changes; it keeps
        every live tag within 2**15 windows of the anchor (see window.pxd).
        """
        cdef Py_ssize_t s
        cdef uint64_t state
        cdef uint64_t* word
        self.wait_for_batches()
        for s in range(self.slots_used):
            if self.slots[s].key == NULL:
                continue
            word = <uint64_t*>keytable_state(self, s)
            state = word[0]
            if ((state & ((<uint64_t>1 << SWC_TAG_SHIFT) - 1)) != 0
                    and swc_decode_window(state, self.clear_w) < w - SWC_BACKDATE):
                word[0] = 0
        self.clear_w = w
        return 0

    cdef int batch_begin(self, int64_t now_ns) except -1:
        cdef int64_t anchor_w = self.clear_w
        self.window_of(now_ns)
        return self.clear_w != anchor_w          # a pass ran (and may have waited nogil)

    cdef int64_t slot_idle_at_ns(self, Py_ssize_t s) noexcept nogil:
        cdef uint64_t state = <uint64_t>fc_atomic_load_i64(<int64_t*>keytable_state(self, s))
        cdef int64_t prev = <int64_t>((state >> SWC_PREV_SHIFT) & WINDOW_COUNT_MASK)
        cdef int64_t cur = <int64_t>(state & WINDOW_COUNT_MASK)
        if prev == 0 and cur == 0:
            return 0
        return swc_idle_at_ns(swc_decode_window(state, self.clear_w), prev, cur, self.window_ns)

    cdef void slot_reset(self, Py_ssize_t s) noexcept nogil:
        fc_atomic_store_i64(<int64_t*>keytable_state(self, s), 0)

    cdef int64_t idle_horizon_ns(self, int64_t now_ns) noexcept nogil:
        return 2 * self.window_ns

    cdef object decision(self, bint allowed, SwcView* v, int64_t cost_units, int64_t now_ns):
        """The Decision fields from the state after the decision (see window.pxd)."""
        cdef int64_t window_ns = self.window_ns
        cdef int128 left = (<int128>(self.limit_units - v.cur) * window_ns
                            - <int128>v.prev * (window_ns - v.elapsed_ns))
        # left < 0 only for a decision dated back to the start of the key's window, where the
        # previous window still weighs fully: nothing remains
        cdef int64_t remaining = (<int64_t>((left >> self.fraction_bits) // window_ns)
                                  if left > 0 else 0)
        cdef int64_t idle_at_ns = swc_idle_at_ns(v.w, v.prev, v.cur, window_ns)
        cdef int64_t reset_ns = idle_at_ns - now_ns if idle_at_ns > now_ns else 0
        cdef int64_t retry_ns = 0
        if not allowed:
            retry_ns = swc_retry_ns(v, cost_units, self.limit_units, window_ns, now_ns)
        return decision_new(allowed, remaining, retry_ns, reset_ns)

    def try_acquire(self, key, object cost=1.0):
        """Count ``cost`` against ``key`` if the window has room; True when admitted."""
        cdef int64_t units = window_cost_units(self, cost_arg(cost))
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        # the window first: its maintenance pass may wait for batches, which must come
        # before the lookup whose slot is used (see keytable.pxd, Re-entrancy)
        cdef int64_t w = self.window_of(now_ns)
        cdef Py_ssize_t s = keytable_slot_for(self, key, now_ns)
        cdef SwcView v
        cdef bint allowed = s >= 0 and swc_admit(
            <uint64_t*>keytable_state(self, s), units, w, now_ns - w * self.window_ns,
            self.clear_w, self.limit_units, self.window_ns, &v)
        keytable_release(self)
        return allowed

    def acquire(self, key, object cost=1.0):
        """Count ``cost`` against ``key`` if the window has room; the full ``Decision``."""
        cdef int64_t units = window_cost_units(self, cost_arg(cost))
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef int64_t w = self.window_of(now_ns)            # before the lookup, as above
        cdef Py_ssize_t s = keytable_slot_for(self, key, now_ns)
        cdef SwcView v
        cdef bint allowed
        if s < 0:
            keytable_release(self)
            return self.full_denial(now_ns)
        allowed = swc_admit(<uint64_t*>keytable_state(self, s), units, w,
                            now_ns - w * self.window_ns, self.clear_w, self.limit_units,
                            self.window_ns, &v)
        keytable_release(self)
        return self.decision(allowed, &v, units, now_ns)

    def peek(self, key, object cost=1.0):
        """The ``Decision`` that ``acquire(key, cost)`` would return now, changing nothing."""
        cdef int64_t units = window_cost_units(self, cost_arg(cost))
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef int64_t w = self.window_of(now_ns)            # before the lookup (see acquire)
        cdef Py_ssize_t s = keytable_lookup(self, key, PyObject_Hash(key))
        cdef uint64_t state = 0
        cdef SwcView v
        cdef bint allowed
        if s >= 0:
            state = <uint64_t>fc_atomic_load_i64(<int64_t*>keytable_state(self, s))
        elif not self.room_available(now_ns):
            return self.full_denial(now_ns)
        swc_view(state, w, now_ns - w * self.window_ns, self.clear_w, &v)
        allowed = swc_fits(&v, units, self.limit_units, self.window_ns)
        if allowed:
            v.cur += units
        return self.decision(allowed, &v, units, now_ns)

    def reset(self, key=None):
        """Empty ``key``'s windows (its handle stays valid), or forget every key when None."""
        cdef Py_ssize_t s
        if key is None:
            self.clear_all()
            keytable_release(self)
            return
        s = keytable_lookup(self, key, PyObject_Hash(key))
        if s >= 0:
            fc_atomic_store_i64(<int64_t*>keytable_state(self, s), 0)
            keytable_requeue(self, s, clock_now_ns(self.clock_))

    cdef void decide_range(self, const int64_t* slots_or_handles, int64_t slot_mask,
                           Py_ssize_t n, const int64_t* costs, int64_t now_ns,
                           uint8_t* allowed, double* retry) noexcept nogil:
        """The batch kernel: one counter decision per entry, lock-free (CAS per key).

        Entries are slots (slot_mask -1) or handles (slot_mask 0xFFFFFFFF keeps the slot bits,
        i.e. handle % 2**32); a negative slot is a new key denied for room. clear_w cannot
        move while the batch is in flight (the pass waits for batches).
        """
        cdef Py_ssize_t i, s
        cdef int64_t window_ns = self.window_ns, limit_units = self.limit_units
        cdef int64_t anchor_w = self.clear_w
        cdef int64_t w = now_ns // window_ns
        cdef int64_t elapsed_ns = now_ns - w * window_ns
        cdef int64_t units = self.one_units
        cdef char** pages = self.state_pages
        cdef Py_ssize_t stride = self.state_stride
        cdef SwcView v
        for i in range(n):
            if i + KEYTABLE_PREFETCH_AHEAD < n:
                s = slots_or_handles[i + KEYTABLE_PREFETCH_AHEAD]
                if s >= 0:
                    keytable_prefetch_for_write(keytable_state_at(pages, stride, s & slot_mask))
            s = slots_or_handles[i]
            if costs != NULL:
                units = costs[i]
            if s < 0:
                allowed[i] = 0
                if retry != NULL:
                    retry[i] = self.room_wait_ns(now_ns) / 1e9
                continue
            if swc_admit(<uint64_t*>keytable_state_at(pages, stride, s & slot_mask), units, w,
                         elapsed_ns, anchor_w, limit_units, window_ns, &v):
                allowed[i] = 1
            else:
                allowed[i] = 0
                if retry != NULL:
                    retry[i] = swc_retry_ns(&v, units, limit_units, window_ns, now_ns) / 1e9

    def __repr__(self):
        return (f"SlidingWindowCounter(limit={self.limit_arg!r}, window={self.window_arg!r}, "
                f"max_keys={self.max_keys_}, on_full={self.on_full!r}, keys={self.live})")


cdef class SlidingWindow(WindowLimiter):
    """SlidingWindow(limit, window=None, *, slices=10, max_keys=1_000_000, on_full="evict", clock=None)
--

A sliding window kept as a ring of ``slices`` aligned sub-windows per key.

    The count is the sum of the current slice and the ``slices - 1`` before it; a call is
    admitted iff ``count + cost <= limit``. It never admits more than ``limit`` within any
    ``window - window/slices`` seconds, and never denies what an exact sliding log with the
    same history would admit. 16 + 4 * slices bytes of state per key (56 at 10 slices).
    ``limit``/``window``/``max_keys``/``on_full``/``clock`` as for ``SlidingWindowCounter``;
    ``slices``: 1..1024 (the window is rounded up to whole ns per slice).
    Raises ``InvalidRate`` for a bad limit or window, ``TypeError``/``ValueError`` for bad
    ``slices``, ``InvalidCost``/``CostExceedsLimit`` for a bad cost, ``TypeError`` for an
    unhashable key, ``IndexError`` for a stale handle; an error changes nothing.

    Example::

        limiter = SlidingWindow(1000, 60.0, slices=12)
        d = limiter.acquire(agent_id)
        if not d:
            return 429, {"Retry-After": str(math.ceil(d.retry_after))}
    """

    def __init__(self, limit, window=None, *, slices=10, max_keys=1_000_000, on_full="evict",
                 clock=None):
        if isinstance(slices, (bool, np.bool_)) or not isinstance(slices, numbers.Integral):
            raise TypeError(f"slices must be an int, got {shown(slices)}")
        slices = operator.index(slices)
        if not 1 <= slices <= WINDOW_SLICES_MAX:
            raise ValueError(
                f"slices must be between 1 and {WINDOW_SLICES_MAX}, got {shown(slices)}")
        self.window_setup(limit, window, slices, max_keys, on_full, clock,
                          (sizeof(RingHead) + slices * sizeof(uint32_t) + 7) & ~7)
        self.slices = slices
        self.slice_ns = self.window_ns // slices

    cdef int64_t slot_idle_at_ns(self, Py_ssize_t s) noexcept nogil:
        cdef RingHead* head = <RingHead*>keytable_state(self, s)
        cdef int64_t newest = ring_lock(head)
        cdef int64_t idle_at_ns = ring_idle_at_ns(head, newest, self.slices, self.slice_ns)
        ring_unlock(head, newest)
        return idle_at_ns

    cdef void slot_reset(self, Py_ssize_t s) noexcept nogil:
        memset(keytable_state(self, s), 0, self.state_stride)

    cdef int64_t idle_horizon_ns(self, int64_t now_ns) noexcept nogil:
        return self.window_ns

    cdef bint decide(self, Py_ssize_t s, int64_t units, int64_t now_ns, bint write,
                     int64_t* fields) noexcept nogil:
        """One ring decision under the key's lock; fields (when not NULL) receive
        remaining, retry_after_ns and reset_after_ns. write=False decides without counting."""
        cdef RingHead* head = <RingHead*>keytable_state(self, s)
        cdef int64_t newest = ring_lock(head)
        cdef int64_t slice_now = now_ns // self.slice_ns
        cdef int64_t idle_at_ns
        cdef bint allowed
        newest = ring_advance(head, newest, slice_now, -1, self.slices)
        allowed = head.total + units <= self.limit_units
        if allowed and write:
            ring_counts(head)[head.pos] += <uint32_t>units
            head.total += <uint32_t>units
        if fields != NULL:
            fields[0] = (self.limit_units - head.total
                         - (units if allowed and not write else 0)) >> self.fraction_bits
            fields[1] = 0 if allowed else ring_retry_ns(head, newest, units, self.limit_units,
                                                        self.slices, self.slice_ns, now_ns)
            idle_at_ns = ring_idle_at_ns(head, newest, self.slices, self.slice_ns)
            if allowed and not write and units:
                idle_at_ns = (newest + self.slices) * self.slice_ns
            fields[2] = idle_at_ns - now_ns if idle_at_ns > now_ns else 0
        ring_unlock(head, newest)
        return allowed

    def try_acquire(self, key, object cost=1.0):
        """Count ``cost`` against ``key`` if the window has room; True when admitted."""
        cdef int64_t units = window_cost_units(self, cost_arg(cost))
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_ssize_t s = keytable_slot_for(self, key, now_ns)
        cdef bint allowed = s >= 0 and self.decide(s, units, now_ns, True, NULL)
        keytable_release(self)
        return allowed

    def acquire(self, key, object cost=1.0):
        """Count ``cost`` against ``key`` if the window has room; the full ``Decision``."""
        cdef int64_t units = window_cost_units(self, cost_arg(cost))
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_ssize_t s = keytable_slot_for(self, key, now_ns)
        cdef int64_t fields[3]
        cdef bint allowed
        if s < 0:
            keytable_release(self)
            return self.full_denial(now_ns)
        allowed = self.decide(s, units, now_ns, True, fields)
        keytable_release(self)
        return decision_new(allowed, fields[0], fields[1], fields[2])

    def peek(self, key, object cost=1.0):
        """The ``Decision`` that ``acquire(key, cost)`` would return now, changing nothing."""
        cdef int64_t units = window_cost_units(self, cost_arg(cost))
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_ssize_t s = keytable_lookup(self, key, PyObject_Hash(key))
        cdef int64_t fields[3]
        cdef bint allowed
        if s < 0:
            if not self.room_available(now_ns):
                return self.full_denial(now_ns)
            return decision_new(True, (self.limit_units - units) >> self.fraction_bits, 0,
                                self.window_ns - now_ns % self.slice_ns if units else 0)
        allowed = self.decide(s, units, now_ns, False, fields)
        return decision_new(allowed, fields[0], fields[1], fields[2])

    def reset(self, key=None):
        """Empty ``key``'s window (its handle stays valid), or forget every key when None."""
        cdef Py_ssize_t s
        cdef RingHead* head
        if key is None:
            self.clear_all()
            keytable_release(self)
            return
        s = keytable_lookup(self, key, PyObject_Hash(key))
        if s >= 0:
            head = <RingHead*>keytable_state(self, s)
            ring_lock(head)
            memset(ring_counts(head), 0, self.slices * sizeof(uint32_t))
            head.total = 0
            head.pos = 0
            ring_unlock(head, 0)
            keytable_requeue(self, s, clock_now_ns(self.clock_))

    cdef void decide_range(self, const int64_t* slots_or_handles, int64_t slot_mask,
                           Py_ssize_t n, const int64_t* costs, int64_t now_ns,
                           uint8_t* allowed, double* retry) noexcept nogil:
        """The batch kernel: one ring decision per entry under the key's spin lock.

        Entries are slots (slot_mask -1) or handles (slot_mask 0xFFFFFFFF keeps the slot bits,
        i.e. handle % 2**32); a negative slot is a new key denied for room.
        """
        cdef Py_ssize_t i, s
        cdef int64_t units = self.one_units, newest
        cdef int64_t slice_now = now_ns // self.slice_ns
        cdef int64_t limit_units = self.limit_units, slice_ns = self.slice_ns
        cdef uint32_t slices = self.slices
        cdef int64_t pos_now = slice_now % slices
        cdef char** pages = self.state_pages
        cdef Py_ssize_t stride = self.state_stride
        cdef RingHead* head
        cdef char* ahead
        for i in range(n):
            if i + KEYTABLE_PREFETCH_AHEAD < n:
                s = slots_or_handles[i + KEYTABLE_PREFETCH_AHEAD]
                if s >= 0:
                    # an entry may straddle two lines: ask for both ends
                    ahead = keytable_state_at(pages, stride, s & slot_mask)
                    keytable_prefetch_for_write(ahead)
                    keytable_prefetch_for_write(ahead + stride - 1)
            s = slots_or_handles[i]
            if costs != NULL:
                units = costs[i]
            if s < 0:
                allowed[i] = 0
                if retry != NULL:
                    retry[i] = self.room_wait_ns(now_ns) / 1e9
                continue
            head = <RingHead*>keytable_state_at(pages, stride, s & slot_mask)
            newest = ring_advance(head, ring_lock(head), slice_now, pos_now, slices)
            if head.total + units <= limit_units:
                ring_counts(head)[head.pos] += <uint32_t>units
                head.total += <uint32_t>units
                ring_unlock(head, newest)
                allowed[i] = 1
            else:
                allowed[i] = 0
                if retry != NULL:
                    retry[i] = ring_retry_ns(head, newest, units, limit_units, slices,
                                             slice_ns, now_ns) / 1e9
                ring_unlock(head, newest)

    @property
    def slices(self):
        """Sub-windows per window."""
        return self.slices

    @property
    def slice_ns(self):
        """The length of one slice in ns (window_ns / slices)."""
        return self.slice_ns

    def __repr__(self):
        return (f"SlidingWindow(limit={self.limit_arg!r}, window={self.window_arg!r}, "
                f"slices={self.slices}, max_keys={self.max_keys_}, on_full={self.on_full!r}, "
                f"keys={self.live})")
