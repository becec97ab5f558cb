"""Prometheus / OpenMetrics exposition of LatencyHistogram: totals since creation that never
decrease as the window rolls, windowed quantiles under their own family, several histograms
in one text. Expectations are hand-computed from the bucket layout and checked through
prometheus_client's own parsers."""

import math
import threading

import numpy as np
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from fastcore import HistogramTypeError, HistogramValueError, LatencyHistogram, ManualClock
from fastcore.latency import exposition

HOUR_NS = 3_600_000_000_000
BUCKETS = [0.005, 0.025, 1.0]


def midpoint(value):
    """HdrHistogram's midpoint of the bucket holding `value` with the default layout
    (sf=2: S = 256 sub-buckets, unit 1 ns): step 2**b with b = bit_length(value | 255) - 8."""
    step = 1 << ((value | 255).bit_length() - 8)
    return value // step * step + step // 2


def samples(text, openmetrics=False):
    """{(sample name, le): value} of the one histogram family in `text`."""
    parse = parse_openmetrics if openmetrics else parse_prometheus
    (family,) = [f for f in parse(text) if f.type == "histogram"]
    return {(s.name, s.labels.get("le")): s.value for s in family.samples}


def expected(values, overflow=0):
    """Hand-computed exposition of `values` (ns, none above `highest`) plus `overflow`
    values above it, for BUCKETS; le counts values whose whole bucket is <= the bound."""
    def upper(value):
        step = 1 << ((value | 255).bit_length() - 8)
        return value // step * step + step - 1
    out = {("x_seconds_bucket", repr(b)): sum(upper(v) <= b * 1e9 for v in values)
           for b in BUCKETS}
    out[("x_seconds_bucket", "+Inf")] = len(values) + overflow
    out[("x_seconds_count", None)] = len(values) + overflow
    out[("x_seconds_sum", None)] = (sum(map(midpoint, values)) + overflow * HOUR_NS) / 1e9
    return out


@pytest.fixture
def clock():
    return ManualClock(start=1000.0)


def test_totals_never_decrease_as_the_window_rolls(clock):
    # a 2 s ring of 1 s slices: every step below moves past it at least once
    hist = LatencyHistogram(window=2, slices=2, clock=clock)
    recorded, overflow = [], 0
    steps = [
        (0, [4_000_000] * 3 + [20_000_000], 0),
        (1, [2_000_000_000], 1),            # 2 s, and one overflowed value
        (5, [], 0),                         # the window is now empty
        (0, [4_000_000], 0),                # reuses (clears) a slot of the first period
        (1, [900_000_000, 7], 0),
        (30, [3_000_000], 2),
    ]
    previous = None
    for advance, values, above in steps:
        clock.advance(advance)
        for value in values:
            hist.record(value)
        if above:
            hist.record(HOUR_NS + 1, count=above)
        recorded += values
        overflow += above
        for openmetrics in (False, True):
            text = (hist.to_openmetrics if openmetrics else hist.to_prometheus)(
                "x_seconds", buckets=BUCKETS)
            got = samples(text, openmetrics)
            want = expected(recorded, overflow)
            assert got.keys() == want.keys()
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-12), key
        if previous is not None:
            assert all(got[key] >= previous[key] for key in got)
        previous = got
    assert hist.count == 1 and hist.overflow == 2     # the window itself holds only the last step
    assert (hist.cumulative().count, hist.cumulative().overflow) == (len(recorded), overflow)


def test_totals_survive_many_turns_of_the_ring(clock):
    hist = LatencyHistogram(window=3, slices=3, clock=clock)
    for second in range(100):
        hist.record_many(np.array([second * 1000 + 1] * 5, dtype=np.int64))
        hist.record(10 * HOUR_NS, count=2 ** 33)        # a count past 32 bits: carried
        clock.advance(1)
    totals = hist.cumulative()
    assert totals.count == 500 and totals.overflow == 100 * 2 ** 33
    want = np.zeros(len(totals.to_numpy()[1]), dtype=np.uint64)
    upper = totals.to_numpy()[0]
    for second in range(100):
        want[np.searchsorted(upper, second * 1000 + 1)] += 5
    assert np.array_equal(totals.to_numpy()[1], want)
    assert hist.count == 10                             # the window: the last two seconds


def test_cumulative_snapshot_queries(clock):
    hist = LatencyHistogram(window=1, slices=1, clock=clock)
    hist.record(100)
    clock.advance(10)
    hist.record(300)
    totals = hist.cumulative()
    assert (totals.count, totals.min, totals.max) == (2, 100, 301)   # 300: bucket [300, 301]
    assert totals.percentile(50) == 100
    assert hist.snapshot().count == 1


