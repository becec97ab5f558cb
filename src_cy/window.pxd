# Sliding windows: SlidingWindowCounter (two aligned windows, the previous one weighted) and
# SlidingWindow (a ring of aligned slices), one per key on the bounded KeyTable.
#
# Promise: both decide exactly by the formulas below, in integers, so a reference model in
# Fractions agrees with them decision by decision; both return the same Decision as
# KeyedTokenBucket; concurrent callers (nogil batches included) never admit more than the
# formulas allow: the counter updates its one state word with compare-and-swap, the ring takes
# a one-bit spin lock inside its own state. There is no global lock on any decision.
#
# Time. Windows are aligned on the limiter's clock: window index w = floor(now / window_ns).
# The ring's slices likewise: slice index S = floor(now / slice_ns), window_ns = slices *
# slice_ns (a window that does not divide into whole ns per slice is rounded up, so the ring
# never remembers less than asked). Time for a key never runs backwards: a decision dated
# before the key's latest window (counter) or slice (ring) is made at the start of it, which
# is what a later caller racing an earlier one sees anyway.
#
# Costs (exactness). A cost c (a double) is counted in fixed-point units of 2**-F:
# units(c) = ceil(c * 2**F), computed exactly from c's mantissa; limit_units =
# floor(limit * 2**F); F is the largest in 0..40 with limit_units < 2**24 (limit 100 -> F 17,
# limit 1,000,000 -> F 4). Whole costs and binary fractions are exact, other fractions round up
# by less than one unit; every comparison below is then a comparison of integers (products in
# 128 bits), so the Fraction model computing with units(c) / 2**F agrees exactly. A cost above
# the limit, or whose units exceed limit_units, raises CostExceedsLimit. Limits of 2**24 or
# more raise InvalidRate.
#
# ---- SlidingWindowCounter ----------------------------------------------------------------
# State of a key in the window w at elapsed e = now - w*window_ns: prev = units admitted in
# window w-1, cur = units admitted in window w.
#   estimate = prev * (window_ns - e) / window_ns + cur
#   admitted iff estimate + cost <= limit, i.e. (integers, R = limit - cur - cost)
#            R >= 0  and  prev * (window_ns - e) <= R * window_ns;     on admission cur += cost
#   remaining   = floor(limit - estimate_after) = floor(((limit - cur) * window_ns
#                 - prev * (window_ns - e)) / (window_ns * 2**F))          (units -> costs)
#   retry_after (denied; exact: the estimate only falls while nothing arrives, and only as
#                time passes, so the first admitting ns solves the inequality for the time):
#     R >= 0 (prev > 0, else it was admitted): in this window at
#                 e' = window_ns - floor(R * window_ns / prev)
#     R < 0 (cur > 0): in the next window, where prev' = cur and cur' = 0, at
#                 e' = max(0, window_ns - floor((limit - cost) * window_ns / cur))
#     retry_after = (window start + e') - now; at e' - 1 ns the inequality fails.
#   reset_after = until the estimate is 0: start of w+2 if cur > 0, of w+1 if only prev > 0.
# Layout: 8 bytes per key, one uint64 word updated by CAS:
#   bits 0..23 cur units | bits 24..47 prev units | bits 48..63 tag = w mod 2**16
#   + the KeyTable's 36 (24 slot + ~8 index + 4 generation) = 44 bytes per key beyond the key
#   (44.4 measured by memory_bytes() at 1,000,000 keys: the index rounds up to a power of 2).
# The 16-bit tag is decoded against clear_w, the window of the latest maintenance pass:
# A = clear_w + d with d the tag minus clear_w taken mod 2**16 into [-2**15, 2**15). It is
# exact because (invariants) every key with a nonzero count has A in
# [clear_w - 2**13, clear_w + 2**14), and every decision is made in a window in that range:
# a decision in a window >= clear_w + 2**14 first runs the pass (under the GIL, no batch in
# flight: KeyTable.wait_for_batches), which zeroes every key with A < w - 2**13 (expired
# long ago, so nothing changes) and sets clear_w = w; a decision dated before clear_w - 2**13
# (only possible with an explicit `now` more than 8,192 windows back) is made at the start of
# that window. The pass is O(keys) once per 16,384 windows: keep windows >= 1 ms.
# A count of zero needs no window: a state with prev = cur = 0 is the fresh state.
# Idle (KeyTable): at the start of A+2 if cur > 0, of A+1 if only prev > 0, else now.
#
# Bound (proof). For any t in window w (elapsed e) let x = units admitted in
# (t - window_ns, start of w), the part of window w-1 inside the sliding interval. Then
#     admitted in (t - window_ns, t]  <=  limit + x * e / window_ns  <=  limit * (1 + e/window) < 2 * limit
# and admitted within any one aligned window <= limit.
#   Proof: let P >= x be everything admitted in w-1. If nothing was admitted in w up to t the
#   sum is x <= P <= limit (cur never exceeds limit). Else the last admission before t, at
#   elapsed e_k <= e, satisfied P*(window - e_k)/window + cur_after <= limit, so
#   cur_after <= limit - x*(window - e)/window, and the sum x + cur_after <= limit + x*e/window.
#   The 2x is reached: limit admitted just before a boundary and the linear refill after it.
#
# ---- SlidingWindow (ring) ------------------------------------------------------------------
#   count(S) = units admitted in slices S - slices + 1 .. S;  admitted iff count + cost <= limit
#   remaining   = floor((limit - count_after) / 2**F)
#   retry_after (denied, need = count + cost - limit > 0): the count only falls at slice
#     starts; at the start of S + j the slices up to S - slices + j have left, so the first j
#     (1..slices) whose oldest j slices hold >= need units gives (S + j)*slice_ns - now.
#   reset_after = (newest nonzero slice + slices) * slice_ns - now, 0 when the ring is empty.
# Layout: 16-byte head (int64 newest slice index << 1 | lock bit; uint32 total units;
#   uint32 ring position of the newest slice) + uint32 units per slice, rounded up to 8 bytes:
#   56 bytes at slices = 10, so 24 + ~8 + 4 + 56 = 92 bytes per key (92.4 measured at
#   1,000,000 keys); 16 + 4*slices in general. The slice index is stored whole: no pass.
# Invariants: total = sum of the slice counts <= limit_units; the ring holds only slices
#   newest - slices + 1 .. newest (advancing zeroes what leaves); lock bit clear between calls.
# Bound (proof). Within any interval (t - (window - slice), t] a key is admitted at most
#   limit: let t_k be the last admission in it, in slice S_k. The ring at t_k covered
#   [(S_k - slices + 1) * slice_ns, t_k], which contains the interval's admissions because
#   (S_k - slices + 1) * slice_ns <= t_k - (slices - 1) * slice_ns <= t - (window - slice);
#   that ring count after admitting was <= limit. Hence any interval of one window admits at
#   most limit plus what one slice admitted (< 2 * limit). Conversely the ring's span
#   [(S - slices + 1) * slice_ns, t] lies inside (t - window, t], so with the same history the
#   ring never denies a call that the exact sliding log would admit.
#
# Cost: try_acquire = one hash lookup + one clock read + one CAS (counter) or one lock CAS,
# a few adds and one release store (ring); advancing the ring clears at most `slices`
# counters; retry_after and reset_after scan at most `slices` counters. The counter caches
# now // window_ns across calls in one window (a division per window change and per batch);
# the ring divides once per call and once per batch.
#
# Worked examples (limit 10, window 1 s).
#   Counter (F = 20): w = 5 (5 s..6 s), prev = 8, cur = 3, now = 5.25 s: estimate
#   8 * 0.75 + 3 = 9, cost 1 admitted (remaining floor(10 - 10) = 0). Another cost 1 at the
#   same time: 8 * 0.75 + 4 + 1 = 11 > 10, denied; R = 10 - 4 - 1 = 5, e' = 1e9 -
#   floor(5 * 1e9 / 8) = 375,000,000 ns, so retry_after = 0.125 s (at 5.375 s: 8 * 0.625 + 5
#   = 10 admitted; one ns earlier 10.000000008 denied); reset_after = 7 s - 5.25 s = 1.75 s.
#   Ring (10 slices of 100 ms): 4 admitted at 5.02 s (slice 50), 6 at 5.51 s (slice 55). At
#   5.93 s (slice 59) count = 10: cost 1 denied; slice 50 leaves at 6.0 s freeing 4 >= 1, so
#   retry_after = 0.07 s; reset_after = (55 + 10) * 0.1 s - 5.93 s = 0.57 s.
from libc.math cimport frexp, ldexp
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from fastcore._core.atomic cimport fc_atomic_cas_i64, fc_atomic_load_i64, fc_atomic_store_i64
from fastcore._core.keytable cimport KeyTable

