"""Pure-ASGI rate limiting: ``RateLimitMiddleware`` in front of any ASGI application.

Operations:

- ``RateLimitMiddleware(app, limiter, *, key=client_host, cost=1, exempt=(),
  policy="default", headers=True, on_deny=None)``: an ASGI application that takes ``cost``
  from ``key``'s budget before each HTTP request or WebSocket handshake reaches ``app``.
- ``client_host(scope)``: the default key, the client's address as the server reports it.
- ``header_key(name, *, fallback=client_host)``: a key function reading a request header
  (an API key), falling back to another key function when the header is absent.
- ``bounded_key(namespace, value)``: ``"<namespace>:<value>"`` for short printable values,
  ``"<namespace>:sha256:<hex>"`` for any other, so keys built from client input stay small
  and valid for every limiter.
- ``Denial``: what ``on_deny`` receives to build its own response.

Decisions (the README's "ASGI middleware and decorators" section says the same for users):

- No framework: the middleware reads the ASGI scope and wraps ``send``, so it runs under any
  ASGI server and in front of any framework. It keeps no per-client state of its own; memory
  is the limiter's, bounded by its ``max_keys``, and every key the shipped key functions
  build is at most about 200 bytes, whatever the client sends.
- ``lifespan`` (and any scope type other than ``http`` and ``websocket``) passes through
  untouched: startup and shutdown are not requests.
- A WebSocket is limited once, at its handshake, with the same key and cost; messages on an
  accepted socket are not. A denied handshake gets the same response as HTTP when the
  server offers the ASGI ``websocket.http.response`` extension (uvicorn does), else a
  ``websocket.close`` before accepting (1008, or 1013 "try again later" for a backend
  failure), which the server turns into a 403.
- What the middleware answers itself, never calling ``app`` (``reason`` in ``Denial``):

  * ``quota_exceeded``: 429 Too Many Requests, ``Retry-After`` in whole seconds rounded up
    from the limiter's exact ``retry_after`` (RFC 9110 delay-seconds: rounding down would
    send the client back before it can be admitted), and an ``application/problem+json``
    body of the draft's ``quota-exceeded`` problem type.
  * ``backend_unavailable``: 503 Service Unavailable when a distributed limiter could not
    decide and its ``on_error="fail_closed"`` denied (a ``DegradedDecision``): the client
    did nothing wrong, so a 429 (which says it did, and carried ``r=0``) would be a lie.
    ``Retry-After`` is the limiter's ``error_retry_after`` rounded up; the problem type is
    the draft's ``temporary-reduced-capacity`` (recommended status 503); no RateLimit
    fields, since no quota was consulted.
  * ``cost_exceeds_quota``: 413 Content Too Large when the cost function priced a request
    above the whole burst/limit (``CostExceedsBurst`` / ``CostExceedsLimit``). It can never
    be admitted, so 429 with a ``Retry-After`` would have a client retry forever; RFC 9110's
    413 says "this request is larger than the server will process" and, being permanent,
    carries no ``Retry-After``. ``RateLimit-Policy`` is sent, so the client learns the quota.
  * ``invalid_cost`` (``InvalidCost`` from a cost function: negative, NaN, infinite) and
    ``invalid_key`` (``InvalidKey``: a key the limiter refuses, such as a Redis key over
    1,024 bytes from a custom key function): 400 Bad Request. The shipped key functions
    never produce an invalid key.

  The problem types of the last three are ``tag:`` URIs of this package (RFC 4151; RFC 9457
  allows non-dereferenceable types): ``COST_EXCEEDS_QUOTA``, ``INVALID_COST``,
  ``INVALID_KEY``; ``on_deny`` can replace every response.
- Rate-limit headers follow draft-ietf-httpapi-ratelimit-headers-11, on admitted and denied
  responses alike: ``RateLimit-Policy: "<policy>";q=<quota>;w=<window s>`` (the burst and
  the seconds an empty bucket takes to refill, or a window limiter's limit and window) and
  ``RateLimit: "<policy>";r=<remaining>;t=<seconds>``. On an admitted request ``t`` is the
  time until the whole quota is back (``reset_after`` rounded up), so a client that spends
  no more than ``r`` within ``t`` seconds is never denied; on a denial ``r=0`` and ``t``
  equals ``Retry-After``, which the draft requires not to end before the effective window.
  No ``pk`` (partition key) parameter: the key is often a client address or an API key.
  They are sent only for decisions the limiter made: a ``DegradedDecision`` (``fail_open``
  admitting without counting, or the ``fallback`` limiter's local share) gets none, since
  ``r`` and ``t`` would describe no quota in force.
- The key function returning ``None`` lets the request through unlimited (an allow-list
  in one line). A key or cost function that raises, and a key or cost of the wrong type
  (an unhashable key, a cost that is not a number), raise out of the middleware: the
  server answers 500 and logs the traceback. Those are bugs in the application's functions,
  and the middleware never turns a bug into a decision: admitting would open a bypass, and
  a 429 would tell a healthy client to back off and retry forever. Values a client can
  steer (a key too long, a cost too high) are answered with the 4xx above instead.
- Keys from client input (``header_key``, ``client_host``, ``bounded_key``): a value of at
  most ``MAX_VERBATIM_BYTES`` (128) bytes of visible ASCII (0x21-0x7E) that does not start
  with ``sha256:`` is kept as it is; any other value (longer, with spaces, control
  characters, non-ASCII or non-UTF-8 bytes) becomes ``sha256:`` and the 64 hex digits of
  the SHA-256 of its raw bytes. The two forms cannot meet (a kept value never starts with
  ``sha256:``), and two hashed values meet only by a SHA-256 collision. Namespaces are HTTP
  tokens without ``@`` and with a character that is not a hex digit, so a header key can
  never read as an IPv6 address nor as a hashed address (``client@sha256:<hex>``).
- Limiters: anything with ``acquire(key, cost) -> Decision``; an unkeyed ``TokenBucket`` is
  one budget for the whole application; ``fastcore.redis.asyncio`` limiters are awaited;
  the sync ``fastcore.redis`` limiters are refused with ``TypeError`` because each
  decision would block the event loop for a Redis round trip. Local limiters' decisions
  cost one extra ``type(d) is Decision`` test, nothing more.
"""

