"""GCRA token buckets (see gcra.pxd for the math, the rounding and a worked example)."""
from cpython.object cimport PyObject_Hash
from libc.math cimport isinf
from libc.stdint cimport int64_t, uint8_t

import numpy as np

from fastcore._core.atomic cimport fc_atomic_store_i64
from fastcore._core.cost cimport batch_cost_values, cost_arg
from fastcore._core.clock cimport clock_now_ns, clock_resolve
from fastcore._core.keytable cimport (
    KEYTABLE_PREFETCH_AHEAD, keytable_lookup, keytable_prefetch_for_write, keytable_release,
    keytable_requeue, keytable_slot_for, keytable_state, keytable_state_at,
)

from fastcore._units import gcra_params
from fastcore.errors import CostExceedsBurst, InvalidCost


cdef int64_t gcra_checked_cost_ns(double cost, int64_t emission_ns, int64_t tau_ns,
                                  double burst) except -1:
    """The out-of-line path of gcra_cost_ns: validates, then converts (cold)."""
    cdef int64_t increment_ns
    if not (cost >= 0.0) or isinf(cost):
        raise InvalidCost(f"cost must be finite and >= 0, got {cost!r}")
    if cost > burst:
        raise CostExceedsBurst(
            f"cost {cost!r} exceeds the burst {burst!r}: it could never be admitted")
    increment_ns = gcra_increment_ns(cost, emission_ns)
    if increment_ns > tau_ns:
        raise CostExceedsBurst(
            f"cost {cost!r} needs {increment_ns} ns of tolerance but the bucket holds "
            f"{tau_ns} ns (burst {burst!r} rounded to whole ns)")
    return increment_ns


cdef class TokenBucket:
    """TokenBucket(rate, burst=None, *, clock=None)
--

One GCRA token bucket: ``rate`` tokens per second, capacity ``burst``.

    ``rate``: tokens per second (a positive number) or a rate string ("100/minute").
    ``burst``: the capacity; default the rate string's limit, else ``max(1, rate)``.
    ``clock``: ``None`` (the system monotonic clock), ``ManualClock`` or ``CoarseClock``.
    Raises ``InvalidRate`` for a bad rate or burst; costs raise ``InvalidCost`` (negative,
    NaN, infinite) or ``CostExceedsBurst``; an error changes nothing.

    Example::

        bucket = TokenBucket("10/second", burst=20)
        if bucket.try_acquire():
            ...
        decision = bucket.acquire(cost=2.5)   # Decision(allowed=..., retry_after=...)
    """

    def __init__(self, rate, burst=None, *, clock=None):
        emission_ns, tau_ns, burst_value = gcra_params(rate, burst)
        self.clock_ = clock_resolve(clock)
        self.emission_ns = emission_ns
        self.tau_ns = tau_ns
        self.burst_ = burst_value
        self.rate_ = rate
        self.tat_ns = 0

    def try_acquire(self, object cost=1.0):
        """Take ``cost`` tokens if available; True when admitted (the fast path)."""
        cdef int64_t increment_ns = gcra_cost_ns(cost_arg(cost), self.emission_ns, self.tau_ns,
                                                 self.burst_)
        cdef int64_t tat_after_ns
        return gcra_admit(&self.tat_ns, increment_ns, self.tau_ns,
                          clock_now_ns(self.clock_), &tat_after_ns)

    def acquire(self, object cost=1.0):
        """Take ``cost`` tokens if available and return the full ``Decision``."""
        cdef int64_t increment_ns = gcra_cost_ns(cost_arg(cost), self.emission_ns, self.tau_ns,
                                                 self.burst_)
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef int64_t tat_after_ns
        cdef bint allowed = gcra_admit(&self.tat_ns, increment_ns, self.tau_ns, now_ns,
                                       &tat_after_ns)
        return gcra_decision(allowed, tat_after_ns, increment_ns, now_ns, self.emission_ns,
                             self.tau_ns)

    def peek(self, object cost=1.0):
        """The ``Decision`` that ``acquire(cost)`` would return now, consuming nothing."""
        cdef int64_t increment_ns = gcra_cost_ns(cost_arg(cost), self.emission_ns, self.tau_ns,
                                                 self.burst_)
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef int64_t tat_after_ns
        cdef bint allowed = gcra_would_admit(self.tat_ns, increment_ns, self.tau_ns, now_ns,
                                             &tat_after_ns)
        return gcra_decision(allowed, tat_after_ns, increment_ns, now_ns, self.emission_ns,
                             self.tau_ns)

    def reset(self):
        """Refill the bucket to ``burst``."""
        fc_atomic_store_i64(&self.tat_ns, 0)

    @property
    def rate(self):
        """The rate as given (tokens per second, or the rate string)."""
        return self.rate_

    @property
    def burst(self):
        """The capacity in tokens."""
        return self.burst_

    @property
    def emission_ns(self):
        """The emission interval T in whole ns (1/rate rounded up)."""
        return self.emission_ns

    @property
    def tau_ns(self):
        """The tolerance tau = floor(burst * T) in ns."""
        return self.tau_ns

    @property
    def clock(self):
        """The clock the bucket reads."""
        return self.clock_

    def __repr__(self):
        return f"TokenBucket(rate={self.rate_!r}, burst={self.burst_!r})"


