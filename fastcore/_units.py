"""Unit conversion at the Python edge: rate strings, and seconds <-> integer nanoseconds.

The core keeps every time in int64 nanoseconds; this module is the one place where float
seconds and rate strings become those integers. Conversions go through ``Fraction`` so a
float is rounded once, to the nearest nanosecond, never twice.
"""

import math
import numbers
import operator
import re
from fractions import Fraction
from typing import NamedTuple

from fastcore.errors import InvalidRate

__all__ = ["Rate", "parse_rate", "parse_many", "seconds_to_ns", "ns_to_seconds", "as_real",
           "shown"]

NS_PER_S = 1_000_000_000
# Largest tolerance / window accepted: keeps now + tolerance inside int64 for 146 years.
MAX_SPAN_NS = 1 << 61

_UNIT_SECONDS = {
    "ms": Fraction(1, 1000), "millisecond": Fraction(1, 1000),
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hr": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
    # the limits package's calendar-free units: a month is 30 days, a year 12 such months
    "month": 30 * 86400, "year": 360 * 86400,
}
# Units that also take a plural "s" ("ms" is itself a unit, never a plural of "m").
_PLURAL_UNITS = {"millisecond", "sec", "second", "min", "minute", "hr", "hour", "day", "month",
                 "year"}
# Separators between the rates of parse_many, as the limits package accepts them.
_RATE_SEPARATORS = re.compile(r"[,;|]")
_FRACTION_RE = re.compile(r"\s*[0-9]*\.[0-9]+\s*(?:/|\bper\b)", re.ASCII | re.IGNORECASE)
# ASCII only: Python's \d, int() and str.isdigit() also take other scripts' digits.
_RATE_RE = re.compile(
    r"\s*(?P<limit>[0-9]+)\s*(?:/|\bper\b)\s*(?P<count>[0-9]+)?\s*(?P<unit>[a-z]+)\s*\Z",
    re.IGNORECASE | re.ASCII,
)
# Largest number of significant digits in a rate string's limit or count (below 10**18).
_RATE_DIGITS_MAX = 18


def shown(value, limit=80) -> str:
    """``repr(value)`` for an error message: never raises, and stays short.

    ``repr`` of an int past 4300 digits raises ``ValueError`` (Python's conversion limit), so
    a long int is described by its size; a repr longer than ``limit`` characters is cut.
    """
    if isinstance(value, int) and value.bit_length() > 256:
        digits = math.floor((value.bit_length() - 1) * math.log10(2)) + 1
        return f"{'a negative' if value < 0 else 'an'} int of about {digits} digits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__} object"
    if len(text) > limit:
        text = f"{text[:limit - 24]}... ({len(text)} characters)"
    return text


def as_real(value):
    """A real number as a Python ``int``, ``float`` or ``Fraction``; None for anything else.

    Accepts what ``numbers.Real`` covers (numpy integer and float scalars included: an
    integer through ``__index__``, exactly, a float through ``float()``). ``bool`` and
    ``numpy.bool_`` are not numbers here, nor are strings or ``Decimal``.
    """
    kind = type(value)
    if kind is int or kind is float:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Fraction)):
        return value
    try:
        if isinstance(value, float):
            return float(value)
        if isinstance(value, numbers.Integral):
            return operator.index(value)
        if isinstance(value, numbers.Real):
            return float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _unit_seconds(word: str):
    """Seconds in one ``word`` unit ("ms", "minutes", ...), or None when it names none."""
    word = word.lower()
    if word in _UNIT_SECONDS:
        return _UNIT_SECONDS[word]
    if word.endswith("s") and word[:-1] in _PLURAL_UNITS:
        return _UNIT_SECONDS[word[:-1]]
    return None


class Rate(NamedTuple):
    """``limit`` events per ``period`` seconds, as parsed from a rate string."""

    limit: int
    period: float

    @property
    def period_ns(self) -> int:
        return seconds_to_ns(self.period, "period")