import hashlib
import inspect
import json
import math
import re

from fastcore._core.decision import Decision
from fastcore.errors import CostExceedsBurst, CostExceedsLimit, InvalidCost, InvalidKey
from fastcore.ratelimit import (
    DegradedDecision, cost_is_callable, limiter_acquire, refused_argument,
)

__all__ = ["RateLimitMiddleware", "Denial", "client_host", "header_key", "bounded_key",
           "QUOTA_EXCEEDED", "TEMPORARY_REDUCED_CAPACITY", "COST_EXCEEDS_QUOTA",
           "INVALID_COST", "INVALID_KEY", "MAX_VERBATIM_BYTES"]

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
TEMPORARY_REDUCED_CAPACITY = \
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
COST_EXCEEDS_QUOTA = "tag:fastcore-edge,2026:cost-exceeds-quota"
INVALID_COST = "tag:fastcore-edge,2026:invalid-cost"
INVALID_KEY = "tag:fastcore-edge,2026:invalid-key"
NS_PER_S = 1_000_000_000

# -- keys from client input ------------------------------------------------------------------

MAX_VERBATIM_BYTES = 128
_HASHED = b"sha256:"
_VISIBLE_ASCII = bytes(range(0x21, 0x7F))
# An HTTP token (RFC 9110 tchar) of 1..64 characters; '@' is not a tchar.
_NAMESPACE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_HEX_ONLY = re.compile(r"[0-9A-Fa-f]+")
# What servers report as a client address: an IPv4 address or host name (no ':'), or an
# IPv6 address (hex digits, ':' and '.', an optional %zone). A key built on a namespace has
# a ':' after a part that is not all hex digits, so it matches neither.
_ADDRESS = re.compile(r"[A-Za-z0-9.-]{1,128}|[0-9A-Fa-f:.]{2,45}(?:%[A-Za-z0-9_.-]{1,64})?")
_ADDRESS_HASHED = "client@sha256:"


def _check_namespace(namespace, what):
    if not isinstance(namespace, str):
        raise TypeError(f"{what} must be str, got {type(namespace).__name__}")
    if not _NAMESPACE.fullmatch(namespace) or _HEX_ONLY.fullmatch(namespace):
        raise ValueError(
            f"{what} must be an HTTP token of 1 to 64 characters (letters, digits and "
            f"!#$%&'*+-.^_`|~) with at least one that is not a hex digit, got {namespace!r}")


