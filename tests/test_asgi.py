"""RateLimitMiddleware behind a real uvicorn server on a loopback port, driven by httpx, with
a ManualClock in the limiter so every admission is hand-computed; plus ASGI-level cases
(WebSocket handshakes, errors) that call the middleware with fake receive/send."""

import asyncio
import hashlib
import math
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from asgi_fixtures import Endpoint, call, http_scope, running, serving, ws_scope  # noqa: E402
from redis_fixtures import async_token_bucket, prefix, redis_server  # noqa: E402,F401

import fastcore  # noqa: E402
from fastcore import (  # noqa: E402
    CostExceedsBurst, CostExceedsLimit, InvalidCost, KeyedTokenBucket, ManualClock,
    SlidingWindow, SlidingWindowCounter, TokenBucket,
)
from fastcore.asgi import (  # noqa: E402
    RateLimitMiddleware, bounded_key, client_host, header_key,
)


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
    with pytest.raises(ValueError, match="name must be an HTTP token"):
        header_key("")
    with pytest.raises(TypeError, match="fallback"):
        header_key("x-api-key", fallback="10.0.0.1")


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


# -- keys from client input ------------------------------------------------------------------


def sha256_hex(raw):
    return hashlib.sha256(raw).hexdigest()


def test_a_2000_byte_api_key_is_a_hashed_key_not_a_500(redis_server, prefix):
    # The reported case: header_key with a Redis limiter and a 2,000-byte header answered 500
    # (InvalidKey). Now the key is "x-api-key:sha256:<hex>" of the raw value, so the same
    # long key keeps its own budget and a different long key gets another.
    long_a, long_b = "a" * 2000, "a" * 1999 + "b"

    async def scenario():
        clock = ManualClock(1000.0)
        app = Endpoint()
        async with async_token_bucket(redis_server, 1, 2, prefix=prefix,
                                      clock=clock) as limiter:
            middleware = RateLimitMiddleware(app, limiter, key=header_key("x-api-key"))
            async with serving(middleware) as http:
                statuses = [(await http.get("/", headers={"x-api-key": value})).status_code
                            for value in (long_a, long_a, long_a, long_b)]
            with redis_server.client() as client:
                stored = sorted(client.keys(prefix + "*"))
        return statuses, stored, app.served

    statuses, stored, served = asyncio.run(scenario())
    assert statuses == [200, 200, 429, 200] and served == 3
    want = sorted(f"{prefix}tb:{{x-api-key:sha256:{sha256_hex(v.encode())}}}".encode()
                  for v in (long_a, long_b))
    assert stored == want


HOSTILE_VALUES = [
    b"",                                      # present but empty
    b"x" * 128, b"x" * 129,                   # the verbatim bound and one byte past it
    bytes(range(0x00, 0x20)) + b"\x7f",       # control characters
    bytes(range(0x80, 0x100)),                # not UTF-8
    b"caf\xc3\xa9",                           # UTF-8, not ASCII
    b"{" * 500, b"%" * 500, b"}{%",           # what the Redis key escaping expands
    b"with space", b"\ttab",
    b"sha256:" + b"0" * 64,                   # looks like a hashed key: hashed itself
    b"k" * 70_000,                            # far past any server's header limit
]


def expected_key(name, raw):
    """The documented key form, computed independently of fastcore."""
    visible = all(0x21 <= byte <= 0x7E for byte in raw)
    if len(raw) <= 128 and visible and not raw.startswith(b"sha256:"):
        return f"{name}:{raw.decode('ascii')}"
    return f"{name}:sha256:{sha256_hex(raw)}"


def test_any_header_value_is_a_bounded_key_for_local_and_redis_limiters(redis_server, prefix):
    key = header_key("X-Api-Key")
    keys = [key(http_scope(headers=[(b"x-api-key", raw)])) for raw in HOSTILE_VALUES]
    assert keys == [expected_key("x-api-key", raw) for raw in HOSTILE_VALUES]
    assert len(set(keys)) == len(keys)
    assert all(len(k) <= len("x-api-key:") + 136 and k.isascii() and k.isprintable()
               for k in keys)
    assert keys[1] == "x-api-key:" + "x" * 128 and keys[2].startswith("x-api-key:sha256:")
    # Every key is admitted by a local and by a Redis limiter: no request is a 500.
    local = KeyedTokenBucket(1, 1)
    headers = [[(b"x-api-key", raw)] for raw in HOSTILE_VALUES]

    async def scenario():
        async with async_token_bucket(redis_server, 0.001, 1, prefix=prefix) as remote:
            statuses = []
            for limiter in (local, remote):
                middleware = RateLimitMiddleware(Endpoint(), limiter, key=key)
                for h in headers:
                    statuses.append((await call(middleware, http_scope(headers=h)))[0]["status"])
            with redis_server.client() as client:
                stored = len(client.keys(prefix + "*"))
            return statuses, stored

    statuses, stored = asyncio.run(scenario())
    assert statuses == [200] * (2 * len(HOSTILE_VALUES))
    assert stored == len(HOSTILE_VALUES) and len(local) == len(HOSTILE_VALUES)


