# LatencyHistogram: a lock-free ring of time slices, each a log-linear (HdrHistogram) histogram.
#
# Promise: record(value_ns) costs one index computation and one atomic increment, from any
# thread, without the GIL; every value is counted exactly once in a bucket whose range lies
# within a relative 10**-significant_figures of it (values below `lowest` land in the first
# bucket, values above `highest` in the overflow counter). A slice whose time has passed is
# cleared lazily by the first recorder of its new period, without a lock and without losing
# a value recorded concurrently into that period. Queries merge the slices of the asked window.
#
# Layout: hist_layout(lowest, highest, significant_figures) is the one pure function that
# computes the bucket configuration (HistLayout, below). Names follow HdrHistogram:
#   sub_bucket_count S = 2**ceil(log2(2 * 10**sf)),     half H = S / 2, h = log2(H)
#   unit_magnitude  u  = floor(log2(lowest)), at most 62 - log2(S) (the resolution unit is
#                        2**u ns; the cap, HdrHistogram's own limit, keeps S * 2**u <= 2**62
#                        and only ever narrows buckets: lowest >= 2**54 at sf = 2)
#   bucket_count     B = buckets needed so that S * 2**(B-1) * 2**u > highest,
#                      = max(1, bit_length(highest) - log2(S) - u + 1), computed on magnitudes
#   counts_len         = (B + 1) * H
# Bucket 0 covers [0, S * 2**u) in steps of 2**u. Bucket b >= 1 covers
# [H * 2**(b+u), S * 2**(b+u)) in steps of 2**(b+u): its lower half would repeat bucket
# b-1's range at a coarser step, so only the upper half is stored (H counters, not S).
# Index of a value v (bit trick, then its plain-arithmetic equivalent):
#   b   = bit_length(v | ((S-1) << u)) - u - (h+1)    == the b with v < S * 2**(b+u), >= 0
#   sub = v >> (b + u)                                 == v // 2**(b+u), in [H, S) when b >= 1
#   index = ((b + 1) << h) + (sub - H)                 == (b + 1) * H + sub - H
# Precision: a bucket's width 2**(b+u) over its smallest value H * 2**(b+u) is 1/H, and
# H = S/2 >= 10**sf, so a value and its bucket's bounds differ by less than 10**-sf of it.
# HdrHistogram_py's precision example, in its microsecond units: 1 us to 1 hour
# (3,600,000,000 us) at 3 significant figures gives S = 2048, H = 1024, B = 22 buckets; it
# resolves 1 us up to 1 ms, 1 ms or better up to 1 s, and 3.6 s or better at 1 hour. In this
# histogram's nanoseconds, 1 ns to 1 hour at sf = 3 gives B = 32, counts_len = 33,792, values
# below 2,048 ns exact and every value v resolved to v / 1024 or better. With the defaults
# (sf = 2): S = 256, H = 128, B = 35, counts_len = 4608. Value 1,000,000 (1 ms):
# bit_length(1,000,000 | 255) = 20, b = 20 - 0 - 8 = 12, sub = 1,000,000 >> 12 = 244,
# index = 13 * 128 + 244 - 128 = 1780, bucket range [999,424, 1,003,519] (step 4096, 0.41 %).
#
# State (bytes): per slice `stride` uint32 counters (counts_len buckets + 1 overflow counter,
# padded to 64 bytes) = 18,496 B with the defaults; slices + 1 slot headers of 32 B (epoch,
# lo/hi marks of the counter indices written since the last clear, and a lazily allocated
# uint64 carry array, NULL until a counter wraps; the extra header marks limbo); one uint64
# `limbo` array of `stride`; one uint64 `cache` array of `stride` (the whole-ring query cache).
# uint64 `retired` and `exported` arrays of `stride` (totals since creation, below).
# Defaults (60 slices): 60 * 18,496 + 61 * 32 + 4 * 36,992 = 1,259,680 B (1.20 MiB).
# significant_figures=3: stride 33,808, 9,197,728 B (8.8 MiB).
#
# Time: slice_ns = window_ns / slices. A record at `now` belongs to period p = now // slice_ns
# and lands in slot p % slices, whose epoch says which period it holds:
#   epoch == p       the slot is live for p: atomic add (the fast path)
#   epoch == -1      never used;  epoch <= -2: being cleared for period -epoch - 2
#   epoch <  p       stale: the recorder CASes epoch to the clearing mark, zeroes the slot,
#                    publishes epoch = p, then adds; recorders that meanwhile see the mark
#                    add to `limbo` instead of waiting, and the clearer moves limbo's counts
#                    into its fresh slot. Queries count limbo as the current period.
#   epoch >  p       the slot already serves a later period (a recorder delayed by a whole
#                    window): the value is counted there, never dropped.
# Invariants: counts never decrease except by a clear of a stale slot; every recorded count
# sits in exactly one of: a live slot's counter (+ its carry), limbo, or a slot cleared
# because its period left the window. A counter is nonzero only inside its slot's [lo, hi]
# (a recorder widens the marks before it adds), so queries read only that range.
# Totals since creation: clearing a slot moves its counts into `retired` (each counter
# exchanged with 0, then its value added: a count is in the slot or in retired, never both)
# instead of a memset, so record() does no second add. cumulative() reads retired, then every
# slot's carry and counters, then limbo: counts move only limbo -> slot -> retired, against
# that order, so a concurrent move can hide a count from one read but never show it twice.
# The read is then raised to `exported` (the last reported totals, per counter) and stored
# back, so reported totals never decrease and never exceed what was recorded.
# Counter width: a uint32 counter that wraps (fetch-add result < added count) is detected by
# the one thread whose add wrapped it; that thread adds 2**32 to the slot's uint64 carry
# array, so no count is lost. 64-bit totals that would wrap set `saturated` and queries then
# raise instead of answering.
#
# Cost: record = 1 clz, 1 load of `slot_hint` (the slot recorders last found live), 1 load of
# that slot's header (epoch and marks, one cache line), 1 multiply to check that its epoch is
# the current period, + 1 atomic add, inline. When the hint misses (the first records of a
# period), 2 multiply-high divisions find the slot and renew the hint. A rotation
# clears one slot once per slice: a scan of its 18 KB plus one exchange and one atomic add
# into `retired` per nonzero counter. record_many finds the live slot
# once; below 2048 values it adds value by value (one atomic add each), from 2048 it tallies
# in a private array and flushes the nonzero buckets, one atomic add each. Queries: O(slices *
# (hi - lo)) widening adds over the slots inside the window (skipping expired ones) + one scan.
# Whole-ring queries keep the sum of the closed slices in `cache` and add only the current
# slice and limbo, redoing the sum when the ring turns or a write lands in a closed slice
# (the writer sees `cache_to` >= its period and sets `cache_dirty`).
from libc.stdint cimport int64_t, uint64_t, uint32_t

