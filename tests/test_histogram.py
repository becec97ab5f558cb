"""LatencyHistogram: hand-computed cases, bad input, export, threads, accuracy vs numpy and
the hdrhistogram package."""

import asyncio
import inspect
import math
import threading
from fractions import Fraction

import numpy as np
import pytest

import fastcore
from fastcore import (
    HistogramSnapshot,
    HistogramTypeError,
    HistogramValueError,
    LatencyHistogram,
    ManualClock,
)
from fastcore._core import histogram as histogram_module
from fastcore._core.histogram import histogram_layout

SLICE_NS = 1_000_000_000
HOUR_NS = 3_600_000_000_000


@pytest.fixture
def clock():
    return ManualClock(start=1000.0)


@pytest.fixture
def hist(clock):
    return LatencyHistogram(clock=clock)


def bucket_counts(h, window=None):
    return h.snapshot(window).to_numpy()[1]


def test_compiled_module_is_loaded():
    assert histogram_module.__file__.endswith((".so", ".pyd"))
    assert fastcore.LatencyHistogram is histogram_module.LatencyHistogram
    assert type(LatencyHistogram.record).__name__ in ("method_descriptor", "cython_function_or_method")


# -- layout ----------------------------------------------------------------------------------

def test_default_layout_matches_hand_computation():
    # S = 2**ceil(log2(200)) = 256, H = 128; 256 * 2**34 > 3.6e12 >= 256 * 2**33 -> 35 buckets
    assert histogram_layout() == {
        "significant_figures": 2, "lowest": 1, "highest": HOUR_NS, "unit_magnitude": 0,
        "sub_bucket_count": 256, "sub_bucket_half_count": 128, "bucket_count": 35,
        "counts_len": 36 * 128,
    }


def test_hdrhistogram_py_precision_example():
    # 1 us .. 1 hour in us at 3 significant figures: S = 2048, 22 buckets
    layout = histogram_layout(significant_figures=3, lowest=1, highest=3_600_000_000)
    assert (layout["sub_bucket_count"], layout["bucket_count"]) == (2048, 22)
    assert layout["counts_len"] == 23 * 1024
    assert histogram_layout(significant_figures=3)["counts_len"] == 33 * 1024


def test_worked_example_from_the_pxd(hist):
    hist.record(1_000_000)
    # bucket 12, sub 244: [244 * 4096, 245 * 4096 - 1]
    assert hist.min == 999_424
    assert hist.max == 1_003_519
    assert hist.percentile(50) == 1_003_519
    assert hist.percentile(0) == 999_424
    assert hist.mean == 999_424 + 2048


def test_small_values_are_exact(hist):
    for value in (0, 1, 7, 255):
        hist.record(value)
    assert hist.percentiles([0, 25, 50, 75, 100]) == {0: 0, 25: 0, 50: 1, 75: 7, 100: 255}
    hist.record(256)        # first value of bucket 1: step 2
    assert hist.max == 257


def test_values_below_lowest_share_the_first_bucket(clock):
    h = LatencyHistogram(lowest=1000, clock=clock)      # unit 512
    h.record(0)
    h.record(100)
    h.record(511)
    assert (h.count, h.min, h.max) == (3, 0, 511)
    assert bucket_counts(h)[0] == 3


def test_overflow_is_counted_not_dropped(clock):
    h = LatencyHistogram(highest=1_000_000, clock=clock)
    h.record(1_000_000)
    h.record(1_000_001)
    h.record_many(np.array([5, 2 ** 62, 2 ** 63 - 1], dtype=np.int64))
    assert (h.count, h.overflow) == (2, 3)
    assert h.max >= 1_000_000
    assert h.percentile(100) == h.max
    h.record(2 ** 63)                    # past int64: still an overflow, not an error
    h.record(10 ** 30, count=2)
    assert (h.count, h.overflow) == (2, 6)
    with pytest.raises(HistogramValueError):
        h.record(-(2 ** 70))             # negative however large
    assert (h.count, h.overflow) == (2, 6)


def test_percentile_ranks_follow_hdrhistogram(hist):
    hist.record_many(np.arange(1, 101, dtype=np.int64))
    # rank = int(p * 100 / 100 + 0.5): p=50 -> 50, p=0.4 -> 0 -> 1, p=99.5 -> 100
    assert hist.percentile(50) == 50
    assert hist.percentile(0.4) == 1
    assert hist.percentile(99.5) == 100
    assert hist.percentiles([99.5, 50, 0]) == {99.5: 100, 50: 50, 0: 1}


