"""Pure-ASGI rate limiting: ``RateLimitMiddleware`` in front of any ASGI application.

Operations:

- ``RateLimitMiddleware(app, limiter, *, key=client_host, cost=1, exempt=(),
  policy="default", headers=True)``: an ASGI application that takes ``cost`` from ``key``'s
  budget before each HTTP request or WebSocket handshake reaches ``app``.
- ``client_host(scope)``: the default key, the client's address as the server reports it.
- ``header_key(name, *, fallback=client_host)``: a key function reading a request header
  (an API key), falling back to another key function when the header is absent.

Decisions (the README's "ASGI middleware and decorators" section says the same for users):

- No framework: the middleware reads the ASGI scope and wraps ``send``, so it runs under any
  ASGI server and in front of any framework. It keeps no per-client state of its own; memory
  is the limiter's, bounded by its ``max_keys``.
- ``lifespan`` (and any scope type other than ``http`` and ``websocket``) passes through
  untouched: startup and shutdown are not requests.
- A WebSocket is limited once, at its handshake, with the same key and cost; messages on an
  accepted socket are not. A denied handshake gets the same 429 response as HTTP when the
  server offers the ASGI ``websocket.http.response`` extension (uvicorn does), else a
  ``websocket.close`` before accepting, which the server turns into a 403.
- A denial is ``429 Too Many Requests`` with ``Retry-After`` in whole seconds, rounded up from
  the limiter's exact ``retry_after`` (RFC 9110 delay-seconds: rounding down would send the
  client back before it can be admitted), and an ``application/problem+json`` body of the
  ``quota-exceeded`` problem type from the IETF RateLimit header fields draft.
- Rate-limit headers follow draft-ietf-httpapi-ratelimit-headers-11, on admitted and denied
  responses alike: ``RateLimit-Policy: "<policy>";q=<quota>;w=<window s>`` (the burst and
  the seconds an empty bucket takes to refill, or a window limiter's limit and window) and
  ``RateLimit: "<policy>";r=<remaining>;t=<seconds>``. On an admitted request ``t`` is the
  time until the whole quota is back (``reset_after`` rounded up), so a client that spends
  no more than ``r`` within ``t`` seconds is never denied; on a denial ``r=0`` and ``t``
  equals ``Retry-After``, which the draft requires not to end before the effective window.
  No ``pk`` (partition key) parameter: the key is often a client address or an API key.
- The key function returning ``None`` lets the request through unlimited (an allow-list
  in one line). A key function that raises, and a key or cost the limiter refuses, raise
  out of the middleware: the server answers 500 and logs the traceback, and error-reporting
  middleware outside sees it. The middleware never turns a bug into a decision: admitting
  would open a bypass, and a 429 would tell a healthy client to back off and retry forever.
- Limiters: anything with ``acquire(key, cost) -> Decision``; an unkeyed ``TokenBucket`` is
  one budget for the whole application; ``fastcore.redis.asyncio`` limiters are awaited;
  the sync ``fastcore.redis`` limiters are refused with ``TypeError`` because each
  decision would block the event loop for a Redis round trip.
"""

import json
import math

from fastcore.ratelimit import cost_is_callable, limiter_acquire, refused_argument

__all__ = ["RateLimitMiddleware", "client_host", "header_key"]

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
NS_PER_S = 1_000_000_000


def client_host(scope):
    """The client's host as the server reports it (``scope["client"][0]``).

    Behind a reverse proxy this is the proxy's address unless the server rewrites it from
    trusted forwarding headers (uvicorn: ``--proxy-headers --forwarded-allow-ips=...``).
    Raises ``LookupError`` when the server reports no client (a Unix socket): every client
    would otherwise share one budget.
    """
    client = scope.get("client")
    if not client:
        raise LookupError(
            "the ASGI server reported no client address (scope['client'] is empty, as on a "
            "Unix socket): pass RateLimitMiddleware(key=...), e.g. header_key('x-api-key')")
    return client[0]


