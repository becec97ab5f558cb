"""Cache-Control / Age / status parsing: a table of real header values, malformed ones too."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore import Freshness, InvalidFreshness

F = Freshness

# header, shared-cache result, private-cache result (None: not stored)
TABLE = [
    # plain lifetimes, as CDNs and frameworks send them
    ("max-age=60", F(60), F(60)),
    ("public, max-age=31536000, immutable", F(31536000), F(31536000)),
    ("max-age=0", F(0), F(0)),
    ("MAX-AGE=60", F(60), F(60)),
    ('max-age="60"', F(60), F(60)),
    ("  max-age = 60 ", F(60), F(60)),
    ("max-age=60,,, ,", F(60), F(60)),
    # s-maxage wins only in a shared cache
    ("public, max-age=60, s-maxage=300", F(300), F(60)),
    ("s-maxage=300", F(300), F(0)),
    ("s-maxage=1, stale-while-revalidate=59", F(1, 59), F(0, 59)),
    # RFC 5861
    ("max-age=600, stale-while-revalidate=30", F(600, 30), F(600, 30)),
    ("max-age=60, stale-if-error=86400", F(60, 0, 86400), F(60, 0, 86400)),
    ("max-age=1, stale-while-revalidate=59, stale-if-error=3600", F(1, 59, 3600),
     F(1, 59, 3600)),
    # not stored
    ("no-store", None, None),
    ("no-store, max-age=60", None, None),
    ("private, max-age=600", None, F(600)),
    ('private="set-cookie", max-age=60', None, F(60)),
    ("private, no-cache, no-store, must-revalidate", None, None),
    # stored, never served stale
    ("no-cache", F(0, must_revalidate=True), F(0, must_revalidate=True)),
    ("no-cache, max-age=60", F(0, must_revalidate=True), F(0, must_revalidate=True)),
    ('no-cache="set-cookie", max-age=60', F(0, must_revalidate=True),
     F(0, must_revalidate=True)),
    ("max-age=60, must-revalidate", F(60, must_revalidate=True),
     F(60, must_revalidate=True)),
    ("max-age=60, must-revalidate, stale-if-error=300",
     F(60, 0, 300, must_revalidate=True), F(60, 0, 300, must_revalidate=True)),
    ("max-age=60, proxy-revalidate", F(60, must_revalidate=True), F(60)),
    ("max-age=0, private, must-revalidate", None, F(0, must_revalidate=True)),
    # no freshness information: stored, stale at once
    ("", F(0), F(0)),
    ("public", F(0), F(0)),
    ("immutable", F(0), F(0)),
    # malformed: invalid lifetimes make the response stale; bad windows give no window
    ("max-age=abc", F(0), F(0)),
    ("max-age=-1", F(0), F(0)),
    ("max-age=1.5", F(0), F(0)),
    ("max-age", F(0), F(0)),
    ("max-age=", F(0), F(0)),
    ('max-age="60', F(0), F(0)),
    ('max-age="60"x', F(0), F(0)),
    ("max-age=60 seconds", F(0), F(0)),
    ("max-age=60, stale-while-revalidate=soon", F(60), F(60)),
    ("max-age=60, stale-if-error=-5", F(60), F(60)),
    ("max-age=99999999999999999999", F(576460752), F(576460752)),
    # repeated directives: the first occurrence counts
    ("max-age=60, max-age=10", F(60), F(60)),
    # quoted commas do not split; unknown directives are ignored
    ('community="UCI, UCB", max-age=60', F(60), F(60)),
    ('ext="a\\"b,c", max-age=60', F(60), F(60)),
    ("foo, bar=baz, max-age=60", F(60), F(60)),
    ("=60, max-age=60", F(60), F(60)),
    ("max-age=60;", F(0), F(0)),
    ("\x00\xff, max-age=5", F(5), F(5)),
]


@pytest.mark.parametrize("header,shared,private", TABLE)
def test_cache_control_table(header, shared, private):
    assert Freshness.from_cache_control(header) == shared
    assert Freshness.from_cache_control(header, shared=False) == private


def test_age_is_netted_from_every_boundary():
    # Lifetime 60, swr 30, sie 300; Age 10 -> 50 fresh, windows unchanged, age kept.
    f = Freshness.from_cache_control("max-age=60, stale-while-revalidate=30, "
                                     "stale-if-error=300", age=10)
    assert (f.max_age, f.stale_while_revalidate, f.stale_if_error, f.age) == (50, 30, 300, 10)
    # Age 70: already 10 s stale; 20 s of swr and 290 s of sie remain.
    f = Freshness.from_cache_control("max-age=60, stale-while-revalidate=30, "
                                     "stale-if-error=300", age="70")
    assert (f.max_age, f.stale_while_revalidate, f.stale_if_error) == (0, 20, 290)
    # Age past every window.
    f = Freshness.from_cache_control("max-age=60, stale-while-revalidate=30", age=1000)
    assert (f.max_age, f.stale_while_revalidate, f.age) == (0, 0, 1000)
    # Fractional numeric age is exact.
    assert Freshness.from_cache_control("max-age=60", age=0.25).max_age == 59.75


@pytest.mark.parametrize("age", ["abc", "-3", "1.5", ""])
def test_invalid_age_header_makes_the_response_stale(age):
    f = Freshness.from_cache_control("max-age=60, stale-if-error=30", age=age)
    assert (f.max_age, f.stale_if_error, f.age) == (0, 30, 0)


def test_header_forms():
    assert Freshness.from_cache_control(None) == F(0)
    assert Freshness.from_cache_control(b"max-age=60") == F(60)
    assert Freshness.from_cache_control(["max-age=60", "stale-if-error=5"]) == F(60, 0, 5)
    assert Freshness.from_cache_control(["public", "no-store"]) is None


@given(st.text(max_size=60) | st.text(alphabet='max-age=s,"\\ 0123456789-', max_size=60))
@settings(max_examples=300)
def test_a_header_string_never_raises(header):
    result = Freshness.from_cache_control(header)
    assert result is None or isinstance(result, Freshness)
    if result is not None:
        assert result.max_age >= 0 and result.stale_while_revalidate >= 0


@pytest.mark.parametrize("status,headers,expected", [
    (200, {"Cache-Control": "max-age=60"}, F(60)),
    (200, {}, F(0)),
    (201, {}, F(0)),
    (201, {"cache-control": "max-age=5"}, F(5)),
    (203, [("CACHE-CONTROL", "max-age=5"), ("Age", "2")], F(3, age=2)),
    (204, {"Cache-Control": "no-store"}, None),
    (301, {"Cache-Control": "max-age=3600"}, F(3600)),
    (302, {}, None),
    (302, {"Cache-Control": "max-age=30"}, F(30)),
    (307, {"Cache-Control": "public"}, F(0)),
    (400, {}, None),
    (403, {"Cache-Control": "max-age=5"}, F(5)),
    (404, {}, F(0, negative=True)),
    (404, {"Cache-Control": "max-age=30"}, F(30, negative=True)),
    (410, {"Cache-Control": "max-age=86400", "Age": "400"}, F(86000, age=400, negative=True)),
    (405, {}, F(0)),
    (100, {"Cache-Control": "max-age=60"}, None),
    (500, {"Cache-Control": "max-age=60"}, None),
    (501, {"Cache-Control": "max-age=60"}, None),
    (503, {"Cache-Control": "max-age=60, stale-if-error=60"}, None),
    (200, [(b"cache-control", b"max-age=7")], F(7)),
    (200, [("Cache-Control", "max-age=7"), ("Cache-Control", "stale-if-error=9")], F(7, 0, 9)),
    (200, {"Cache-Control": "max-age=10", "Age": 4}, F(6, age=4)),
])
def test_from_response_status_rules(status, headers, expected):
    assert Freshness.from_response(status, headers) == expected


def test_from_response_heuristic_applies_to_heuristically_cacheable_statuses_only():
    assert Freshness.from_response(200, {}, heuristic=30) == F(30)
    assert Freshness.from_response(404, {}, heuristic=5) == F(5, negative=True)
    assert Freshness.from_response(201, {}, heuristic=30) == F(0)
    assert Freshness.from_response(200, {"Cache-Control": "max-age=3"}, heuristic=30) == F(3)


@pytest.mark.parametrize("status,error", [
    ("200", TypeError), (200.0, TypeError), (True, TypeError),
    (99, InvalidFreshness), (600, InvalidFreshness),
])
def test_from_response_bad_status(status, error):
    with pytest.raises(error):
        Freshness.from_response(status, {})


def test_constructor_and_properties():
    f = Freshness(1.5, 2, 3, must_revalidate=True, age=0.25, negative=True)
    assert (f.max_age, f.stale_while_revalidate, f.stale_if_error, f.age) == (1.5, 2, 3, 0.25)
    assert (f.max_age_ns, f.age_ns) == (1_500_000_000, 250_000_000)
    assert f.must_revalidate and f.negative
    assert f == Freshness(1.5, 2, 3, must_revalidate=True, age=0.25, negative=True)
    assert hash(f) == hash(Freshness(1.5, 2, 3, must_revalidate=True, age=0.25,
                                     negative=True))
    assert f != Freshness(1.5, 2, 3)
    assert repr(Freshness(60, 30)) == "Freshness(60.0, 30.0, 0.0)"
    import pickle
    assert pickle.loads(pickle.dumps(f)) == f


@pytest.mark.parametrize("kwargs,error", [
    ({"max_age": -1}, InvalidFreshness),
    ({"max_age": math.nan}, InvalidFreshness),
    ({"max_age": math.inf}, InvalidFreshness),
    ({"max_age": 1e10}, InvalidFreshness),
    ({"max_age": "60"}, TypeError),
    ({"max_age": None}, TypeError),
    ({"max_age": 1, "stale_while_revalidate": -0.5}, InvalidFreshness),
    ({"max_age": 1, "stale_if_error": math.nan}, InvalidFreshness),
    ({"max_age": 1, "age": -1}, InvalidFreshness),
])
def test_bad_freshness_raises(kwargs, error):
    with pytest.raises(error):
        Freshness(**kwargs)


def test_bad_numeric_age_and_header_type_raise():
    with pytest.raises(InvalidFreshness):
        Freshness.from_cache_control("max-age=60", age=-1)
    with pytest.raises(TypeError):
        Freshness.from_cache_control(60)


# -- delta-seconds past every limit (RFC 9111 1.2.2) and non-ASCII digits --------------------

# A delta-seconds above 2**31 counts as 2**31 s, and every span is capped at 2**59 ns, so any
# value from floor(2**59 / 1e9) = 576,460,752 s up is that many whole seconds.
CAP_S = 576_460_752
CAP_NS = CAP_S * 10**9
DIRECTIVES = ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error")


def expected_seconds(digits):
    """Seconds a string of ASCII digits stands for, by the rule above (no int() past 4000)."""
    significant = digits.lstrip("0")
    return CAP_S if len(significant) > 4000 else min(int(significant or "0"), CAP_S)


@pytest.mark.parametrize("digits", [
    "2147483648", "2147483647", "576460753", "9" * 4300, "9" * 4301, "1" + "0" * 5000,
    "9" * 100_000,
], ids=lambda d: f"{len(d)} digits" if len(d) > 12 else d)
def test_huge_delta_seconds_count_as_2_to_31_then_the_cap(digits):
    assert Freshness.from_cache_control(f"max-age={digits}").max_age_ns == CAP_NS
    assert Freshness.from_cache_control(f's-maxage="{digits}"').max_age_ns == CAP_NS
    f = Freshness.from_cache_control(
        f"max-age=1, stale-while-revalidate={digits}, stale-if-error={digits}")
    assert (f.max_age_ns, f.stale_while_revalidate_ns, f.stale_if_error_ns) == (
        10**9, CAP_NS, CAP_NS)
    # as an Age: older than any lifetime, so stale at once; the age itself is capped
    f = Freshness.from_cache_control("max-age=60, stale-if-error=60", age=digits)
    assert (f.max_age_ns, f.stale_if_error_ns, f.age_ns) == (0, 0, CAP_NS)
    f = Freshness.from_response(200, {"Cache-Control": "max-age=60", "Age": digits})
    assert (f.max_age_ns, f.age_ns) == (0, CAP_NS)


def test_leading_zeros_are_not_digits_to_convert():
    assert Freshness.from_cache_control("max-age=" + "0" * 5000 + "60") == F(60)
    assert Freshness.from_cache_control("max-age=" + "0" * 5000) == F(0)
    assert Freshness.from_cache_control("max-age=576460751").max_age_ns == 576_460_751 * 10**9


NON_ASCII_DIGITS = [
    "\u0666\u0660",              # Arabic-Indic 60
    "\u06f6\u06f0",              # Extended Arabic-Indic 60
    "\u096c\u0966",              # Devanagari 60
    "\uff16\uff10",              # fullwidth 60
    "6\u0660",                   # mixed ASCII and Arabic-Indic
    "\u2076\u2070",              # superscript 60: isdigit() but not int()
    "\U0001d7fc\U0001d7f2",      # mathematical monospace 60
]


@pytest.mark.parametrize("value", NON_ASCII_DIGITS, ids=ascii)
def test_non_ascii_digits_are_not_delta_seconds(value):
    # as any malformed value: an invalid lifetime or Age is stale at once, an invalid stale
    # window is no window
    assert Freshness.from_cache_control(f"max-age={value}") == F(0)
    assert Freshness.from_cache_control(f's-maxage="{value}"') == F(0)
    assert Freshness.from_cache_control(
        f"max-age=60, stale-while-revalidate={value}, stale-if-error={value}") == F(60)
    assert Freshness.from_cache_control("max-age=60, stale-if-error=60", age=value) == F(
        0, 0, 60)
    assert Freshness.from_response(200, {"cache-control": "max-age=60", "age": value}) == F(0)


DIGIT_STRINGS = (
    st.text(alphabet="0123456789", min_size=1, max_size=24)
    | st.tuples(st.text(alphabet="0123456789", max_size=6), st.integers(4290, 6000)).map(
        lambda t: t[0] + "7" * t[1]))
HEADER_VALUES = (
    DIGIT_STRINGS
    | st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=8)
    | st.text(max_size=40))


@given(directive=st.sampled_from(DIRECTIVES), value=HEADER_VALUES, age=HEADER_VALUES,
       quoted=st.booleans(), shared=st.booleans())
def test_any_directive_value_or_age_never_raises(directive, value, age, quoted, shared):
    header = f'{directive}="{value}"' if quoted else f"{directive}={value}"
    for f in (Freshness.from_cache_control(header, age=age, shared=shared),
              Freshness.from_response(200, {"cache-control": header, "age": age},
                                      shared=shared),
              Freshness.from_response(404, [("Cache-Control", header.encode("utf-8")),
                                            ("AGE", age)], shared=shared)):
        if f is None:               # the value itself held a "no-store" or "private"
            continue
        assert isinstance(f, Freshness)
        for span in (f.max_age_ns, f.stale_while_revalidate_ns, f.stale_if_error_ns, f.age_ns):
            assert 0 <= span <= 2**59


@given(digits=DIGIT_STRINGS)
def test_ascii_delta_seconds_read_exactly_up_to_the_cap(digits):
    seconds = expected_seconds(digits)
    assert Freshness.from_cache_control(f"max-age={digits}").max_age_ns == seconds * 10**9
    f = Freshness.from_cache_control(f"max-age={CAP_S}", age=digits)
    assert (f.max_age_ns, f.age_ns) == ((CAP_S - seconds) * 10**9, seconds * 10**9)
