"""Rate strings and the integer GCRA parameters derived from them."""

import math

import pytest

from fastcore import InvalidRate, Rate, parse_rate
from fastcore._units import gcra_params, window_params


@pytest.mark.parametrize("text, expected", [
    ("100/second", Rate(100, 1.0)),
    ("100/s", Rate(100, 1.0)),
    ("10 per minute", Rate(10, 60.0)),
    ("5/30 seconds", Rate(5, 30.0)),
    ("1000/hour", Rate(1000, 3600.0)),
    ("1/day", Rate(1, 86400.0)),
    ("  7 / 2 hours ", Rate(7, 7200.0)),
    ("3/MINUTE", Rate(3, 60.0)),
    # every unit, singular and plural; "ms" is milliseconds, never a plural of "m"
    ("100/ms", Rate(100, 0.001)), ("5/30 ms", Rate(5, 0.03)),
    ("2/millisecond", Rate(2, 0.001)), ("2/250 milliseconds", Rate(2, 0.25)),
    ("4/sec", Rate(4, 1.0)), ("4/2 secs", Rate(4, 2.0)),
    ("6/m", Rate(6, 60.0)), ("6/min", Rate(6, 60.0)), ("6/3 mins", Rate(6, 180.0)),
    ("8/h", Rate(8, 3600.0)), ("8/hr", Rate(8, 3600.0)), ("8/2 hrs", Rate(8, 7200.0)),
    ("9/d", Rate(9, 86400.0)), ("9/2 days", Rate(9, 172800.0)),
])
def test_parse_rate_accepts_the_limits_forms(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "100", "100/fortnight", "0/second", "5/0 seconds",
                                  "-1/second", "1.5/second", "ten/second", "100//s", "1/ss", "1/hs", "1/mss", "1/days s"])
def test_parse_rate_names_the_bad_text(text):
    with pytest.raises(InvalidRate, match="cannot parse|positive") as error:
        parse_rate(text)
    assert repr(text) in str(error.value)


def test_parse_rate_refuses_non_strings():
    with pytest.raises(InvalidRate):
        parse_rate(100)


@pytest.mark.parametrize("rate, burst, emission_ns, tau_ns", [
    (3, 3, 333_333_334, 1_000_000_002),          # 1/3 s rounded up; tau = 3 * T exactly
    (2, None, 500_000_000, 1_000_000_000),       # burst defaults to max(1, rate) = 2
    (0.5, None, 2_000_000_000, 2_000_000_000),   # burst defaults to 1
    ("5/30 seconds", None, 6_000_000_000, 30_000_000_000),
    (7.25, 2.5, 137_931_035, 344_827_587),       # ceil(1e9/7.25); floor(2.5 * T)
    (1e9, 1, 1, 1),
])
def test_gcra_params_round_the_safe_way(rate, burst, emission_ns, tau_ns):
    assert gcra_params(rate, burst)[:2] == (emission_ns, tau_ns)


@pytest.mark.parametrize("rate, burst", [
    (0, 1), (-1, 1), (math.nan, 1), (math.inf, 1), (2e9, 1), ("x", 1), (1, 0), (1, -2),
    (1, math.nan), (1, math.inf), (True, 1), (1, "3"), (1, 1e30),
])
def test_gcra_params_refuse_bad_rates_and_bursts(rate, burst):
    with pytest.raises(InvalidRate):
        gcra_params(rate, burst)


# -- the rate grammar is ASCII, and its numbers are bounded ----------------------------------

@pytest.mark.parametrize("text", [
    "\u0665/second",                  # Arabic-Indic 5
    "\uff15/second",                  # fullwidth 5
    "\u096b per minute",              # Devanagari 5
    "5/\u0663 seconds",               # Arabic-Indic 3 as the count
    "\U0001d7fb/s",                   # mathematical double-struck 5
    "5\u2003/second",                 # an em space is not ASCII whitespace
    "5/\u017fecond",                  # long s folds to "s" case-insensitively
    "5/\u212a",                       # Kelvin sign folds to "k"
    "5/second\n\u00a0",               # no-break space after the unit
])
def test_parse_rate_is_ascii_only(text):
    with pytest.raises(InvalidRate, match="cannot parse") as error:
        parse_rate(text)
    assert repr(text) in str(error.value)


@pytest.mark.parametrize("text", [
    "9" * 5000 + "/second",
    "1/" + "9" * 400 + " seconds",
    "1" + "0" * 18 + "/second",       # 10**18: one digit too many
    "1/" + "1" + "0" * 18 + " s",
])
def test_parse_rate_refuses_numbers_past_18_digits(text):
    with pytest.raises(InvalidRate, match="more than 18 digits") as error:
        parse_rate(text)
    assert len(str(error.value)) < 200            # the text is shown cut, not whole


@pytest.mark.parametrize("text, expected", [
    ("9" * 18 + "/second", Rate(10**18 - 1, 1.0)),
    ("1/" + "9" * 18 + " seconds", Rate(1, float(10**18 - 1))),
    ("0" * 5000 + "5/" + "0" * 5000 + "2 minutes", Rate(5, 120.0)),   # leading zeros
    ("5/second" + " " * 10_000, Rate(5, 1.0)),
])
def test_parse_rate_largest_numbers_and_long_text(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["1e400/second", "1.5e3/s", "x" * 10_000, "5/" + "s" * 10_000,
                                  "inf/second", "nan/second", "-0/second"])
def test_parse_rate_never_leaks_int_or_float_errors(text):
    with pytest.raises(InvalidRate) as error:
        parse_rate(text)
    assert len(str(error.value)) < 200


@pytest.mark.parametrize("make", [
    lambda text: gcra_params(text, None),
    lambda text: window_params(text, None),
], ids=["gcra_params", "window_params"])
@pytest.mark.parametrize("text", ["1e400/second", "9" * 5000 + "/second",
                                  "1/" + "9" * 400 + " seconds", "\u0665/second",
                                  "999999999999999999/ms", "1/999999999999999999 days"])
def test_limiters_turn_any_rate_string_into_invalid_rate(make, text):
    with pytest.raises(InvalidRate):
        make(text)


# -- months, years, several rates, fractions ---------------------------------------------------

@pytest.mark.parametrize("text, limit, period", [
    ("1000/month", 1000, 30 * 86400.0),          # the limits package's 30-day month
    ("5 per 2 months", 5, 60 * 86400.0),
    ("1/year", 1, 360 * 86400.0),                 # and its 360-day year
    ("3 PER 1 YEARS", 3, 360 * 86400.0),
])
def test_months_and_years_follow_the_limits_package(text, limit, period):
    assert parse_rate(text) == Rate(limit, period)


def test_parse_many_reads_every_separator_limits_accepts():
    from fastcore import parse_many
    assert parse_many("10/second;1000/day") == [Rate(10, 1.0), Rate(1000, 86400.0)]
    assert parse_many("10 per second, 5 per minute | 1/month") == [
        Rate(10, 1.0), Rate(5, 60.0), Rate(1, 30 * 86400.0)]
    assert parse_many("7/hour") == [Rate(7, 3600.0)]
    for bad in ("10/second;", ";", "10/second;;1/day", "10/second;oops", 5):
        with pytest.raises(InvalidRate):
            parse_many(bad)


def test_a_fraction_or_several_rates_get_a_precise_message():
    with pytest.raises(InvalidRate, match="whole number of events.*3/2 seconds"):
        parse_rate("1.5/second")
    with pytest.raises(InvalidRate, match="several rates: parse_many"):
        parse_rate("10/second;1000/day")
