"""LatencyHistogram at the edges of its documented range: highest up to 2**62 ns, every
significant_figures, lowest from 1 ns up to 2**61 ns.

The layout code once doubled a value until it passed `highest` and looped forever at 2**62
(the doubling wrapped int64). So that a regression fails instead of hanging the suite, every
layout and construction here runs in a child process with a timeout; the expectations are
computed in this process from the layout's definition with Python's unbounded ints.
"""

import json
import math
import subprocess
import sys

import pytest

TOP = 2**62                      # the documented largest `highest`
SIGNIFICANT_FIGURES = (1, 2, 3, 4)
LOWESTS = (1, 1000, 2**20, 2**40, 2**54, 2**61)
CHILD_TIMEOUT_S = 120


def probe_values(lowest):
    values = {lowest, 3 * lowest + 1, 2**40 + 12_345, TOP // 3, 2**61 + 1, TOP - 1, TOP}
    return sorted(v for v in values if lowest <= v <= TOP)


CHILD = r"""
import json, sys, time
from fastcore import LatencyHistogram, ManualClock
from fastcore._core.histogram import histogram_layout

configs, values_of = json.loads(sys.argv[1])
out = {"configs": [], "defaults": []}
for sf, lowest in configs:
    layout = histogram_layout(significant_figures=sf, lowest=lowest, highest=2**62)
    h = LatencyHistogram(significant_figures=sf, lowest=lowest, highest=2**62, window=1.0,
                         slices=1, clock=ManualClock())
    reads = []
    for v in values_of[str(lowest)]:
        h.reset()
        h.record(v)
        p = h.percentiles([0, 100])
        reads.append([v, p[0], p[100], h.count, h.overflow])
    h.reset()
    for v in (2**62 + 1, 2**63 - 1, 10**30):
        h.record(v)
    out["configs"].append({"sf": sf, "lowest": lowest, "layout": layout, "reads": reads,
                           "overflow": [h.count, h.overflow]})
# the default window and slices too (60 slices of counters), as the README's example builds it
for sf in (1, 2, 3, 4):
    start = time.perf_counter()
    h = LatencyHistogram(significant_figures=sf, highest=2**62, clock=ManualClock())
    h.record(2**62)
    h.record(1)
    out["defaults"].append([sf, h.count, h.percentile(0), h.percentile(100),
                            time.perf_counter() - start])
print(json.dumps(out))
"""


def run_child(code, *args):
    """Run `code` in a fresh interpreter (outside the source tree) and parse its JSON."""
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S, cwd="/")
    except subprocess.TimeoutExpired:
        pytest.fail(f"the histogram layout did not finish within {CHILD_TIMEOUT_S} s")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def child():
    configs = [[sf, lowest] for sf in SIGNIFICANT_FIGURES for lowest in LOWESTS]
    values_of = {str(lowest): probe_values(lowest) for lowest in LOWESTS}
    result = run_child(CHILD, json.dumps([configs, values_of]))
    return {(c["sf"], c["lowest"]): c for c in result["configs"]}, result["defaults"]


