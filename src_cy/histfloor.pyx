"""Minimal compiled baselines for LatencyHistogram's benchmarks (see benchfloor.pyx's idea).

The floor of a log-bucket histogram's record: HdrHistogram's index (one clz, two shifts) and
a plain, non-atomic increment of a uint64 counter; no time slices, no overflow counter, no
thread safety. FloorHistogram.record_many is the same in a nogil loop. fastcore's figures are
quoted as ratios to these, measured in the same run.
"""
from libc.stdint cimport int64_t, uint64_t

from fastcore._core.histogram cimport HistLayout, hist_index_of, hist_layout


cdef class FloorHistogram:
    """HdrHistogram layout, one uint64 counter per bucket, plain increments."""

    cdef HistLayout layout
    cdef uint64_t[::1] counts

    def __init__(self, int64_t lowest=1, int64_t highest=3_600_000_000_000,
                 int significant_figures=2):
        import numpy
        self.layout = hist_layout(lowest, highest, significant_figures)
        self.counts = numpy.zeros(self.layout.counts_len, dtype=numpy.uint64)

    def record(self, int64_t value_ns):
        self.counts[hist_index_of(&self.layout, <uint64_t>value_ns)] += 1

    def record_many(self, const int64_t[::1] values):
        cdef Py_ssize_t i
        with nogil:
            for i in range(values.shape[0]):
                self.counts[hist_index_of(&self.layout, <uint64_t>values[i])] += 1