def _verbatim_or_digest(raw):
    """``raw`` (bytes) as text when it is short visible ASCII not starting with ``sha256:``,
    else ``sha256:<64 hex digits>`` of it."""
    if (len(raw) <= MAX_VERBATIM_BYTES and not raw.translate(None, _VISIBLE_ASCII)
            and not raw.startswith(_HASHED)):
        return raw.decode("ascii")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def bounded_key(namespace, value):
    """A limiter key for a value a client controls: ``"<namespace>:<value>"`` when ``value``
    is at most 128 bytes of visible ASCII (0x21-0x7E) not starting with ``sha256:``, else
    ``"<namespace>:sha256:<64 hex digits>"``, the SHA-256 of its bytes (``str`` values are
    UTF-8 encoded, lone surrogates included). At most ``len(namespace) + 136`` characters,
    valid for the local and the Redis limiters; distinct values give distinct keys (barring
    a SHA-256 collision). ``namespace``: an HTTP token of 1-64 characters with a character
    that is not a hex digit (``ValueError`` otherwise; ``TypeError`` for a value that is
    not ``str`` or ``bytes``).

    Example::

        key=lambda scope: bounded_key("tenant", tenant_of(scope))   # e.g. from a JWT claim
    """
    _check_namespace(namespace, "namespace")
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise TypeError(f"value must be str or bytes, got {type(value).__name__}")
    return namespace + ":" + _verbatim_or_digest(raw)


def client_host(scope):
    """The client's host as the server reports it (``scope["client"][0]``).

    An IPv4 or IPv6 address (or a host name, as test clients report) is the key as it is;
    anything else (a forwarded value a client could have written, when the server trusts
    every proxy) becomes ``client@sha256:<hex>``, so it stays small and never collides
    with a ``header_key`` or ``bounded_key`` key.
    Behind a reverse proxy this is the proxy's address unless the server rewrites it from
    trusted forwarding headers (uvicorn: ``--proxy-headers --forwarded-allow-ips=...``).
    Raises ``LookupError`` when the server reports no client (a Unix socket): every client
    would otherwise share one budget.
    """
    client = scope.get("client")
    host = client[0] if client else None
    if not host:
        raise LookupError(
            "the ASGI server reported no client address (scope['client'] is empty, as on a "
            "Unix socket): pass RateLimitMiddleware(key=...), e.g. header_key('x-api-key')")
    if host.__class__ is str and _ADDRESS.fullmatch(host):
        return host
    if not isinstance(host, str):
        raise TypeError(f"the ASGI server reported a client address of type "
                        f"{type(host).__name__}, not str")
    return _ADDRESS_HASHED + hashlib.sha256(host.encode("utf-8", "surrogatepass")).hexdigest()


