"""RateLimitMiddleware behind a real uvicorn server on a loopback port, driven by httpx, with
a ManualClock in the limiter so every admission is hand-computed; plus ASGI-level cases
(WebSocket handshakes, errors) that call the middleware with fake receive/send."""

import asyncio
import math
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from asgi_fixtures import Endpoint, call, http_scope, running, serving, ws_scope  # noqa: E402
from redis_fixtures import async_token_bucket, prefix, redis_server  # noqa: E402,F401

import fastcore  # noqa: E402
from fastcore import (  # noqa: E402
    CostExceedsBurst, CostExceedsLimit, InvalidCost, KeyedTokenBucket, ManualClock,
    SlidingWindow, SlidingWindowCounter, TokenBucket,
)
from fastcore.asgi import RateLimitMiddleware, client_host, header_key  # noqa: E402


def rate(response):
    return response.headers.get("ratelimit")


# -- against the real server ---------------------------------------------------------------


def test_burst_then_429_with_exact_retry_after_and_headers(clock):
    # 0.4 tokens/s (T = 2.5 s), burst 2 (tau = 5 s): two admitted, then denied for 2.5 s.
    limiter = KeyedTokenBucket(0.4, 2, clock=clock)
    app = Endpoint()
    with running(RateLimitMiddleware(app, limiter, policy="api")) as client:
        first, second, third = (client.get("/v1/chat") for _ in range(3))
        assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
        assert first.text == "GET" and first.headers["x-app"] == "1"
        assert rate(first) == '"api";r=1;t=3'          # reset_after 2.5 s, rounded up
        assert rate(second) == '"api";r=0;t=5'
        assert first.headers["ratelimit-policy"] == '"api";q=2;w=5'
        assert "retry-after" not in first.headers
        # Denied: retry_after = tat + T - tau - now = 5 + 2.5 - 5 = 2.5 s -> 3 (rounded up).
        assert limiter.peek("127.0.0.1").retry_after == 2.5
        assert third.headers["retry-after"] == "3"
        assert rate(third) == '"api";r=0;t=3'
        assert third.headers["ratelimit-policy"] == '"api";q=2;w=5'
        assert third.headers["content-type"] == "application/problem+json"
        problem = third.json()
        assert problem["status"] == 429 and problem["violated-policies"] == ["api"]
        assert problem["type"].endswith("#quota-exceeded")
        assert app.served == 2                          # the denied request never reached it
        clock.advance(2.4)                              # 0.1 s short: still denied
        early = client.get("/")
        assert early.status_code == 429 and early.headers["retry-after"] == "1"
        clock.advance(0.1)                              # exactly at retry_after: admitted
        assert client.get("/").status_code == 200
        assert app.served == 3


def test_retry_after_is_the_ceiling_of_the_limiters_retry_after(clock):
    limiter = KeyedTokenBucket(3, 3, clock=clock)      # T = 333,333,334 ns
    twin = KeyedTokenBucket(3, 3, clock=clock)          # the same decisions, asked directly
    with running(RateLimitMiddleware(Endpoint(), limiter)) as client:
        for step in (0.0, 0.01, 0.3, 0.05, 1.0, 0.2):
            clock.advance(step)
            response = client.get("/")
            want = twin.acquire("127.0.0.1")
            assert (response.status_code == 200) == want.allowed
            if not want.allowed:
                assert response.headers["retry-after"] == str(math.ceil(want.retry_after))
            else:
                assert rate(response) == (f'"default";r={want.remaining};'
                                          f't={math.ceil(want.reset_after)}')


