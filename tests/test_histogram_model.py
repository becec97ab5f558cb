"""LatencyHistogram against the sorted-list model, driven side by side under ManualClock."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fastcore import LatencyHistogram, ManualClock
from model.histogram import HistogramModel

CONFIGS = st.fixed_dictionaries({
    "significant_figures": st.integers(1, 3),
    "lowest": st.sampled_from([1, 3, 1000]),
    "highest": st.sampled_from([10_000, 1_000_000, 3_600_000_000_000]),
    "slices": st.sampled_from([1, 2, 3, 5]),
    "slice_ns": st.sampled_from([1_000, 250_000]),
})

# values around bucket edges, inside the first bucket, spread on a log scale, and past highest
VALUES = st.one_of(
    st.integers(0, 300),
    st.integers(0, 60).map(lambda e: int(1.6 ** e)),
    st.integers(0, 2 ** 42),
    st.integers(0, 40).map(lambda e: 2 ** e - 1),
    st.integers(0, 40).map(lambda e: 2 ** e),
)
PERCENTILES = st.one_of(
    st.sampled_from([0, 0.0, 1, 25, 50, 75, 90, 99, 99.9, 99.99, 100]),
    st.floats(0, 100, allow_nan=False),
)


class HistogramMachine(RuleBasedStateMachine):
    @initialize(config=CONFIGS, start_ns=st.integers(0, 10 ** 12))
    def build(self, config, start_ns):
        self.clock = ManualClock()
        self.clock.set_ns(start_ns)
        self.slice_ns = config.pop("slice_ns")
        window_ns = self.slice_ns * config["slices"]
        config["highest"] = max(config["highest"], 2 * config["lowest"])
        self.config = config
        self.hist = self._histogram()
        self.model = HistogramModel(window_ns=window_ns, **config)
        self.other = None
        # every value since build or reset, by bucket: what cumulative() must report
        self.totals = Counter()
        self.total_overflow = 0

    def _count_total(self, value, count=1):
        if value > self.config["highest"]:
            self.total_overflow += count
        else:
            self.totals[self.model.highest_equivalent(value)] += count

    def _add_window_growth(self, change):
        """Run `change` (a merge) and add what it adds to the model's whole window."""
        now = self.clock.now_ns
        before, overflow = Counter(self.model.bucket_counts(now)), self.model.overflow(now)
        change()
        self.totals.update(Counter(self.model.bucket_counts(now)) - before)
        self.total_overflow += self.model.overflow(now) - overflow

    def _histogram(self):
        return LatencyHistogram(window=self.slice_ns * self.config["slices"] / 1e9,
                                clock=self.clock, **self.config)

    def _model(self):
        return HistogramModel(window_ns=self.slice_ns * self.config["slices"], **self.config)

    def _window(self, periods):
        return None if periods is None else periods * self.slice_ns / 1e9

    @rule(value=VALUES, count=st.integers(1, 3))
    def record(self, value, count):
        self.hist.record(value, count)
        self.model.record(value, self.clock.now_ns, count)
        self._count_total(value, count)

    @precondition(lambda self: self.model.count(self.clock.now_ns) <= 20_000)
    @rule(values=st.lists(VALUES, max_size=40), large=st.booleans())
    def record_many(self, values, large):
        # `large` repeats the batch past the private-tally threshold of record_many
        if large:
            values = values * (2048 // max(1, len(values)) + 1)
        self.hist.record_many(np.array(values, dtype=np.int64))
        for value in values:
            self.model.record(value, self.clock.now_ns)
            self._count_total(value)

    @rule(value=st.integers(-(2 ** 40), -1))
    def record_negative(self, value):
        before = self.hist.snapshot().to_numpy()[1]
        with pytest.raises(ValueError):
            self.hist.record(value)
        with pytest.raises(ValueError):
            self.hist.record_many(np.array([5, value], dtype=np.int64))
        assert np.array_equal(before, self.hist.snapshot().to_numpy()[1])

    @rule(fraction=st.sampled_from([1, 2, 3]), slices=st.integers(0, 7))
    def advance(self, fraction, slices):
        # whole slices, a third of one, or past the whole window
        self.clock.advance_ns(slices * self.slice_ns + self.slice_ns // fraction - 1)

    @rule(values=st.lists(VALUES, max_size=10), age=st.integers(0, 3))
    def fill_other(self, values, age):
        if self.other is None:
            self.other = (self._histogram(), self._model())
        hist, model = self.other
        for value in values:
            hist.record(value)
            model.record(value, self.clock.now_ns)
        self.clock.advance_ns(age * self.slice_ns)

    @precondition(lambda self: self.other is not None)
    @rule()
    def merge(self):
        hist, model = self.other
        self.hist.merge(hist)
        self._add_window_growth(lambda: self.model.merge(model, self.clock.now_ns))
        self.other = None

    # merging a snapshot back doubles the data: keep the model small enough to stay quick
    @precondition(lambda self: self.model.count(self.clock.now_ns) <= 3000)
    @rule()
    def merge_snapshot(self):
        # a histogram's own snapshot merged back doubles its window into the current slice
        snap = self.hist.snapshot()
        now_ns = self.clock.now_ns
        values = self.model.sorted_values(now_ns)
        overflow = self.model.overflow(now_ns)
        self.hist.merge(snap)
        for value in values:
            self.model.record(value, now_ns)
            self._count_total(value)
        if overflow:
            self.model.record(self.config["highest"] + 1, now_ns, overflow)
            self.total_overflow += overflow

    @rule()
    def reset(self):
        self.hist.reset()
        self.model.reset()
        self.totals.clear()
        self.total_overflow = 0

    @rule(ps=st.lists(PERCENTILES, min_size=1, max_size=5), periods=st.integers(1, 5) | st.none())
    def percentiles(self, ps, periods):
        if periods is not None and periods > self.config["slices"]:
            with pytest.raises(ValueError):
                self.hist.percentile(50, window=self._window(periods))
            return
        now = self.clock.now_ns
        window = self._window(periods)
        expected = {p: self.model.percentile(p, now, periods) for p in ps}
        assert self.hist.percentiles(ps, window=window) == expected
        for p in ps:
            assert self.hist.percentile(p, window=window) == expected[p]
        snap = self.hist.snapshot(window)
        assert snap.count == self.model.count(now, periods)
        assert snap.overflow == self.model.overflow(now, periods)
        bounds, counts = snap.to_numpy()
        got = {int(b): int(c) for b, c in zip(bounds, counts) if c}
        assert got == self.model.bucket_counts(now, periods)

    @invariant()
    def totals_since_creation(self):
        # cumulative() ignores the window: every value since build or the last reset
        totals = self.hist.cumulative()
        bounds, counts = totals.to_numpy()
        assert {int(b): int(c) for b, c in zip(bounds, counts) if c} == +self.totals
        assert totals.overflow == self.total_overflow
        assert totals.count == sum(self.totals.values())

    @invariant()
    def summary_statistics(self):
        now = self.clock.now_ns
        assert self.hist.count == self.model.count(now)
        assert self.hist.overflow == self.model.overflow(now)
        assert self.hist.min == self.model.min(now)
        assert self.hist.max == self.model.max(now)
        assert math.isclose(self.hist.mean, float(self.model.mean(now)), rel_tol=1e-12)
        assert math.isclose(self.hist.stdev, self.model.stdev(now), rel_tol=1e-9, abs_tol=1e-6)


# Examples per run come from the active profile (tests/conftest.py); the step count stays
# short because every step compares whole sorted-list windows.
HistogramMachine.TestCase.settings = settings(
    settings.default, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestHistogramModel = HistogramMachine.TestCase
