"""Every public numeric parameter fed the values callers get wrong or push to the edge.

Each parameter gets: ints of 5000 digits (past Python's 4300-digit str/int conversion
limit, so even formatting one into an error message used to raise), 1e308, the infinities,
NaN, -0.0, -1, bools, numeric strings with ASCII, Arabic-Indic and fullwidth digits, and a
string of 10,000 nines. The answer must be the parameter's documented named error (its
message naming the parameter) or acceptance; never OverflowError and never a bare
ValueError from int() or float(). numpy integer and float scalars must act exactly like the
Python number of the same value. A failed call must leave the object as it was.

Expectations are written per parameter from the docstrings, not from running the code.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from fastcore import (
    CostExceedsBurst,
    CostExceedsLimit,
    Decision,
    Freshness,
    HistogramTypeError,
    HistogramValueError,
    Intent,
    InvalidCost,
    InvalidFreshness,
    InvalidRate,
    KeyedTokenBucket,
    LatencyHistogram,
    ManualClock,
    SemanticCache,
    SlidingWindow,
    SlidingWindowCounter,
    TokenBucket,
    TTLCache,
)
from fastcore._units import as_real, seconds_to_ns, shown

HUGE = 10**5000

VALUES = {
    "10**5000": HUGE,
    "-10**5000": -HUGE,
    "1e308": 1e308,
    "inf": math.inf,
    "-inf": -math.inf,
    "nan": math.nan,
    "-0.0": -0.0,
    "-1": -1,
    "True": True,
    "np.True_": np.bool_(True),
    "'5'": "5",
    "arabic-indic 5": "\u0665",
    "fullwidth 5": "\uff15",
    "10,000 nines": "9" * 10_000,
}
FLOAT_LABELS = {"1e308", "inf", "-inf", "nan", "-0.0"}
TYPE_LABELS = {"True", "np.True_", "'5'", "arabic-indic 5", "fullwidth 5", "10,000 nines"}
STRING_LABELS = {"'5'", "arabic-indic 5", "fullwidth 5", "10,000 nines"}

OK = "ok"


@dataclass
class Param:
    """One public numeric parameter: `call(value)` returns a comparable summary."""

    id: str
    call: Callable
    bad_value: type               # the error for a number out of range
    bad_type: type                # the error for something that is not a number
    goods: tuple                  # Python numbers it accepts
    name: str                     # the message must match this (it names the parameter)
    integer: bool = False
    expect: dict = field(default_factory=dict)

    def expected(self, label):
        if label in self.expect:
            return self.expect[label]
        if label in TYPE_LABELS or (self.integer and label in FLOAT_LABELS):
            return self.bad_type
        if label == "-0.0":
            return OK
        return self.bad_value


def clock():
    return ManualClock(start=1000.0)


def at(clock_start, method, *args):
    """A ManualClock at `clock_start` s, `method` called on it, and its time after."""
    c = ManualClock(start=clock_start)
    getattr(c, method)(*args)
    return c.now_ns


def cache_expired_at(time_value):
    c = TTLCache(10, ttl=10, clock=clock())
    c["k"] = "v"
    return c.expire(time_value)


def decision(limiter, *key):
    return lambda v: getattr(limiter(), "acquire")(*key, v)


def keyed_limiters():
    return {
        "KeyedTokenBucket": (lambda: KeyedTokenBucket(5, 5, max_keys=16, clock=clock()),
                             CostExceedsBurst),
        "SlidingWindowCounter": (lambda: SlidingWindowCounter(5, 1.0, max_keys=16,
                                                              clock=clock()),
                                 CostExceedsLimit),
        "SlidingWindow": (lambda: SlidingWindow(5, 1.0, slices=4, max_keys=16, clock=clock()),
                          CostExceedsLimit),
    }


def cost_expectations(too_big, batch=False):
    """Costs: InvalidCost for NaN, infinities, negatives and bools (True is not a cost of 1);
    the too-big error for a finite cost above the burst or limit; an int past a double's
    range is infinite, so InvalidCost or the too-big error."""
    expect = {
        "1e308": too_big,
        "10**5000": (InvalidCost, too_big),
        "-10**5000": InvalidCost,
        "True": InvalidCost,
        "np.True_": InvalidCost,
    }
    for label in STRING_LABELS:
        expect[label] = TypeError               # a string is never parsed as a number
    if batch:
        expect["10,000 nines"] = TypeError
    return expect


def build_params():
    params = [
        # -- clocks and unit conversion -----------------------------------------------------
        Param("seconds_to_ns", lambda v: seconds_to_ns(v, "seconds"), ValueError, TypeError,
              (2, 0.5), "seconds", expect={"10**5000": OK, "1e308": OK}),
        Param("ManualClock(start)", lambda v: ManualClock(v).now_ns, ValueError, TypeError,
              (2, 0.5), "start|ManualClock"),
        Param("ManualClock.advance", lambda v: at(1.0, "advance", v), ValueError, TypeError,
              (2, 0.5), "seconds|ManualClock"),
        Param("ManualClock.set", lambda v: at(0.0, "set", v), ValueError, TypeError,
              (2, 0.5), "seconds|ManualClock"),
        Param("ManualClock.advance_ns", lambda v: at(1.0, "advance_ns", v), ValueError,
              TypeError, (5,), "nanoseconds|ManualClock", integer=True),
        Param("ManualClock.set_ns", lambda v: at(0.0, "set_ns", v), ValueError, TypeError,
              (5,), "nanoseconds|ManualClock", integer=True),
        Param("Decision(remaining)", lambda v: Decision(True, v, 0, 0).remaining, ValueError,
              TypeError, (3,), "remaining", integer=True, expect={"-1": OK}),
        Param("Decision(retry_after_ns)", lambda v: Decision(False, 0, v, 0).retry_after_ns,
              ValueError, TypeError, (250_000_000,), "retry_after_ns", integer=True,
              expect={"-1": OK}),
        # -- token buckets and windows: every bad rate, burst, limit or window is InvalidRate
        Param("TokenBucket(rate)", lambda v: TokenBucket(v, clock=clock()).tau_ns,
              InvalidRate, InvalidRate, (5, 0.5), "rate", expect={"-0.0": InvalidRate}),
        Param("TokenBucket(burst)", lambda v: TokenBucket(5, v, clock=clock()).tau_ns,
              InvalidRate, InvalidRate, (2, 0.5), "burst", expect={"-0.0": InvalidRate}),
        Param("KeyedTokenBucket(rate)",
              lambda v: KeyedTokenBucket(v, max_keys=16, clock=clock()).tau_ns,
              InvalidRate, InvalidRate, (5, 0.5), "rate", expect={"-0.0": InvalidRate}),
        Param("KeyedTokenBucket(burst)",
              lambda v: KeyedTokenBucket(5, v, max_keys=16, clock=clock()).tau_ns,
              InvalidRate, InvalidRate, (2, 0.5), "burst", expect={"-0.0": InvalidRate}),
        Param("SlidingWindowCounter(limit)",
              lambda v: SlidingWindowCounter(v, 1.0, max_keys=16, clock=clock()).limit,
              InvalidRate, InvalidRate, (5, 2.5), "limit|rate", expect={"-0.0": InvalidRate}),
        Param("SlidingWindowCounter(window)",
              lambda v: SlidingWindowCounter(5, v, max_keys=16, clock=clock()).window_ns,
              InvalidRate, InvalidRate, (2, 0.5), "window", expect={"-0.0": InvalidRate}),
        Param("SlidingWindow(limit)",
              lambda v: SlidingWindow(v, 1.0, max_keys=16, clock=clock()).limit,
              InvalidRate, InvalidRate, (5, 2.5), "limit|rate", expect={"-0.0": InvalidRate}),
        Param("SlidingWindow(window)",
              lambda v: SlidingWindow(5, v, max_keys=16, clock=clock()).window_ns,
              InvalidRate, InvalidRate, (2, 0.5), "window", expect={"-0.0": InvalidRate}),
        # -- caches -------------------------------------------------------------------------
        Param("TTLCache(maxsize)", lambda v: TTLCache(v, 1, clock=clock()).maxsize,
              ValueError, TypeError, (100, 2.5), "maxsize",
              expect={"10**5000": OK, "1e308": OK, "inf": OK}),
        Param("TTLCache(ttl)", lambda v: TTLCache(10, v, clock=clock()).ttl, ValueError,
              TypeError, (100, 2.5), "ttl", expect={"10**5000": OK, "1e308": OK, "inf": OK}),
        Param("TTLCache.expire(time)", cache_expired_at, ValueError, TypeError, (2, 0.5),
              "time", expect={"10**5000": OK, "1e308": OK}),
        Param("Freshness(max_age)", lambda v: Freshness(v).max_age_ns, InvalidFreshness,
              TypeError, (60, 0.5), "max_age"),
        Param("Freshness(stale_while_revalidate)",
              lambda v: Freshness(1, v).stale_while_revalidate_ns, InvalidFreshness,
              TypeError, (60, 0.5), "stale_while_revalidate"),
        Param("Freshness(stale_if_error)", lambda v: Freshness(1, 0, v).stale_if_error_ns,
              InvalidFreshness, TypeError, (60, 0.5), "stale_if_error"),
        Param("Freshness(age)", lambda v: Freshness(1, age=v).age_ns, InvalidFreshness,
              TypeError, (60, 0.5), "age"),
        Param("Freshness.from_cache_control(age)",
              lambda v: Freshness.from_cache_control("max-age=60", age=v).age_ns,
              InvalidFreshness, TypeError, (10, 0.5), "age",
              # a str age is the Age header: never an error (invalid or capped)
              expect={"10**5000": OK, "1e308": OK, **{label: OK for label in STRING_LABELS}}),
        Param("Freshness.from_response(heuristic)",
              lambda v: Freshness.from_response(200, {}, heuristic=v).max_age_ns,
              InvalidFreshness, TypeError, (60, 0.5), "heuristic",
              expect={"10**5000": OK, "1e308": OK}),
        Param("Freshness.from_response(status)",
              lambda v: (lambda f: f and f.negative)(Freshness.from_response(v, {})),
              InvalidFreshness, TypeError, (200, 404), "status", integer=True),
        Param("Intent(max_staleness)", lambda v: Intent("x", v).max_staleness_ns,
              InvalidFreshness, TypeError, (60, 0.5), "max_staleness"),
        Param("SemanticCache(maxsize)", lambda v: SemanticCache(v, clock=clock()).maxsize,
              ValueError, TypeError, (100,), "maxsize", integer=True),
        Param("SemanticCache(negative_ttl)",
              lambda v: SemanticCache(10, negative_ttl=v, clock=clock()).negative_default,
              InvalidFreshness, TypeError, (60, 0.5), "negative_ttl"),
        Param("SemanticCache(xfetch_beta)",
              lambda v: SemanticCache(10, xfetch_beta=v, clock=clock()).xfetch_beta,
              ValueError, TypeError, (2, 0.5), "xfetch_beta", expect={"1e308": OK}),
        # -- histogram ------------------------------------------------------------------------
        Param("LatencyHistogram(significant_figures)",
              lambda v: LatencyHistogram(significant_figures=v, clock=clock()).lowest,
              HistogramValueError, HistogramTypeError, (3,), "significant_figures",
              integer=True),
        Param("LatencyHistogram(lowest)",
              lambda v: LatencyHistogram(lowest=v, clock=clock()).lowest,
              HistogramValueError, HistogramTypeError, (1000, 7), "lowest", integer=True),
        Param("LatencyHistogram(highest)",
              lambda v: LatencyHistogram(highest=v, clock=clock()).highest,
              HistogramValueError, HistogramTypeError, (2**40, 100), "highest", integer=True),
        Param("LatencyHistogram(slices)",
              lambda v: LatencyHistogram(slices=v, clock=clock()).slices,
              HistogramValueError, HistogramTypeError, (6,), "slices", integer=True),
        Param("LatencyHistogram(window)",
              lambda v: LatencyHistogram(window=v, slices=2, clock=clock()).window,
              HistogramValueError, HistogramTypeError, (6, 0.5), "window",
              expect={"-0.0": HistogramValueError}),
        Param("LatencyHistogram.record(value_ns)",
              lambda v: (lambda h: (h.record(v), h.count, h.overflow))(
                  LatencyHistogram(clock=clock())),
              HistogramValueError, HistogramTypeError, (7, 2**40), "latency", integer=True,
              # an int past int64 is above any `highest` and a bool has __index__: both
              # are documented as recorded
              expect={"10**5000": OK, "True": OK}),
        Param("LatencyHistogram.record(count)",
              lambda v: (lambda h: (h.record(5, v), h.count))(LatencyHistogram(clock=clock())),
              HistogramValueError, HistogramTypeError, (3,), "count", integer=True,
              expect={"True": OK}),
        Param("LatencyHistogram.percentile(percentile)",
              lambda v: LatencyHistogram(clock=clock()).percentile(v),
              HistogramValueError, HistogramTypeError, (50, 99.5), "percentile"),
        Param("LatencyHistogram.percentile(window)",
              lambda v: LatencyHistogram(window=6, slices=12, clock=clock()).percentile(50, v),
              HistogramValueError, HistogramTypeError, (6, 0.5), "window",
              expect={"-0.0": HistogramValueError}),
        Param("LatencyHistogram.to_prometheus(buckets)",
              lambda v: LatencyHistogram(clock=clock()).to_prometheus("x", buckets=[v]),
              HistogramValueError, HistogramTypeError, (2, 0.5), "bucket",
              expect={"1e308": OK, "-0.0": HistogramValueError}),
    ]
    # -- costs: every acquire-like method, on a fresh limiter each time --------------------
    params.append(Param("TokenBucket.acquire(cost)",
                        lambda v: TokenBucket(5, 5, clock=clock()).acquire(v),
                        InvalidCost, TypeError, (2, 0.5), "cost",
                        expect=cost_expectations(CostExceedsBurst)))
    for method in ("try_acquire", "peek"):
        params.append(Param(f"TokenBucket.{method}(cost)",
                            lambda v, m=method: getattr(TokenBucket(5, 5, clock=clock()), m)(v),
                            InvalidCost, TypeError, (2, 0.5), "cost",
                            expect=cost_expectations(CostExceedsBurst)))
    for name, (make, too_big) in keyed_limiters().items():
        for method in ("acquire", "try_acquire", "peek"):
            params.append(Param(
                f"{name}.{method}(cost)",
                lambda v, mk=make, m=method: getattr(mk(), m)("k", v),
                InvalidCost, TypeError, (2, 0.5), "cost",
                expect=cost_expectations(too_big)))
        params.append(Param(
            f"{name}.acquire_many(costs)",
            lambda v, mk=make: mk().acquire_many(["k"], [v]).tolist(),
            InvalidCost, TypeError, (2, 0.5), "cost",
            expect=cost_expectations(too_big, batch=True)))
        params.append(Param(
            f"{name}.acquire_many(now)",
            lambda v, mk=make: mk().acquire_many(["k"], now=v).tolist(),
            ValueError, TypeError, (2, 0.5), "now",
            expect={"10**5000": ValueError, "1e308": ValueError}))
    # -- the key table's and the sliding window's integer arguments ------------------------
    for name, make in (("KeyedTokenBucket", lambda v: KeyedTokenBucket(5, max_keys=v)),
                       ("SlidingWindowCounter", lambda v: SlidingWindowCounter(5, 1.0,
                                                                               max_keys=v))):
        params.append(Param(
            f"{name}(max_keys)", lambda v, mk=make: mk(v).max_keys, ValueError, TypeError,
            (16,), "max_keys", integer=True))
    params.append(Param(
        "SlidingWindow(slices)", lambda v: SlidingWindow(5, 1.0, slices=v, max_keys=16).slices,
        ValueError, TypeError, (4,), "slices", integer=True))
    return params


PARAMS = build_params()
def outcome(call, value):
    try:
        return OK, call(value)
    except Exception as error:        # noqa: BLE001 - the type is what is checked
        return type(error), str(error)


def value_cases():
    for param in PARAMS:
        for label in VALUES:
            yield pytest.param(param, label, param.expected(label), id=f"{param.id}-{label}")


@pytest.mark.parametrize("param, label, expected", list(value_cases()))
def test_extreme_and_wrong_values(param, label, expected):
    kind, detail = outcome(param.call, VALUES[label])
    if expected == OK:
        assert kind == OK, f"{kind}: {detail}"
        return
    pattern = param.name
    if isinstance(expected, tuple) and isinstance(expected[-1], str):
        expected, pattern = expected[0], expected[1]
    assert kind != OK, f"accepted {shown(VALUES[label])}: {shown(detail)}"
    assert issubclass(kind, expected), f"{kind.__name__}: {detail}"
    assert re.search(pattern, detail), f"the message does not name {pattern!r}: {detail}"
    assert len(detail) < 400, "the message repeats a huge value"


NUMPY_INTS = (np.int64, np.int32, np.int16, np.uint8, np.uint64)
NUMPY_FLOATS = (np.float64, np.float32, np.float16)


def numpy_cases():
    for param in PARAMS:
        for dtype in NUMPY_INTS + NUMPY_FLOATS:
            for good in param.goods:
                is_int_type = dtype in NUMPY_INTS
                if is_int_type and not isinstance(good, int):
                    continue
                try:
                    with np.errstate(over="ignore"):
                        back = (int if is_int_type else float)(dtype(good))
                except OverflowError:                          # numpy refuses to wrap
                    continue
                if back != good:                               # not representable
                    continue
                yield pytest.param(param, dtype, good,
                                   id=f"{param.id}-{dtype.__name__}({good})")


@pytest.mark.parametrize("param, dtype, good", list(numpy_cases()))
def test_numpy_scalars_act_like_python_numbers(param, dtype, good):
    expected = outcome(param.call, good)
    assert expected[0] == OK, expected                 # the Python number is accepted
    value = dtype(good)
    if param.integer and dtype in NUMPY_FLOATS:
        kind, detail = outcome(param.call, value)
        assert kind is not OK and issubclass(kind, param.bad_type), (kind, detail)
        assert re.search(param.name, detail)
    else:
        assert outcome(param.call, value) == expected


# -- what was accepted is what was asked for ----------------------------------------------

def test_as_real_keeps_exact_values():
    assert as_real(np.int64(2**62)) == 2**62 and type(as_real(np.int64(5))) is int
    assert as_real(np.uint64(2**64 - 1)) == 2**64 - 1
    assert type(as_real(np.float32(0.5))) is float and as_real(np.float16(2.0)) == 2.0
    for refused in (True, np.bool_(False), "5", None, b"5", 1j):
        assert as_real(refused) is None


def test_shown_never_raises_and_stays_short():
    digits = int(re.fullmatch(r"an int of about (\d+) digits", shown(HUGE))[1])
    assert abs(digits - 5001) <= 1                    # 10**5000 has 5001 digits
    assert shown(-HUGE).startswith("a negative int of about")
    assert shown(10**70) == repr(10**70)
    long_text = shown("x" * 10_000)
    assert len(long_text) <= 80 and long_text.endswith("(10002 characters)")

    class Unprintable:
        def __repr__(self):
            raise RuntimeError("no")

    assert shown(Unprintable()) == "a Unprintable object"


def test_huge_values_where_they_are_accepted():
    # a time past every expiry expires everything; a ttl past int64 never expires
    assert cache_expired_at(HUGE) == [("k", "v")]
    manual = clock()
    c = TTLCache(10, ttl=HUGE, clock=manual)
    c["k"] = "v"
    manual.set(10**9)
    assert c["k"] == "v"
    # in timer mode a time past the float range is +inf: also past every expiry
    now = [5.0]
    timed = TTLCache(10, ttl=1, timer=lambda: now[0])
    timed["k"] = "v"
    assert timed.expire(HUGE) == [("k", "v")]
    # heuristic and numeric Age are capped at 2**59 ns
    assert Freshness.from_response(200, {}, heuristic=HUGE).max_age_ns == 2**59
    assert Freshness.from_cache_control("max-age=60", age=HUGE).age_ns == 2**59
    # a latency past int64 is overflow
    h = LatencyHistogram(clock=clock())
    h.record(HUGE)
    assert (h.count, h.overflow) == (0, 1)


def test_numpy_status_and_headers():
    assert Freshness.from_response(np.int64(404), {"cache-control": "max-age=30"}) == \
        Freshness(30, negative=True)
    # an Age header value given as a numpy int, or as a 5000-digit int, is its number
    assert Freshness.from_response(200, {"age": np.int64(10), "cache-control": "max-age=60"}) \
        == Freshness(50, age=10)
    stale = Freshness.from_response(200, {"age": HUGE, "cache-control": "max-age=60"})
    assert (stale.max_age_ns, stale.age_ns) == (0, 576_460_752 * 10**9)


# -- a failed call changes nothing --------------------------------------------------------

COST_ERRORS = (math.nan, math.inf, -math.inf, -1, 1e308, HUGE, "5")


@pytest.mark.parametrize("bad", COST_ERRORS, ids=shown)
def test_token_bucket_state_survives_a_bad_cost(bad):
    bucket = TokenBucket(5, 5, clock=clock())
    bucket.acquire(2)
    before = bucket.peek()
    for method in (bucket.acquire, bucket.try_acquire, bucket.peek):
        with pytest.raises((InvalidCost, CostExceedsBurst, TypeError, OverflowError)):
            method(bad)
    assert bucket.peek() == before


@pytest.mark.parametrize("name", keyed_limiters())
@pytest.mark.parametrize("bad", COST_ERRORS, ids=shown)
def test_keyed_state_survives_a_bad_cost(name, bad):
    make, too_big = keyed_limiters()[name]
    limiter = make()
    limiter.acquire("a", 2)
    before = (limiter.peek("a"), limiter.peek("b"), len(limiter))
    for method in (limiter.acquire, limiter.try_acquire, limiter.peek):
        with pytest.raises((InvalidCost, too_big, TypeError, OverflowError)):
            method("b", bad)
    if not isinstance(bad, str):
        # a batch with one bad cost decides nothing, not even the good entries before it
        with pytest.raises((InvalidCost, too_big, OverflowError)):
            limiter.acquire_many(["a", "b", "c"], [1, 1, bad])
    assert (limiter.peek("a"), limiter.peek("b"), len(limiter)) == before


@pytest.mark.parametrize("method, bad", [
    ("advance", math.nan), ("advance", -1), ("advance", HUGE), ("advance", 1e308),
    ("advance", "5"), ("set", 1.0), ("set", HUGE), ("set", math.inf),
    ("advance_ns", HUGE), ("advance_ns", -1), ("advance_ns", 1.5), ("set_ns", 0),
    ("set_ns", -HUGE), ("set_ns", np.float32(5)),
], ids=shown)
def test_manual_clock_stays_put_after_an_error(method, bad):
    c = ManualClock(start=2.0)
    with pytest.raises((ValueError, TypeError)) as error:
        getattr(c, method)(bad)
    assert not isinstance(error.value, OverflowError)
    assert c.now_ns == 2_000_000_000


def test_ttl_cache_keeps_its_items_after_bad_arguments():
    c = TTLCache(10, ttl=10, clock=clock())
    c["k"] = "v"
    for bad in (math.nan, -1, "5", True, -HUGE):
        with pytest.raises((ValueError, TypeError)):
            c.expire(bad)
        with pytest.raises((ValueError, TypeError)):
            c.__init__(10, ttl=bad)       # validated before __init__ empties the cache
    assert dict(c) == {"k": "v"} and c.ttl == 10


def test_histogram_keeps_its_counts_after_bad_arguments():
    h = LatencyHistogram(clock=clock())
    h.record(1_000_000)
    before = (h.count, h.overflow, h.percentiles([0, 50, 100]))
    for call in (lambda: h.record(-1), lambda: h.record(5, HUGE), lambda: h.record(5, 0),
                 lambda: h.record(1.5), lambda: h.percentile(HUGE),
                 lambda: h.percentile(50, window=HUGE),
                 lambda: h.to_prometheus("x", buckets=[HUGE])):
        with pytest.raises((HistogramValueError, HistogramTypeError)):
            call()
    assert (h.count, h.overflow, h.percentiles([0, 50, 100])) == before


def test_semantic_cache_keeps_its_entries_after_bad_arguments():
    cache = SemanticCache(10, clock=clock())
    cache.set("k", "v", Freshness(60))
    for bad in (HUGE, math.nan, -1, "60"):
        with pytest.raises((InvalidFreshness, TypeError)):
            cache.set("k", "other", Freshness(bad))
        with pytest.raises(TypeError):
            cache.set("k", "other", bad)          # not a Freshness
    assert cache.lookup("k").value == "v" and len(cache) == 1
