"""Minimal compiled baselines for LatencyHistogram's benchmarks (see benchfloor.pyx's idea).

The floor of a log-bucket histogram's record: HdrHistogram's index (one clz, two shifts) and
a plain, non-atomic increment of a uint64 counter; no time slices, no overflow counter, no
thread safety. FloorHistogram.record_many is the same in a nogil loop. fastcore's figures are
quoted as ratios to these, measured in the same run, so the floor takes the cheapest entry
fastcore's methods take: a plain method descriptor (binding=False), and for arrays numpy's
C API instead of a typed memoryview's buffer export.
"""
cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t

from fastcore._core.histogram cimport HistLayout, hist_index_of, hist_layout

cnp.import_array()


cdef class FloorHistogram:
    """HdrHistogram layout, one uint64 counter per bucket, plain increments."""

    cdef HistLayout layout
    cdef uint64_t[::1] counts

    def __init__(self, int64_t lowest=1, int64_t highest=3_600_000_000_000,
                 int significant_figures=2):
        import numpy
        self.layout = hist_layout(lowest, highest, significant_figures)
        self.counts = numpy.zeros(self.layout.counts_len, dtype=numpy.uint64)

    @cython.binding(False)
    @cython.embedsignature.format("clinic")
    def record(self, int64_t value_ns):
        self.counts[hist_index_of(&self.layout, <uint64_t>value_ns)] += 1

    @cython.binding(False)
    @cython.embedsignature.format("clinic")
    def record_many(self, cnp.ndarray values not None):
        """values: a C-contiguous 1-D int64 array (checked only as far as memory safety needs)."""
        if (cnp.PyArray_NDIM(values) != 1 or cnp.PyArray_ITEMSIZE(values) != 8
                or not cnp.PyArray_IS_C_CONTIGUOUS(values)):
            raise TypeError("record_many needs a C-contiguous 1-D array of 8-byte integers")
        cdef const int64_t *data = <const int64_t *>cnp.PyArray_DATA(values)
        cdef Py_ssize_t i, n = cnp.PyArray_DIM(values, 0)
        with nogil:
            for i in range(n):
                self.counts[hist_index_of(&self.layout, <uint64_t>data[i])] += 1