def header_key(name, *, fallback=client_host):
    """A key function: ``"<name>:<value>"`` of the request header ``name`` (an API key).

    The header name is prefixed so that a header value can never collide with a client
    address from ``fallback``. Without the header, the key is ``fallback(scope)``:
    ``client_host`` by default; ``fallback=None`` lets such requests through unlimited. Of a
    repeated header, the first occurrence counts. Values are decoded as Latin-1 (any bytes).

    Example::

        RateLimitMiddleware(app, limiter, key=header_key("x-api-key"))
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty header name, got {name!r}")
    wanted = name.lower().encode("latin-1")
    prefix = name.lower() + ":"
    if fallback is not None and not callable(fallback):
        raise TypeError(f"fallback must be a key function or None, got {fallback!r}")

    def key(scope):
        for header, value in scope["headers"]:
            if header == wanted:
                return prefix + value.decode("latin-1")
        return fallback(scope) if fallback is not None else None

    key.__qualname__ = f"header_key({name!r})"
    return key


def _ceil_seconds(ns):
    """Whole seconds, rounded up, of a non-negative duration in ns (exact integer math)."""
    return -(-ns // NS_PER_S)


def _sf_string(text):
    """``text`` as a Structured Field String (RFC 8941 section 3.3.3): printable ASCII,
    quoted, with ``"`` and ``\\`` escaped."""
    if not isinstance(text, str) or not all(" " <= ch <= "~" for ch in text):
        raise ValueError(f"policy must be printable ASCII text, got {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quota_window(limiter):
    """``(quota, window_s)`` for RateLimit-Policy, or None when the limiter does not say.

    A token bucket's quota is its burst and its window the time an empty bucket takes to
    fill (``tau``); a window limiter's are its limit and window. Both are whole numbers in
    the header: the quota rounded down and the window up (never advertise more than holds).
    """
    if hasattr(limiter, "tau_ns") and hasattr(limiter, "burst"):
        quota, window_ns = limiter.burst, limiter.tau_ns
    elif hasattr(limiter, "window_ns") and hasattr(limiter, "limit"):
        quota, window_ns = limiter.limit, limiter.window_ns
    else:
        return None
    return math.floor(quota), max(1, _ceil_seconds(int(window_ns)))


class RateLimitMiddleware:
    """ASGI middleware: admit each HTTP request and WebSocket handshake through ``limiter``.

    ``limiter``: an object with ``acquire(key, cost) -> Decision`` (``KeyedTokenBucket``,
    ``SlidingWindowCounter``, ``SlidingWindow``, a ``fastcore.redis.asyncio`` limiter), or a
    ``TokenBucket``: one budget for the whole application.
    ``key``: ``callable(scope) -> key``; default ``client_host``; ``None`` from it lets the
    request through unlimited. ``cost``: a number or ``callable(scope) -> number``; a number
    must be finite, >= 0 and within the limiter's burst/limit (checked here).
    ``exempt``: paths (exact ``scope["path"]`` matches) never limited, e.g. health checks.
    ``policy``: the policy name in the rate-limit headers. ``headers``: False sends only
    ``Retry-After`` on denials (no RateLimit fields, for services that keep their quotas
    private). Raises ``TypeError`` for a sync Redis limiter (it would block the event loop)
    or a bad argument. Denials, headers and error behaviour: see the module docstring.

    Example::

        limiter = fastcore.KeyedTokenBucket("100/minute", max_keys=100_000)
        app = RateLimitMiddleware(app, limiter, key=header_key("x-api-key"),
                                  exempt={"/healthz"})
    """

    def __init__(self, app, limiter, *, key=client_host, cost=1, exempt=(), policy="default",
                 headers=True):
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if not callable(key):
            raise TypeError(f"key must be a callable(scope), got {key!r}")
        if isinstance(exempt, str):
            raise TypeError("exempt must be a collection of paths, not one string")
        self.app = app
        self.limiter = limiter
        self.key = key
        self.cost = cost
        self.exempt = frozenset(exempt)
        self._acquire, self._awaits = limiter_acquire(limiter, event_loop=True)
        self._cost_is_callable = cost_is_callable(cost, limiter)
        self._policy = _sf_string(policy).encode("ascii")
        self._headers = bool(headers)
        quota_window = _quota_window(limiter)
        self._policy_header = None
        if headers and quota_window is not None:
            self._policy_header = (b"ratelimit-policy",
                                   b"%s;q=%d;w=%d" % (self._policy, *quota_window))
        self._problem = json.dumps({
            "type": QUOTA_EXCEEDED,
            "title": "Too Many Requests",
            "status": 429,
            "detail": "too many requests from this client: retry after the number of "
                      "seconds in Retry-After",
            "violated-policies": [policy],
        }).encode("ascii")

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        key = self.key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        cost = self.cost(scope) if self._cost_is_callable else self.cost
        try:
            decision = self._acquire(key, cost)
            if self._awaits:
                decision = await decision
        except TypeError as error:
            # Name what the key and cost functions returned (types only: a key may be an API
            # key, which must not reach the logs).
            raise refused_argument(error, key, cost, "RateLimitMiddleware") from error
        if not decision.allowed:
            await self._deny(scope, receive, send, decision)
            return
        if not self._headers:
            await self.app(scope, receive, send)
            return
        extra = self._rate_headers(decision.remaining, _ceil_seconds(decision.reset_after_ns))
        start = "http.response.start" if kind == "http" else "websocket.accept"

        async def send_with_headers(message):
            if message["type"] == start:
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _rate_headers(self, remaining, seconds):
        headers = [(b"ratelimit", b"%s;r=%d;t=%d" % (self._policy, remaining, seconds))]
        if self._policy_header is not None:
            headers.append(self._policy_header)
        return headers

    async def _deny(self, scope, receive, send, decision):
        retry_after = _ceil_seconds(decision.retry_after_ns)
        headers = [(b"retry-after", b"%d" % retry_after),
                   (b"content-type", b"application/problem+json"),
                   (b"content-length", b"%d" % len(self._problem))]
        if self._headers:
            headers += self._rate_headers(0, retry_after)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            body = b"" if scope["method"] == "HEAD" else self._problem
            await send({"type": "http.response.body", "body": body})
            return
        await receive()      # websocket.connect: the handshake the answer refers to
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": 429,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": self._problem})
        else:
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "rate limit exceeded"})
