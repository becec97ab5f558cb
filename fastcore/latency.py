"""Pure-ASGI request latency: ``LatencyMiddleware`` records each request's duration into a
``LatencyHistogram``.

Operations:

- ``LatencyMiddleware(app, histogram, *, first_byte=None, exempt=())``: an ASGI application
  that times every HTTP request through ``app`` and records the nanoseconds into
  ``histogram`` (``LatencyHistogram.record``); ``first_byte``, when given, also gets the
  time until the response started (``http.response.start``).
- ``exposition(entries, *, buckets=None, openmetrics=False, quantiles=None, window=None)``:
  one Prometheus / OpenMetrics text for several histograms (``LatencyHistogram.to_prometheus``
  is this with one entry).

Decisions:

- The duration runs from the call into the middleware until ``app`` returns: for a streamed
  response that is after its last body chunk, so it is the whole request as the server sees
  it. Streaming APIs (token-by-token LLM output) also care about when the answer starts, which
  is what ``first_byte`` records; it is a separate histogram because the two distributions
  answer different questions and must not be merged.
- A request whose app raises is recorded too (it took that long, and the client got a 500),
  as ``LatencyHistogram.time()`` does.
- Only ``http`` scopes: a WebSocket's duration is its connection's lifetime, which would
  drown the request latencies; ``lifespan`` and other scopes pass through untouched, as do
  ``exempt`` paths (health checks that would flatter the percentiles).
- Both histograms are read on ``histogram``'s clock, so ``first_byte`` must share it
  (``ValueError`` otherwise): a duration started on one clock and ended on another means
  nothing. A ``ManualClock`` in the histogram makes the recorded values exact in tests.
- Placed outside ``RateLimitMiddleware``, the histogram includes the 429s (cheap, and part of
  what clients see); inside, only admitted requests.
- The exported histogram is cumulative since the histogram's creation (``cumulative()``), not
  the ring's window: Prometheus reads any drop of ``_count`` or a bucket as a counter reset,
  so a window that rolls would break ``rate()`` and ``histogram_quantile()``. Windowed
  quantiles are opt-in and go out as a separate gauge family with a ``window`` label.
"""

import math
import operator
import re

import numpy as np

from fastcore._core.histogram import DEFAULT_BUCKETS, LatencyHistogram
from fastcore._units import as_real, seconds_to_ns, shown
from fastcore.errors import HistogramTypeError, HistogramValueError

__all__ = ["LatencyMiddleware", "exposition"]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_INT64_MAX = 2 ** 63 - 1