from fastcore._core.atomic cimport fc_atomic_add_u32, fc_atomic_load_i64, fc_atomic_store_i64
from fastcore._core.clock cimport Clock, clock_now_ns


cdef extern from *:
    """
    static inline int hist_bit_length_u64(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }

    /* n // d by multiplication: M = ceil(2**(64+l) / d) with l = ceil(log2(d)), held as
     * hi * 2**64 + lo (hi is 0 or 1). floor(n * M / 2**(64+l)) == n // d for n <= 2**62:
     * M * d - 2**(64+l) = e < d <= 2**l, so n * M / 2**(64+l) exceeds n / d by
     * n * e / (d * 2**(64+l)) < 1 / (4d), never reaching the next multiple of 1/d. */
    typedef struct { uint64_t lo; uint64_t hi; int shift; } hist_divisor;
    static inline uint64_t hist_divide(uint64_t n, hist_divisor d) {
        uint64_t high = (uint64_t)(((unsigned __int128)n * d.lo) >> 64) + n * d.hi;
        return high >> d.shift;
    }
    """
    int hist_bit_length_u64(uint64_t v) noexcept nogil
    ctypedef struct hist_divisor:
        uint64_t lo
        uint64_t hi
        int shift
    uint64_t hist_divide(uint64_t n, hist_divisor d) noexcept nogil