cdef extern from *:
    ctypedef long long int128 "__int128"

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef enum:
    WINDOW_COUNT_MASK = (1 << 24) - 1      # units; counts are 24 bits
    SWC_PREV_SHIFT = 24
    SWC_TAG_SHIFT = 48
    SWC_TAG_MASK = 0xFFFF                  # tag = w & MASK == w % 2**16
    SWC_TAG_HALF = 0x8000
    SWC_PASS_EVERY = 1 << 14               # windows between maintenance passes
    SWC_BACKDATE = 1 << 13                 # windows a decision may be dated back exactly
    RING_SPINS_BEFORE_YIELD = 64


cdef struct SwcView:
    # A counter key's state as seen by one decision, normalised to the decision's window.
    int64_t w              # window index the decision is made in
    int64_t elapsed_ns     # time into that window
    int64_t prev           # units admitted in w - 1
    int64_t cur            # units admitted in w


cdef struct RingHead:
    int64_t word           # (newest slice index << 1) | lock bit
    uint32_t total         # units in the ring
    uint32_t pos           # ring position of the newest slice (== its index % slices)


cdef class WindowLimiter(KeyTable):
    cdef int64_t window_ns
    cdef int64_t limit_units
    cdef int64_t one_units                 # units(1.0), or -1 when 1.0 exceeds the limit
    cdef int fraction_bits
    cdef double limit_
    cdef object limit_arg
    cdef object window_arg

    cdef int window_setup(self, object limit, object window, Py_ssize_t slices,
                          object max_keys, object on_full, object clock,
                          Py_ssize_t state_bytes) except -1
    cdef int64_t[::1] batch_costs(self, object costs, Py_ssize_t n)