def test_bounded_key_and_client_host_forms():
    assert bounded_key("tenant", "acme-7") == "tenant:acme-7"
    assert bounded_key("tenant", b"acme-7") == "tenant:acme-7"
    assert bounded_key("tenant", "\u00e9") == "tenant:sha256:" + sha256_hex(b"\xc3\xa9")
    # A lone surrogate (from surrogateescape decoding) still makes a key.
    assert bounded_key("tenant", "\udcff") == \
        f"tenant:sha256:{sha256_hex(chr(0xDCFF).encode('utf-8', 'surrogatepass'))}"
    for host in ("127.0.0.1", "::1", "2001:db8::8a2e:370:7334", "fe80::1%eth0",
                 "::ffff:10.0.0.1", "testclient"):
        assert client_host(http_scope(client=(host, 1))) == host
    for host in ("x-api-key:alice", "10.0.0.1, 10.0.0.2", "a" * 300, "h\u00f6st",
                 "sha256:" + "0" * 64):
        assert client_host(http_scope(client=(host, 1))) == \
            f"client@sha256:{sha256_hex(host.encode())}"
    with pytest.raises(LookupError):
        client_host(http_scope(client=("", 1)))
    with pytest.raises(TypeError, match="client address of type bytes"):
        client_host(http_scope(client=(b"127.0.0.1", 1)))


@pytest.mark.parametrize("namespace, error", [
    ("", ValueError), ("x" * 65, ValueError), ("has space", ValueError),
    ("a:b", ValueError), ("a@b", ValueError), ("caf\u00e9", ValueError),
    ("fe80", ValueError), ("DEADBEEF", ValueError), (b"x-api-key", TypeError), (None, TypeError),
])
def test_bad_namespaces_and_header_names(namespace, error):
    with pytest.raises(error, match="name" if namespace is not None else "str"):
        header_key(namespace)
    with pytest.raises(error, match="namespace"):
        bounded_key(namespace, "v")


def test_bounded_key_bad_values():
    for value in (None, 5, ["v"], {"v": 1}):
        with pytest.raises(TypeError, match="value must be str or bytes"):
            bounded_key("tenant", value)


VALUES = st.one_of(
    st.binary(max_size=140),
    st.builds(lambda n: b"v" * n, st.integers(120, 135)),
    st.builds(lambda b: b"sha256:" + b, st.binary(max_size=70)),
    st.builds(lambda t: b"sha256:" + hashlib.sha256(t).hexdigest().encode(),
              st.binary(max_size=8)),
    st.sampled_from([b"::1", b"1", b":1", b"1::2", b"127.0.0.1"]),
)
SOURCES = st.one_of(
    st.tuples(st.just("header"), st.sampled_from(["x-api-key", "x", "g", "client", "a-1",
                                                  "sha256", "x-fe80"]), VALUES),
    st.tuples(st.just("address"), st.just(""), VALUES),
)


def key_of(source):
    kind, name, raw = source
    if kind == "header":
        return header_key(name, fallback=None)(http_scope(headers=[(name.encode(), raw)]))
    try:
        host = raw.decode("utf-8")
    except UnicodeDecodeError:
        host = raw.decode("latin-1")
    return client_host(http_scope(client=(host, 1))) if host else None


@given(st.lists(SOURCES, min_size=2, max_size=12))
def test_distinct_inputs_never_share_a_key(sources):
    """Header keys of every name and client addresses: equal keys only for equal inputs
    (an address is compared as the text the server would report)."""
    seen = {}
    for source in sources:
        key = key_of(source)
        if key is None:
            continue
        kind, name, raw = source
        identity = (kind, name, raw) if kind == "header" else (kind, key_identity(raw))
        assert seen.setdefault(key, identity) == identity
        assert len(key) <= 193 and key.isascii()


def key_identity(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


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