def test_reset_is_a_counter_reset(clock):
    hist = LatencyHistogram(window=1, slices=1, clock=clock)
    hist.record(100)
    clock.advance(5)
    hist.record(100)
    assert hist.cumulative().count == 2
    hist.reset()
    assert hist.cumulative().count == 0
    hist.record(100)
    assert samples(hist.to_prometheus("x_seconds"))[("x_seconds_count", None)] == 1


def test_a_window_is_refused_for_the_histogram(clock):
    hist = LatencyHistogram(clock=clock)
    hist.record(5)
    for method in (hist.to_prometheus, hist.to_openmetrics):
        with pytest.raises(HistogramValueError, match="window"):
            method("x_seconds", window=10)


def test_windowed_quantiles_are_their_own_gauge_family(clock):
    hist = LatencyHistogram(window=60, slices=60, clock=clock)
    hist.record(400_000_000)
    clock.advance(30)
    hist.record(1_500_000)
    for openmetrics in (False, True):
        text = exposition([("api_seconds", hist, {"route": "/"})], buckets=BUCKETS,
                          openmetrics=openmetrics, quantiles=[0.5, 0.99], window=10)
        parse = parse_openmetrics if openmetrics else parse_prometheus
        families = {f.name: f for f in parse(text)}
        assert {n: f.type for n, f in families.items()} == {
            "api_seconds": "histogram", "api_window_seconds": "gauge"}
        gauge = {(s.labels["quantile"], s.labels["window"], s.labels["route"]): s.value
                 for s in families["api_window_seconds"].samples}
        # 1,500,000 ns: step 8192, bucket [1,499,136, 1,507,327]; the 400 ms value is older
        # than 10 s; the histogram family still counts both
        assert gauge == {("0.5", "10", "/"): 1_507_327 / 1e9, ("0.99", "10", "/"): 1_507_327 / 1e9}
        assert samples(text, openmetrics)[("api_seconds_count", None)] == 2
    clock.advance(60)
    text = exposition([("api_seconds", hist, None)], quantiles=[0.5])
    (sample,) = [f for f in parse_prometheus(text) if f.type == "gauge"][0].samples
    assert sample.labels == {"quantile": "0.5", "window": "60"} and math.isnan(sample.value)


def test_several_histograms_in_one_exposition(clock):
    a, b, c = (LatencyHistogram(clock=clock) for _ in range(3))
    a.record(1_000_000)
    b.record(2_000_000, count=2)
    c.record(30_000_000)
    entries = [("rpc_seconds", a, {"svc": "a"}, "RPC latency"), ("db_seconds", c, None),
               ("rpc_seconds", b, {"svc": "b"})]
    text = exposition(entries, buckets=BUCKETS, openmetrics=True)
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert text.count("# TYPE rpc_seconds histogram") == 1
    assert text.count("# HELP rpc_seconds") == 1
    families = list(parse_openmetrics(text))
    assert [(f.name, f.type) for f in families] == [("rpc_seconds", "histogram"),
                                                     ("db_seconds", "histogram")]
    rpc = {(s.name, s.labels.get("svc"), s.labels.get("le")): s.value
           for s in families[0].samples}
    assert rpc[("rpc_seconds_count", "a", None)] == 1
    assert rpc[("rpc_seconds_count", "b", None)] == 2
    assert families[0].documentation == "RPC latency"
    prometheus = exposition(entries, buckets=BUCKETS)
    assert "# EOF" not in prometheus
    assert [(f.name, f.type) for f in parse_prometheus(prometheus)] == [
        ("rpc_seconds", "histogram"), ("db_seconds", "histogram")]


def test_label_values_and_help_are_escaped(clock):
    hist = LatencyHistogram(clock=clock)
    hist.record(1)
    value = 'a\\b"c\nd'
    for openmetrics in (False, True):
        text = exposition([("x_seconds", hist, {"route": value}, 'say "hi"\\\n')],
                          openmetrics=openmetrics)
        assert 'route="a\\\\b\\"c\\nd"' in text
        parse = parse_openmetrics if openmetrics else parse_prometheus
        (family,) = parse(text)
        assert {s.labels["route"] for s in family.samples} == {value}
        assert family.documentation == 'say "hi"\\\n'