def expected_layout(sf, lowest, highest):
    """The layout by its definition (histogram.pxd), with unbounded ints and plain loops."""
    sub_bucket_count = 1
    while sub_bucket_count < 2 * 10**sf:
        sub_bucket_count *= 2
    log2_s = sub_bucket_count.bit_length() - 1
    unit_magnitude = min(lowest.bit_length() - 1, 62 - log2_s)
    bucket_count = 1
    while sub_bucket_count * 2 ** (bucket_count - 1) * 2**unit_magnitude <= highest:
        bucket_count += 1
    return {
        "significant_figures": sf, "lowest": lowest, "highest": highest,
        "unit_magnitude": unit_magnitude, "sub_bucket_count": sub_bucket_count,
        "sub_bucket_half_count": sub_bucket_count // 2, "bucket_count": bucket_count,
        "counts_len": (bucket_count + 1) * (sub_bucket_count // 2),
    }


def test_the_documented_maximum_constructs_with_the_defaults():
    # the report's one-liner: it never returned
    code = ("import fastcore; h = fastcore.LatencyHistogram(highest=2**62); h.record(2**62); "
            "print(h.count, h.highest)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", str(2**62)]


@pytest.mark.parametrize("sf, lowest, unit_magnitude, bucket_count, counts_len", [
    # S = 32 (>= 20), u = 0: 32 * 2**(B-1) > 2**62 needs B - 1 + 5 >= 63, B = 59; 60 * 16
    (1, 1, 0, 59, 960),
    # S = 256, u = 0: B - 1 + 8 >= 63, B = 56; 57 * 128
    (2, 1, 0, 56, 7296),
    # S = 2048: B = 53; 54 * 1024
    (3, 1, 0, 53, 55296),
    # S = 32768 (>= 20000): B = 49; 50 * 16384
    (4, 1, 0, 49, 819200),
    # lowest 1000: u = 9, B - 1 + 8 + 9 >= 63, B = 47; 48 * 128
    (2, 1000, 9, 47, 6144),
    # lowest 2**61 at sf 4: u capped at 62 - 15 = 47, S * 2**u = 2**62 <= highest, so B = 2
    (4, 2**61, 47, 2, 49152),
    # lowest 2**54 at sf 2: u = 54 = 62 - 8 exactly (no cap), B = 2; 3 * 128
    (2, 2**54, 54, 2, 384),
])
def test_layout_at_2_to_62_by_hand(child, sf, lowest, unit_magnitude, bucket_count,
                                   counts_len):
    layout = child[0][sf, lowest]["layout"]
    assert (layout["unit_magnitude"], layout["bucket_count"], layout["counts_len"]) == (
        unit_magnitude, bucket_count, counts_len)


@pytest.mark.parametrize("sf", SIGNIFICANT_FIGURES)
@pytest.mark.parametrize("lowest", LOWESTS)
def test_layout_matches_its_definition(child, sf, lowest):
    assert child[0][sf, lowest]["layout"] == expected_layout(sf, lowest, TOP)


@pytest.mark.parametrize("sf", SIGNIFICANT_FIGURES)
@pytest.mark.parametrize("lowest", LOWESTS)
def test_values_up_to_highest_read_back_within_the_precision(child, sf, lowest):
    layout = expected_layout(sf, lowest, TOP)
    unit = 2 ** layout["unit_magnitude"]
    half = layout["sub_bucket_half_count"]
    reads = child[0][sf, lowest]["reads"]
    assert [r[0] for r in reads] == probe_values(lowest)
    for value, low, high, count, overflow in reads:
        assert (count, overflow) == (1, 0)
        assert low <= value <= high
        width = high - low + 1
        assert width & (width - 1) == 0 and width >= unit        # a power of two, >= 2**u
        if value >= half * unit:
            # above bucket 0's lower half: the bucket is at most 1/H <= 10**-sf of its start
            assert width * 10**sf <= low
        else:
            assert width == unit


@pytest.mark.parametrize("sf", SIGNIFICANT_FIGURES)
@pytest.mark.parametrize("lowest", LOWESTS)
def test_values_past_highest_are_overflow(child, sf, lowest):
    assert child[0][sf, lowest]["overflow"] == [0, 3]


def test_default_slices_at_2_to_62(child):
    for sf, count, p0, p100, seconds in child[1]:
        assert count == 2
        assert p0 == 1                                   # u = 0: 1 ns is exact
        assert TOP <= p100 and (p100 - TOP) * 10**sf < TOP
        assert seconds < 10, f"sf={sf}: {seconds:.1f} s to build and record"


@pytest.mark.parametrize("sf", [0, 5, 6])
def test_significant_figures_outside_1_to_4_are_refused_at_2_to_62(sf):
    code = ("import fastcore\ntry:\n    fastcore.LatencyHistogram(significant_figures=%d, "
            "highest=2**62)\nexcept fastcore.HistogramValueError as e:\n    print('refused')" % sf)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, cwd="/")
    assert done.stdout.strip() == "refused", done.stderr


def test_highest_past_2_to_62_is_refused():
    from fastcore import HistogramValueError, LatencyHistogram
    for highest in (TOP + 1, 2**63, 10**5000):
        with pytest.raises(HistogramValueError, match="highest must be <= 2\\*\\*62"):
            LatencyHistogram(highest=highest)


def test_precision_bound_is_what_the_readme_says():
    # H = 2**(ceil(log2(2 * 10**sf)) - 1) >= 10**sf, the relative bound 1/H used above
    for sf in SIGNIFICANT_FIGURES:
        half = expected_layout(sf, 1, TOP)["sub_bucket_half_count"]
        assert half >= 10**sf and half == 2 ** (math.ceil(math.log2(2 * 10**sf)) - 1)
