"""Cache-Control parsing (RFC 9111, RFC 5861) into ``fastcore.Freshness``.

``Freshness`` itself is the compiled class from ``fastcore._core.semantic``; its
``from_cache_control`` and ``from_response`` class methods call the functions here. Header
parsing is a cold path (once per stored response), so it stays in Python.

Rules, in the order they apply:

- Directive names are case-insensitive; ``name=value`` and ``name="value"`` are the same;
  commas inside quoted strings do not split; empty members and unknown directives are
  ignored; when a directive repeats, its first occurrence counts (RFC 9111 4.2.1 allows
  this). Multiple header lines (a list) are joined with commas.
- ``no-store`` -> ``None`` (not stored). ``private`` (with or without field names) ->
  ``None`` in a shared cache, ignored in a private one.
- Lifetime: ``s-maxage`` in a shared cache, else ``max-age``, else none (``max_age=0``:
  stored, stale at once). A value that is not delta-seconds (ASCII digits, optionally
  quoted) makes the response stale (``max_age=0``). A delta-seconds above 2**31 counts as
  2**31 (RFC 9111 1.2.2: "too large to represent"), however many digits it has; every span
  is then capped at 2**59 ns (about 18 years), the longest a Freshness holds, which the
  same section allows ("the greatest positive integer it can conveniently represent").
- ``no-cache`` (with or without field names) -> ``max_age=0`` and ``must_revalidate``:
  stored, never served stale. ``must-revalidate``, and ``proxy-revalidate`` in a shared
  cache -> ``must_revalidate``. ``s-maxage`` sets the lifetime but, unlike RFC 9111
  5.2.2.10, does not imply ``proxy-revalidate``: shared caches in practice honour
  ``s-maxage=1, stale-while-revalidate=59`` (the README says so).
- ``stale-while-revalidate=N`` / ``stale-if-error=N`` (RFC 5861): stale windows after the
  lifetime; an invalid value gives no window.
- ``Age``: every boundary is net of it. With lifetime L, window W and age A the returned
  ``max_age = max(0, L - A)`` and window ``max(0, L + W - A) - max_age``; ``age=A`` is kept
  to add to ``Lookup.age``. An ``Age`` header that is not delta-seconds makes the response
  stale. ``Expires`` is not consulted.
"""

import numbers
import operator
import re
from collections.abc import Mapping
from fractions import Fraction

from fastcore._core.semantic import Freshness
from fastcore._units import NS_PER_S, seconds_to_ns, shown
from fastcore.errors import InvalidFreshness

__all__ = ["Freshness", "parse_cache_control", "freshness_from_response",
           "HEURISTICALLY_CACHEABLE"]

# RFC 9110 15.1: statuses cacheable by default (heuristic freshness allowed). RFC 9110 also
# lists 501, left out: this cache never stores a 5xx (see freshness_from_response).
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414})
NEGATIVE_STATUSES = frozenset({404, 410})

_MAX_NS = 1 << 59                         # FRESHNESS_MAX_NS in semantic.pxd
_MAX_SECONDS = _MAX_NS // NS_PER_S        # delta-seconds are capped here
# RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2**31 (and then capped
# at _MAX_SECONDS, below it). Its digits are never all converted: int() refuses more than
# 4300 digits, and a header must never make this module raise.
_OVERFLOW_SECONDS = 1 << 31
_OVERFLOW_DIGITS = len(str(_OVERFLOW_SECONDS))
_DELTA_SECONDS = re.compile(r"[0-9]+\Z")  # ASCII digits only, unlike int() and str.isdigit()
_INVALID = object()                       # a directive value that did not parse


def _split_members(text):
    """Comma-separated ``name[=value]`` members; commas inside quoted strings do not split.

    Yields ``(name_lowercase, value)`` with ``value`` a str, ``None`` (no ``=``) or
    ``_INVALID`` (an unterminated quoted string).
    """
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in ",=":
            j += 1
        name = text[i:j].strip().lower()
        value = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] == '"':
                chars = []
                j += 1
                closed = False
                while j < n:
                    c = text[j]
                    if c == "\\" and j + 1 < n:
                        chars.append(text[j + 1])
                        j += 2
                        continue
                    if c == '"':
                        closed = True
                        j += 1
                        break
                    chars.append(c)
                    j += 1
                value = "".join(chars) if closed else _INVALID
                while j < n and text[j] != ",":   # junk after the closing quote
                    if text[j] not in " \t":
                        value = _INVALID
                    j += 1
            else:
                start = j
                while j < n and text[j] != ",":
                    j += 1
                value = text[start:j].strip()
        if name:
            yield name, value
        i = j + 1


def _delta_seconds(value):
    """RFC 9111 1.2.2 delta-seconds -> int seconds (capped), or None when invalid."""
    if not isinstance(value, str) or not _DELTA_SECONDS.match(value):
        return None
    digits = value.lstrip("0")
    if len(digits) > _OVERFLOW_DIGITS:
        seconds = _OVERFLOW_SECONDS
    else:
        seconds = min(int(digits or "0"), _OVERFLOW_SECONDS)
    return min(seconds, _MAX_SECONDS)