@pytest.mark.parametrize("call, error", [
    (lambda h: exposition([("1bad", h, None)]), HistogramValueError),
    (lambda h: exposition([("a-b", h, None)]), HistogramValueError),
    (lambda h: exposition([(None, h, None)]), HistogramValueError),
    (lambda h: exposition([("x", h, {"bad-name": "v"})]), HistogramValueError),
    (lambda h: exposition([("x", h, {"__x": "v"})]), HistogramValueError),
    (lambda h: exposition([("x", h, {"le": "v"})]), HistogramValueError),
    (lambda h: exposition([("x", h, {"quantile": "v"})], quantiles=[0.5]), HistogramValueError),
    (lambda h: exposition([("x", h, {"window": "v"})], quantiles=[0.5]), HistogramValueError),
    (lambda h: exposition([("x", h, {"a": "1"}), ("x", h, {"a": "1"})]), HistogramValueError),
    (lambda h: exposition([("x", h, None, "one"), ("x", h, {"a": "1"}, "two")]),
     HistogramValueError),
    (lambda h: exposition([("x", h, None), ("x_bucket", h, None)]), HistogramValueError),
    (lambda h: exposition([("x_seconds", h, None), ("x_window_seconds", h, None)],
                          quantiles=[0.5]), HistogramValueError),
    (lambda h: exposition([("x", h, None)], quantiles=[1.5]), HistogramValueError),
    (lambda h: exposition([("x", h, None)], quantiles=[]), HistogramTypeError),
    (lambda h: exposition([("x", h, None)], quantiles=["a"]), HistogramTypeError),
    (lambda h: exposition([("x", h, None)], quantiles=[0.5], window=0.5), HistogramValueError),
    (lambda h: exposition([("x", h, None)], quantiles=[0.5], window="1"), HistogramTypeError),
    (lambda h: exposition([("x", h, None)], buckets=[1, 1]), HistogramValueError),
    (lambda h: exposition([("x", h, None)], buckets=["x"]), HistogramTypeError),
    (lambda h: exposition([("x", h, {"a": 1})]), HistogramTypeError),
    (lambda h: exposition([("x", h, None, 5)]), HistogramTypeError),
    (lambda h: exposition([("x", "not a histogram", None)]), HistogramTypeError),
    (lambda h: exposition([("x", h)]), HistogramTypeError),
    (lambda h: exposition("x"), HistogramTypeError),
    (lambda h: h.to_prometheus("x", labels={"a": 1}), HistogramTypeError),
    (lambda h: h.to_openmetrics("1x"), HistogramValueError),
])
def test_bad_input_raises_a_named_error_and_changes_nothing(clock, call, error):
    hist = LatencyHistogram(window=2, slices=2, clock=clock)
    hist.record(1_000)
    clock.advance(5)
    hist.record(2_000)
    before = hist.to_prometheus("x_seconds")
    with pytest.raises(error):
        call(hist)
    assert hist.to_prometheus("x_seconds") == before
    assert (hist.count, hist.cumulative().count) == (1, 2)


def test_threads_totals_are_exact_and_exports_never_decrease():
    clock = ManualClock(start=1000.0)
    # 4 slices, turned far more often than that: most counts go through a cleared slot
    hist = LatencyHistogram(window=4, slices=4, clock=clock)
    threads, per_thread, chunk = 3, 100_000, 500
    rng = np.random.default_rng(7)
    data = [rng.lognormal(12, 2, per_thread).astype(np.int64) for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    done = threading.Event()
    seen = []

    def work(index, values):
        start.wait()
        for number, offset in enumerate(range(0, per_thread, chunk)):
            if index == 0 and number % 5 == 0:
                clock.advance(1)
            hist.record_many(values[offset:offset + chunk])

    def scrape():
        start.wait()
        while not done.is_set():
            seen.append(hist.cumulative().to_numpy()[1])

    workers = [threading.Thread(target=work, args=item) for item in enumerate(data)]
    scraper = threading.Thread(target=scrape)
    for thread in workers + [scraper]:
        thread.start()
    for worker in workers:
        worker.join()
    done.set()
    scraper.join()
    serial = LatencyHistogram(window=4, slices=4, clock=clock)
    for values in data:
        serial.record_many(values)
    final = hist.cumulative()
    assert final.count + final.overflow == threads * per_thread
    assert np.array_equal(final.to_numpy()[1], serial.snapshot().to_numpy()[1])
    for earlier, later in zip(seen + [final.to_numpy()[1]], seen[1:] + [final.to_numpy()[1]]):
        assert np.all(later >= earlier)