ctypedef struct HistSlot:
    int64_t epoch                   # period held; -1 unused; <= -2 being cleared for -epoch-2
    int64_t lo                      # lowest counter index written since the last clear
    int64_t hi                      # highest one (lo > hi: none): queries read only [lo, hi]
    int64_t carry                   # (uint64_t *) as int64: 0 until a counter wraps


ctypedef struct HistLayout:
    int64_t lowest                  # ns, as given
    int64_t highest                 # ns, as given: larger values count as overflow
    int significant_figures
    int unit_magnitude              # u
    int sub_bucket_half_count_magnitude   # h
    int64_t sub_bucket_count        # S
    int64_t sub_bucket_half_count   # H
    uint64_t sub_bucket_mask        # (S - 1) << u
    int bucket_count                # B
    int64_t counts_len              # (B + 1) * H


cdef HistLayout hist_layout(int64_t lowest, int64_t highest, int significant_figures) noexcept nogil


cdef inline int64_t hist_index_of(const HistLayout *layout, uint64_t value) noexcept nogil:
    """Counter index of `value` (<= layout.highest); see the header for the math."""
    cdef int bucket = (hist_bit_length_u64(value | layout.sub_bucket_mask)
                       - layout.unit_magnitude - (layout.sub_bucket_half_count_magnitude + 1))
    cdef int64_t sub = <int64_t>(value >> (bucket + layout.unit_magnitude))
    return ((<int64_t>(bucket + 1)) << layout.sub_bucket_half_count_magnitude) + (
        sub - layout.sub_bucket_half_count)


cdef class LatencyHistogram:
    # record reads the layout and the fields up to cache_to: together they span 128 bytes
    cdef HistLayout layout
    cdef readonly Clock clock
    cdef int64_t slice_ns
    cdef int64_t slot_hint          # the slot recorders last found live: see hist_live_slot
    cdef int64_t stride             # uint32 counters per slot: counts_len + 1 (overflow), padded
    cdef uint32_t *counts           # slices * stride
    cdef HistSlot *slots            # slices + 1: the last one holds limbo's lo/hi marks
    # whole-ring queries keep the merge of the closed slices (periods up to cache_to) and
    # redo it when the ring turns or a write lands in a closed slice (cache_dirty)
    cdef int64_t cache_to           # newest period merged; writers at or below it set dirty
    cdef int64_t cache_dirty
    cdef uint64_t *cache            # stride
    cdef int64_t cache_first        # oldest period merged into `cache`
    cdef bint cache_valid
    cdef int64_t window_ns
    cdef int64_t slices
    cdef hist_divisor slice_divisor  # now // slice_ns without a hardware divide (~20 ns here)
    cdef hist_divisor slices_divisor # period // slices, likewise
    cdef uint64_t *limbo            # stride: counts recorded while their slot was being cleared
    cdef int64_t saturated          # 1 once a 64-bit counter wrapped: queries raise
    # totals since creation (or reset()), apart from the ring: a slot's counts move into
    # `retired` when the slot is cleared for a new period; exports add the slots and limbo
    cdef uint64_t *retired          # stride: counts moved out of cleared slots
    cdef uint64_t *exported         # stride: the highest totals an export has reported


cdef void hist_add_at(LatencyHistogram h, int64_t index, uint64_t count,
                      int64_t period) noexcept nogil
cdef void hist_mark_dirty(LatencyHistogram h) noexcept nogil
cdef void hist_widen(HistSlot *slot, int64_t index) noexcept nogil
cdef void hist_carry(LatencyHistogram h, int64_t slot, int64_t index,
                     uint64_t amount) noexcept nogil