def test_empty_histogram(hist):
    assert (hist.count, hist.overflow, hist.min, hist.max) == (0, 0, 0, 0)
    assert (hist.mean, hist.stdev) == (0.0, 0.0)
    assert hist.percentile(99) == 0
    assert hist.percentiles([50, 99]) == {50: 0, 99: 0}


def test_mean_and_stdev_use_bucket_midpoints(hist):
    hist.record(100, 3)
    hist.record(300)        # bucket 1 (step 2): midpoint 301
    mean = (3 * 100 + 301) / 4
    assert hist.mean == mean == 150.25
    assert hist.stdev == pytest.approx(math.sqrt((3 * (100 - mean) ** 2 + (301 - mean) ** 2) / 4))


# -- time slices -----------------------------------------------------------------------------

def test_window_queries_follow_rotation(hist, clock):
    hist.record(10)
    clock.advance(1)
    hist.record(20)
    hist.record(30)
    assert hist.count == 3
    assert hist.snapshot(window=1).count == 2
    assert hist.percentile(0, window=1.0) == 20
    clock.advance(58.5)     # period 1059: the slice of 1000 s is the oldest still inside
    assert hist.count == 3
    clock.advance(0.5)      # 1060 s: the 1000 s slice has left the window
    assert hist.count == 2
    clock.advance(1)
    assert hist.count == 0


def test_reused_slot_is_cleared_before_counting(hist, clock):
    hist.record(10, 5)
    clock.advance(60)       # same slot, next turn of the ring
    hist.record(99)
    assert hist.count == 1
    assert hist.min == 99


def test_window_must_be_a_whole_number_of_slices(hist):
    hist.record(1)
    for window in (0, 0.5, 1.5, 61, -1, float("nan")):
        with pytest.raises(HistogramValueError):
            hist.percentile(50, window=window)
    with pytest.raises(HistogramTypeError):
        hist.snapshot(window="10")
    assert hist.snapshot(window=60).count == 1


def test_record_many_uses_one_timestamp(hist, clock):
    hist.record_many(np.full(5000, 7, dtype=np.int64))
    clock.advance(1)
    hist.record_many(np.array([9, 9], dtype=np.int64))
    assert hist.snapshot(window=1).count == 2
    assert hist.count == 5002


# -- counts never wrap -----------------------------------------------------------------------

def test_counter_wrap_is_carried(hist):
    base = hist.memory_bytes()
    hist.record(5, 2 ** 32 - 1)
    hist.record(5)                          # wraps the slot's uint32 counter
    hist.record(5, 2 ** 33 + 3)             # a count above 32 bits goes straight to the carry
    assert hist.count == 2 ** 32 + 2 ** 33 + 3
    # one carry array for the slot: 4608 counters + overflow, padded to 4624
    assert hist.memory_bytes() == base + 4624 * 8
    assert hist.percentile(100) == 5


def test_total_past_64_bits_raises_instead_of_wrapping(hist):
    # each bucket fits in 64 bits, their sum does not: the total is summed in halves
    hist.record(5, 2 ** 63 - 1)
    hist.record(7, 2 ** 63 - 1)
    assert hist.count == 2 ** 64 - 2
    hist.record(9, 3)
    with pytest.raises(fastcore.HistogramOverflowError):
        hist.count


def test_record_many_tally_flushes_counts_beyond_32_bits(hist):
    # one bucket of a batch tallied privately in 64 bits; adding it to a nearly full counter
    hist.record(3, 2 ** 32 - 10)
    hist.record_many(np.full(4096, 3, dtype=np.int64))
    assert hist.count == 2 ** 32 - 10 + 4096


# -- bad input leaves the histogram unchanged --------------------------------------------------