def parse_rate(text) -> Rate:
    """Parse one rate string in the forms the ``limits`` package uses.

    Grammar (case-insensitive, spaces optional around each part)::

        rate   = limit ("/" | "per") [count] unit
        limit  = count = 1*DIGIT             ; ASCII digits, a whole number below 10**18
        unit   = ms | millisecond[s] | s | sec[s] | second[s] | m | min[s] | minute[s]
               | h | hr[s] | hour[s] | d | day[s] | month[s] | year[s]

    ``"100/second"``, ``"100/s"``, ``"10 per minute"``, ``"5/30 seconds"``, ``"1/day"``,
    ``"1000/month"``. A month is 30 days and a year 360 days, as in ``limits``. Several rates
    in one string go to ``parse_many``. Raises ``InvalidRate`` naming the text for anything
    else: a zero limit, a fraction ("1.5/second": write "3/2 seconds"), several rates.

    >>> parse_rate("5/30 seconds")
    Rate(limit=5, period=30.0)
    """
    if not isinstance(text, str):
        raise InvalidRate(f"a rate string must be a str, got {shown(text)}")
    match = _RATE_RE.match(text)
    unit = match and _unit_seconds(match["unit"])
    if not match or unit is None:
        if _FRACTION_RE.match(text):
            raise InvalidRate(
                f"cannot parse rate {shown(text)}: the limit is a whole number of events; "
                "say '3/2 seconds' for 1.5 per second")
        if _RATE_SEPARATORS.search(text):
            raise InvalidRate(
                f"{shown(text)} holds several rates: parse_many() reads them, and each "
                "becomes a limiter of its own")
        raise InvalidRate(
            f"cannot parse rate {shown(text)}: expected forms like '100/second', "
            "'10 per minute', '5/30 seconds' (ASCII digits)")
    # leading zeros are dropped before int(), which refuses more than 4300 digits in all
    fields = [(digits or "1").lstrip("0") or "0" for digits in (match["limit"], match["count"])]
    if any(len(digits) > _RATE_DIGITS_MAX for digits in fields):
        raise InvalidRate(
            f"rate {shown(text)} has a number of more than {_RATE_DIGITS_MAX} digits")
    limit, count = (int(digits) for digits in fields)
    if limit <= 0 or count <= 0:
        raise InvalidRate(f"rate {shown(text)} must have a positive limit and period")
    return Rate(limit, float(count * unit))


def parse_many(text) -> list:
    """Several rates in one string, separated by ``,``, ``;`` or ``|`` (as ``limits``
    accepts them): ``parse_many("10/second;1000/day")`` is
    ``[Rate(10, 1.0), Rate(1000, 86400.0)]``. Each part follows ``parse_rate``'s grammar;
    an empty part or any bad part raises ``InvalidRate`` naming the text.
    """
    if not isinstance(text, str):
        raise InvalidRate(f"a rate string must be a str, got {shown(text)}")
    parts = _RATE_SEPARATORS.split(text)
    if any(not part.strip() for part in parts):
        raise InvalidRate(f"{shown(text)} has an empty rate between separators")
    return [parse_rate(part) for part in parts]


def seconds_to_ns(seconds, name="seconds") -> int:
    """Seconds (int, float, Fraction or a numpy scalar; finite, >= 0) to integer ns, rounded
    to the nearest. The result is unbounded: callers check it against their own range.

    Raises ``TypeError`` for a non-number (``bool`` included) and ``ValueError`` for NaN,
    an infinity or a negative number, naming ``name``.
    """
    value = as_real(seconds)
    if value is None:
        raise TypeError(f"{name} must be a number of seconds, got {shown(seconds)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {shown(seconds)}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {shown(seconds)}")
    return round(Fraction(value) * NS_PER_S)


def ns_to_seconds(ns: int) -> float:
    """Integer ns to float seconds (the core's own conversion, for the Python layer)."""
    return ns / 1e9