def exposition(entries, *, buckets=None, openmetrics=False, quantiles=None, window=None):
    """One text exposition of several histograms: Prometheus text format, or OpenMetrics
    (ending with a single ``# EOF``) when ``openmetrics`` is true.

    ``entries``: ``(name, histogram, labels)`` or ``(name, histogram, labels, help)`` tuples;
    ``labels`` a dict of str to str or None. Entries with the same ``name`` form one family
    under one ``# HELP`` / ``# TYPE ... histogram`` header, one sample set per label set.

    Each histogram goes out cumulative since its creation (``LatencyHistogram.cumulative()``):
    ``_bucket``, ``_sum`` and ``_count`` never decrease as the window rolls (``reset()`` is a
    counter reset). ``buckets`` are upper bounds in seconds (default prometheus_client's); a
    value counts toward a bound when its whole HdrHistogram bucket lies at or below it;
    ``+Inf`` and ``_count`` include overflowed values. ``_sum`` is an exact integer sum of ns
    kept as bucket midpoint times count (overflowed values at ``highest``, a lower bound),
    within the histogram's relative precision of the true sum, exported as seconds.

    ``quantiles`` (fractions in [0, 1], e.g. ``[0.5, 0.99]``) adds, per histogram, a gauge
    family ``<name without _seconds>_window_seconds`` with ``quantile`` and ``window``
    labels: the HdrHistogram quantiles of the last ``window`` seconds (None: the whole ring),
    NaN for an empty window. These are not cumulative and never share the histogram family.

    Label values are escaped (backslash, double quote, newline). Raises
    ``HistogramValueError`` for an invalid metric or label name (``le``, and with quantiles
    ``quantile`` and ``window``, are reserved), one label set twice in a family, differing
    help texts in a family, family names whose samples collide, a bad bucket list, quantile
    or window; ``HistogramTypeError`` for arguments of the wrong type. Nothing is read
    before every argument is checked.

    >>> print(exposition([("rpc_seconds", h1, {"svc": "a"}), ("rpc_seconds", h2, {"svc": "b"}),
    ...                   ("db_seconds", h3, None)], openmetrics=True))
    """
    families = _families(entries, quantiles is not None)
    bounds = _checked_buckets(buckets)
    wanted = _checked_quantiles(quantiles)
    _check_sample_names(families, wanted is not None)
    windows = {}
    if wanted is not None:
        # every window is read (and checked) before any histogram's totals
        for name, members in families.items():
            for _, hist, _ in members:
                windows[id(hist)] = _window_quantiles(hist, wanted, window)
    lines = []
    for name, members in families.items():
        help_text = _escape_help(_family_help(name, members), openmetrics)
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} histogram")
        for pairs, hist, _ in members:
            lines.extend(_histogram_lines(name, pairs, hist, bounds))
    if wanted is not None:
        for name, members in families.items():
            gauge = _window_name(name)
            lines.append(f"# HELP {gauge} Quantiles of {name} over a sliding window, "
                         f"seconds (not cumulative)")
            lines.append(f"# TYPE {gauge} gauge")
            for pairs, hist, _ in members:
                seconds, values = windows[id(hist)]
                for q, value in zip(wanted, values):
                    labels = ",".join(pairs + [f'quantile="{q!r}"', f'window="{seconds}"'])
                    lines.append(f"{gauge}{{{labels}}} {value}")
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _families(entries, reserve_quantile_labels):
    """{name: [(label pairs, histogram, help), ...]} in first-seen order, all checked."""
    if isinstance(entries, (str, bytes)) or not hasattr(entries, "__iter__"):
        raise HistogramTypeError(
            f"entries must be an iterable of (name, histogram, labels[, help]) tuples, "
            f"got {shown(entries)}")
    families = {}
    seen = set()
    for entry in entries:
        if not isinstance(entry, tuple) or len(entry) not in (3, 4):
            raise HistogramTypeError(
                f"each entry must be a (name, histogram, labels[, help]) tuple, got {shown(entry)}")
        name, hist, labels = entry[:3]
        help = entry[3] if len(entry) == 4 else ""
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise HistogramValueError(f"invalid Prometheus metric name {shown(name)}")
        if not isinstance(hist, LatencyHistogram):
            raise HistogramTypeError(
                f"{name}: the histogram must be a fastcore.LatencyHistogram, got {shown(hist)}")
        if not isinstance(help, str):
            raise HistogramTypeError(f"help must be a str, got {shown(help)}")
        pairs = _checked_labels(labels, reserve_quantile_labels)
        key = (name, frozenset(pairs))
        if key in seen:
            raise HistogramValueError(
                f"{name}: the label set {shown(labels)} appears twice in one family")
        seen.add(key)
        families.setdefault(name, []).append((pairs, hist, help))
    return families


def _family_help(name, members):
    texts = {help for _, _, help in members if help}
    if len(texts) > 1:
        raise HistogramValueError(f"{name}: one family needs one help text, got {sorted(texts)}")
    return texts.pop() if texts else ""