def test_api_keys_are_isolated_and_cost_callable(clock):
    limiter = KeyedTokenBucket(1, 3, clock=clock)
    cost = lambda scope: 2 if scope["method"] == "POST" else 1  # noqa: E731
    app = Endpoint()
    middleware = RateLimitMiddleware(app, limiter, key=header_key("X-Api-Key"), cost=cost)
    with running(middleware) as client:
        alice, bob = {"x-api-key": "alice"}, {"x-api-key": "bob"}
        assert rate(client.post("/", headers=alice)) == '"default";r=1;t=2'
        assert rate(client.get("/", headers=alice)) == '"default";r=0;t=3'
        denied = client.get("/", headers=alice)
        assert denied.status_code == 429 and denied.headers["retry-after"] == "1"
        # A POST costs 2: denied while 1 token would do for a GET.
        clock.advance(1.0)
        assert client.post("/", headers=alice).status_code == 429
        assert client.get("/", headers=alice).status_code == 200
        # bob's budget is his own, and a request without the header falls back to the host.
        assert rate(client.get("/", headers=bob)) == '"default";r=2;t=1'
        assert client.get("/").status_code == 200
    assert "x-api-key:alice" in limiter and "x-api-key:bob" in limiter
    assert "127.0.0.1" in limiter
    assert app.served == 5


def test_lifespan_passes_through_untouched(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    app = Endpoint()
    with running(RateLimitMiddleware(app, limiter)) as client:
        assert app.lifespan == ["lifespan.startup"]
        assert len(limiter) == 0                        # startup took nothing
        client.get("/")
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]
    assert len(limiter) == 1


