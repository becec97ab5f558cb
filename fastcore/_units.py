"""Unit conversion at the Python edge: rate strings, and seconds <-> integer nanoseconds.

The core keeps every time in int64 nanoseconds; this module is the one place where float
seconds and rate strings become those integers. Conversions go through ``Fraction`` so a
float is rounded once, to the nearest nanosecond, never twice.
"""

import math
import re
from fractions import Fraction
from typing import NamedTuple

from fastcore.errors import InvalidRate

__all__ = ["Rate", "parse_rate", "seconds_to_ns", "ns_to_seconds"]

NS_PER_S = 1_000_000_000
# Largest tolerance / window accepted: keeps now + tolerance inside int64 for 146 years.
MAX_SPAN_NS = 1 << 61

_UNIT_SECONDS = {
    "ms": Fraction(1, 1000), "millisecond": Fraction(1, 1000),
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hr": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}
_RATE_RE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|\bper\b)\s*(?P<count>\d+)?\s*(?P<unit>[a-z]+?)s?\s*$",
    re.IGNORECASE,
)


class Rate(NamedTuple):
    """``limit`` events per ``period`` seconds, as parsed from a rate string."""

    limit: int
    period: float

    @property
    def period_ns(self) -> int:
        return seconds_to_ns(self.period, "period")


def parse_rate(text) -> Rate:
    """Parse a rate string in the forms the ``limits`` package uses.

    ``"100/second"``, ``"100/s"``, ``"10 per minute"``, ``"5/30 seconds"``, ``"1000/hour"``,
    ``"1/day"``. Units: ms, s/sec/second, m/min/minute, h/hr/hour, d/day, optionally plural.

    Raises ``InvalidRate`` naming the text for anything else (including a zero limit).

    >>> parse_rate("5/30 seconds")
    Rate(limit=5, period=30.0)
    """
    if not isinstance(text, str):
        raise InvalidRate(f"a rate string must be a str, got {text!r}")
    match = _RATE_RE.match(text)
    unit = match and _UNIT_SECONDS.get(match["unit"].lower())
    if not match or unit is None:
        raise InvalidRate(
            f"cannot parse rate {text!r}: expected forms like '100/second', '10 per minute', "
            "'5/30 seconds'")
    limit = int(match["limit"])
    count = int(match["count"]) if match["count"] else 1
    if limit <= 0 or count <= 0:
        raise InvalidRate(f"rate {text!r} must have a positive limit and period")
    return Rate(limit, float(count * unit))


def seconds_to_ns(seconds, name="seconds") -> int:
    """Seconds (int, float or Fraction; finite, >= 0) to integer ns, rounded to the nearest."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, Fraction)):
        raise TypeError(f"{name} must be a number of seconds, got {seconds!r}")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"{name} must be finite, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"{name} must be >= 0, got {seconds!r}")
    return round(Fraction(seconds) * NS_PER_S)


def ns_to_seconds(ns: int) -> float:
    """Integer ns to float seconds (the core's own conversion, for the Python layer)."""
    return ns / 1e9


def _positive_number(value, name) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise InvalidRate(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRate(f"{name} must be finite, got {value!r}")
    if value <= 0:
        raise InvalidRate(f"{name} must be > 0, got {value!r}")
    return Fraction(value)


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
        raise InvalidRate(f"rate {rate!r} exceeds 1e9 tokens per second (one per ns)")
    emission_ns = math.ceil(exact_emission_ns)
    if burst is None:
        burst = string_limit if string_limit is not None else max(1, rate)
    exact_burst = _positive_number(burst, "burst")
    tau_ns = math.floor(exact_burst * emission_ns)
    if tau_ns > MAX_SPAN_NS:
        raise InvalidRate(f"burst {burst!r} at rate {rate!r} spans more than 2**61 ns")
    if tau_ns < 1:
        raise InvalidRate(f"burst {burst!r} is too small for rate {rate!r}")
    return emission_ns, tau_ns, float(burst)