cdef class KeyedTokenBucket(KeyTable):
    """KeyedTokenBucket(rate, burst=None, *, max_keys=1_000_000, on_full="evict", clock=None)
--

One GCRA token bucket per key (any hashable key), at most ``max_keys`` keys.

    ``rate``/``burst``/``clock`` as for ``TokenBucket``. When the table is full, idle keys
    (full buckets) are dropped first, which changes no decision; if every key is live,
    ``on_full="evict"`` drops the least recently used key (counted in ``evictions``) and
    ``on_full="deny"`` denies new keys until room frees up.
    Raises ``TypeError`` for an unhashable key, ``InvalidCost``/``CostExceedsBurst`` for a
    bad cost, ``IndexError`` for a stale handle; an error changes nothing.

    Example::

        limiter = KeyedTokenBucket("100/minute", max_keys=100_000)
        if not limiter.try_acquire(agent_id):
            ...
        allowed = limiter.acquire_many(handles_array)   # numpy bool array, one nogil loop
    """

    def __init__(self, rate, burst=None, *, max_keys=1_000_000, on_full="evict", clock=None):
        emission_ns, tau_ns, burst_value = gcra_params(rate, burst)
        self.keytable_init(max_keys, on_full, clock, sizeof(int64_t))
        self.emission_ns = emission_ns
        self.tau_ns = tau_ns
        self.burst_ = burst_value
        self.rate_ = rate

    cdef int64_t slot_idle_at_ns(self, Py_ssize_t s) noexcept nogil:
        return fc_atomic_load_i64(<int64_t*>keytable_state(self, s))

    cdef void slot_reset(self, Py_ssize_t s) noexcept nogil:
        fc_atomic_store_i64(<int64_t*>keytable_state(self, s), 0)

    cdef int64_t idle_horizon_ns(self, int64_t now_ns) noexcept nogil:
        """Every TAT is at most now + tau, so every key is idle within tau."""
        return self.tau_ns

    def try_acquire(self, key, object cost=1.0):
        """Take ``cost`` tokens from ``key``'s bucket if available; True when admitted."""
        cdef int64_t increment_ns = gcra_cost_ns(cost_arg(cost), self.emission_ns, self.tau_ns,
                                                 self.burst_)
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_ssize_t s = keytable_slot_for(self, key, now_ns)
        cdef int64_t tat_after_ns
        cdef bint allowed = s >= 0 and gcra_admit(<int64_t*>keytable_state(self, s),
                                                  increment_ns, self.tau_ns, now_ns,
                                                  &tat_after_ns)
        keytable_release(self)
        return allowed

    def acquire(self, key, object cost=1.0):
        """Take ``cost`` tokens from ``key``'s bucket if available; the full ``Decision``."""
        cdef int64_t increment_ns = gcra_cost_ns(cost_arg(cost), self.emission_ns, self.tau_ns,
                                                 self.burst_)
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_ssize_t s = keytable_slot_for(self, key, now_ns)
        cdef int64_t tat_after_ns
        cdef bint allowed
        if s < 0:
            keytable_release(self)
            return self.full_denial(now_ns)
        allowed = gcra_admit(<int64_t*>keytable_state(self, s), increment_ns, self.tau_ns,
                             now_ns, &tat_after_ns)
        keytable_release(self)
        return gcra_decision(allowed, tat_after_ns, increment_ns, now_ns, self.emission_ns,
                             self.tau_ns)

    def peek(self, key, object cost=1.0):
        """The ``Decision`` that ``acquire(key, cost)`` would return now, changing nothing."""
        cdef int64_t increment_ns = gcra_cost_ns(cost_arg(cost), self.emission_ns, self.tau_ns,
                                                 self.burst_)
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef Py_ssize_t s = keytable_lookup(self, key, PyObject_Hash(key))
        cdef int64_t tat_ns = 0, tat_after_ns
        cdef bint allowed
        if s >= 0:
            tat_ns = fc_atomic_load_i64(<int64_t*>keytable_state(self, s))
        elif not self.room_available(now_ns):
            return self.full_denial(now_ns)
        allowed = gcra_would_admit(tat_ns, increment_ns, self.tau_ns, now_ns, &tat_after_ns)
        return gcra_decision(allowed, tat_after_ns, increment_ns, now_ns, self.emission_ns,
                             self.tau_ns)

    def reset(self, key=None):
        """Refill ``key``'s bucket (its handle stays valid), or forget every key when None."""
        cdef Py_ssize_t s
        if key is None:
            self.clear_all()
            keytable_release(self)
            return
        s = keytable_lookup(self, key, PyObject_Hash(key))
        if s >= 0:
            fc_atomic_store_i64(<int64_t*>keytable_state(self, s), 0)
            keytable_requeue(self, s, clock_now_ns(self.clock_))

    def acquire_many(self, keys, costs=None, *, now=None, with_retry_after=False):
        """Decide a whole batch in one nogil loop; a numpy bool array, one entry per key.

        ``keys``: a sequence of keys, or an int64 numpy array of handles (``handle(key)``),
        which skips hashing. ``costs``: None (1 each) or a sequence/array of the same length.
        ``now``: the time in seconds on the limiter's clock for the whole batch (default: the
        clock, read once). ``with_retry_after=True`` returns ``(allowed, retry_after)`` with
        a float64 array of seconds (0.0 where admitted).
        Raises ``ValueError`` when lengths differ, ``IndexError`` for a stale handle,
        ``InvalidCost``/``CostExceedsBurst``/``TypeError`` for bad costs or keys, all before
        any decision is made.
        """
        return self.acquire_batch(keys, costs, now, with_retry_after)

    cdef int64_t[::1] batch_costs(self, object costs, Py_ssize_t n):
        """Per-decision cost*T in ns, validated whole before anything changes; None for 1s."""
        cdef double[::1] values
        cdef int64_t[::1] increments
        cdef Py_ssize_t i
        if costs is None:
            if self.emission_ns > self.tau_ns:
                gcra_checked_cost_ns(1.0, self.emission_ns, self.tau_ns, self.burst_)
            return None
        values = batch_cost_values(costs)
        if values.shape[0] != n:
            raise ValueError(f"keys and costs differ in length: {n} != {values.shape[0]}")
        increments = np.empty(n, dtype=np.int64)
        for i in range(n):
            increments[i] = gcra_cost_ns(values[i], self.emission_ns, self.tau_ns, self.burst_)
        return increments

    cdef void decide_range(self, const int64_t* slots_or_handles, int64_t slot_mask,
                           Py_ssize_t n, const int64_t* increments, int64_t now_ns,
                           uint8_t* allowed, double* retry) noexcept nogil:
        """The batch kernel: one GCRA decision per entry, lock-free (CAS per TAT).

        Entries are slots (slot_mask -1) or handles (slot_mask 0xFFFFFFFF keeps the slot bits,
        i.e. handle % 2**32); a negative slot is a new key denied for room.
        """
        cdef Py_ssize_t i, s
        cdef int64_t increment_ns = self.emission_ns, tat_after_ns
        cdef int64_t tau_ns = self.tau_ns
        cdef char** pages = self.state_pages
        cdef Py_ssize_t stride = self.state_stride
        for i in range(n):
            if i + KEYTABLE_PREFETCH_AHEAD < n:
                s = slots_or_handles[i + KEYTABLE_PREFETCH_AHEAD]
                if s >= 0:
                    keytable_prefetch_for_write(keytable_state_at(pages, stride, s & slot_mask))
            s = slots_or_handles[i]
            if increments != NULL:
                increment_ns = increments[i]
            if s < 0:
                allowed[i] = 0
                if retry != NULL:
                    retry[i] = self.room_wait_ns(now_ns) / 1e9
                continue
            if gcra_admit(<int64_t*>keytable_state_at(pages, stride, s & slot_mask),
                          increment_ns, tau_ns, now_ns, &tat_after_ns):
                allowed[i] = 1
            else:
                allowed[i] = 0
                if retry != NULL:
                    retry[i] = (tat_after_ns + increment_ns - tau_ns - now_ns) / 1e9

    @property
    def rate(self):
        """The rate as given (tokens per second, or the rate string)."""
        return self.rate_

    @property
    def burst(self):
        """The capacity of each key's bucket in tokens."""
        return self.burst_

    @property
    def emission_ns(self):
        """The emission interval T in whole ns (1/rate rounded up)."""
        return self.emission_ns

    @property
    def tau_ns(self):
        """The tolerance tau = floor(burst * T) in ns."""
        return self.tau_ns

    def __repr__(self):
        return (f"KeyedTokenBucket(rate={self.rate_!r}, burst={self.burst_!r}, "
                f"max_keys={self.max_keys_}, on_full={self.on_full!r}, keys={self.live})")