cdef class SlidingWindowCounter(WindowLimiter):
    cdef int64_t clear_w                   # window of the latest maintenance pass
    cdef int64_t cached_w                  # now // window_ns for now in [cached_start_ns, +window)
    cdef int64_t cached_start_ns

    cdef int64_t window_of(self, int64_t now_ns) except -1
    cdef int clear_pass(self, int64_t w) except -1
    cdef object decision(self, bint allowed, SwcView* v, int64_t cost_units, int64_t now_ns)


cdef class SlidingWindow(WindowLimiter):
    cdef int64_t slice_ns
    cdef uint32_t slices

    cdef bint decide(self, Py_ssize_t s, int64_t units, int64_t now_ns, bint write,
                     int64_t* fields) noexcept nogil


cdef int64_t window_checked_cost_units(double cost, int fraction_bits, int64_t limit_units,
                                       double limit) except -1


cdef inline int64_t window_units(double cost, int fraction_bits) noexcept nogil:
    """ceil(cost * 2**F) for a finite cost in [0, limit], exactly.

    cost = m * 2**(exponent - 53) with the 53-bit integer m = mantissa * 2**53, so
    cost * 2**F = m / 2**shift with shift = 53 - exponent - F; the ceiling of a division by
    2**shift is (m + 2**shift - 1) >> shift.
    """
    cdef int exponent, shift
    cdef int64_t m
    if cost == 0.0:
        return 0
    m = <int64_t>ldexp(frexp(cost, &exponent), 53)
    shift = 53 - exponent - fraction_bits
    if shift <= 0:
        return m << -shift              # cost <= limit < 2**24, so this is < 2**25
    if shift >= 62:                     # 0 < cost * 2**F < 2**-8
        return 1
    return (m + ((<int64_t>1 << shift) - 1)) >> shift


