# Clocks: where every fastcore structure reads the time.
#
# Promise: a structure holds one Clock and reads it through clock_now_ns(), once per call,
# without the GIL and without calling into Python. Time is int64 nanoseconds of a monotonic
# clock; seconds as floats appear only at the Python edge (fastcore/_units.py converts).
#
# Kinds (Clock.kind):
#   CLOCK_KIND_MONOTONIC  clock_gettime(CLOCK_MONOTONIC): ~20 ns, nanosecond resolution.
#   CLOCK_KIND_COARSE     clock_gettime(CLOCK_MONOTONIC_COARSE): ~3 ns, resolution one
#                         kernel tick (1-4 ms; CoarseClock.resolution() reports it).
#   CLOCK_KIND_MANUAL     Clock.manual_ns, moved only by ManualClock.advance()/set(): tests.
#
# State: 16 bytes per clock object (kind + manual_ns); structures share clock objects.
# Invariants: manual_ns never decreases and stays in [0, CLOCK_MAX_NS]; both system clocks
# are >= 0 (time since boot), so 0 is before every reading and can mark "never used".
# Cost: clock_now_ns() is one predictable branch plus the clock read.
#
# Worked example: ManualClock(start=1.5) holds manual_ns = 1_500_000_000; advance(0.25)
# makes it 1_750_000_000 and every structure built with that clock reads that value.
from libc.stdint cimport int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from "<time.h>" nogil:
    enum: CLOCK_MONOTONIC_COARSE

cdef enum:
    CLOCK_KIND_MONOTONIC = 0
    CLOCK_KIND_COARSE = 1
    CLOCK_KIND_MANUAL = 2

cdef enum:
    NS_PER_S = 1000000000           # ns

cdef extern from *:
    # 2**62 ns, about 146 years: keeps now + any tolerance (<= 2**61 ns) inside int64.
    const int64_t CLOCK_MAX_NS "((int64_t)1 << 62)"


cdef class Clock:
    cdef int kind
    cdef int64_t manual_ns


cdef class MonotonicClock(Clock):
    pass


cdef class CoarseClock(Clock):
    pass


cdef class ManualClock(Clock):
    cdef int64_t _checked(self, object ns) except -1


cdef Clock clock_resolve(object clock)


cdef inline int64_t clock_now_ns(Clock clock) noexcept nogil:
    """The clock's current time in ns; the only place the core reads the time."""
    cdef timespec ts
    if clock.kind == CLOCK_KIND_MANUAL:
        return clock.manual_ns
    if clock.kind == CLOCK_KIND_MONOTONIC:
        clock_gettime(CLOCK_MONOTONIC, &ts)
    else:
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return <int64_t>ts.tv_sec * NS_PER_S + ts.tv_nsec