def test_exempt_paths_and_none_keys_are_not_limited(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    internal = lambda scope: None if scope["path"].startswith("/internal/") else "all"  # noqa
    app = Endpoint()
    middleware = RateLimitMiddleware(app, limiter, key=internal, exempt={"/healthz"})
    with running(middleware) as client:
        assert client.get("/a").status_code == 200
        assert client.get("/a").status_code == 429
        for _ in range(3):
            health = client.get("/healthz")
            assert health.status_code == 200 and "ratelimit" not in health.headers
            assert client.get("/internal/x").status_code == 200
    assert app.served == 7 and len(limiter) == 1


def test_key_errors_answer_500_and_decide_nothing(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)

    def key(scope):
        if scope["path"] == "/raise":
            raise RuntimeError("no tenant in token")
        if scope["path"] == "/list":
            return ["unhashable"]
        return "tenant"

    app = Endpoint()
    with running(RateLimitMiddleware(app, limiter, key=key)) as client:
        assert client.get("/raise").status_code == 500
        assert client.get("/list").status_code == 500
        assert len(limiter) == 0 and app.served == 0
        assert client.get("/ok").status_code == 200     # the server is still serving


def test_head_denial_has_no_body(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    with running(RateLimitMiddleware(Endpoint(), limiter)) as client:
        assert client.head("/").status_code == 200
        denied = client.head("/")
        assert denied.status_code == 429 and denied.content == b""
        assert denied.headers["retry-after"] == "1"


def test_headers_false_sends_only_retry_after(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    with running(RateLimitMiddleware(Endpoint(), limiter, headers=False)) as client:
        admitted, denied = client.get("/"), client.get("/")
        assert "ratelimit" not in admitted.headers and "ratelimit-policy" not in admitted.headers
        assert denied.status_code == 429 and denied.headers["retry-after"] == "1"
        assert "ratelimit" not in denied.headers


def test_a_flood_of_unique_keys_stays_within_max_keys(clock):
    limiter = KeyedTokenBucket(0.001, 1, max_keys=16, clock=clock)   # every key stays live
    app = Endpoint()
    middleware = RateLimitMiddleware(app, limiter, key=header_key("x-api-key"))
    with running(middleware) as client:
        statuses = [client.get("/", headers={"x-api-key": f"agent-{i}"}).status_code
                    for i in range(120)]
    assert statuses == [200] * 120              # on_full="evict": new keys evict the oldest
    assert len(limiter) == 16 and limiter.evictions == 104
    # Full and evicting (the first eviction sizes the table's list of parked keys once).
    full = limiter.memory_bytes()
    # The same through the ASGI interface directly, 20,000 more keys: the bound holds.
    async def flood():
        for i in range(20_000):
            await call(middleware, http_scope(headers=[(b"x-api-key", b"%d" % i)]))

    asyncio.run(flood())
    assert len(limiter) == 16 and limiter.memory_bytes() == full


def test_sliding_window_limiter_policy(clock):
    limiter = SlidingWindowCounter(2, 10.0, clock=clock)
    with running(RateLimitMiddleware(Endpoint(), limiter)) as client:
        first = client.get("/")
        assert first.headers["ratelimit-policy"] == '"default";q=2;w=10'
        assert rate(first).startswith('"default";r=1;')
        client.get("/")
        assert client.get("/").status_code == 429


def test_async_redis_limiter_through_the_middleware(redis_server, prefix):
    async def scenario():
        clock = ManualClock(1000.0)
        local = KeyedTokenBucket(0.4, 2, clock=clock)
        app = Endpoint()
        async with async_token_bucket(redis_server, 0.4, 2, prefix=prefix,
                                      clock=clock) as limiter:
            middleware = RateLimitMiddleware(app, limiter, key=header_key("x-api-key"))
            async with serving(middleware) as http:
                for step, who in ((0, "a"), (0, "a"), (0, "a"), (0, "b"), (2.4, "a"),
                                  (0.1, "a"), (0.5, "b")):
                    clock.advance(step)
                    response = await http.get("/", headers={"x-api-key": who})
                    want = local.acquire(who)
                    assert (response.status_code == 200) == want.allowed
                    if want.allowed:
                        assert rate(response) == (f'"default";r={want.remaining};'
                                                  f't={math.ceil(want.reset_after)}')
                    else:
                        assert response.headers["retry-after"] == str(
                            math.ceil(want.retry_after))
                    assert response.headers["ratelimit-policy"] == '"default";q=2;w=5'
        assert limiter.status()["errors"] == 0
        return app.served

    assert asyncio.run(scenario()) == 5


def handshake(port):
    """The response head to a WebSocket upgrade request on a raw loopback connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {head!r}"
            head += chunk
    return head.split(b"\r\n\r\n")[0].decode("latin-1").lower()


def test_websocket_handshake_over_the_server(clock):
    pytest.importorskip("websockets")           # uvicorn serves WebSockets through it
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    app = Endpoint()
    with running(RateLimitMiddleware(app, limiter)) as client:
        accepted, denied = handshake(client.base_url.port), handshake(client.base_url.port)
    assert accepted.startswith("http/1.1 101")
    assert 'ratelimit: "default";r=0;t=1' in accepted
    assert denied.startswith("http/1.1 429")
    assert "retry-after: 1" in denied and "content-type: application/problem+json" in denied
    assert app.served == 1


def test_sync_redis_limiter_is_refused(redis_server, prefix):
    from fastcore.redis import RedisTokenBucket

    with redis_server.client() as client:
        limiter = RedisTokenBucket(client, 1, 1, prefix=prefix)
        with pytest.raises(TypeError, match="block the event loop"):
            RateLimitMiddleware(Endpoint(), limiter)
        limiter.close()


# -- at the ASGI interface -----------------------------------------------------------------


CONNECT = ({"type": "websocket.connect"},)


def test_websocket_handshake_is_limited(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    app = Endpoint()
    middleware = RateLimitMiddleware(app, limiter)
    accepted = asyncio.run(call(middleware, ws_scope(), CONNECT))
    assert accepted[0]["type"] == "websocket.accept"
    assert accepted[0]["headers"] == [(b"x-app", b"1"), (b"ratelimit", b'"default";r=0;t=1'),
                                      (b"ratelimit-policy", b'"default";q=1;w=1')]
    # Denied, the server offering the denial-response extension: a real 429.
    denied = asyncio.run(call(middleware, ws_scope({"websocket.http.response": {}}), CONNECT))
    assert [m["type"] for m in denied] == ["websocket.http.response.start",
                                           "websocket.http.response.body"]
    assert denied[0]["status"] == 429 and (b"retry-after", b"1") in denied[0]["headers"]
    # Without the extension: closed before accept (the server answers 403).
    closed = asyncio.run(call(middleware, ws_scope(), CONNECT))
    assert closed == [{"type": "websocket.close", "code": 1008, "reason": "rate limit exceeded"}]
    assert app.served == 1


def test_lifespan_and_other_scopes_never_touch_the_limiter(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    app = Endpoint()
    middleware = RateLimitMiddleware(app, limiter)
    sent = asyncio.run(call(middleware, {"type": "lifespan"},
                            ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert len(limiter) == 0


def test_an_unkeyed_token_bucket_is_one_budget_for_the_app(clock):
    bucket = TokenBucket(1, 2, clock=clock)
    middleware = RateLimitMiddleware(Endpoint(), bucket)
    statuses = [asyncio.run(call(middleware, http_scope(client=(host, 1))))[0]["status"]
                for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3")]
    assert statuses == [200, 200, 429]


def test_key_errors_propagate_with_a_clear_message(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    unhashable = RateLimitMiddleware(Endpoint(), limiter, key=lambda scope: {"a": 1})
    with pytest.raises(TypeError, match=r"refused the key \(dict\)") as caught:
        asyncio.run(call(unhashable, http_scope()))
    assert "unhashable" in str(caught.value.__cause__)

    def broken(scope):
        raise KeyError("tenant")

    with pytest.raises(KeyError):
        asyncio.run(call(RateLimitMiddleware(Endpoint(), limiter, key=broken), http_scope()))
    with pytest.raises(LookupError, match="no client address"):
        asyncio.run(call(RateLimitMiddleware(Endpoint(), limiter), http_scope(client=None)))
    assert len(limiter) == 0


def test_header_key():
    key = header_key("X-Api-Key")
    assert key(http_scope(headers=[(b"x-api-key", b"k1"), (b"x-api-key", b"k2")])) == \
        "x-api-key:k1"
    assert key(http_scope()) == "10.0.0.1"
    assert header_key("x-api-key", fallback=None)(http_scope()) is None
    assert client_host(http_scope(client=("::1", 1))) == "::1"
    with pytest.raises(TypeError):
        header_key("")


def test_constructor_validates(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)
    with pytest.raises(TypeError, match="acquire"):
        RateLimitMiddleware(Endpoint(), object())
    with pytest.raises(TypeError, match="cost"):
        RateLimitMiddleware(Endpoint(), limiter, cost="1")
    with pytest.raises(TypeError, match="cost"):
        RateLimitMiddleware(Endpoint(), limiter, cost=True)
    with pytest.raises(TypeError, match="key"):
        RateLimitMiddleware(Endpoint(), limiter, key="x-api-key")
    with pytest.raises(TypeError, match="exempt"):
        RateLimitMiddleware(Endpoint(), limiter, exempt="/healthz")
    with pytest.raises(ValueError, match="policy"):
        RateLimitMiddleware(Endpoint(), limiter, policy="caf\u00e9")
    quoted = RateLimitMiddleware(Endpoint(), limiter, policy='a"b\\c')
    sent = asyncio.run(call(quoted, http_scope()))
    assert (b"ratelimit", b'"a\\"b\\\\c";r=0;t=1') in sent[0]["headers"]


@pytest.mark.parametrize("cost, error", [
    (-1, InvalidCost), (float("nan"), InvalidCost), (float("inf"), InvalidCost),
    (3, CostExceedsBurst), ("1", TypeError), (True, TypeError), (None, TypeError),
])
def test_a_constant_cost_is_checked_at_construction(clock, cost, error):
    with pytest.raises(error, match="cost"):
        RateLimitMiddleware(Endpoint(), KeyedTokenBucket(1, 2, clock=clock), cost=cost)
    with pytest.raises(error, match="cost"):
        fastcore.rate_limited(KeyedTokenBucket(1, 2, clock=clock), cost=cost)
    if error is CostExceedsBurst:
        with pytest.raises(CostExceedsLimit, match="cost"):
            RateLimitMiddleware(Endpoint(), SlidingWindow(2, 1.0, clock=clock), cost=cost)
    RateLimitMiddleware(Endpoint(), KeyedTokenBucket(1, 2, clock=clock), cost=2)   # fits