def _check_sample_names(families, with_windows):
    """Every family and sample name belongs to one family only (x_bucket of a histogram x
    cannot also be a family of its own)."""
    owner = {}
    for name, members in families.items():
        _family_help(name, members)
        names = [name, f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"]
        if with_windows:
            names.append(_window_name(name))
        for sample in names:
            if owner.setdefault(sample, name) != name:
                raise HistogramValueError(
                    f"metric names {owner[sample]!r} and {name!r} collide on {sample!r}")


def _window_name(name):
    return (name[:-len("_seconds")] if name.endswith("_seconds") else name) + "_window_seconds"


def _escape_label_value(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text, openmetrics):
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _checked_labels(labels, reserve_quantile_labels):
    if labels is None:
        return []
    if not isinstance(labels, dict):
        raise HistogramTypeError(f"labels must be a dict of str to str, got {shown(labels)}")
    reserved = ("le", "quantile", "window") if reserve_quantile_labels else ("le",)
    pairs = []
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            raise HistogramValueError(f"invalid Prometheus label name {shown(key)}")
        if key in reserved:
            raise HistogramValueError(f"label name {key!r} is reserved here")
        if not isinstance(value, str):
            raise HistogramTypeError(
                f"label {shown(key)} must have a str value, got {shown(value)}")
        pairs.append(f'{key}="{_escape_label_value(value)}"')
    return pairs


def _checked_buckets(buckets):
    """Bucket bounds as (seconds float, ns int) pairs, strictly increasing."""
    if buckets is None:
        buckets = DEFAULT_BUCKETS
    try:
        given = [as_real(bound) for bound in buckets]
    except TypeError:                       # not iterable
        given = [None]
    if any(number is None for number in given):
        raise HistogramTypeError(f"buckets must be numbers of seconds, got {shown(buckets)}")
    bounds = []
    for number in given:
        try:
            bound = float(number)
        except OverflowError:               # an int past the largest float
            bound = math.inf
        if not math.isfinite(bound) or bound <= 0.0:
            raise HistogramValueError(
                f"bucket bounds must be finite and > 0 seconds, got {shown(number)} "
                "(+Inf is implied)")
        bounds.append(bound)
    if any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise HistogramValueError(
            f"bucket bounds must be strictly increasing, got {shown(bounds)}")
    # a bound past int64 ns (292 years) lies above every bucket
    return [(bound, min(seconds_to_ns(bound, "bucket bound"), _INT64_MAX)) for bound in bounds]


def _checked_quantiles(quantiles):
    if quantiles is None:
        return None
    try:
        given = [as_real(q) for q in quantiles]
    except TypeError:
        given = [None]
    if not given or any(q is None for q in given):
        raise HistogramTypeError(
            f"quantiles must be a non-empty list of numbers in [0, 1], got {shown(quantiles)}")
    if any(not 0 <= q <= 1 for q in given):
        raise HistogramValueError(f"quantiles must lie in [0, 1], got {shown(quantiles)}")
    return [float(q) for q in given]


def _window_quantiles(hist, wanted, window):
    """(window label text, [value text per quantile]) over the last `window` seconds."""
    snap = hist.snapshot(window)            # raises HistogramValueError for a bad window
    window_ns = seconds_to_ns(hist.window if window is None else window, "window")
    seconds = (str(window_ns // 10 ** 9) if window_ns % 10 ** 9 == 0
               else repr(window_ns / 10 ** 9))
    if snap.count == 0:
        return seconds, ["NaN"] * len(wanted)
    values = snap.percentiles([q * 100 for q in wanted])
    return seconds, [repr(values[q * 100] / 10 ** 9) for q in wanted]


def _histogram_lines(name, pairs, hist, bounds):
    snap = hist.cumulative()
    upper, counts = snap.to_numpy()
    overflow = snap.overflow
    total = snap.count + overflow
    prefix = ",".join(pairs) + ("," if pairs else "")
    plain = "{" + ",".join(pairs) + "}" if pairs else ""
    running = np.cumsum(counts, dtype=np.uint64)        # cannot wrap: count fits in 64 bits
    lines = []
    for bound, bound_ns in bounds:
        # buckets whose every value is <= the bound: upper bounds increase strictly
        covered = int(np.searchsorted(upper, bound_ns, side="right"))
        cumulative = int(running[covered - 1]) if covered else 0
        lines.append(f'{name}_bucket{{{prefix}le="{bound!r}"}} {cumulative}')
    lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {total}')
    # bucket i covers [upper[i-1] + 1, upper[i]]; HdrHistogram's midpoint is low + width // 2
    nonzero = np.flatnonzero(counts)
    lows = np.where(nonzero > 0, upper[nonzero - 1] + 1, 0)
    mids = lows + (upper[nonzero] - lows + 1) // 2
    # exact: Python ints (a count times a midpoint can pass int64)
    sum_ns = sum(map(operator.mul, counts[nonzero].tolist(), mids.tolist()))
    sum_ns += overflow * hist.highest       # overflowed values: at least `highest`
    lines.append(f"{name}_sum{plain} {sum_ns / 10 ** 9!r}")
    lines.append(f"{name}_count{plain} {total}")
    return lines


class LatencyMiddleware:
    """ASGI middleware: record each HTTP request's duration (ns) into ``histogram``.

    ``histogram``: a ``LatencyHistogram``; ``first_byte``: None or a ``LatencyHistogram`` on
    the same clock, which records the time until the response starts; ``exempt``: paths
    (exact ``scope["path"]`` matches) not timed. Raises ``TypeError`` for a histogram of
    another type and ``ValueError`` for histograms on different clocks.

    Example::

        latency = fastcore.LatencyHistogram()
        app = LatencyMiddleware(app, latency, exempt={"/healthz"})
        latency.percentile(99.9, window=10)          # ns, the last 10 seconds
    """

    def __init__(self, app, histogram, *, first_byte=None, exempt=()):
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if not isinstance(histogram, LatencyHistogram):
            raise TypeError(f"histogram must be a fastcore.LatencyHistogram, got "
                            f"{type(histogram).__name__}")
        if first_byte is not None and not isinstance(first_byte, LatencyHistogram):
            raise TypeError(f"first_byte must be None or a fastcore.LatencyHistogram, got "
                            f"{type(first_byte).__name__}")
        if first_byte is not None and first_byte.clock is not histogram.clock:
            raise ValueError("first_byte must read the same clock as histogram: give both "
                             "the same clock= (or leave both at the default)")
        if isinstance(exempt, str):
            raise TypeError("exempt must be a collection of paths, not one string")
        self.app = app
        self.histogram = histogram
        self.first_byte = first_byte
        self.exempt = frozenset(exempt)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        clock = self.histogram.clock
        start_ns = clock.now_ns
        first_byte = self.first_byte
        if first_byte is not None:
            downstream = send

            async def send(message):
                if message["type"] == "http.response.start":
                    first_byte.record(clock.now_ns - start_ns)
                await downstream(message)
        try:
            await self.app(scope, receive, send)
        finally:
            self.histogram.record(clock.now_ns - start_ns)
