"""LatencyHistogram: lock-free log-linear latency histogram over a ring of time slices.

The layout, the rotation protocol and their costs are documented in histogram.pxd.
"""
import functools
import inspect
import math
import numbers
import operator
import re

import numpy as np

cimport cython
cimport numpy as cnp
from libc.math cimport sqrt
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport INT64_MAX, int64_t, uint64_t, uint32_t, intptr_t
from libc.stdlib cimport abort, calloc, free, malloc
from libc.string cimport memcpy, memset

from fastcore._core.atomic cimport (
    fc_atomic_add_u64,
    fc_atomic_cas_i64,
    fc_atomic_load_i64,
    fc_atomic_store_i64,
)
from fastcore._core.clock cimport Clock, clock_now_ns, clock_resolve
from fastcore._core.debug cimport FASTCORE_DEBUG

from fastcore._units import as_real, ns_to_seconds, seconds_to_ns, shown
from fastcore.errors import (
    HistogramOverflowError, HistogramTypeError, HistogramValueError,
)

cnp.import_array()
# dtype equality as numpy's `==` decides it (int64 and longlong alike, native byte order)
cdef cnp.dtype INT64 = cnp.PyArray_DescrFromType(cnp.NPY_INT64)

__all__ = [
    "LatencyHistogram",
    "HistogramSnapshot",
    "HistogramValueError",
    "HistogramTypeError",
    "HistogramOverflowError",
    "histogram_layout",
]


cdef extern from *:
    """
    static inline uint64_t hist_xchg_u64(uint64_t *p, uint64_t v) {
        return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
    }
    static inline int64_t hist_xchg_i64(int64_t *p, int64_t v) {
        return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
    }
    static inline uint64_t hist_load_u64(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline uint32_t hist_xchg_u32(uint32_t *p, uint32_t v) {
        return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
    }
    static inline uint32_t hist_load_u32(const uint32_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    /* loads before it stay before the loads after it (compiler and CPU) */
    static inline void hist_load_fence(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    /* out[i] = max(out[i], seen[i]); seen[i] = out[i]: vectorises */
    static inline void hist_raise_u64s(uint64_t *restrict out, uint64_t *restrict seen,
                                       Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t v = out[i] > seen[i] ? out[i] : seen[i];
            out[i] = v;
            seen[i] = v;
        }
    }
    /* restrict lets the compiler vectorise the widening adds queries spend their time in;
     * target_clones adds an AVX2 version chosen at load time where the CPU has it. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    __attribute__((target_clones("avx2", "default")))
    #endif
    static void hist_add_u32s(uint64_t *restrict out, const uint32_t *restrict in,
                              Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] += in[i];
    }
    /* sum of counts[lo..hi]; 1 if it does not fit in 64 bits. The low and high 32-bit
     * halves are summed apart: each half-sum stays below n * 2**32, inside 64 bits for any
     * n < 2**32 counters, and without a carry chain the loop vectorises (a 128-bit add/adc
     * chain ran at one or two cycles per counter, depending on the loop's alignment) */
    static inline int hist_sum_u64s(const uint64_t *counts, Py_ssize_t lo, Py_ssize_t hi,
                                    uint64_t *total) {
        uint64_t low = 0, high = 0;
        for (Py_ssize_t i = lo; i <= hi; i++) {
            low += counts[i] & 0xFFFFFFFFu;
            high += counts[i] >> 32;
        }
        unsigned __int128 sum = ((unsigned __int128)high << 32) + low;
        *total = (uint64_t)sum;
        return (sum >> 64) != 0;
    }
    static inline void hist_add_u64s(uint64_t *restrict out, const uint64_t *restrict in,
                                     Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) out[i] += in[i];
    }
    /* whether any of n counts is nonzero: an OR without early exit, which vectorises */
    static inline int hist_any_u64s(const uint64_t *counts, Py_ssize_t n) {
        uint64_t any = 0;
        for (Py_ssize_t i = 0; i < n; i++) any |= counts[i];
        return any != 0;
    }
    """
    uint64_t hist_xchg_u64(uint64_t *p, uint64_t v) noexcept nogil
    int64_t hist_xchg_i64(int64_t *p, int64_t v) noexcept nogil
    uint64_t hist_load_u64(const uint64_t *p) noexcept nogil
    uint32_t hist_xchg_u32(uint32_t *p, uint32_t v) noexcept nogil
    uint32_t hist_load_u32(const uint32_t *p) noexcept nogil
    void hist_load_fence() noexcept nogil
    void hist_raise_u64s(uint64_t *out, uint64_t *seen, Py_ssize_t n) noexcept nogil
    void hist_add_u32s(uint64_t *out, const uint32_t *src, Py_ssize_t n) noexcept nogil
    void hist_add_u64s(uint64_t *out, const uint64_t *src, Py_ssize_t n) noexcept nogil
    int hist_sum_u64s(const uint64_t *counts, Py_ssize_t lo, Py_ssize_t hi, uint64_t *total) noexcept nogil
    int hist_any_u64s(const uint64_t *counts, Py_ssize_t n) noexcept nogil


cdef enum:
    HIST_EPOCH_UNUSED = -1          # a slot no record has touched since creation or reset()
    HIST_STRIDE_ALIGN = 16          # uint32 counters per 64-byte cache line
    HIST_LOCAL_MIN = 2048           # record_many sizes from which a private tally pays off
    HIST_SCAN_BLOCK = 8             # tally entries tested at once for zero (divides the stride)
    HIST_MAX_SLICES = 1 << 16

cdef extern from *:
    # 2**62 ns (146 years): keeps bit lengths, shifts and bucket bounds inside int64.
    const int64_t HIST_MAX_HIGHEST "((int64_t)1 << 62)"
    # log2 of the largest bucket-0 end S * 2**u the layout makes (HdrHistogram's own limit)
    const int HIST_MAX_TOP_MAGNITUDE "62"
    const uint64_t HIST_U32_SPAN "((uint64_t)1 << 32)"
    const int64_t HIST_U32_MAX "((int64_t)0xFFFFFFFF)"
    # below every period: until the first whole-ring query, no write marks the cache dirty
    const int64_t HIST_NO_PERIOD "(-((int64_t)1 << 62))"


# ---------------------------------------------------------------------------------------------
# Layout: the one pure function, and the bucket arithmetic queries use.

cdef HistLayout hist_layout(int64_t lowest, int64_t highest, int significant_figures) noexcept nogil:
    """Bucket configuration for [lowest, highest] at `significant_figures` (see the .pxd).

    Needs 1 <= lowest, 2 * lowest <= highest <= 2**62 and 1 <= significant_figures <= 4 (what
    _checked_layout enforces). Every step is bit arithmetic on magnitudes, never a doubling of
    a value: S * 2**u can exceed int64 (lowest = 2**61, sf = 4: 2**76) and a value doubling up
    past 2**62 would reach 2**63, which int64 cannot hold."""
    cdef HistLayout layout
    cdef int64_t largest_single_unit = 2
    cdef int sub_bucket_count_magnitude = 0
    cdef int i
    for i in range(significant_figures):
        largest_single_unit *= 10
    # ceil(log2(2 * 10**sf)): the smallest m with 2**m >= 2 * 10**sf
    while ((<int64_t>1) << sub_bucket_count_magnitude) < largest_single_unit:
        sub_bucket_count_magnitude += 1
    layout.lowest = lowest
    layout.highest = highest
    layout.significant_figures = significant_figures
    # floor(log2(lowest)), but at most HIST_MAX_TOP_MAGNITUDE - log2(S): a finer unit only
    # makes buckets narrower, and it keeps S * 2**u (bucket 0's end) at most 2**62
    layout.unit_magnitude = min(hist_bit_length_u64(<uint64_t>lowest) - 1,
                                HIST_MAX_TOP_MAGNITUDE - sub_bucket_count_magnitude)
    layout.sub_bucket_half_count_magnitude = sub_bucket_count_magnitude - 1
    layout.sub_bucket_count = (<int64_t>1) << sub_bucket_count_magnitude
    layout.sub_bucket_half_count = layout.sub_bucket_count // 2
    layout.sub_bucket_mask = (<uint64_t>(layout.sub_bucket_count - 1)) << layout.unit_magnitude
    # the fewest buckets B >= 1 with S * 2**(B-1) * 2**u > highest: 2**(m+B-1) > highest with
    # m = log2(S) + u holds exactly when m + B - 1 >= bit_length(highest)
    layout.bucket_count = max(1, hist_bit_length_u64(<uint64_t>highest)
                                 - (sub_bucket_count_magnitude + layout.unit_magnitude) + 1)
    layout.counts_len = (layout.bucket_count + 1) * layout.sub_bucket_half_count
    return layout