def _positive_number(value, name) -> Fraction:
    number = as_real(value)
    if number is None:
        raise InvalidRate(f"{name} must be a number, got {shown(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidRate(f"{name} must be finite, got {shown(value)}")
    if number <= 0:
        raise InvalidRate(f"{name} must be > 0, got {shown(value)}")
    return Fraction(number)


def rate_limit_and_period(rate):
    """``rate`` (tokens per second, or a rate string) -> (limit, period_ns) as exact ints/Fractions."""
    if isinstance(rate, str):
        parsed = parse_rate(rate)
        return Fraction(parsed.limit), parsed.period_ns, parsed.limit
    return _positive_number(rate, "rate"), NS_PER_S, None


def gcra_params(rate, burst):
    """Token-bucket arguments -> GCRA integers ``(emission_ns, tau_ns, burst)``.

    ``emission_ns`` is the emission interval T = 1/rate rounded *up* to a whole nanosecond,
    so the sustained rate never exceeds the one asked for. ``tau_ns = floor(burst * T)``:
    with whole costs a full bucket then admits exactly ``burst`` tokens. ``burst`` defaults
    to the limit of a rate string, else ``max(1, rate)``.
    """
    limit, period_ns, string_limit = rate_limit_and_period(rate)
    exact_emission_ns = Fraction(period_ns) / limit
    if exact_emission_ns < 1:
        raise InvalidRate(f"rate {shown(rate)} exceeds 1e9 tokens per second (one per ns)")
    emission_ns = math.ceil(exact_emission_ns)
    if burst is None:
        burst = string_limit if string_limit is not None else max(1, rate)
    exact_burst = _positive_number(burst, "burst")
    tau_ns = math.floor(exact_burst * emission_ns)
    if tau_ns > MAX_SPAN_NS:
        raise InvalidRate(
            f"burst {shown(burst)} at rate {shown(rate)} spans more than 2**61 ns")
    if tau_ns < 1:
        raise InvalidRate(f"burst {shown(burst)} is too small for rate {shown(rate)}")
    return emission_ns, tau_ns, float(burst)


# Sliding windows count costs in fixed point: 24-bit counts of units of 2**-F of a cost.
WINDOW_COUNT_MAX = (1 << 24) - 1
WINDOW_FRACTION_BITS_MAX = 40
# Largest window: (window index + 2) * window stays inside int64 for any clock reading.
WINDOW_MAX_NS = 1 << 60
WINDOW_SLICES_MAX = 1024


def window_params(limit, window, slices=1):
    """Sliding-window arguments -> ``(limit_units, fraction_bits, window_ns, limit)``.

    ``limit``: a positive number, or a rate string ("100/minute" gives limit 100 and a 60 s
    window, and then ``window`` must be None). ``window``: seconds. Costs are counted in
    units of ``2**-F`` with F the largest in 0..40 such that ``floor(limit * 2**F)`` fits in
    24 bits; ``limit_units = floor(limit * 2**F)``. With ``slices`` > 1 the window is rounded
    up to a whole number of ns per slice: ``window_ns = slices * ceil(window_ns / slices)``.
    Raises ``InvalidRate`` for a bad or out-of-range limit or window.
    """
    if isinstance(limit, str):
        if window is not None:
            raise InvalidRate(f"rate {shown(limit)} already gives the window; pass window=None")
        parsed = parse_rate(limit)
        exact_limit, window_ns, limit_value = Fraction(parsed.limit), parsed.period_ns, parsed.limit
    else:
        exact_limit = _positive_number(limit, "limit")
        if window is None:
            raise InvalidRate("window (seconds) is required when limit is a number")
        window_ns = seconds_to_ns(_positive_number(window, "window"), "window")
        limit_value = limit
    if exact_limit > WINDOW_COUNT_MAX:
        raise InvalidRate(f"limit {shown(limit)} must be below {WINDOW_COUNT_MAX + 1}")
    fraction_bits = WINDOW_FRACTION_BITS_MAX
    while math.floor(exact_limit * 2**fraction_bits) > WINDOW_COUNT_MAX:
        fraction_bits -= 1
    limit_units = math.floor(exact_limit * 2**fraction_bits)
    if limit_units < 1:
        raise InvalidRate(f"limit {shown(limit)} is below the smallest cost unit 2**-40")
    window_ns = slices * -(-window_ns // slices) if window_ns else 0
    if window_ns < slices:
        raise InvalidRate(f"window {shown(window)} is shorter than 1 ns per slice")
    if window_ns > WINDOW_MAX_NS:
        raise InvalidRate(f"window {shown(window)} spans more than 2**60 ns")
    return limit_units, fraction_bits, window_ns, float(limit_value)
