# Decision: what a limiter answers for one request.
#
# Promise: immutable; allowed, remaining (whole tokens / units left after this decision),
# retry_after (seconds until the same call would be admitted; 0 when admitted) and
# reset_after (seconds until the key is back to its fresh state), with bool(d) == allowed.
# Layout: 8 + 8 + 8 + 1 bytes of C fields behind the object header; times are kept in
# integer ns (retry_after_ns, reset_after_ns) and converted to float seconds on access.
# Cost: one allocation from a free list; no float objects until a field is read.
# Example: Decision(allowed=False, remaining=0, retry_after_ns=250_000_000, ...) reads back
# retry_after == 0.25.
from libc.stdint cimport int64_t


cdef class Decision:
    cdef readonly bint allowed
    cdef readonly int64_t remaining
    cdef readonly int64_t retry_after_ns
    cdef readonly int64_t reset_after_ns


cdef Decision decision_new(bint allowed, int64_t remaining, int64_t retry_after_ns,
                           int64_t reset_after_ns)