cdef inline int hist_bucket_of_index(const HistLayout *layout, int64_t index) noexcept nogil:
    # index // H - 1, with the lower half of bucket 0 (indices < H) folded into bucket 0
    cdef int64_t bucket = (index >> layout.sub_bucket_half_count_magnitude) - 1
    return <int>bucket if bucket > 0 else 0


cdef inline int64_t hist_lowest_of_index(const HistLayout *layout, int64_t index) noexcept nogil:
    """Smallest value counted at `index`."""
    cdef int64_t bucket = (index >> layout.sub_bucket_half_count_magnitude) - 1
    # index % H + H: the position inside the stored upper half of the bucket
    cdef int64_t sub = (index & (layout.sub_bucket_half_count - 1)) + layout.sub_bucket_half_count
    if bucket < 0:
        sub -= layout.sub_bucket_half_count
        bucket = 0
    return sub << (bucket + layout.unit_magnitude)


cdef inline int64_t hist_width_of_index(const HistLayout *layout, int64_t index) noexcept nogil:
    """Number of values counted at `index`: 2**(bucket + u)."""
    return (<int64_t>1) << (hist_bucket_of_index(layout, index) + layout.unit_magnitude)


cdef inline int64_t hist_highest_of_index(const HistLayout *layout, int64_t index) noexcept nogil:
    return hist_lowest_of_index(layout, index) + hist_width_of_index(layout, index) - 1


cdef inline int64_t hist_median_of_index(const HistLayout *layout, int64_t index) noexcept nogil:
    # HdrHistogram's "median equivalent value", which its mean and stdev use
    return hist_lowest_of_index(layout, index) + (hist_width_of_index(layout, index) >> 1)


def histogram_layout(*, significant_figures=2, lowest=1, highest=3_600_000_000_000):
    """The bucket configuration for these arguments, as a dict (the same pure function the
    histogram uses).

    Raises ``HistogramValueError`` / ``HistogramTypeError`` for arguments the histogram would
    reject.

    >>> histogram_layout()["counts_len"]
    4608
    """
    cdef HistLayout layout = _checked_layout(significant_figures, lowest, highest)
    return {
        "significant_figures": layout.significant_figures,
        "lowest": layout.lowest,
        "highest": layout.highest,
        "unit_magnitude": layout.unit_magnitude,
        "sub_bucket_count": layout.sub_bucket_count,
        "sub_bucket_half_count": layout.sub_bucket_half_count,
        "bucket_count": layout.bucket_count,
        "counts_len": layout.counts_len,
    }


cdef HistLayout _checked_layout(object significant_figures, object lowest, object highest) except *:
    significant_figures = _check_int(significant_figures, "significant_figures")
    lowest = _check_int(lowest, "lowest")
    highest = _check_int(highest, "highest")
    if not 1 <= significant_figures <= 4:
        raise HistogramValueError(
            f"significant_figures must be 1, 2, 3 or 4, got {shown(significant_figures)}")
    if lowest < 1:
        raise HistogramValueError(f"lowest must be >= 1 ns, got {shown(lowest)}")
    if highest > HIST_MAX_HIGHEST:
        raise HistogramValueError(f"highest must be <= 2**62 ns, got {shown(highest)}")
    if highest < 2 * lowest:
        raise HistogramValueError(
            f"highest must be >= 2 * lowest ({shown(2 * lowest)} ns), got {shown(highest)}")
    return hist_layout(lowest, highest, significant_figures)


cdef object _check_int(object value, str name):
    """An int argument (a numpy integer too, never a bool) as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise HistogramTypeError(f"{name} must be an int, got {shown(value)}")
    return operator.index(value)


cdef bint _same_layout(const HistLayout *a, const HistLayout *b) noexcept:
    return (a.lowest == b.lowest and a.highest == b.highest
            and a.significant_figures == b.significant_figures)


# ---------------------------------------------------------------------------------------------
# Recording: the out-of-line paths of hist_record_at (rotation, limbo, carries).

cdef void hist_carry(LatencyHistogram h, int64_t slot, int64_t index,
                     uint64_t amount) noexcept nogil:
    """Add `amount` (a multiple of 2**32 from a wrapped counter, or a large count) to the
    slot's 64-bit carry array, allocating it on first use."""
    cdef int64_t address = fc_atomic_load_i64(&h.slots[slot].carry)
    cdef int64_t expected = 0
    cdef uint64_t *fresh
    if address == 0:
        fresh = <uint64_t *>calloc(h.stride, sizeof(uint64_t))
        if fresh == NULL:
            fc_atomic_store_i64(&h.saturated, 1)    # the count cannot be kept: say so
            return
        if fc_atomic_cas_i64(&h.slots[slot].carry, &expected, <int64_t><intptr_t>fresh):
            address = <int64_t><intptr_t>fresh
        else:
            free(fresh)                             # another thread installed one first
            address = expected
    if fc_atomic_add_u64(&(<uint64_t *><intptr_t>address)[index], amount) < amount:
        fc_atomic_store_i64(&h.saturated, 1)


cdef void hist_widen(HistSlot *slot, int64_t index) noexcept nogil:
    """Make the slot's [lo, hi] marks cover `index` (atomic max / min by CAS)."""
    cdef int64_t seen = fc_atomic_load_i64(&slot.hi)
    while index > seen and not fc_atomic_cas_i64(&slot.hi, &seen, index):
        pass
    seen = fc_atomic_load_i64(&slot.lo)
    while index < seen and not fc_atomic_cas_i64(&slot.lo, &seen, index):
        pass


cdef inline void hist_clear_marks(HistSlot *slot, int64_t counts_len) noexcept nogil:
    fc_atomic_store_i64(&slot.lo, counts_len + 1)
    fc_atomic_store_i64(&slot.hi, -1)


cdef void hist_mark_dirty(LatencyHistogram h) noexcept nogil:
    fc_atomic_store_i64(&h.cache_dirty, 1)


cdef inline void hist_add_slot(LatencyHistogram h, int64_t slot, int64_t index,
                               uint64_t count, int64_t period) noexcept nogil:
    """Add a 64-bit count to a slot's counter: low 32 bits by atomic add, the rest as carry."""
    cdef uint32_t low = <uint32_t>count
    cdef uint64_t high = count - low                # count - count % 2**32
    if FASTCORE_DEBUG:
        if index < 0 or index > h.layout.counts_len or slot < 0 or slot >= h.slices:
            abort()
    hist_widen(&h.slots[slot], index)
    if low != 0 and fc_atomic_add_u32(&h.counts[slot * h.stride + index], low) < low:
        high += HIST_U32_SPAN                       # this add wrapped the counter
        if high < HIST_U32_SPAN:
            fc_atomic_store_i64(&h.saturated, 1)
    if high != 0:
        hist_carry(h, slot, index, high)
    if period <= fc_atomic_load_i64(&h.cache_to):
        hist_mark_dirty(h)