@pytest.mark.parametrize("kwargs, error", [
    ({"significant_figures": 0}, HistogramValueError),
    ({"significant_figures": 5}, HistogramValueError),
    ({"significant_figures": 2.0}, HistogramTypeError),
    ({"lowest": 0}, HistogramValueError),
    ({"highest": 1}, HistogramValueError),
    ({"lowest": 10, "highest": 19}, HistogramValueError),
    ({"highest": 2 ** 62 + 1}, HistogramValueError),
    ({"highest": True}, HistogramTypeError),
    ({"slices": 0}, HistogramValueError),
    ({"slices": 7}, HistogramValueError),            # 60 s is not a whole number of ns / 7
    ({"window": 0}, HistogramValueError),
    ({"window": -1.0}, HistogramValueError),
    ({"window": "60s"}, HistogramTypeError),
    ({"clock": lambda: 0.0}, TypeError),
])
def test_constructor_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        LatencyHistogram(**kwargs)


def test_constructor_takes_keywords_only():
    with pytest.raises(TypeError):
        LatencyHistogram(2)


def test_bad_records_change_nothing(hist):
    hist.record(1000)
    before = bucket_counts(hist).copy()
    with pytest.raises(HistogramValueError, match="latency must be >= 0"):
        hist.record(-1)
    with pytest.raises(HistogramValueError, match="count"):
        hist.record(5, 0)
    for value, count in ((1.5, 1), ("5", 1), (None, 1), (5, 2.0), (5, None)):
        with pytest.raises(HistogramTypeError):
            hist.record(value, count)
    with pytest.raises(HistogramValueError, match=r"values\[2\]"):
        hist.record_many(np.array([1, 2, -3, 4], dtype=np.int64))
    with pytest.raises(HistogramValueError):
        hist.record_many(np.concatenate([np.ones(5000, np.int64), [-1]]))
    for values in ([1, 2], np.array([1.0]), np.array([1], dtype=np.int32),
                   np.ones((2, 2), dtype=np.int64)):
        with pytest.raises(HistogramTypeError):
            hist.record_many(values)
    assert np.array_equal(before, bucket_counts(hist))
    assert hist.count == 1


def test_errors_are_fastcore_errors():
    assert issubclass(HistogramValueError, (fastcore.FastcoreError, ValueError))
    assert issubclass(HistogramTypeError, (fastcore.FastcoreError, TypeError))


@pytest.mark.parametrize("p", [-0.1, 100.01, float("nan"), float("inf")])
def test_percentile_out_of_range(hist, p):
    with pytest.raises(HistogramValueError):
        hist.percentile(p)
    with pytest.raises(HistogramValueError):
        hist.percentiles([50, p])


def test_percentile_needs_a_number(hist):
    for p in ("50", None, True):
        with pytest.raises(HistogramTypeError):
            hist.percentile(p)


def test_record_accepts_integer_like_values(hist):
    hist.record(np.int64(7), np.uint8(2))
    hist.record(True)
    assert hist.percentiles([0, 100]) == {0: 1, 100: 7}
    assert hist.count == 3


def test_record_methods_keep_their_signatures(hist):
    # plain method descriptors (binding=False) whose signatures come from their docstrings
    assert str(inspect.signature(hist.record)) == "(value_ns, count=1)"
    assert str(inspect.signature(hist.record_many)) == "(values)"
    hist.record(value_ns=5, count=2)
    hist.record_many(values=np.array([6], dtype=np.int64))
    assert hist.count == 3


def test_record_many_empty_and_noncontiguous(hist):
    hist.record_many(np.array([], dtype=np.int64))
    hist.record_many(np.arange(10, dtype=np.int64)[::2])
    assert hist.count == 5
    assert hist.percentile(100) == 8


# -- snapshot, merge, reset --------------------------------------------------------------------

def test_snapshot_is_immutable(hist):
    hist.record(10)
    snap = hist.snapshot()
    hist.record(20)
    assert (snap.count, hist.count) == (1, 2)
    with pytest.raises(TypeError):
        HistogramSnapshot()
    with pytest.raises(AttributeError):
        snap.count = 3


def test_to_numpy(hist):
    hist.record_many(np.array([1, 1, 300, 10 ** 9], dtype=np.int64))
    bounds, counts = hist.snapshot().to_numpy()
    assert bounds.dtype == np.int64 and counts.dtype == np.uint64
    assert len(bounds) == histogram_layout()["counts_len"]
    assert np.all(np.diff(bounds) > 0)
    assert {int(b): int(c) for b, c in zip(bounds, counts) if c} == {
        1: 2, 301: 1, 1_002_438_655: 1}   # 10**9: step 2**22, 239 * 2**22 - 1


