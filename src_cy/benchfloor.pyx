"""Minimal compiled baselines ("floors") that the benchmarks compare fastcore against.

Each floor does the least a correct structure could do for the same operation: a keyed
token bucket as a dict of TATs with one clock read and the GCRA arithmetic, no bounds, no
eviction, no Decision, no thread safety; a bare nogil loop over an array of handles. A
fastcore figure is quoted as a ratio to these, measured in the same run.
"""
from libc.stdint cimport int64_t, uint8_t

from fastcore._core.clock cimport Clock, clock_now_ns, clock_resolve


cdef class FloorKeyedBucket:
    """dict lookup + one clock read + GCRA arithmetic: the floor of ``try_acquire(key)``."""

    cdef dict tats
    cdef int64_t emission_ns
    cdef int64_t tau_ns
    cdef Clock clock_

    def __init__(self, int64_t emission_ns, int64_t tau_ns, clock=None):
        self.tats = {}
        self.emission_ns = emission_ns
        self.tau_ns = tau_ns
        self.clock_ = clock_resolve(clock)

    def try_acquire(self, key):
        cdef int64_t now_ns = clock_now_ns(self.clock_)
        cdef object found = self.tats.get(key)
        cdef int64_t tat = now_ns if found is None else <int64_t>found
        cdef int64_t new_tat = (tat if tat > now_ns else now_ns) + self.emission_ns
        if new_tat - now_ns > self.tau_ns:
            return False
        self.tats[key] = new_tat
        return True


cdef class FloorBatch:
    """A nogil loop doing one GCRA step per handle into a flat TAT array: the batch floor."""

    cdef int64_t[::1] tats
    cdef int64_t emission_ns
    cdef int64_t tau_ns

    def __init__(self, int64_t[::1] tats, int64_t emission_ns, int64_t tau_ns):
        self.tats = tats
        self.emission_ns = emission_ns
        self.tau_ns = tau_ns

    def acquire_many(self, const int64_t[::1] handles, uint8_t[::1] allowed, int64_t now_ns):
        cdef Py_ssize_t i
        cdef int64_t tat, new_tat
        with nogil:
            for i in range(handles.shape[0]):
                tat = self.tats[handles[i]]
                new_tat = (tat if tat > now_ns else now_ns) + self.emission_ns
                allowed[i] = new_tat - now_ns <= self.tau_ns
                if allowed[i]:
                    self.tats[handles[i]] = new_tat