def _scalar_header_text(value):
    """A header value given as a number or another object, as the text it stands for.

    An int (a numpy one too) is its digits, capped at 2**31 first so that no conversion can
    refuse it; anything whose ``str`` fails is invalid (empty) text.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return str(min(value, _OVERFLOW_SECONDS))
    try:
        return str(value)
    except Exception:
        return ""


def _header_text(header):
    if header is None:
        return ""
    if isinstance(header, str):
        return header
    if isinstance(header, (bytes, bytearray)):
        return bytes(header).decode("latin-1")
    if isinstance(header, (list, tuple)):
        return ", ".join(_header_text(part) for part in header)
    raise TypeError(f"a Cache-Control header must be a str, bytes or a list of them, "
                    f"got {shown(header)}")


def _age_ns(age):
    """The Age as int ns, or None when an Age header string is invalid."""
    if isinstance(age, (str, bytes, bytearray)):
        text = _header_text(age).split(",")[0].strip()
        seconds = _delta_seconds(text)
        return None if seconds is None else seconds * NS_PER_S
    try:
        ns = seconds_to_ns(age, "age")
    except ValueError as exc:
        raise InvalidFreshness(str(exc)) from None
    return min(ns, _MAX_NS)


def _parse(header, age, shared, heuristic_ns):
    """-> (Freshness arguments as a dict, or None for "do not store"; explicit lifetime?)."""
    directives = {}
    for name, value in _split_members(_header_text(header)):
        directives.setdefault(name, value)
    age_ns = _age_ns(age)
    if "no-store" in directives or (shared and "private" in directives):
        return None, False
    must_revalidate = "must-revalidate" in directives or (
        shared and "proxy-revalidate" in directives)
    lifetime_key = "s-maxage" if shared and "s-maxage" in directives else "max-age"
    explicit = lifetime_key in directives
    if explicit:
        seconds = _delta_seconds(directives[lifetime_key])
        lifetime_ns = 0 if seconds is None else seconds * NS_PER_S
    else:
        lifetime_ns = heuristic_ns
    if "no-cache" in directives:
        lifetime_ns = 0
        must_revalidate = True
    if age_ns is None:             # an invalid Age: stale at once
        lifetime_ns, age_ns = 0, 0
    windows = []
    for key in ("stale-while-revalidate", "stale-if-error"):
        seconds = _delta_seconds(directives.get(key))
        windows.append(0 if seconds is None else seconds * NS_PER_S)
    max_age_ns = max(0, lifetime_ns - age_ns)
    swr_ns, sie_ns = (min(_MAX_NS, max(0, lifetime_ns + w - age_ns) - max_age_ns)
                      for w in windows)
    fields = {
        "max_age": Fraction(max_age_ns, NS_PER_S),
        "stale_while_revalidate": Fraction(swr_ns, NS_PER_S),
        "stale_if_error": Fraction(sie_ns, NS_PER_S),
        "must_revalidate": must_revalidate,
        "age": Fraction(age_ns, NS_PER_S),
    }
    return fields, explicit or "public" in directives


def _build(cls, fields, negative=False):
    return cls(fields["max_age"], fields["stale_while_revalidate"], fields["stale_if_error"],
               must_revalidate=fields["must_revalidate"], age=fields["age"], negative=negative)


def parse_cache_control(header, age=0.0, *, shared=True, cls=Freshness):
    """``Freshness.from_cache_control``: a ``Cache-Control`` value -> Freshness or None.

    ``age`` is seconds (a number) or the ``Age`` header value (a str). Never raises on a
    header string; raises ``TypeError`` for a header that is not str/bytes/list, and
    ``InvalidFreshness`` for a negative or NaN numeric ``age``.

    >>> parse_cache_control("max-age=60, stale-while-revalidate=30", age=10)
    Freshness(50.0, 30.0, 0.0, age=10.0)
    """
    fields, _ = _parse(header, age, shared, 0)
    return None if fields is None else _build(cls, fields)


def _header_values(headers, wanted):
    """Every value of header ``wanted`` (lowercase) in a mapping or a list of pairs."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for name, value in items:
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).decode("latin-1")
        if name.lower() == wanted:
            out.append(value)
    return out


def freshness_from_response(status, headers, *, shared=True, heuristic=0.0, cls=Freshness):
    """``Freshness.from_response``: status rules on top of ``Cache-Control`` and ``Age``.

    - 1xx and 5xx: never stored (``None``).
    - 2xx and the heuristically cacheable statuses (RFC 9110 15.1: 200, 203, 204, 206,
      300, 301, 308, 404, 405, 410, 414; 501 is 5xx and is not stored): stored; when the
      header gives no lifetime, a heuristically cacheable status gets ``heuristic``
      seconds, any other 2xx ``0``.
    - 404 and 410: negative entries (``negative=True``).
    - any other status: stored only with an explicit ``max-age``/``s-maxage`` or
      ``public``, else ``None``.

    ``headers``: a mapping or a list of ``(name, value)`` pairs; names are matched
    case-insensitively. Raises ``TypeError``/``InvalidFreshness`` for a status that is not
    an int in 100..599 or a bad ``heuristic``; never for header contents.

    >>> freshness_from_response(404, {"cache-control": "max-age=30"})
    Freshness(30.0, 0.0, 0.0, negative=True)
    """
    if isinstance(status, bool) or not isinstance(status, numbers.Integral):
        raise TypeError(f"status must be an int, got {shown(status)}")
    status = operator.index(status)
    if not 100 <= status <= 599:
        raise InvalidFreshness(f"status must be between 100 and 599, got {shown(status)}")
    try:
        heuristic_ns = seconds_to_ns(heuristic, "heuristic")
    except ValueError as exc:
        raise InvalidFreshness(str(exc)) from None
    if status < 200 or status >= 500:
        return None
    ages = _header_values(headers, "age")
    age = ages[0] if ages else "0"
    if not isinstance(age, (str, bytes, bytearray)):
        age = _scalar_header_text(age)
    heuristic_ok = status in HEURISTICALLY_CACHEABLE
    fields, explicit = _parse(_header_values(headers, "cache-control"), age, shared,
                              min(heuristic_ns, _MAX_NS) if heuristic_ok else 0)
    if fields is None or not (explicit or heuristic_ok or 200 <= status < 300):
        return None
    return _build(cls, fields, negative=status in NEGATIVE_STATUSES)