cdef void hist_drain_limbo(LatencyHistogram h, int64_t slot, int64_t period) noexcept nogil:
    """Move the counts recorded while a slot was being cleared into the fresh `slot`."""
    cdef int64_t index
    cdef uint64_t count
    # limbo's marks only ever widen: a parked count may land just after this drain
    for index in range(fc_atomic_load_i64(&h.slots[h.slices].lo),
                       fc_atomic_load_i64(&h.slots[h.slices].hi) + 1):
        if hist_load_u64(&h.limbo[index]) != 0:
            count = hist_xchg_u64(&h.limbo[index], 0)
            if count != 0:
                hist_add_slot(h, slot, index, count, period)


cdef inline void hist_retire(LatencyHistogram h, int64_t index, uint64_t count) noexcept nogil:
    if fc_atomic_add_u64(&h.retired[index], count) < count:
        fc_atomic_store_i64(&h.saturated, 1)


cdef void hist_retire_slot(LatencyHistogram h, int64_t slot) noexcept nogil:
    """Clear a slot this thread has claimed (its epoch holds the clearing mark), moving its
    counts into `retired`: each nonzero counter is exchanged with 0 and the value it held is
    added there, so a count sits in the slot or in retired, never in both (see the .pxd)."""
    cdef uint32_t *counts = &h.counts[slot * h.stride]
    cdef int64_t address = fc_atomic_load_i64(&h.slots[slot].carry)
    cdef uint64_t *carry = <uint64_t *><intptr_t>address
    cdef int64_t index
    cdef uint64_t moved
    # the whole slot, not just [lo, hi]: a writer delayed from the old period may have added
    # outside the marks it was about to widen
    for index in range(h.stride):
        if hist_load_u32(&counts[index]) != 0:
            moved = hist_xchg_u32(&counts[index], 0)
            if moved != 0:
                hist_retire(h, index, moved)
    if carry != NULL:
        for index in range(h.stride):
            if hist_load_u64(&carry[index]) != 0:
                moved = hist_xchg_u64(&carry[index], 0)
                if moved != 0:
                    hist_retire(h, index, moved)


cdef void hist_add_at(LatencyHistogram h, int64_t index, uint64_t count,
                      int64_t period) noexcept nogil:
    """Add `count` at counter `index` for `period`, rotating the period's slot if it is stale."""
    cdef int64_t slot = period % h.slices
    cdef int64_t seen = fc_atomic_load_i64(&h.slots[slot].epoch)
    while True:
        if seen >= period:
            # live for this period, or already serving a later one (this recorder was delayed
            # by a whole window): count it there rather than drop it
            hist_add_slot(h, slot, index, count, seen)
            return
        if seen <= -2:
            # another thread is zeroing this slot: park the count instead of waiting
            hist_widen(&h.slots[h.slices], index)
            if fc_atomic_add_u64(&h.limbo[index], count) < count:
                fc_atomic_store_i64(&h.saturated, 1)
            return
        # stale (an earlier period) or unused: claim it; a failed CAS reloads `seen`
        if fc_atomic_cas_i64(&h.slots[slot].epoch, &seen, -2 - period):
            hist_retire_slot(h, slot)
            hist_clear_marks(&h.slots[slot], h.layout.counts_len)
            fc_atomic_store_i64(&h.slots[slot].epoch, period)
            hist_add_slot(h, slot, index, count, period)
            hist_drain_limbo(h, slot, period)
            return