def test_merge_keeps_each_slice_time(clock):
    a = LatencyHistogram(clock=clock)
    b = LatencyHistogram(clock=clock)
    b.record(100)
    clock.advance(1)
    b.record(200)
    a.record(300)
    a.merge(b)
    assert a.count == 3
    assert a.snapshot(window=1).count == 2
    assert b.count == 2


def test_merge_snapshot_lands_now(clock):
    a = LatencyHistogram(clock=clock)
    b = LatencyHistogram(clock=clock)
    b.record(100)
    clock.advance(5)
    a.merge(b.snapshot())
    assert a.snapshot(window=1).count == 1


def test_merge_requires_the_same_configuration(clock):
    a = LatencyHistogram(clock=clock)
    a.record(5)
    for other in (LatencyHistogram(significant_figures=3, clock=clock),
                  LatencyHistogram(slices=30, clock=clock),
                  LatencyHistogram(highest=10 ** 9, clock=clock)):
        other.record(7)
        with pytest.raises(HistogramValueError):
            a.merge(other)
    with pytest.raises(HistogramValueError):
        a.merge(LatencyHistogram(highest=10 ** 9).snapshot())
    with pytest.raises(HistogramTypeError):
        a.merge([1, 2])
    assert a.count == 1


def test_reset(hist, clock):
    hist.record(5, 2 ** 33)
    hist.record(6)
    hist.reset()
    assert (hist.count, hist.overflow) == (0, 0)
    hist.record(7)
    assert hist.count == 1


def test_memory_stays_under_two_mib():
    assert LatencyHistogram().memory_bytes() == 1_259_680 <= 2 * 1024 * 1024
    # 33,792 counters + overflow, padded to 33,808: 60 * 4 * 33,808 + 4 * 8 * 33,808 + 61 * 32
    assert LatencyHistogram(significant_figures=3).memory_bytes() == 9_197_728


# -- timing helpers ----------------------------------------------------------------------------

def test_time_context_manager(hist, clock):
    with hist.time() as timer:
        clock.advance_ns(1_500)
    assert timer.elapsed_ns == 1_500
    with pytest.raises(RuntimeError):
        with hist.time():
            clock.advance_ns(40)
            raise RuntimeError("failed requests are timed too")
    # 40 is exact; 1500 lies in [1496, 1503] (step 8)
    assert hist.percentiles([0, 100]) == {0: 40, 100: 1_503}


def test_timed_sync(hist, clock):
    @hist.timed
    def handler(x):
        """docs"""
        clock.advance_ns(250)
        return x * 2

    assert handler(21) == 42
    assert (handler.__name__, handler.__doc__) == ("handler", "docs")
    assert hist.percentile(100) == 250
    with pytest.raises(HistogramTypeError):
        hist.timed(42)


def test_timed_async(hist, clock):
    @hist.timed
    async def handler(x):
        clock.advance_ns(3_000)
        await asyncio.sleep(0)
        if x is None:
            raise KeyError(x)
        return x

    assert inspect.iscoroutinefunction(handler)
    assert asyncio.run(handler(7)) == 7
    with pytest.raises(KeyError):
        asyncio.run(handler(None))
    assert hist.count == 2
    assert hist.percentile(0) == 2_992       # bucket of 3000: [2992, 3007]


# -- Prometheus / OpenMetrics -----------------------------------------------------------------

def test_prometheus_text_parses(hist):
    from prometheus_client.parser import text_string_to_metric_families

    hist.record_many(np.array([4_000_000, 20_000_000, 2_000_000_000], dtype=np.int64))
    text = hist.to_prometheus("api_latency_seconds", help='Latency "q" \\ of\nrequests',
                              labels={"route": '/a"b\\c\nd', "method": "GET"},
                              buckets=[0.005, 0.05, 1])
    (family,) = text_string_to_metric_families(text)
    assert (family.name, family.type) == ("api_latency_seconds", "histogram")
    assert family.documentation == 'Latency "q" \\ of\nrequests'
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("api_latency_seconds_bucket", "0.005")] == 1
    assert samples[("api_latency_seconds_bucket", "0.05")] == 2
    assert samples[("api_latency_seconds_bucket", "1.0")] == 2
    assert samples[("api_latency_seconds_bucket", "+Inf")] == 3
    assert samples[("api_latency_seconds_count", None)] == 3
    assert samples[("api_latency_seconds_sum", None)] == pytest.approx(2.024, rel=1e-2)
    assert all(s.labels["route"] == '/a"b\\c\nd' for s in family.samples)