cdef inline int64_t window_cost_units(WindowLimiter limiter, double cost) except -1:
    """units(cost) for a valid cost; raises InvalidCost / CostExceedsLimit otherwise."""
    if cost == 1.0 and limiter.one_units >= 0:
        return limiter.one_units
    return window_checked_cost_units(cost, limiter.fraction_bits, limiter.limit_units,
                                     limiter.limit_)


# ---- counter math ---------------------------------------------------------------------------

cdef inline int64_t swc_decode_window(uint64_t state, int64_t anchor_w) noexcept nogil:
    """The window a nonzero state was written in: anchor + ((tag - anchor) mod 2**16 read as
    a signed 16-bit number)."""
    cdef int64_t d = <int64_t>(((state >> SWC_TAG_SHIFT) - <uint64_t>anchor_w) & SWC_TAG_MASK)
    if d >= SWC_TAG_HALF:
        d -= SWC_TAG_MASK + 1
    return anchor_w + d


cdef inline void swc_view(uint64_t state, int64_t w, int64_t elapsed_ns, int64_t anchor_w,
                          SwcView* v) noexcept nogil:
    """Normalise a key's state to window w (elapsed_ns into it); see the header."""
    cdef int64_t prev = <int64_t>((state >> SWC_PREV_SHIFT) & WINDOW_COUNT_MASK)
    cdef int64_t cur = <int64_t>(state & WINDOW_COUNT_MASK)
    cdef int64_t a
    if w < anchor_w - SWC_BACKDATE:
        w = anchor_w - SWC_BACKDATE
        elapsed_ns = 0
    v.w = w
    v.elapsed_ns = elapsed_ns
    v.prev = 0
    v.cur = 0
    if prev == 0 and cur == 0:
        return
    a = swc_decode_window(state, anchor_w)
    if a == w:
        v.prev = prev
        v.cur = cur
    elif a == w - 1:
        v.prev = cur
    elif a > w:                          # dated before the key's window: decide at its start
        v.w = a
        v.elapsed_ns = 0
        v.prev = prev
        v.cur = cur


cdef inline bint swc_fits(const SwcView* v, int64_t cost_units, int64_t limit_units,
                          int64_t window_ns) noexcept nogil:
    """estimate + cost <= limit, in integers: prev * (window - e) <= (limit - cur - cost) * window."""
    cdef int64_t room = limit_units - v.cur - cost_units
    if room < 0:
        return False
    return (v.prev == 0
            or <int128>v.prev * (window_ns - v.elapsed_ns) <= <int128>room * window_ns)


cdef inline bint swc_admit(uint64_t* state, int64_t cost_units, int64_t w, int64_t elapsed_ns,
                           int64_t anchor_w, int64_t limit_units, int64_t window_ns,
                           SwcView* v) noexcept nogil:
    """One counter decision, lock-free: retried only when another thread changed the word.

    On return *v is the state the decision saw (with cost added to cur when admitted).
    """
    cdef int64_t old = fc_atomic_load_i64(<int64_t*>state)
    cdef uint64_t new
    while True:
        swc_view(<uint64_t>old, w, elapsed_ns, anchor_w, v)
        if not swc_fits(v, cost_units, limit_units, window_ns):
            return False
        new = ((<uint64_t>v.w & SWC_TAG_MASK) << SWC_TAG_SHIFT
               | <uint64_t>v.prev << SWC_PREV_SHIFT | <uint64_t>(v.cur + cost_units))
        if fc_atomic_cas_i64(<int64_t*>state, &old, <int64_t>new):
            v.cur += cost_units
            return True