cdef Py_ssize_t hist_record_many(LatencyHistogram h, const int64_t *values, Py_ssize_t n,
                                 int64_t now_ns) noexcept nogil:
    """Record every value at `now_ns`, or nothing if one is negative: returns the index of
    the first negative value, else -1. Small arrays add value by value; large ones are
    tallied privately in one pass (a negative value found there discards the tally), then
    flushed with one atomic add per nonzero bucket."""
    cdef Py_ssize_t i
    cdef int64_t value, index, slot, period
    cdef uint64_t count, signs = 0, highest = <uint64_t>h.layout.highest
    cdef Py_ssize_t block
    # a local copy: stores and atomic adds cannot alias it, so loops keep it in registers
    cdef HistLayout layout = h.layout
    cdef uint64_t *tally = NULL
    if n >= HIST_LOCAL_MIN:
        tally = <uint64_t *>calloc(h.stride, sizeof(uint64_t))
    if tally == NULL:
        # OR of all values: its sign bit says whether any is negative, in a vectorised pass
        for i in range(n):
            signs |= <uint64_t>values[i]
        if <int64_t>signs < 0:
            for i in range(n):
                if values[i] < 0:
                    return i
    else:
        for i in range(n):
            value = values[i]
            # one unsigned compare sends negatives and overflows alike to the rare branch
            if <uint64_t>value > highest:
                if value < 0:
                    free(tally)
                    return i
                tally[layout.counts_len] += 1
            else:
                tally[hist_index_of(&layout, <uint64_t>value)] += 1
    # the live slot is found once; each add re-checks only its epoch, as hist_record_at would
    slot = hist_live_slot(h, now_ns, &period)
    if tally == NULL:
        for i in range(n):
            value = values[i]
            index = (layout.counts_len if <uint64_t>value > highest
                     else hist_index_of(&layout, <uint64_t>value))
            if slot >= 0 and fc_atomic_load_i64(&h.slots[slot].epoch) == period:
                hist_add_live(h, slot, period, index, 1)
            else:
                hist_add_at(h, index, 1, period)
                slot = hist_live_slot(h, now_ns, &period)
        return -1
    # most of the tally is zero: skip it a block at a time (the stride is a multiple of the
    # block, and the padding past the overflow counter stays zero)
    for block in range(h.stride // HIST_SCAN_BLOCK):
        if not hist_any_u64s(&tally[block * HIST_SCAN_BLOCK], HIST_SCAN_BLOCK):
            continue
        for index in range(block * HIST_SCAN_BLOCK, (block + 1) * HIST_SCAN_BLOCK):
            count = tally[index]
            if count == 0:
                continue
            if (count <= HIST_U32_MAX and slot >= 0
                    and fc_atomic_load_i64(&h.slots[slot].epoch) == period):
                hist_add_live(h, slot, period, index, <uint32_t>count)
            else:
                hist_add_at(h, index, count, period)
                slot = hist_live_slot(h, now_ns, &period)
    free(tally)
    return -1


# ---------------------------------------------------------------------------------------------
# Queries on a merged array of uint64 counts (counts_len buckets + overflow at counts_len).

cdef int hist_merge_window(LatencyHistogram h, int64_t periods, int64_t now_ns,
                           uint64_t *out) noexcept nogil:
    """Sum the slots holding one of the last `periods` periods (and limbo) into `out`,
    reading each slot only between its marks."""
    cdef int64_t first = hist_period(h, now_ns) - periods + 1
    cdef int64_t slot, index, address, epoch, lo, hi
    memset(out, 0, h.stride * sizeof(uint64_t))
    for slot in range(h.slices):
        epoch = fc_atomic_load_i64(&h.slots[slot].epoch)
        if epoch < first or epoch < 0:
            continue
        lo = fc_atomic_load_i64(&h.slots[slot].lo)
        hi = fc_atomic_load_i64(&h.slots[slot].hi)
        if lo > hi:
            continue
        hist_add_u32s(&out[lo], &h.counts[slot * h.stride + lo], hi - lo + 1)
        address = fc_atomic_load_i64(&h.slots[slot].carry)
        if address != 0:
            hist_add_u64s(&out[lo], &(<const uint64_t *><intptr_t>address)[lo], hi - lo + 1)
    for index in range(fc_atomic_load_i64(&h.slots[h.slices].lo),
                       fc_atomic_load_i64(&h.slots[h.slices].hi) + 1):
        out[index] += hist_load_u64(&h.limbo[index])
    return 0


cdef inline void hist_add_slot_range(LatencyHistogram h, int64_t slot, uint64_t *out) noexcept nogil:
    cdef int64_t lo = fc_atomic_load_i64(&h.slots[slot].lo)
    cdef int64_t hi = fc_atomic_load_i64(&h.slots[slot].hi)
    cdef int64_t address
    if lo > hi:
        return
    hist_add_u32s(&out[lo], &h.counts[slot * h.stride + lo], hi - lo + 1)
    address = fc_atomic_load_i64(&h.slots[slot].carry)
    if address != 0:
        hist_add_u64s(&out[lo], &(<const uint64_t *><intptr_t>address)[lo], hi - lo + 1)


cdef void hist_merge_ring_cached(LatencyHistogram h, int64_t now_ns, uint64_t *out) noexcept:
    """The whole ring into `out`: closed slices from the cache (rebuilt when the ring has
    turned or a closed slice was written), the current one and limbo read afresh. Runs with
    the GIL held, which serialises the queries sharing the cache."""
    cdef int64_t now_period = hist_period(h, now_ns)
    cdef int64_t first = now_period - h.slices + 1
    cdef int64_t slot, index, epoch
    if (not h.cache_valid or h.cache_first != first or h.cache_to != now_period - 1
            or fc_atomic_load_i64(&h.cache_dirty)):
        # publish the range before reading the slots: a writer into it that this merge
        # misses is bound to see the range afterwards and set dirty (both sides seq_cst)
        hist_xchg_i64(&h.cache_to, now_period - 1)
        hist_xchg_i64(&h.cache_dirty, 0)
        memset(h.cache, 0, h.stride * sizeof(uint64_t))
        for slot in range(h.slices):
            epoch = fc_atomic_load_i64(&h.slots[slot].epoch)
            if first <= epoch < now_period:
                hist_add_slot_range(h, slot, h.cache)
        h.cache_first = first
        h.cache_valid = True
    memcpy(out, h.cache, h.stride * sizeof(uint64_t))
    for slot in range(h.slices):
        if fc_atomic_load_i64(&h.slots[slot].epoch) >= now_period:
            hist_add_slot_range(h, slot, out)
    for index in range(fc_atomic_load_i64(&h.slots[h.slices].lo),
                       fc_atomic_load_i64(&h.slots[h.slices].hi) + 1):
        out[index] += hist_load_u64(&h.limbo[index])


cdef void hist_merge_totals(LatencyHistogram h, uint64_t *out) noexcept:
    """Every count since creation (or reset()) into `out`, never below an earlier call's.

    Reads retired, then each slot (its carry before its counters), then limbo: against the
    direction counts move (limbo -> slot -> retired, a counter wrap adds to the carry after
    the counter), so a concurrent move can only hide a count from this read. The result is
    then raised to `exported`, the last reported totals, and stored there: reported totals
    never decrease and never exceed what was recorded. Runs with the GIL held, which
    serialises the exports sharing `exported`."""
    cdef int64_t slot, index, lo, hi, address
    # plain vectorised reads as the window merges make; the fences keep the three stages
    # (and a slot's carry before its counters) in order
    memcpy(out, h.retired, h.stride * sizeof(uint64_t))
    hist_load_fence()
    for slot in range(h.slices):
        lo = fc_atomic_load_i64(&h.slots[slot].lo)
        hi = fc_atomic_load_i64(&h.slots[slot].hi)
        if lo > hi:
            continue
        address = fc_atomic_load_i64(&h.slots[slot].carry)
        if address != 0:
            hist_add_u64s(&out[lo], &(<const uint64_t *><intptr_t>address)[lo], hi - lo + 1)
            hist_load_fence()
        hist_add_u32s(&out[lo], &h.counts[slot * h.stride + lo], hi - lo + 1)
    hist_load_fence()
    for index in range(fc_atomic_load_i64(&h.slots[h.slices].lo),
                       fc_atomic_load_i64(&h.slots[h.slices].hi) + 1):
        out[index] += hist_load_u64(&h.limbo[index])
    hist_raise_u64s(out, h.exported, h.stride)


cdef int hist_total(const HistLayout *layout, const uint64_t *counts, uint64_t *total) noexcept nogil:
    """In-range count into `total`; returns 1 if the sum would exceed 2**64 - 1."""
    return hist_sum_u64s(counts, 0, layout.counts_len - 1, total)


cdef inline int64_t hist_target_rank(double percentile, uint64_t total) noexcept nogil:
    # HdrHistogram's rank: int(p * total / 100 + 0.5), at least 1, in double arithmetic
    cdef int64_t rank = <int64_t>((percentile * <double>total / 100.0) + 0.5)
    return rank if rank > 1 else 1


cdef int64_t hist_value_at(const HistLayout *layout, const uint64_t *counts, uint64_t total,
                           double percentile) noexcept nogil:
    """HdrHistogram's value at a percentile: the highest value equivalent to the sample at
    rank max(1, int(p * total / 100 + 0.5)); the lowest one for p == 0; 0 when empty."""
    cdef int64_t index
    cdef uint64_t seen = 0
    cdef uint64_t rank
    if total == 0:
        return 0
    rank = <uint64_t>hist_target_rank(percentile, total)
    for index in range(layout.counts_len):
        seen += counts[index]
        if seen >= rank:
            if percentile == 0.0:
                return hist_lowest_of_index(layout, index)
            return hist_highest_of_index(layout, index)
    return hist_highest_of_index(layout, layout.counts_len - 1)


cdef double hist_mean(const HistLayout *layout, const uint64_t *counts, uint64_t total) noexcept nogil:
    cdef int64_t index
    cdef double sum = 0.0
    if total == 0:
        return 0.0
    for index in range(layout.counts_len):
        if counts[index] != 0:
            sum += <double>counts[index] * <double>hist_median_of_index(layout, index)
    return sum / <double>total


cdef double hist_stdev(const HistLayout *layout, const uint64_t *counts, uint64_t total) noexcept nogil:
    cdef int64_t index
    cdef double mean = hist_mean(layout, counts, total), deviation, sum = 0.0
    if total == 0:
        return 0.0
    for index in range(layout.counts_len):
        if counts[index] != 0:
            deviation = <double>hist_median_of_index(layout, index) - mean
            sum += deviation * deviation * <double>counts[index]
    return sqrt(sum / <double>total)


cdef int64_t hist_min(const HistLayout *layout, const uint64_t *counts) noexcept nogil:
    cdef int64_t index
    for index in range(layout.counts_len):
        if counts[index] != 0:
            return hist_lowest_of_index(layout, index)
    return 0


cdef int64_t hist_max(const HistLayout *layout, const uint64_t *counts) noexcept nogil:
    cdef int64_t index
    for index in range(layout.counts_len - 1, -1, -1):
        if counts[index] != 0:
            return hist_highest_of_index(layout, index)
    return 0


cdef double _checked_percentile(object percentile) except -1.0:
    number = as_real(percentile)
    if number is None:
        raise HistogramTypeError(f"percentile must be a number, got {shown(percentile)}")
    if not (0 <= number <= 100):        # compared exactly: a huge int never reaches float()
        raise HistogramValueError(
            f"percentile must be between 0 and 100, got {shown(percentile)}")
    return float(number)


cdef dict hist_value_at_each(const HistLayout *layout, const uint64_t *counts, uint64_t total,
                             object percentiles):
    """{p: value at p} for every p, in one scan over the counts."""
    cdef list keys = list(percentiles)
    cdef list order
    cdef double p
    cdef int64_t index = 0
    cdef uint64_t seen = 0
    cdef uint64_t rank
    cdef dict result = {}
    for key in keys:
        _checked_percentile(key)
    order = sorted(keys, key=float)
    for key in order:
        p = key
        if total == 0:
            result[key] = 0
            continue
        rank = <uint64_t>hist_target_rank(p, total)
        # counts[index] is already in `seen` once seen >= rank; step only while below it
        while seen < rank and index < layout.counts_len:
            seen += counts[index]
            index += 1
        result[key] = (hist_lowest_of_index(layout, index - 1) if p == 0.0
                       else hist_highest_of_index(layout, index - 1))
    return {key: result[key] for key in keys}


# ---------------------------------------------------------------------------------------------
# Prometheus / OpenMetrics text.

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# prometheus_client's default histogram buckets, in seconds
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


cdef str _escape_label_value(str value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


cdef list _checked_labels(object labels):
    if labels is None:
        return []
    if not isinstance(labels, dict):
        raise HistogramTypeError(f"labels must be a dict of str to str, got {shown(labels)}")
    pairs = []
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            raise HistogramValueError(f"invalid Prometheus label name {shown(key)}")
        if key == "le":
            raise HistogramValueError("label name 'le' is reserved for histogram buckets")
        if not isinstance(value, str):
            raise HistogramTypeError(
                f"label {shown(key)} must have a str value, got {shown(value)}")
        pairs.append(f'{key}="{_escape_label_value(value)}"')
    return pairs


cdef list _checked_buckets(object buckets):
    if buckets is None:
        buckets = DEFAULT_BUCKETS
    try:
        given = [as_real(bound) for bound in buckets]
    except TypeError:                       # not iterable
        given = [None]
    if any(number is None for number in given):
        raise HistogramTypeError(f"buckets must be numbers of seconds, got {shown(buckets)}")
    bounds = []
    for number in given:
        try:
            bound = float(number)
        except OverflowError:               # an int past the largest float
            bound = math.inf
        if not math.isfinite(bound) or bound <= 0.0:
            raise HistogramValueError(
                f"bucket bounds must be finite and > 0 seconds, got {shown(number)} "
                "(+Inf is implied)")
        bounds.append(bound)
    if any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise HistogramValueError(
            f"bucket bounds must be strictly increasing, got {shown(bounds)}")
    return bounds


cdef str hist_exposition(const HistLayout *layout, const uint64_t *counts, uint64_t total,
                         object name, object help, object labels, object buckets, bint openmetrics):
    """Histogram text: cumulative `le` buckets in seconds, `_sum` and `_count`."""
    cdef int64_t index = 0, bound_ns
    cdef uint64_t cumulative = 0
    cdef uint64_t overflow = counts[layout.counts_len]
    cdef double sum_ns = 0.0
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise HistogramValueError(f"invalid Prometheus metric name {shown(name)}")
    if not isinstance(help, str):
        raise HistogramTypeError(f"help must be a str, got {shown(help)}")
    pairs = _checked_labels(labels)
    bounds = _checked_buckets(buckets)
    prefix = ",".join(pairs) + ("," if pairs else "")
    plain = "{" + ",".join(pairs) + "}" if pairs else ""
    help_text = help.replace("\\", "\\\\").replace("\n", "\\n")
    if openmetrics:
        help_text = help_text.replace('"', '\\"')
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound in bounds:
        # a bucket counts toward `le` when every value it may hold is <= the bound
        # a bound past int64 ns (292 years) lies above every bucket
        bound_ns = min(seconds_to_ns(bound, "bucket bound"), INT64_MAX)
        while index < layout.counts_len and hist_highest_of_index(layout, index) <= bound_ns:
            cumulative += counts[index]
            index += 1
        lines.append(f'{name}_bucket{{{prefix}le="{bound!r}"}} {cumulative}')
    lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {total + overflow}')
    for index in range(layout.counts_len):
        if counts[index] != 0:
            sum_ns += <double>counts[index] * <double>hist_median_of_index(layout, index)
    # overflow values are only known to exceed `highest`: counted at it, a lower bound
    sum_ns += <double>overflow * <double>layout.highest
    lines.append(f"{name}_sum{plain} {ns_to_seconds(sum_ns)!r}")
    lines.append(f"{name}_count{plain} {total + overflow}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------

cdef class LatencyHistogram:
    """LatencyHistogram(*, significant_figures=2, lowest=1, highest=3_600_000_000_000, window=60.0, slices=60, clock=None)
--

Latency histogram in integer nanoseconds over a sliding window of time slices.

    ``LatencyHistogram(*, significant_figures=2, lowest=1, highest=3_600_000_000_000,
    window=60.0, slices=60, clock=None)``: values from ``lowest`` to ``highest`` ns are kept
    within a relative ``10**-significant_figures``; ``window`` seconds are split into
    ``slices`` slices that expire one by one. ``record`` is lock-free and thread-safe;
    ``hist_record`` in ``histogram.pxd`` records from Cython without the GIL.

    Raises ``HistogramValueError`` / ``HistogramTypeError`` for bad arguments.

    Example::

        h = LatencyHistogram(clock=ManualClock())
        h.record(1_500_000)            # 1.5 ms
        h.percentile(99.9)             # 1_507_327: the top of its 0.78 %-wide bucket
        with h.time():
            handle_request()
    """

    def __cinit__(self, *args, **kwargs):
        self.counts = NULL
        self.slots = NULL
        self.limbo = NULL
        self.cache = NULL
        self.retired = NULL
        self.exported = NULL
        self.cache_to = HIST_NO_PERIOD

    def __init__(self, *, significant_figures=2, lowest=1, highest=3_600_000_000_000,
                 window=60.0, slices=60, clock=None):
        cdef HistLayout layout = _checked_layout(significant_figures, lowest, highest)
        cdef Clock resolved = clock_resolve(clock)
        cdef int64_t slot
        slices = _check_int(slices, "slices")
        if not 1 <= slices <= HIST_MAX_SLICES:
            raise HistogramValueError(
                f"slices must be between 1 and {HIST_MAX_SLICES}, got {shown(slices)}")
        try:
            window_ns = seconds_to_ns(window, "window")
        except TypeError as error:
            raise HistogramTypeError(str(error)) from None
        except ValueError as error:
            raise HistogramValueError(str(error)) from None
        if window_ns == 0 or window_ns % slices != 0:
            raise HistogramValueError(
                f"window must be > 0 and a whole number of ns divisible by slices={slices}, "
                f"got {shown(window)} s")
        if window_ns > HIST_MAX_HIGHEST:
            raise HistogramValueError(f"window must be at most 2**62 ns, got {shown(window)} s")
        if self.counts != NULL:
            raise HistogramValueError("LatencyHistogram.__init__ may be called only once")
        stride = layout.counts_len + 1
        stride += (-stride) % HIST_STRIDE_ALIGN
        counts = <uint32_t *>calloc(slices * stride, sizeof(uint32_t))
        slots = <HistSlot *>calloc(slices + 1, sizeof(HistSlot))
        limbo = <uint64_t *>calloc(stride, sizeof(uint64_t))
        cache = <uint64_t *>calloc(stride, sizeof(uint64_t))
        retired = <uint64_t *>calloc(stride, sizeof(uint64_t))
        exported = <uint64_t *>calloc(stride, sizeof(uint64_t))
        if (counts == NULL or slots == NULL or limbo == NULL or cache == NULL
                or retired == NULL or exported == NULL):
            free(counts); free(slots); free(limbo); free(cache); free(retired); free(exported)
            raise MemoryError("LatencyHistogram: cannot allocate its counters")
        self.layout = layout
        self.clock = resolved
        self.window_ns = window_ns
        self.slices = slices
        self.slice_ns = window_ns // slices
        self.slice_divisor = _divisor(self.slice_ns)
        self.slices_divisor = _divisor(slices)
        self.stride = stride
        self.counts = counts
        self.slots = slots
        self.limbo = limbo
        self.cache = cache
        self.retired = retired
        self.exported = exported
        self.cache_valid = False
        self.cache_to = HIST_NO_PERIOD
        self.cache_dirty = 0
        self.saturated = 0
        self.slot_hint = 0
        for slot in range(slices + 1):
            slots[slot].epoch = HIST_EPOCH_UNUSED
            hist_clear_marks(&slots[slot], layout.counts_len)

    def __dealloc__(self):
        cdef int64_t slot
        if self.slots != NULL:
            for slot in range(self.slices):
                free(<uint64_t *><intptr_t>self.slots[slot].carry)
        free(self.counts)
        free(self.slots)
        free(self.limbo)
        free(self.cache)
        free(self.retired)
        free(self.exported)

    # -- recording ------------------------------------------------------------------------------

    # binding=False: a plain method descriptor, called without the cyfunction layer (about
    # 5 ns of a 22 ns record here); the clinic format keeps inspect.signature working
    @cython.binding(False)
    @cython.embedsignature.format("clinic")
    def record(self, value_ns, count=1):
        """Record ``count`` (>= 1) observations of ``value_ns`` integer nanoseconds, now.

        Values above ``highest`` are counted in ``overflow``. Raises ``HistogramValueError``
        for a negative value or a count below 1; a non-int raises ``TypeError``.

        >>> h.record(2_000_000)        # 2 ms
        """
        # exact-int checks are pointer compares; anything else goes through __index__ once.
        # An int past int64 is above any `highest`: counted in overflow, never an error.
        cdef int too_large = 0
        cdef int64_t value = PyLong_AsLongLongAndOverflow(
            value_ns if type(value_ns) is int else _as_int(value_ns, "latency"), &too_large)
        if too_large:
            value = INT64_MAX if too_large > 0 else -1
        cdef int64_t n = 1 if count is 1 else _record_count(count)
        if value < 0 or n < 1:
            _bad_record(value, n)
        if n <= HIST_U32_MAX:
            # the nogil inline reads the clock through a borrowed reference: no refcounting
            hist_record(self, value, <uint32_t>n)
        else:
            hist_add_at(self, hist_counter_index(self, value), <uint64_t>n,
                        hist_period(self, clock_now_ns(self.clock)))

    @cython.binding(False)              # as record: no cyfunction layer per call
    @cython.embedsignature.format("clinic")
    def record_many(self, values):
        """Record every value of a 1-D numpy int64 array of nanoseconds, in one nogil loop.

        All values share one clock reading. Raises ``HistogramTypeError`` for another type or
        dtype and ``HistogramValueError`` (recording nothing) if any value is negative.

        >>> h.record_many(np.array([1_000, 250_000, 3_000_000], dtype=np.int64))
        """
        # numpy's C API makes the isinstance / dtype / ndim checks and finds the data in a few
        # pointer reads; a typed memoryview's buffer export cost about 150 ns per call
        if (not cnp.PyArray_Check(values) or cnp.PyArray_NDIM(<cnp.ndarray>values) != 1
                or not cnp.PyArray_EquivTypes((<cnp.ndarray>values).descr, INT64)):
            _bad_values(values)
        cdef cnp.ndarray array = <cnp.ndarray>values
        if not cnp.PyArray_IS_C_CONTIGUOUS(array):
            array = np.ascontiguousarray(array)
        cdef const int64_t *data = <const int64_t *>cnp.PyArray_DATA(array)
        cdef Py_ssize_t n = cnp.PyArray_DIM(array, 0), negative
        if n == 0:
            return
        with nogil:
            negative = hist_record_many(self, data, n, clock_now_ns(self.clock))
        if negative >= 0:
            raise HistogramValueError(
                f"values must be >= 0 ns; values[{negative}] is {data[negative]} (nothing recorded)")

    def time(self):
        """A context manager recording the elapsed time of its block (also when it raises).

        >>> with h.time():
        ...     work()
        """
        return HistogramTimer(self)

    def timed(self, func):
        """Decorator recording each call's duration; works for sync and ``async def``.

        Raises ``HistogramTypeError`` if ``func`` is not callable.

        >>> @h.timed
        ... async def handler(request): ...
        """
        if not callable(func):
            raise HistogramTypeError(f"timed() needs a callable, got {shown(func)}")
        cdef LatencyHistogram hist = self
        if inspect.iscoroutinefunction(func):
            async def timed_async(*args, **kwargs):
                cdef int64_t start_ns = clock_now_ns(hist.clock)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _record_since(hist, start_ns)
            return functools.wraps(func)(timed_async)

        def timed_sync(*args, **kwargs):
            cdef int64_t start_ns = clock_now_ns(hist.clock)
            try:
                return func(*args, **kwargs)
            finally:
                _record_since(hist, start_ns)
        return functools.wraps(func)(timed_sync)

    # -- queries --------------------------------------------------------------------------------

    def percentile(self, percentile, window=None):
        """The value in ns at ``percentile`` (0..100) over the last ``window`` seconds.

        HdrHistogram's definition: the highest value equivalent to the sample at rank
        ``max(1, int(p * count / 100 + 0.5))``; 0 when empty. ``window`` (None: the whole
        ring) must be a whole number of slices. Raises ``HistogramValueError`` otherwise.

        >>> h.percentile(99.9, window=10)
        """
        cdef double p = _checked_percentile(percentile)
        cdef uint64_t total
        cdef uint64_t *merged = _merged_counts(self, window, &total)
        cdef int64_t value
        with nogil:
            value = hist_value_at(&self.layout, merged, total, p)
        free(merged)
        return value

    def percentiles(self, percentiles, window=None):
        """``{p: value_ns}`` for each percentile in ``percentiles``, from one merge and scan.

        >>> h.percentiles([50, 99, 99.9])
        """
        cdef uint64_t total
        cdef uint64_t *merged
        percentiles = list(percentiles)
        for p in percentiles:
            _checked_percentile(p)
        merged = _merged_counts(self, window, &total)
        try:
            return hist_value_at_each(&self.layout, merged, total, percentiles)
        finally:
            free(merged)

    def snapshot(self, window=None):
        """An immutable ``HistogramSnapshot`` of the last ``window`` seconds (None: all)."""
        cdef uint64_t total
        cdef uint64_t *merged = _merged_counts(self, window, &total)
        return HistogramSnapshot._adopt(self.layout, merged, total)

    @property
    def count(self):
        """Number of values within [0, highest] recorded in the whole ring's window."""
        return self.snapshot().count

    @property
    def overflow(self):
        """Number of values above ``highest`` recorded in the whole ring's window."""
        return self.snapshot().overflow

    @property
    def min(self):
        """Lowest value equivalent to the smallest recorded value, in ns (0 when empty)."""
        return self.snapshot().min

    @property
    def max(self):
        """Highest value equivalent to the largest recorded value, in ns (0 when empty)."""
        return self.snapshot().max

    @property
    def mean(self):
        """Mean in ns, from bucket midpoints as HdrHistogram computes it (0.0 when empty)."""
        return self.snapshot().mean

    @property
    def stdev(self):
        """Population standard deviation in ns, from bucket midpoints (0.0 when empty)."""
        return self.snapshot().stdev

    def cumulative(self):
        """A ``HistogramSnapshot`` of every value recorded since creation (or the last
        ``reset()``), whatever the window: what ``to_prometheus`` exports.

        Kept apart from the ring without a second add per record: clearing a slot for a new
        period moves its counts into per-bucket totals, and this adds the slots not yet
        cleared. Successive calls never report a bucket lower than an earlier call did, also
        while other threads record (a count being moved may show up one call late).

        >>> h.cumulative().count       # never decreases as the window rolls
        """
        cdef uint64_t total
        cdef uint64_t *merged = <uint64_t *>malloc(self.stride * sizeof(uint64_t))
        if merged == NULL:
            raise MemoryError()
        hist_merge_totals(self, merged)
        if hist_total(&self.layout, merged, &total) or fc_atomic_load_i64(&self.saturated):
            free(merged)
            raise HistogramOverflowError("a bucket's count exceeded 2**64 - 1")
        return HistogramSnapshot._adopt(self.layout, merged, total)

    def to_prometheus(self, name, help="", labels=None, buckets=None, window=None):
        """Prometheus text exposition: a histogram in seconds, cumulative since creation.

        ``_bucket``, ``_sum`` and ``_count`` never decrease as the window rolls (only
        ``reset()`` lowers them: a counter reset); see ``fastcore.latency.exposition``, which
        this calls, for the buckets, ``_sum`` and the windowed quantiles. ``window`` must be
        None: a window's counts fall as it rolls, which Prometheus would read as resets.
        Raises ``HistogramValueError`` for an invalid name, label or bucket list.

        >>> print(h.to_prometheus("http_request_duration_seconds", labels={"route": "/"}))
        """
        return _expose(self, name, help, labels, buckets, window, False)

    def to_openmetrics(self, name, help="", labels=None, buckets=None, window=None):
        """OpenMetrics text (ends with ``# EOF``); otherwise as ``to_prometheus``. To put
        several histograms in one exposition use ``fastcore.latency.exposition``."""
        return _expose(self, name, help, labels, buckets, window, True)

    # -- whole-histogram operations -------------------------------------------------------------

    def merge(self, other):
        """Add another histogram's counts to this one.

        A ``LatencyHistogram`` with the same configuration merges slice by slice (each period
        still inside this ring's window keeps its time); a ``HistogramSnapshot`` with the same
        layout lands in the current slice. Raises ``HistogramValueError`` for a different
        configuration, ``HistogramTypeError`` for another type.
        """
        cdef LatencyHistogram ring
        cdef HistogramSnapshot snap
        cdef int64_t now_ns = clock_now_ns(self.clock)
        if isinstance(other, LatencyHistogram):
            ring = <LatencyHistogram>other
            if (not _same_layout(&self.layout, &ring.layout) or ring.slices != self.slices
                    or ring.window_ns != self.window_ns):
                raise HistogramValueError(
                    f"cannot merge {other!r} into {self!r}: the configurations differ")
            with nogil:
                _merge_ring(self, ring, now_ns)
        elif isinstance(other, HistogramSnapshot):
            snap = <HistogramSnapshot>other
            if not _same_layout(&self.layout, &snap.layout):
                raise HistogramValueError(
                    f"cannot merge {other!r} into {self!r}: the bucket layouts differ")
            with nogil:
                _merge_counts(self, snap.counts, hist_period(self, now_ns))
        else:
            raise HistogramTypeError(
                f"merge() needs a LatencyHistogram or HistogramSnapshot, got {type(other).__name__}")

    def reset(self):
        """Forget every value, the totals since creation included: to a Prometheus scrape of
        ``to_prometheus`` this is a counter reset, as a process restart is. Values recorded
        by other threads during the reset may survive."""
        cdef int64_t slot, address
        for slot in range(self.slices):
            fc_atomic_store_i64(&self.slots[slot].epoch, HIST_EPOCH_UNUSED)
            memset(&self.counts[slot * self.stride], 0, self.stride * sizeof(uint32_t))
            address = self.slots[slot].carry
            if address != 0:
                memset(<uint64_t *><intptr_t>address, 0, self.stride * sizeof(uint64_t))
            hist_clear_marks(&self.slots[slot], self.layout.counts_len)
        memset(self.limbo, 0, self.stride * sizeof(uint64_t))
        memset(self.retired, 0, self.stride * sizeof(uint64_t))
        memset(self.exported, 0, self.stride * sizeof(uint64_t))
        hist_clear_marks(&self.slots[self.slices], self.layout.counts_len)
        self.cache_valid = False
        fc_atomic_store_i64(&self.saturated, 0)

    def memory_bytes(self):
        """Bytes of C memory this histogram owns (counters, slot headers, carries, limbo, cache,
        totals)."""
        cdef int64_t slot
        cdef Py_ssize_t total = (self.slices * self.stride * sizeof(uint32_t)
                                 + (self.slices + 1) * sizeof(HistSlot)
                                 + 4 * self.stride * sizeof(uint64_t))
        for slot in range(self.slices):
            if fc_atomic_load_i64(&self.slots[slot].carry) != 0:
                total += self.stride * sizeof(uint64_t)
        return total

    # -- configuration --------------------------------------------------------------------------

    @property
    def significant_figures(self):
        return self.layout.significant_figures

    @property
    def lowest(self):
        """Lowest distinguishable value, ns (smaller values share the first bucket)."""
        return self.layout.lowest

    @property
    def highest(self):
        """Highest tracked value, ns; larger values count in ``overflow``."""
        return self.layout.highest

    @property
    def window(self):
        """The ring's whole window, seconds."""
        return ns_to_seconds(self.window_ns)

    @property
    def slices(self):
        return self.slices

    def __repr__(self):
        return (f"LatencyHistogram(significant_figures={self.layout.significant_figures}, "
                f"lowest={self.layout.lowest}, highest={self.layout.highest}, "
                f"window={ns_to_seconds(self.window_ns)!r}, slices={self.slices})")


cdef str _expose(LatencyHistogram hist, object name, object help, object labels,
                 object buckets, object window, bint openmetrics):
    if window is not None:
        raise HistogramValueError(
            "to_prometheus exports the totals since creation, not a window (a window's "
            "counts fall as it rolls: Prometheus reads that as counter resets); for windowed "
            "quantiles use fastcore.latency.exposition(..., quantiles=..., window=...)")
    from fastcore.latency import exposition     # the Python layer: imported at first use
    return exposition([(name, hist, labels, help)], buckets=buckets, openmetrics=openmetrics)


cdef int64_t _window_periods(LatencyHistogram self, object window) except -1:
    """A window in seconds -> a number of slices (all of them for None)."""
    if window is None:
        return self.slices
    try:
        window_ns = seconds_to_ns(window, "window")
    except TypeError as error:
        raise HistogramTypeError(str(error)) from None
    except ValueError as error:
        raise HistogramValueError(str(error)) from None
    if window_ns == 0 or window_ns % self.slice_ns != 0 or window_ns > self.window_ns:
        raise HistogramValueError(
            f"window must be a whole number of slices ({ns_to_seconds(self.slice_ns)!r} s each)"
            f" up to {ns_to_seconds(self.window_ns)!r} s, got {shown(window)}")
    return window_ns // self.slice_ns

cdef uint64_t *_merged_counts(LatencyHistogram self, object window, uint64_t *total) except NULL:
    """A fresh array (caller frees) holding the window's merged counts; `total` in range."""
    cdef int64_t periods = _window_periods(self, window)
    cdef uint64_t *merged = <uint64_t *>malloc(self.stride * sizeof(uint64_t))
    cdef int wrapped
    if merged == NULL:
        raise MemoryError()
    if periods == self.slices:
        hist_merge_ring_cached(self, clock_now_ns(self.clock), merged)
    else:
        with nogil:
            hist_merge_window(self, periods, clock_now_ns(self.clock), merged)
    wrapped = hist_total(&self.layout, merged, total)
    if wrapped or fc_atomic_load_i64(&self.saturated):
        free(merged)
        raise HistogramOverflowError("a bucket's count exceeded 2**64 - 1")
    return merged


cdef void _merge_counts(LatencyHistogram h, const uint64_t *counts, int64_t period) noexcept nogil:
    cdef int64_t index
    for index in range(h.layout.counts_len + 1):
        if counts[index] != 0:
            hist_add_at(h, index, counts[index], period)


cdef void _merge_ring(LatencyHistogram h, LatencyHistogram other, int64_t now_ns) noexcept nogil:
    cdef int64_t now_period = hist_period(h, now_ns)
    cdef int64_t first = now_period - h.slices + 1
    cdef int64_t slot, index, epoch, address
    cdef uint64_t count
    cdef const uint64_t *carry
    for slot in range(other.slices):
        epoch = fc_atomic_load_i64(&other.slots[slot].epoch)
        if epoch < first or epoch < 0:
            continue
        if epoch > now_period:
            epoch = now_period      # the other ring's clock is ahead: count it as now
        address = fc_atomic_load_i64(&other.slots[slot].carry)
        carry = <const uint64_t *><intptr_t>address
        for index in range(fc_atomic_load_i64(&other.slots[slot].lo),
                           fc_atomic_load_i64(&other.slots[slot].hi) + 1):
            count = other.counts[slot * other.stride + index]
            if carry != NULL:
                count += carry[index]
            if count != 0:
                hist_add_at(h, index, count, epoch)
    for index in range(fc_atomic_load_i64(&other.slots[other.slices].lo),
                       fc_atomic_load_i64(&other.slots[other.slices].hi) + 1):
        count = hist_load_u64(&other.limbo[index])
        if count != 0:
            hist_add_at(h, index, count, now_period)


cdef hist_divisor _divisor(object d):
    """The multiply-high reciprocal of d >= 1 that hist_divide uses (see histogram.pxd)."""
    cdef hist_divisor divisor
    shift = (d - 1).bit_length()                      # ceil(log2(d))
    magic = -(-(1 << (64 + shift)) // d)              # ceil(2**(64+shift) / d)
    divisor.lo = magic & 0xFFFFFFFFFFFFFFFF
    divisor.hi = magic >> 64
    divisor.shift = shift
    return divisor


cdef int64_t _record_count(object count) except? -1:
    """record()'s count (not 1) as int64; a count past int64 is an error, not OverflowError."""
    cdef int too_large = 0
    cdef int64_t n = PyLong_AsLongLongAndOverflow(
        count if type(count) is int else _as_int(count, "count"), &too_large)
    if too_large:
        raise HistogramValueError(
            f"count must be between 1 and 2**63 - 1, got {shown(count)}")
    return n


cdef object _as_int(object value, str name):
    try:
        return operator.index(value)
    except TypeError:
        raise HistogramTypeError(f"{name} must be an int (ns), got {shown(value)}") from None


cdef _bad_values(object values):
    raise HistogramTypeError(
        "values must be a 1-D numpy array of dtype int64, got "
        + (f"an array of dtype {values.dtype} and {values.ndim} dimension(s)"
           if isinstance(values, np.ndarray) else type(values).__name__))


cdef _bad_record(int64_t value_ns, int64_t count):
    if value_ns < 0:
        raise HistogramValueError(f"latency must be >= 0 ns, got {value_ns}")
    raise HistogramValueError(f"count must be >= 1, got {count}")


cdef _record_since(LatencyHistogram hist, int64_t start_ns):
    cdef int64_t now_ns = clock_now_ns(hist.clock)
    hist_record_at(hist, now_ns - start_ns, 1, now_ns)


cdef class HistogramTimer:
    """Context manager from ``LatencyHistogram.time()``: records its block's duration in ns.

    ``elapsed_ns`` holds the recorded duration after the block (-1 before it ends).
    """
    cdef LatencyHistogram hist
    cdef int64_t start_ns
    cdef readonly int64_t elapsed_ns

    def __cinit__(self, LatencyHistogram hist):
        self.hist = hist
        self.elapsed_ns = -1

    def __enter__(self):
        self.start_ns = clock_now_ns(self.hist.clock)
        return self

    def __exit__(self, exc_type, exc, traceback):
        cdef int64_t now_ns = clock_now_ns(self.hist.clock)
        self.elapsed_ns = now_ns - self.start_ns
        hist_record_at(self.hist, self.elapsed_ns, 1, now_ns)
        return False


cdef class HistogramSnapshot:
    """HistogramSnapshot()
--

An immutable merged histogram: the same queries as ``LatencyHistogram``, plus
    ``to_numpy()``. Made by ``LatencyHistogram.snapshot(window)`` and ``cumulative()``."""
    cdef HistLayout layout
    cdef uint64_t *counts           # counts_len buckets + overflow at counts_len
    cdef uint64_t total

    def __cinit__(self):
        self.counts = NULL

    def __init__(self):
        raise HistogramTypeError(
            "HistogramSnapshot is made by LatencyHistogram.snapshot() or cumulative()")

    def __dealloc__(self):
        free(self.counts)

    @staticmethod
    cdef HistogramSnapshot _adopt(HistLayout layout, uint64_t *counts, uint64_t total):
        cdef HistogramSnapshot snap = HistogramSnapshot.__new__(HistogramSnapshot)
        snap.layout = layout
        snap.counts = counts
        snap.total = total
        return snap

    @property
    def count(self):
        """Number of values within [0, highest]."""
        return self.total

    @property
    def overflow(self):
        """Number of values above ``highest``."""
        return self.counts[self.layout.counts_len]

    @property
    def min(self):
        return hist_min(&self.layout, self.counts)

    @property
    def max(self):
        return hist_max(&self.layout, self.counts)

    @property
    def mean(self):
        return hist_mean(&self.layout, self.counts, self.total)

    @property
    def stdev(self):
        return hist_stdev(&self.layout, self.counts, self.total)

    def percentile(self, percentile):
        """The value in ns at ``percentile`` (0..100), as ``LatencyHistogram.percentile``."""
        return hist_value_at(&self.layout, self.counts, self.total, _checked_percentile(percentile))

    def percentiles(self, percentiles):
        """``{p: value_ns}`` for each percentile."""
        return hist_value_at_each(&self.layout, self.counts, self.total, percentiles)

    def to_numpy(self):
        """``(upper_bounds, counts)``: int64 highest value of each bucket in ns and its uint64
        count, for every bucket (overflow excluded; see ``overflow``)."""
        cdef Py_ssize_t n = self.layout.counts_len
        cdef int64_t index
        bounds = np.empty(n, dtype=np.int64)
        counts = np.empty(n, dtype=np.uint64)
        cdef int64_t[::1] bound_view = bounds
        cdef uint64_t[::1] count_view = counts
        for index in range(n):
            bound_view[index] = hist_highest_of_index(&self.layout, index)
            count_view[index] = self.counts[index]
        return bounds, counts

    def to_prometheus(self, name, help="", labels=None, buckets=None):
        """Prometheus text exposition of this snapshot's counts as a histogram.

        Right for a ``LatencyHistogram.cumulative()`` snapshot; a window's snapshot falls as
        the ring rolls, which Prometheus reads as counter resets (``LatencyHistogram``'s own
        ``to_prometheus`` exports the totals). ``_sum`` here is a float sum of midpoints."""
        return hist_exposition(&self.layout, self.counts, self.total, name, help, labels,
                               buckets, False)

    def to_openmetrics(self, name, help="", labels=None, buckets=None):
        """OpenMetrics text exposition of this snapshot's counts, as ``to_prometheus``."""
        return hist_exposition(&self.layout, self.counts, self.total, name, help, labels,
                               buckets, True)

    def __repr__(self):
        return (f"HistogramSnapshot(count={self.total}, overflow={self.overflow}, "
                f"significant_figures={self.layout.significant_figures})")