def test_openmetrics_text_parses(hist):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    hist.record(3_000_000)
    hist.record(5 * HOUR_NS)        # overflow: only in +Inf, counted at `highest` in _sum
    text = hist.to_openmetrics("rpc_seconds", help="rpc", labels={"svc": "x"})
    assert text.endswith("# EOF\n")
    (family,) = text_string_to_metric_families(text)
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("rpc_seconds_bucket", "0.005")] == 1
    assert samples[("rpc_seconds_bucket", "+Inf")] == 2
    assert samples[("rpc_seconds_count", None)] == 2
    assert samples[("rpc_seconds_sum", None)] == pytest.approx(3600.003, rel=1e-6)


def test_prometheus_rejects_bad_names_labels_and_buckets(hist):
    for kwargs in ({"name": "1bad"}, {"name": "ok", "labels": {"le": "1"}},
                   {"name": "ok", "labels": {"bad-name": "1"}}, {"name": "ok", "buckets": [1, 1]},
                   {"name": "ok", "buckets": [0]}, {"name": "ok", "buckets": [float("inf")]}):
        with pytest.raises(HistogramValueError):
            hist.to_prometheus(**kwargs)
    with pytest.raises(HistogramTypeError):
        hist.to_prometheus("ok", labels={"a": 1})
    with pytest.raises(HistogramTypeError):
        hist.to_openmetrics("ok", buckets=["x"])


# -- threads: lock-free, no lost count, also across rotation ------------------------------------

@pytest.mark.parametrize("chunk, slices", [(64, 1000), (5000, 60)])
def test_threads_lose_no_count_while_the_ring_rotates(chunk, slices):
    # a few runs: how often recorders meet a slot mid-clear depends on the scheduler
    for seed in range(3):
        _threads_against_serial(chunk, slices, seed)