cdef inline int64_t swc_retry_ns(const SwcView* v, int64_t cost_units, int64_t limit_units,
                                 int64_t window_ns, int64_t now_ns) noexcept nogil:
    """Exact retry_after of a denied decision (header: "retry_after")."""
    cdef int64_t room = limit_units - v.cur - cost_units
    cdef int64_t start_ns = v.w * window_ns
    cdef int64_t kept_ns
    if room >= 0:
        kept_ns = <int64_t>(<int128>room * window_ns // v.prev)
        return start_ns + window_ns - kept_ns - now_ns
    kept_ns = <int64_t>(<int128>(limit_units - cost_units) * window_ns // v.cur)
    return start_ns + window_ns + (window_ns - kept_ns if kept_ns < window_ns else 0) - now_ns


cdef inline int64_t swc_idle_at_ns(int64_t w, int64_t prev, int64_t cur,
                                   int64_t window_ns) noexcept nogil:
    """When a key's estimate reaches 0 (its state is then indistinguishable from fresh)."""
    if cur > 0:
        return (w + 2) * window_ns
    if prev > 0:
        return (w + 1) * window_ns
    return 0


# ---- ring math ------------------------------------------------------------------------------

cdef inline uint32_t* ring_counts(RingHead* head) noexcept nogil:
    return <uint32_t*>(head + 1)


cdef inline int64_t ring_lock(RingHead* head) noexcept nogil:
    """Take the key's spin lock; returns its newest slice index."""
    cdef int64_t word = fc_atomic_load_i64(&head.word)
    cdef int spins = 0
    while True:
        if (word & 1) == 0 and fc_atomic_cas_i64(&head.word, &word, word | 1):
            return word >> 1
        spins += 1
        if spins == RING_SPINS_BEFORE_YIELD:     # the holder was preempted: let it run
            sched_yield()
            spins = 0
        word = fc_atomic_load_i64(&head.word)


cdef inline void ring_unlock(RingHead* head, int64_t newest) noexcept nogil:
    """Publish the counts written under the lock and release it (release store)."""
    fc_atomic_store_i64(&head.word, newest << 1)


cdef inline int64_t ring_advance(RingHead* head, int64_t newest, int64_t slice_now,
                                 int64_t pos_now, uint32_t slices) noexcept nogil:
    """Move the ring to slice_now, zeroing the slices that left; the slice decided in.

    pos_now is slice_now % slices when the caller has it (a batch computes it once), else -1.
    """
    cdef uint32_t* counts = ring_counts(head)
    cdef int64_t delta = slice_now - newest
    cdef uint32_t pos, k
    if delta <= 0:                       # same slice, or dated before it: decide in newest
        return newest
    pos = head.pos
    if delta >= slices and pos_now < 0:
        pos_now = slice_now % slices
    if head.total == 0:
        if delta >= slices:
            pos = <uint32_t>pos_now
        else:
            pos += <uint32_t>delta       # (pos + delta) % slices, as delta < slices
            if pos >= slices:
                pos -= slices
    elif delta >= slices:
        for k in range(slices):
            counts[k] = 0
        head.total = 0
        pos = <uint32_t>pos_now
    else:
        for k in range(<uint32_t>delta):
            pos += 1
            if pos == slices:
                pos = 0
            head.total -= counts[pos]
            counts[pos] = 0
    head.pos = pos
    return slice_now


cdef inline int64_t ring_retry_ns(RingHead* head, int64_t newest, int64_t cost_units,
                                  int64_t limit_units, uint32_t slices, int64_t slice_ns,
                                  int64_t now_ns) noexcept nogil:
    """Exact retry_after of a denied decision: the first slice start that frees enough."""
    cdef uint32_t* counts = ring_counts(head)
    cdef int64_t need = head.total + cost_units - limit_units
    cdef int64_t freed = 0
    cdef uint32_t pos = head.pos, j
    for j in range(1, slices + 1):
        pos += 1                         # the slot of slice newest - slices + j
        if pos == slices:
            pos = 0
        freed += counts[pos]
        if freed >= need:
            return (newest + j) * slice_ns - now_ns
    return (newest + slices) * slice_ns - now_ns


cdef inline int64_t ring_idle_at_ns(RingHead* head, int64_t newest, uint32_t slices,
                                    int64_t slice_ns) noexcept nogil:
    """When the ring's count reaches 0: the newest nonzero slice leaves; 0 when empty."""
    cdef uint32_t* counts = ring_counts(head)
    cdef uint32_t pos = head.pos, j
    if head.total == 0:
        return 0
    for j in range(slices):
        if counts[pos] != 0:
            return (newest - j + slices) * slice_ns
        pos = slices - 1 if pos == 0 else pos - 1
    return 0
