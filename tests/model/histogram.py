"""Naive reference model of LatencyHistogram, written from the documented layout (not from
the Cython).

Each time period keeps the sorted list of the values recorded in it; nothing is bucketed
until a query asks, and bucket bounds come from the plain definition of HdrHistogram's
log-linear layout, not from bit tricks:

- the unit is the largest power of two <= ``lowest``;
- ``S`` is the smallest power of two >= 2 * 10**significant_figures;
- a value v is kept at a resolution (bucket width) of unit * 2**b, for the smallest b >= 0
  with v < S * unit * 2**b; its bucket is [v - v % width, v - v % width + width - 1].

A percentile is the highest value of the bucket holding the sample at rank
max(1, int(p * n / 100 + 0.5)) (the lowest value of that bucket for p == 0); 0 when empty.
"""

import bisect
import math
from fractions import Fraction


class HistogramModel:
    def __init__(self, *, significant_figures=2, lowest=1, highest=3_600_000_000_000,
                 window_ns=60_000_000_000, slices=60):
        self.highest = highest
        self.unit = 1
        while self.unit * 2 <= lowest:
            self.unit *= 2
        self.sub_bucket_count = 1
        while self.sub_bucket_count < 2 * 10 ** significant_figures:
            self.sub_bucket_count *= 2
        self.slice_ns = window_ns // slices
        self.slices = slices
        self.values = {}        # period -> sorted list of in-range values
        self.overflows = {}     # period -> count of values above `highest`

    # -- bucket arithmetic ---------------------------------------------------------------------
    def width(self, value):
        width = self.unit
        while value >= self.sub_bucket_count * width:
            width *= 2
        return width

    def lowest_equivalent(self, value):
        return value - value % self.width(value)

    def highest_equivalent(self, value):
        return self.lowest_equivalent(value) + self.width(value) - 1

    def median_equivalent(self, value):
        return self.lowest_equivalent(value) + self.width(value) // 2

    # -- recording -----------------------------------------------------------------------------
    def record(self, value, now_ns, count=1):
        period = now_ns // self.slice_ns
        if value > self.highest:
            self.overflows[period] = self.overflows.get(period, 0) + count
            return
        bucket = self.values.setdefault(period, [])
        for _ in range(count):
            bisect.insort(bucket, value)

    def reset(self):
        self.values.clear()
        self.overflows.clear()

    # -- queries -------------------------------------------------------------------------------
    def _periods(self, now_ns, periods):
        last = now_ns // self.slice_ns
        return range(last - (periods or self.slices) + 1, last + 1)

    def sorted_values(self, now_ns, periods=None):
        merged = []
        for period in self._periods(now_ns, periods):
            merged.extend(self.values.get(period, ()))
        return sorted(merged)

    def overflow(self, now_ns, periods=None):
        return sum(self.overflows.get(p, 0) for p in self._periods(now_ns, periods))

    def percentile(self, p, now_ns, periods=None):
        values = self.sorted_values(now_ns, periods)
        if not values:
            return 0
        rank = max(1, int(p * len(values) / 100 + 0.5))
        sample = values[rank - 1]
        return self.lowest_equivalent(sample) if p == 0 else self.highest_equivalent(sample)

    def count(self, now_ns, periods=None):
        return len(self.sorted_values(now_ns, periods))

    def min(self, now_ns):
        values = self.sorted_values(now_ns)
        return self.lowest_equivalent(values[0]) if values else 0

    def max(self, now_ns):
        values = self.sorted_values(now_ns)
        return self.highest_equivalent(values[-1]) if values else 0

    def mean(self, now_ns):
        values = self.sorted_values(now_ns)
        if not values:
            return Fraction(0)
        return Fraction(sum(self.median_equivalent(v) for v in values), len(values))

    def stdev(self, now_ns):
        values = self.sorted_values(now_ns)
        if not values:
            return 0.0
        # population variance from exact integer sums: (n * sum(m**2) - sum(m)**2) / n**2
        midpoints = [self.median_equivalent(v) for v in values]
        n = len(midpoints)
        variance = Fraction(n * sum(m * m for m in midpoints) - sum(midpoints) ** 2, n * n)
        return math.sqrt(variance)

    def bucket_counts(self, now_ns, periods=None):
        """{highest equivalent value of a bucket: count} over the window."""
        counts = {}
        for value in self.sorted_values(now_ns, periods):
            top = self.highest_equivalent(value)
            counts[top] = counts.get(top, 0) + 1
        return counts

    def merge(self, other, now_ns):
        """Add the other model's values of every period inside this window, keeping periods."""
        for period in self._periods(now_ns, None):
            for value in other.values.get(period, ()):
                bisect.insort(self.values.setdefault(period, []), value)
            if other.overflows.get(period):
                self.overflows[period] = self.overflows.get(period, 0) + other.overflows[period]