def _threads_against_serial(chunk, slices, seed):
    rng = np.random.default_rng(seed)
    threads, per_thread = 4, 200_000
    data = [rng.lognormal(12, 2, per_thread).astype(np.int64) for _ in range(threads)]
    clock = ManualClock(start=1000.0)
    # 1 s slices; small batches take the direct atomic path and often meet a slot that
    # worker 0 is still clearing (so they go through limbo); large ones take the tally path
    hist = LatencyHistogram(window=float(slices), slices=slices, clock=clock)
    start = threading.Barrier(threads)
    chunks = per_thread // chunk
    rotations = slices * 2 // 3     # fewer than the slices: every value stays in the window

    def work(index, values):
        start.wait()
        for number, offset in enumerate(range(0, len(values), chunk)):
            # worker 0 turns the ring to a fresh slice between its batches, while the
            # other workers are inside theirs (nogil)
            if index == 0 and number % (chunks // rotations) == 0:
                clock.advance(1)
            hist.record_many(values[offset:offset + chunk])

    workers = [threading.Thread(target=work, args=(index, values))
               for index, values in enumerate(data)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    serial = LatencyHistogram(window=float(slices), slices=slices, clock=clock)
    for values in data:
        serial.record_many(values)
    assert clock.now_ns == (1000 + (chunks - 1) // (chunks // rotations) + 1) * SLICE_NS
    assert hist.count + hist.overflow == threads * per_thread
    assert np.array_equal(bucket_counts(hist), bucket_counts(serial))
    assert sum(hist.snapshot(window=1).to_numpy()[1]) < hist.count    # spread over slices


# -- accuracy --------------------------------------------------------------------------------

def _distributions():
    rng = np.random.default_rng(20261127)
    lognormal = rng.lognormal(mean=np.log(2e6), sigma=0.8, size=300_000)
    slow = rng.random(300_000) < 0.01
    bimodal = np.where(slow, rng.normal(250e6, 20e6, 300_000), rng.normal(3e6, 4e5, 300_000))
    pareto = (rng.pareto(1.5, 300_000) + 1) * 1e5
    return {
        "lognormal": lognormal.astype(np.int64),
        "bimodal": np.clip(bimodal, 1, None).astype(np.int64),
        "pareto": np.clip(pareto, 1, HOUR_NS).astype(np.int64),
    }


DISTRIBUTIONS = _distributions()
PERCENTILE_LIST = [50, 75, 90, 95, 99, 99.5, 99.9, 99.99]


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("significant_figures", [2, 3])
def test_percentiles_within_the_relative_bound(name, significant_figures):
    values = DISTRIBUTIONS[name]
    hist = LatencyHistogram(significant_figures=significant_figures, clock=ManualClock())
    hist.record_many(values)
    ordered = np.sort(values)
    bound = 10.0 ** -significant_figures
    for p, got in hist.percentiles(PERCENTILE_LIST).items():
        # the exact sample at HdrHistogram's rank (numpy's "inverted_cdf" rounds the rank up
        # instead, which in a sparse tail picks a neighbouring sample)
        exact = ordered[max(1, int(p * len(values) / 100 + 0.5)) - 1]
        assert got >= exact
        assert (got - exact) <= bound * exact, (p, got, exact)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("significant_figures", [1, 2, 3])
def test_same_values_as_the_hdrhistogram_package(name, significant_figures):
    from hdrh.histogram import HdrHistogram

    values = DISTRIBUTIONS[name][:60_000]
    hist = LatencyHistogram(significant_figures=significant_figures, clock=ManualClock())
    hist.record_many(values)
    peer = HdrHistogram(1, HOUR_NS, significant_figures)
    for value in values.tolist():
        peer.record_value(value)
    ps = [0, 1, 25] + PERCENTILE_LIST + [100]
    assert hist.percentiles(ps) == peer.get_percentile_to_value_dict(ps)
    assert {p: hist.percentile(p) for p in ps} == {p: peer.get_value_at_percentile(p) for p in ps}
    assert (hist.min, hist.max, hist.count) == (
        peer.get_min_value(), peer.get_max_value(), peer.get_total_count())
    assert hist.mean == pytest.approx(peer.get_mean_value(), rel=1e-12)
    assert hist.stdev == pytest.approx(peer.get_stddev(), rel=1e-9)


@pytest.mark.parametrize("slice_ns, slices", [
    (1, 1), (3, 7), (1_000_000_000, 60), (999_999_937, 59), (2 ** 40 + 1, 3), (2 ** 50, 64)])
@pytest.mark.parametrize("period", [0, 1, 12_345, "last"])
def test_periods_are_exact_at_slice_boundaries(slice_ns, slices, period):
    # the recorder divides by multiplying with a reciprocal: check it at both edges of a slice
    last = (2 ** 62) // slice_ns - 1          # the clock stops at 2**62 ns
    period = last if period == "last" else min(period, last)
    clock = ManualClock()
    hist = LatencyHistogram(window=Fraction(slice_ns * slices, 10 ** 9), slices=slices,
                            clock=clock)
    clock.set_ns(period * slice_ns - 1 if period else 0)
    hist.record(1)
    clock.set_ns(period * slice_ns)
    hist.record(2)
    clock.set_ns(period * slice_ns + slice_ns - 1)
    hist.record(3)
    one_slice = Fraction(slice_ns, 10 ** 9)
    assert hist.snapshot(window=one_slice).count == (3 if period == 0 else 2)
    clock.set_ns(period * slice_ns + slice_ns)
    assert hist.snapshot(window=one_slice).count == 0


def test_whole_ring_cache_sees_writes_into_closed_slices(clock):
    # whole-ring queries reuse a merge of the closed slices; a write into one must show
    a = LatencyHistogram(clock=clock)
    b = LatencyHistogram(clock=clock)
    b.record(100)
    a.record(5)
    clock.advance(1)
    assert a.count == 1             # caches the merge: the 1000 s slice is closed now
    a.merge(b)                      # b's value lands in that closed slice
    assert a.count == 2
    assert a.snapshot(window=1).count == 0
    a.record(7)                     # the current slice is read afresh
    assert a.percentiles([0, 100]) == {0: 5, 100: 100}
    clock.advance(59)               # the 1000 s slice leaves the window: the cache is redone
    assert a.count == 1
    a.reset()
    assert a.count == 0