cdef inline int64_t hist_counter_index(LatencyHistogram h, int64_t value_ns) noexcept nogil:
    """Counter index of a value: negative counts as 0, above `highest` is the overflow slot."""
    if value_ns > h.layout.highest:
        return h.layout.counts_len
    return hist_index_of(&h.layout, <uint64_t>value_ns if value_ns > 0 else 0)


cdef inline int64_t hist_period(LatencyHistogram h, int64_t now_ns) noexcept nogil:
    """now_ns // slice_ns (now_ns is a clock reading: 0 <= now_ns <= 2**62)."""
    return <int64_t>hist_divide(<uint64_t>now_ns, h.slice_divisor)


cdef inline int64_t hist_live_slot(LatencyHistogram h, int64_t now_ns,
                                   int64_t *period) noexcept nogil:
    """The slot live for now's period (its epoch is now // slice_ns), or -1 if that slot is
    stale, being cleared or ahead; `period` receives now // slice_ns in both cases.

    The slot recorders last found live is tried first: its epoch e is now's period exactly
    when e * slice_ns <= now_ns < (e + 1) * slice_ns, one multiply and one unsigned compare
    instead of two multiply-high divisions. A slot only ever holds periods congruent to its
    index modulo `slices`, so a live epoch also proves the slot is period % slices."""
    cdef int64_t slot = fc_atomic_load_i64(&h.slot_hint)
    cdef int64_t epoch = fc_atomic_load_i64(&h.slots[slot].epoch)
    # epoch >= 0 and a reading <= 2**62 keep the product and the difference inside int64
    if epoch >= 0 and <uint64_t>(now_ns - epoch * h.slice_ns) < <uint64_t>h.slice_ns:
        period[0] = epoch
        return slot
    period[0] = hist_period(h, now_ns)
    slot = period[0] - <int64_t>hist_divide(period[0], h.slices_divisor) * h.slices
    if fc_atomic_load_i64(&h.slots[slot].epoch) != period[0]:
        return -1
    fc_atomic_store_i64(&h.slot_hint, slot)
    return slot


cdef inline void hist_add_live(LatencyHistogram h, int64_t slot, int64_t period, int64_t index,
                               uint32_t count) noexcept nogil:
    """Add `count` at counter `index` of `slot`, which is live for `period`."""
    cdef HistSlot *header = &h.slots[slot]
    # marks share the epoch's cache line: two compares, written only when they widen
    if index > fc_atomic_load_i64(&header.hi) or index < fc_atomic_load_i64(&header.lo):
        hist_widen(header, index)
    # fetch-add returns the new value: below the added count only if it wrapped past 2**32
    if fc_atomic_add_u32(&h.counts[slot * h.stride + index], count) < count:
        hist_carry(h, slot, index, (<uint64_t>1) << 32)
    # a slot already merged into the whole-ring query cache: tell the next query
    if period <= fc_atomic_load_i64(&h.cache_to):
        hist_mark_dirty(h)


cdef inline void hist_record_at(LatencyHistogram h, int64_t value_ns, uint32_t count,
                                int64_t now_ns) noexcept nogil:
    """Record `count` values of `value_ns` at time `now_ns` (a batch's one timestamp)."""
    cdef int64_t index = hist_counter_index(h, value_ns)
    cdef int64_t period
    cdef int64_t slot = hist_live_slot(h, now_ns, &period)
    if slot >= 0:
        hist_add_live(h, slot, period, index, count)
    else:
        hist_add_at(h, index, count, period)


cdef inline void hist_record(LatencyHistogram h, int64_t value_ns, uint32_t count) noexcept nogil:
    """Record `count` values of `value_ns` now: callable from any Cython code without the GIL.

    Negative values count as 0 here (the Python method raises instead)."""
    hist_record_at(h, value_ns, count, clock_now_ns(h.clock))
