"""LatencyMiddleware behind a real uvicorn server: the app moves the histogram's ManualClock
by a known number of nanoseconds, so every recorded duration is exact (values below 256 ns
sit in exact buckets at the default precision)."""

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from asgi_fixtures import Endpoint, call, http_scope, running, ws_scope  # noqa: E402

from fastcore import KeyedTokenBucket, LatencyHistogram, ManualClock  # noqa: E402
from fastcore.asgi import RateLimitMiddleware  # noqa: E402
from fastcore.latency import LatencyMiddleware  # noqa: E402


class Timed:
    """Takes 120 ns of the clock to start its response and 80 ns more to finish it; on
    /boom it raises after 50 ns."""

    def __init__(self, clock):
        self.clock = clock
        self.inner = Endpoint()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        self.clock.advance_ns(120 if scope["path"] != "/boom" else 50)
        if scope["path"] == "/boom":
            raise RuntimeError("backend exploded")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        self.clock.advance_ns(80)
        await send({"type": "http.response.body", "body": b"done"})


def test_durations_and_time_to_first_byte_are_recorded_exactly():
    clock = ManualClock(100.0)
    total = LatencyHistogram(clock=clock)
    first = LatencyHistogram(clock=clock)
    app = Timed(clock)
    with running(LatencyMiddleware(app, total, first_byte=first,
                                   exempt={"/healthz"})) as client:
        for _ in range(3):
            assert client.get("/v1/chat").text == "done"
        assert client.get("/boom").status_code == 500   # recorded too: it took 50 ns
        assert client.get("/healthz").status_code == 200
    assert total.count == 4 and first.count == 3
    assert total.percentiles([50, 100]) == {50: 200, 100: 200}
    assert total.min == 50 and total.max == 200
    assert first.min == first.max == 120
    assert app.inner.lifespan == ["lifespan.startup", "lifespan.shutdown"]


def test_outside_the_rate_limiter_the_429s_are_timed(clock):
    latency = LatencyHistogram(clock=clock)
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    app = LatencyMiddleware(RateLimitMiddleware(Endpoint(), limiter), latency)
    with running(app) as client:
        assert [client.get("/").status_code for _ in range(3)] == [200, 429, 429]
    assert latency.count == 3 and latency.max == 0      # the clock never moved


def test_websocket_and_lifespan_pass_through_untimed(clock):
    latency = LatencyHistogram(clock=clock)
    middleware = LatencyMiddleware(Endpoint(), latency)
    sent = asyncio.run(call(middleware, ws_scope(), ({"type": "websocket.connect"},)))
    assert sent[0]["type"] == "websocket.accept"
    asyncio.run(call(middleware, {"type": "lifespan"},
                     ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})))
    assert latency.count == 0
    asyncio.run(call(middleware, http_scope()))
    assert latency.count == 1


def test_constructor_validates(clock):
    latency = LatencyHistogram(clock=clock)
    with pytest.raises(TypeError, match="LatencyHistogram"):
        LatencyMiddleware(Endpoint(), None)
    with pytest.raises(TypeError, match="first_byte"):
        LatencyMiddleware(Endpoint(), latency, first_byte=object())
    with pytest.raises(ValueError, match="same clock"):
        LatencyMiddleware(Endpoint(), latency, first_byte=LatencyHistogram())
    with pytest.raises(TypeError, match="exempt"):
        LatencyMiddleware(Endpoint(), latency, exempt="/healthz")