def header_key(name, *, fallback=client_host):
    """A key function: ``"<name>:<value>"`` of the request header ``name`` (an API key).

    The header name is prefixed so that a header value can never collide with a client
    address from ``fallback``. The value goes through ``bounded_key``'s rule: kept when it
    is at most 128 bytes of visible ASCII, else ``"<name>:sha256:<hex>"`` of its raw bytes
    (a 2,000-byte header, control characters or non-UTF-8 bytes make a valid, small key).
    Without the header, the key is ``fallback(scope)``: ``client_host`` by default;
    ``fallback=None`` lets such requests through unlimited. Of a repeated header, the first
    occurrence counts. ``name``: an HTTP token with a character that is not a hex digit
    (``ValueError`` otherwise).

    Example::

        RateLimitMiddleware(app, limiter, key=header_key("x-api-key"))
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a header name (str), got {type(name).__name__}")
    _check_namespace(name.lower(), "name")
    wanted = name.lower().encode("ascii")
    prefix = name.lower() + ":"
    if fallback is not None and not callable(fallback):
        raise TypeError(f"fallback must be a key function or None, got {fallback!r}")

    def key(scope):
        for header, value in scope["headers"]:
            if header == wanted:
                return prefix + _verbatim_or_digest(value)
        return fallback(scope) if fallback is not None else None

    key.__qualname__ = f"header_key({name!r})"
    return key


# -- responses ---------------------------------------------------------------------------------


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


class Denial:
    """A response the middleware answers instead of calling the app; what ``on_deny`` gets.

    ``reason``: ``"quota_exceeded"`` (429), ``"backend_unavailable"`` (503: the limiter's
    backend failed and ``on_error="fail_closed"`` denied), ``"cost_exceeds_quota"`` (413),
    ``"invalid_cost"`` or ``"invalid_key"`` (400). ``status``, ``headers`` (a list of
    ``(bytes, bytes)`` pairs, ``content-length`` excluded) and ``body`` (bytes): the default
    response. ``retry_after``: whole seconds in ``Retry-After``, or None. ``decision``: the
    limiter's ``Decision`` (None for invalid input). ``error``: the limiter's exception for
    invalid input, else None (its message never quotes the key). ``policy``: the policy name.
    """

    __slots__ = ("reason", "status", "headers", "body", "retry_after", "decision", "error",
                 "policy")

    def __init__(self, reason, status, headers, body, retry_after, decision, error, policy):
        self.reason = reason
        self.status = status
        self.headers = headers
        self.body = body
        self.retry_after = retry_after
        self.decision = decision
        self.error = error
        self.policy = policy

    def __repr__(self):
        return (f"Denial(reason={self.reason!r}, status={self.status}, "
                f"retry_after={self.retry_after!r})")


def _problem(type_, title, status, detail, policy=None):
    problem = {"type": type_, "title": title, "status": status, "detail": detail}
    if policy is not None:
        problem["violated-policies"] = [policy]
    return json.dumps(problem).encode("ascii")


def _header_bytes(text, what):
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        return text.encode("latin-1")
    raise TypeError(f"on_deny returned a header {what} of type {type(text).__name__}: "
                    f"use str or bytes")


def _custom_response(result):
    """``(status, headers, body)`` from ``on_deny``, checked; TypeError/ValueError naming
    what is wrong (the hook is application code: its bugs are 500s, like the key function's)."""
    if not isinstance(result, tuple) or len(result) != 3:
        raise TypeError(f"on_deny must return None or a (status, headers, body) tuple, got "
                        f"{type(result).__name__}")
    status, headers, body = result
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"on_deny returned status {status!r}: a denial must be an int "
                         f"4xx or 5xx status")
    pairs = []
    for pair in headers:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"on_deny returned a header that is not a (name, value) pair: "
                            f"{type(pair).__name__}")
        name = _header_bytes(pair[0], "name").lower()
        if name != b"content-length":       # the middleware counts the body itself
            pairs.append((name, _header_bytes(pair[1], "value")))
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"on_deny returned a body of type {type(body).__name__}: use bytes "
                        f"or str")
    return status, pairs, bytes(body)


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
    private). ``on_deny``: ``callable(scope, denial) -> None | (status, headers, body)``, or
    an ``async def``: called for every response the middleware answers itself (a
    ``Denial``: quota, backend failure, invalid input); None keeps the default response,
    a tuple replaces it (status 400-599; headers as ``(name, value)`` str or bytes pairs;
    body bytes or str; ``content-length`` is set by the middleware, and a HEAD response
    has no body). Raises ``TypeError`` for a sync Redis limiter (it would block the event
    loop) or a bad argument. Statuses, headers and errors: see the module docstring.

    Example::

        limiter = fastcore.KeyedTokenBucket("100/minute", max_keys=100_000)
        app = RateLimitMiddleware(app, limiter, key=header_key("x-api-key"),
                                  exempt={"/healthz"})
    """

    def __init__(self, app, limiter, *, key=client_host, cost=1, exempt=(), policy="default",
                 headers=True, on_deny=None):
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if not callable(key):
            raise TypeError(f"key must be a callable(scope), got {key!r}")
        if isinstance(exempt, str):
            raise TypeError("exempt must be a collection of paths, not one string")
        if on_deny is not None and not callable(on_deny):
            raise TypeError(f"on_deny must be a callable(scope, denial) or None, got "
                            f"{on_deny!r}")
        self._acquire, self._awaits = limiter_acquire(limiter, event_loop=True)
        self._cost_is_callable = cost_is_callable(cost, limiter)
        self.app = app
        self.limiter = limiter
        self.key = key
        self.cost = cost
        self.exempt = frozenset(exempt)
        self.on_deny = on_deny
        self._policy = _sf_string(policy).encode("ascii")
        self._policy_name = policy
        self._headers = bool(headers)
        quota_window = _quota_window(limiter)
        self._policy_header = None
        if headers and quota_window is not None:
            self._policy_header = (b"ratelimit-policy",
                                   b"%s;q=%d;w=%d" % (self._policy, *quota_window))
        quota = f" (q={quota_window[0]})" if quota_window is not None else ""
        self._bodies = {
            "quota_exceeded": _problem(
                QUOTA_EXCEEDED, "Too Many Requests", 429,
                "too many requests from this client: retry after the number of seconds in "
                "Retry-After", policy),
            "backend_unavailable": _problem(
                TEMPORARY_REDUCED_CAPACITY, "Service Unavailable", 503,
                "the rate limiter's backend is unavailable, so no request can be admitted "
                "now; this is not a quota denial: retry after the number of seconds in "
                "Retry-After"),
            "cost_exceeds_quota": _problem(
                COST_EXCEEDS_QUOTA, "Content Too Large", 413,
                f"this request costs more than the whole quota of the policy{quota}, so it "
                f"can never be admitted: send smaller requests", policy),
            "invalid_cost": _problem(
                INVALID_COST, "Bad Request", 400,
                "the cost computed for this request is not a finite number >= 0"),
            "invalid_key": _problem(
                INVALID_KEY, "Bad Request", 400,
                "the rate-limit key taken from this request is not valid for the limiter "
                "(too long, or not valid text)"),
        }

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
        except (InvalidKey, InvalidCost, CostExceedsBurst, CostExceedsLimit) as error:
            await self._deny(scope, receive, send, self._invalid(error))
            return
        except TypeError as error:
            # Name what the key and cost functions returned (types only: a key may be an API
            # key, which must not reach the logs).
            raise refused_argument(error, key, cost, "RateLimitMiddleware") from error
        rate_headers = self._headers
        if decision.__class__ is not Decision and isinstance(decision, DegradedDecision):
            if decision.on_error == "fail_closed":
                await self._deny(scope, receive, send, self._backend_unavailable(decision))
                return
            rate_headers = False        # fail_open or the fallback: no quota of ours spoke
        if not decision.allowed:
            await self._deny(scope, receive, send, self._quota_exceeded(decision, rate_headers))
            return
        if not rate_headers:
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

    def _denial(self, reason, status, retry_after, decision, error, extra=()):
        headers = [] if retry_after is None else [(b"retry-after", b"%d" % retry_after)]
        headers.append((b"content-type", b"application/problem+json"))
        headers += extra
        return Denial(reason, status, headers, self._bodies[reason], retry_after, decision,
                      error, self._policy_name)

    def _quota_exceeded(self, decision, rate_headers):
        retry_after = _ceil_seconds(decision.retry_after_ns)
        extra = self._rate_headers(0, retry_after) if rate_headers else ()
        return self._denial("quota_exceeded", 429, retry_after, decision, None, extra)

    def _backend_unavailable(self, decision):
        return self._denial("backend_unavailable", 503, _ceil_seconds(decision.retry_after_ns),
                            decision, None)

    def _invalid(self, error):
        if isinstance(error, (CostExceedsBurst, CostExceedsLimit)):
            extra = [self._policy_header] if self._policy_header is not None else ()
            return self._denial("cost_exceeds_quota", 413, None, None, error, extra)
        if isinstance(error, InvalidCost):
            return self._denial("invalid_cost", 400, None, None, error)
        return self._denial("invalid_key", 400, None, None, error)

    async def _deny(self, scope, receive, send, denial):
        status, headers, body = denial.status, denial.headers, denial.body
        if self.on_deny is not None:
            custom = self.on_deny(scope, denial)
            if inspect.isawaitable(custom):
                custom = await custom
            if custom is not None:
                status, headers, body = _custom_response(custom)
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body",
                        "body": b"" if scope["method"] == "HEAD" else body})
            return
        await receive()      # websocket.connect: the handshake the answer refers to
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        elif denial.reason == "backend_unavailable":
            await send({"type": "websocket.close", "code": 1013,
                        "reason": "rate limiter unavailable"})
        else:
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "rate limit exceeded" if denial.reason == "quota_exceeded"
                        else "request refused by the rate limiter"})
