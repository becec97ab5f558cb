"""Pure-ASGI request latency: ``LatencyMiddleware`` records each request's duration into a
``LatencyHistogram``.

Operations:

- ``LatencyMiddleware(app, histogram, *, first_byte=None, exempt=())``: an ASGI application
  that times every HTTP request through ``app`` and records the nanoseconds into
  ``histogram`` (``LatencyHistogram.record``); ``first_byte``, when given, also gets the
  time until the response started (``http.response.start``).

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
"""

from fastcore._core.histogram import LatencyHistogram

__all__ = ["LatencyMiddleware"]


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
