"""What the sync and asyncio Redis limiters share: the Lua script, key names, arguments,
the circuit breaker, leases and the answers given while Redis is unavailable.

State of one bucket in Redis: one string key ``<prefix>tb:{<escaped key>}`` holding
``"<base_s>:<tat_rel_ns>"``, the theoretical arrival time (TAT) as whole seconds plus a
nanosecond offset; it expires (``PX``) when the bucket is full again.

Why the split: Lua numbers are doubles, exact only for integers below 2**53 ns (104 days).
Nanoseconds since the epoch (about 1.8e18) or since an arbitrary client clock's origin are
not. Every decision therefore works in ns relative to the current second ``now_s`` (so
``now`` itself is below 1e9), rewrites the stored base to ``now_s`` on every write, and
bounds tau at 2**50 ns (13 days): every intermediate value (``tat``, ``tat + cost*T``,
``lease * T``) stays below 2**52 and every comparison and subtraction is exact. A TAT more
than 2**51 ns in the past is a full bucket whatever its exact value. The server's ``TIME``
(seconds, microseconds) maps directly to ``(now_s, usec * 1000)``; a client clock's integer
ns is split with ``divmod`` in Python, exactly.
"""

import hashlib
import math
import numbers
import threading
from fractions import Fraction

import numpy as np

from fastcore._core.clock import Clock, monotonic_ns
from fastcore._core.decision import Decision
from fastcore._units import gcra_params, seconds_to_ns
from fastcore.errors import CostExceedsBurst, InvalidCost, InvalidKey, InvalidRate
from fastcore.ratelimit import DegradedDecision

__all__ = ["InvalidKey", "LUA_DIV", "GCRA_LUA", "GCRA_SHA", "GCRA_BATCH_LUA", "GCRA_BATCH_SHA"]

LUA_DIV = """\
-- a / b for integers |a|, b < 2^53, rounded toward zero like the C core's division; the
-- double quotient may be off by one near an integer, so it is corrected exactly.
local function div(a, b)
  local neg = a < 0
  if neg then a = -a end
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  if neg then return -q end
  return q
end
"""

# What both scripts share: arguments, the time, and loading/storing one bucket.
# ARGV[1..5]: emission_ns, tau_ns, grace_ms (added to the expiry), now_s, now_sub_ns (both
# empty: the server's TIME). A bucket key holds "<base_s>:<tat_rel_ns>", the TAT being
# base_s * 1e9 + tat_rel_ns. Times below are ns relative to now_s seconds, so `now` < 1e9.
_LUA_PRELUDE = LUA_DIV + """\
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local grace_ms = tonumber(ARGV[3])
local now_s, now
if ARGV[4] ~= '' then
  now_s = tonumber(ARGV[4])
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now_s = tonumber(t[1])
  now = tonumber(t[2]) * 1000
end

-- The TAT of `key`, at least now. A TAT more than 2^51 ns (26 days) in the past is a full
-- bucket whatever its exact value.
local function load(key)
  local tat = now
  local stored = redis.call('GET', key)
  if stored then
    local base, rel = string.match(stored, '^(%-?%d+):(%-?%d+)$')
    if base then
      local d = tonumber(base) - now_s
      if d > -2251799 then
        local x = d * 1000000000 + tonumber(rel)
        if x > tat then tat = x end
      end
    end
  end
  return tat
end

-- Keep `after` until the bucket is full again (rounded up to whole ms), or forget a full one.
local function store(key, after)
  local reset = after - now
  if reset > 0 then
    redis.call('SET', key, string.format('%d:%d', now_s, after),
               'PX', div(reset + 999999, 1000000) + grace_ms)
  else
    redis.call('DEL', key)
  end
end

-- One GCRA decision from `tat` (>= now): {allowed, remaining, retry_ns, reset_ns, leased}
-- and the TAT after it. An admitted decision also takes up to lease_max whole tokens.
local function decide(tat, inc, lease_max)
  local new = tat + inc
  if new - now > tau then
    return {0, div(tau - (tat - now), T), new - tau - now, tat - now, 0}, tat
  end
  local leased = 0
  if lease_max > 0 then
    leased = div(tau - (new - now), T)
    if leased > lease_max then leased = lease_max end
    new = new + leased * T
  end
  return {1, div(tau - (new - now), T), 0, new - now, leased}, new
end
"""

GCRA_LUA = _LUA_PRELUDE + """\
-- One decision on KEYS[1]. ARGV[6..8]: increment_ns, mode (0 peek, 1 acquire, 2 give
-- `increment_ns` back), lease_max. Returns {allowed, remaining, retry_ns, reset_ns, leased}.
local inc = tonumber(ARGV[6])
local mode = ARGV[7]
local tat = load(KEYS[1])
if mode == '2' then
  local after = tat - inc
  if after < now then after = now end
  store(KEYS[1], after)
  return {1, div(tau - (after - now), T), 0, after - now, 0}
end
local reply, after = decide(tat, inc, tonumber(ARGV[8]))
if mode == '1' and reply[1] == 1 then store(KEYS[1], after) end
return reply
"""

# acquire_many on one server: the decisions of a batch in order, each exactly what
# GCRA_LUA would answer at the batch's one timestamp (the local acquire_many also reads its
# clock once per batch). A key repeated in the batch is read once and written once.
GCRA_BATCH_LUA = _LUA_PRELUDE + """\
-- KEYS[i]: the bucket of decision i. ARGV[4 + 2i], ARGV[5 + 2i]: its increment_ns and
-- lease_max. Returns the five fields of every decision, flattened.
local tats, changed, order, out = {}, {}, {}, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local tat = tats[key]
  if tat == nil then tat = load(key) end
  local reply, after = decide(tat, tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i]))
  tats[key] = after
  if reply[1] == 1 and not changed[key] then
    changed[key] = true
    order[#order + 1] = key
  end
  for j = 1, 5 do out[#out + 1] = reply[j] end
end
for _, key in ipairs(order) do store(key, tats[key]) end
return out
"""

GCRA_SHA = hashlib.sha1(GCRA_LUA.encode()).hexdigest()
GCRA_BATCH_SHA = hashlib.sha1(GCRA_BATCH_LUA.encode()).hexdigest()

# Largest tau the script keeps exact (see the module docstring).
MAX_TAU_NS = 1 << 50
# Longest escaped key accepted, in bytes: Redis allows 512 MB, but a key this long is a bug.
MAX_KEY_BYTES = 1024
MAX_PREFIX_BYTES = 256
# Client-clock limiters (tests) keep keys this much longer than their reset time: the
# server's expiry runs on real time, which a ManualClock does not follow.
CLIENT_CLOCK_GRACE_MS = 60_000
# Bounded caches of key names and cost increments: a flood of unique keys only refills them.
NAME_CACHE_SIZE = 65_536
COST_CACHE_SIZE = 1_024

PEEK, ACQUIRE, GIVE_BACK = b"0", b"1", b"2"
CLOSED, OPEN, HALF_OPEN = 0, 1, 2
BREAKER_STATES = ("closed", "open", "half_open")
ON_ERROR_MODES = ("fail_closed", "fail_open", "fallback")


def escape_key(key) -> bytes:
    """A user key as the hash tag of its Redis key: ``%``, ``{``, ``}`` percent-escaped.

    The escaping is injective, so distinct keys never share a bucket, and no key can end
    the hash tag early, so everything a limiter stores for one key lives in one cluster
    slot. The empty key becomes ``%`` (no other key escapes to a lone ``%``). Error
    messages never quote the key: keys are often API keys, and errors reach logs.
    """
    if isinstance(key, str):
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidKey(
                f"key is not valid UTF-8 text: {error.reason} at character {error.start} "
                f"of {len(key)}") from None
    elif isinstance(key, bytes):
        raw = key
    else:
        raise TypeError(f"key must be str or bytes for a Redis limiter, got "
                        f"{type(key).__name__}")
    escaped = raw.replace(b"%", b"%25").replace(b"{", b"%7B").replace(b"}", b"%7D") or b"%"
    if len(escaped) > MAX_KEY_BYTES:
        raise InvalidKey(f"key of {len(escaped)} bytes (escaped) exceeds {MAX_KEY_BYTES} "
                         f"bytes; fastcore.asgi.bounded_key() hashes long keys to a fixed size")
    return escaped


def key_list(keys) -> list:
    """``acquire_many``'s ``keys`` as a list; ``TypeError`` naming the argument otherwise."""
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"keys must be a sequence of keys, not one {type(keys).__name__} key")
    try:
        return list(keys)
    except TypeError:
        raise TypeError(f"keys must be an iterable of str or bytes keys, got "
                        f"{type(keys).__name__}") from None


def _first_failing(check, values):
    """The index of the first value ``check`` raises for (only called after one did)."""
    for i, value in enumerate(values):
        try:
            check(value)
        except (TypeError, ValueError):
            return i
    return "?"


def resp_bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


class RespPacker:
    """The RESP bytes of script calls, pre-packed: the command head once per limiter, each
    key's bulk string once per key, the per-call arguments once per (increment, mode,
    lease); only a client clock's time is packed per call. Shared by the sync and asyncio
    direct transports (it does no I/O)."""

    __slots__ = ("_head", "_eval_head", "_fixed", "_server_time", "_tails", "_bulks", "_pairs",
                 "_limiter")

    # A batch script decides at most this many entries, so one call never holds the server
    # for long (each entry costs it a few microseconds); longer batches send several calls
    # in the same round trip.
    BATCH_LIMIT = 1000

    def __init__(self, limiter):
        self._head = b"*12\r\n$7\r\nEVALSHA\r\n" + resp_bulk(GCRA_SHA.encode()) + b"$1\r\n1\r\n"
        self._eval_head = b"*12\r\n$4\r\nEVAL\r\n" + resp_bulk(GCRA_LUA.encode()) + b"$1\r\n1\r\n"
        self._fixed = b"".join(map(resp_bulk, limiter.argv(0, PEEK)[:3]))
        self._server_time = self._fixed + b"$0\r\n\r\n$0\r\n\r\n"
        self._tails = {}
        self._bulks = {}
        self._pairs = {}
        self._limiter = limiter

    def _time(self):
        """ARGV 1..5 in RESP: the fixed arguments and the time (empty: the server's TIME)."""
        clock = self._limiter.clock
        if clock is None:
            return self._server_time
        now_s, now_sub = divmod(clock.now_ns, 1_000_000_000)
        return self._fixed + resp_bulk(b"%d" % now_s) + resp_bulk(b"%d" % now_sub)

    def _bulk(self, name):
        bulk = self._bulks.get(name)
        if bulk is None:
            if len(self._bulks) >= NAME_CACHE_SIZE:
                self._bulks.clear()
            bulk = self._bulks[name] = resp_bulk(name)
        return bulk

    def _body(self, name, increment, mode, lease_max):
        """``<key> <argv...>`` of a GCRA_LUA call in RESP (after the head)."""
        tail = self._tails.get((increment, mode, lease_max))
        if tail is None:
            if len(self._tails) >= COST_CACHE_SIZE:
                self._tails.clear()
            tail = self._tails[(increment, mode, lease_max)] = b"".join(
                map(resp_bulk, (b"%d" % increment, mode, b"%d" % lease_max)))
        return self._bulk(name) + self._time() + tail

    def _batches(self, names, increments, lease_maxes, evaluate=False):
        """GCRA_BATCH_LUA calls deciding the whole batch, in order, BATCH_LIMIT at a time."""
        command = b"$4\r\nEVAL\r\n" + resp_bulk(GCRA_BATCH_LUA.encode()) if evaluate \
            else b"$7\r\nEVALSHA\r\n" + resp_bulk(GCRA_BATCH_SHA.encode())
        pairs = self._pairs
        calls = []
        for start in range(0, len(names), self.BATCH_LIMIT):
            stop = min(start + self.BATCH_LIMIT, len(names))
            n = stop - start
            parts = [b"*%d\r\n" % (3 + n + 5 + 2 * n), command, resp_bulk(b"%d" % n)]
            parts += map(self._bulk, names[start:stop])
            parts.append(self._time())
            for key in zip(increments[start:stop], lease_maxes[start:stop]):
                pair = pairs.get(key)
                if pair is None:
                    if len(pairs) >= COST_CACHE_SIZE:
                        pairs.clear()
                    pair = pairs[key] = resp_bulk(b"%d" % key[0]) + resp_bulk(b"%d" % key[1])
                parts.append(pair)
            calls.append((n, b"".join(parts)))
        return calls

    def _payloads(self, names, increments, mode, lease_maxes, evaluate=False):
        """``(entries, RESP)`` per script call of a batch: acquires go through the batch
        script; other modes (give-backs on close) are one GCRA_LUA call per entry."""
        if mode is ACQUIRE:
            return self._batches(names, increments, lease_maxes, evaluate)
        head = self._eval_head if evaluate else self._head
        return [(1, head + self._body(name, increment, mode, lease_max))
                for name, increment, lease_max in zip(names, increments, lease_maxes)]

    def _script_payloads(self, sha, lua, names, argvs, evaluate=False):
        """One single-key script call per entry (any script: the sliding window's)."""
        command = (b"$4\r\nEVAL\r\n" + resp_bulk(lua.encode())) if evaluate \
            else (b"$7\r\nEVALSHA\r\n" + resp_bulk(sha.encode()))
        return [(1, b"*%d\r\n" % (4 + len(argv)) + command + b"$1\r\n1\r\n" + self._bulk(name)
                 + b"".join(map(resp_bulk, argv)))
                for name, argv in zip(names, argvs)]

    @staticmethod
    def _unpack(calls, replies):
        """Per-entry five-field replies from the calls' flat replies (an error fills every
        entry of its call)."""
        out = []
        for (n, _), reply in zip(calls, replies):
            if isinstance(reply, Exception):
                out.extend([reply] * n)
            else:
                out.extend([reply[k:k + 5] for k in range(0, 5 * n, 5)])
        return out


def own_connection_kwargs(pool, timeout, retry):
    """The client's connection settings (address, credentials, TLS, database) with our
    timeout for connect and read and no retries: the limiter's decision deadline."""
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(socket_timeout=timeout, retry=retry, retry_on_error=[], health_check_interval=0)
    if "path" not in kwargs:   # unix sockets connect without a timeout option
        kwargs["socket_connect_timeout"] = timeout
    return kwargs


def cost_value(cost) -> float:
    """``cost`` as a float once it is a finite number >= 0; TypeError / InvalidCost else."""
    if not isinstance(cost, numbers.Real):
        raise TypeError(f"cost must be a number, got {cost!r}")
    value = float(cost)
    if not value >= 0.0 or math.isinf(value):
        raise InvalidCost(f"cost must be finite and >= 0, got {cost!r}")
    return value


def _positive_seconds(value, name, *, allow_zero=False):
    ns = seconds_to_ns(value, name)
    if ns == 0 and not allow_zero:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return ns


class LimiterBase:
    """What every Redis limiter shares: options, key names, the circuit breaker, status(),
    the on_error answers and leases. Subclasses add their algorithm's arguments and the I/O.

    A lease is held per Redis key as ``[amount, expires_ns, reset_ns, granted_ns, slice]``:
    ``amount`` in the subclass's own measure (``lease_unit`` of it make one cost unit:
    tokens for the bucket, fixed-point units for the window), when this process stops
    spending it (its clock), the ``reset_after`` of the grant and when it was granted, and
    the ring slice the window counted it in (None for the bucket).
    """

    __slots__ = (
        "_client", "prefix", "on_error", "fallback", "lease", "lease_ttl_ns", "lease_unit",
        "timeout", "error_retry_after_ns",
        "breaker_threshold", "breaker_cooldown_ns", "clock", "_grace", "_names", "_leases",
        "_lock", "_state", "_failures", "_errors", "_opened_ns", "_opens", "_switches",
        "_last_error", "_degraded", "_reloads", "_fail_closed", "_denied", "_admitted", "_closed",
    )

    def __init__(self, client, kind, lease_unit, *, prefix="fastcore:", on_error="fail_closed",
                 fallback=None, lease=0, lease_ttl=1.0, timeout=0.05, error_retry_after=1.0,
                 breaker_threshold=3, breaker_cooldown=5.0, clock=None):
        if isinstance(prefix, str):
            prefix = prefix.encode("utf-8")
        if not isinstance(prefix, bytes):
            raise TypeError(f"prefix must be str or bytes, got {type(prefix).__name__}")
        if b"{" in prefix or b"}" in prefix or len(prefix) > MAX_PREFIX_BYTES:
            raise ValueError(f"prefix {prefix!r} must not contain braces (they would move the "
                             f"cluster hash tag) and must be at most {MAX_PREFIX_BYTES} bytes")
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        if (on_error == "fallback") != (fallback is not None):
            raise ValueError('on_error="fallback" needs fallback=<a local limiter>, and a '
                             "fallback is only used with on_error=\"fallback\"")
        if fallback is not None and not all(hasattr(fallback, name) for name in (
                "try_acquire", "acquire", "peek", "acquire_many")):
            raise TypeError(f"fallback must be a keyed local limiter such as KeyedTokenBucket, "
                            f"got {fallback!r}")
        if isinstance(breaker_threshold, bool) or not isinstance(breaker_threshold, int) \
                or breaker_threshold < 1:
            raise ValueError(f"breaker_threshold must be an int >= 1, got {breaker_threshold!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be None or a fastcore clock, got {clock!r}")
        if isinstance(lease, bool) or not isinstance(lease, int) or lease < 0:
            raise ValueError(f"lease must be a whole number of cost units >= 0, got {lease!r}")
        self.lease_ttl_ns = _positive_seconds(lease_ttl, "lease_ttl")
        _positive_seconds(timeout, "timeout")
        self.error_retry_after_ns = _positive_seconds(error_retry_after, "error_retry_after",
                                                      allow_zero=True)
        self.breaker_cooldown_ns = _positive_seconds(breaker_cooldown, "breaker_cooldown",
                                                     allow_zero=True)
        self._client = client
        self.prefix = prefix + kind
        self.on_error = on_error
        self.fallback = fallback
        self.lease = lease
        self.lease_unit = lease_unit
        self.timeout = float(timeout)
        self.breaker_threshold = breaker_threshold
        self.clock = clock
        self._grace = b"%d" % (CLIENT_CLOCK_GRACE_MS if clock is not None else 0)
        self._names = {}
        self._leases = {}
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._errors = 0
        self._opened_ns = 0
        self._opens = 0
        self._switches = 0
        self._last_error = None
        self._degraded = 0
        self._reloads = 0
        self._closed = False
        self._fail_closed = on_error == "fail_closed"
        # Marked answers: a caller (the ASGI middleware) must tell a backend failure from a
        # real quota decision, and `type(d) is Decision` stays the local limiters' fast test.
        self._denied = DegradedDecision(False, 0, self.error_retry_after_ns, 0, "fail_closed")
        self._admitted = DegradedDecision(True, 0, 0, 0, "fail_open")

    # -- leases ----------------------------------------------------------------------------

    def drop_lease(self, name):
        with self._lock:
            self._leases.pop(name, None)

    def lease_max(self, cost):
        """Whole cost units an admitted acquire of ``cost`` may lease: ``lease - ceil(cost)``."""
        return max(self.lease - -(-cost // 1), 0)

    def lease_spend(self, name, amount):
        """A Decision paid from this process's lease on ``name``, or None (ask Redis)."""
        with self._lock:
            held = self._leases.get(name)
            if held is None:
                return None
            now = self._now_ns()
            if now >= held[1]:
                # Expired: what is left stays taken in Redis and leaves with its slice or
                # refills with its bucket, on the server's own time.
                del self._leases[name]
                return None
            if held[0] < amount:
                return None
            held[0] -= amount
            return Decision(True, int(held[0] // self.lease_unit), 0,
                            max(held[2] - (now - held[3]), 0))

    def lease_grant(self, name, reply, until_ns=None, slice_index=None):
        """Record the ``reply[4]`` whole cost units an admitted acquire leased, spendable
        until lease_ttl from now or ``until_ns`` (this clock) if sooner; the Decision counts
        them. A lease counted in another ring slice than the one held replaces it: what is
        left of the old one may only be spent while its own slice lasts, so it is forgotten
        (it stays counted in Redis until that slice leaves)."""
        leased = reply[4]
        if not leased:
            return Decision(True, reply[1], 0, reply[3])
        now = self._now_ns()
        expires = now + self.lease_ttl_ns
        if until_ns is not None and until_ns < expires:
            expires = until_ns
        with self._lock:
            held = self._leases.get(name)
            if held is None or now >= held[1] or held[4] != slice_index:
                held = self._leases[name] = [0, 0, 0, 0, slice_index]
            held[0] += leased * self.lease_unit
            held[1] = expires
            held[2] = reply[3]
            held[3] = now
            return Decision(True, reply[1] + int(held[0] // self.lease_unit), 0, reply[3])

    def take_leases(self):
        """Remove every lease; return ``(name, whole amount, slice)`` of the unexpired ones
        (for close(): the bucket gives back whole tokens, the window exact units)."""
        now = self._now_ns()
        with self._lock:
            leases, self._leases = self._leases, {}
        return [(name, int(held[0]), held[4]) for name, held in leases.items()
                if now < held[1] and int(held[0]) >= 1]

    def lease_first(self, name, amount, cost):
        """``(Decision, 0)`` when this process's lease on ``name`` pays for ``amount``, else
        ``(None, lease_max)``: how much the acquire sent to Redis may lease."""
        if not self.lease:
            return None, 0
        decision = self.lease_spend(name, amount)
        return (decision, 0) if decision is not None else (None, self.lease_max(cost))

    def lease_pending(self, names, amounts, allowed):
        """Pay what the leases can of a batch (marking it in ``allowed``); the indices left
        for Redis."""
        if not self.lease:
            return list(range(len(names)))
        pending = []
        for i, name in enumerate(names):
            if self.lease_spend(name, amounts[i]) is not None:
                allowed[i] = True
            else:
                pending.append(i)
        return pending

    def settle(self, pending, replies, names, allowed, retry, sent_ns):
        """Fill a batch's answers from the script replies of its ``pending`` entries (an
        admitted one that leased records its lease); note success or failure for the
        breaker. Returns the indices whose call failed (for the on_error answers)."""
        failed = []
        for i, reply in zip(pending, replies):
            if isinstance(reply, Exception):
                failed.append(i)
            elif reply[0]:
                allowed[i] = True
                if reply[4]:
                    self.grant(names[i], reply, sent_ns)
            else:
                retry[i] = reply[2] / 1e9
        if failed:
            self.failed(replies[pending.index(failed[0])])
        elif self._failures or self._state:
            self.succeeded()
        return failed

    def name(self, key) -> bytes:
        """The Redis key holding ``key``'s state (``<prefix><kind>:{<escaped key>}``)."""
        name = self._names.get(key)
        if name is None:
            name = self.prefix + b"{" + escape_key(key) + b"}"
            if len(self._names) >= NAME_CACHE_SIZE:
                self._names.clear()
            self._names[key] = name
        return name

    # -- breaker ---------------------------------------------------------------------------

    def _now_ns(self):
        return self.clock.now_ns if self.clock is not None else monotonic_ns()

    def may_call(self) -> bool:
        """True when Redis may be called now: breaker closed, or cooled down (one probe).

        A probe that never reports back (its asyncio task was cancelled mid-call: neither
        succeeded() nor failed() runs) would leave the breaker half-open for good, so a
        half-open breaker allows a new probe once a cool-down has passed since the last one.
        The lock lets exactly one of several threads take each probe.
        """
        if self._state == CLOSED:
            return True
        with self._lock:
            if self._state == CLOSED:
                return True
            now = self._now_ns()
            if now - self._opened_ns < self.breaker_cooldown_ns:
                return False
            if self._state == OPEN:
                self._state = HALF_OPEN
                self._switches += 1
            self._opened_ns = now                # when this probe started
            return True

    def succeeded(self):
        if self._state != CLOSED:
            self._state = CLOSED
            self._switches += 1
        self._failures = 0

    def failed(self, error):
        self._errors += 1
        self._failures += 1
        self._last_error = f"{type(error).__name__}: {error}"
        if self._state == HALF_OPEN or (self._state == CLOSED
                                        and self._failures >= self.breaker_threshold):
            self._state = OPEN
            self._opened_ns = self._now_ns()
            self._opens += 1
            self._switches += 1

    def status(self) -> dict:
        """Where decisions come from now, and the breaker's counters.

        ``mode``: "redis" (breaker closed or probing) or the ``on_error`` mode in force;
        ``breaker``: "closed", "open" or "half_open"; ``errors``: failed Redis calls so far;
        ``consecutive_errors``; ``breaker_opens``; ``switches`` (breaker state changes);
        ``degraded_decisions`` (answered by ``on_error``); ``script_reloads`` (after NOSCRIPT);
        ``last_error``; ``leased_keys`` (keys holding leased tokens in this process).
        """
        return {
            "mode": self.on_error if self._state == OPEN else "redis",
            "breaker": BREAKER_STATES[self._state],
            "errors": self._errors,
            "consecutive_errors": self._failures,
            "breaker_opens": self._opens,
            "switches": self._switches,
            "degraded_decisions": self._degraded,
            "script_reloads": self._reloads,
            "last_error": self._last_error,
            "leased_keys": len(self._leases),
        }

    def batch(self, keys, costs, amount):
        """Names, ``amount(cost)`` (the script's measure) and costs of a batch, all validated
        before anything is sent; an error names the argument and the entry at fault."""
        try:
            names = [self.name(key) for key in keys]
        except (TypeError, InvalidKey) as error:
            raise type(error)(f"keys[{_first_failing(self.name, keys)}]: {error}") from None
        if costs is None:
            return names, [amount(1)] * len(names), [1] * len(names)
        try:
            costs = list(np.asarray(costs, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError) as error:
            raise type(error)(f"costs must be None or a sequence of numbers: {error}") from None
        if len(costs) != len(names):
            raise ValueError(f"keys and costs differ in length: {len(names)} != {len(costs)}")
        try:
            return names, [amount(cost) for cost in costs], costs
        except ValueError as error:     # InvalidCost, CostExceedsBurst, CostExceedsLimit
            raise type(error)(f"costs[{_first_failing(amount, costs)}]: {error}") from None

    # -- degraded answers (Redis failed or the breaker is open) ----------------------------

    def degraded_try(self, key, cost):
        self._degraded += 1
        if self.fallback is not None:
            return self.fallback.try_acquire(key, cost)
        return not self._fail_closed

    def degraded_decision(self, key, cost, peek=False):
        """The on_error answer as a ``DegradedDecision``: the fail_closed / fail_open
        constant, or the fallback's own decision marked as such."""
        self._degraded += 1
        if self.fallback is not None:
            d = (self.fallback.peek if peek else self.fallback.acquire)(key, cost)
            return DegradedDecision(d.allowed, d.remaining, d.retry_after_ns, d.reset_after_ns,
                                    "fallback")
        return self._denied if self._fail_closed else self._admitted

    def degraded_many(self, keys, costs, allowed, retry, indices):
        """Fill the batch entries at ``indices`` with the on_error answers."""
        self._degraded += len(indices)
        if not indices:
            return
        if self.fallback is not None:
            sub_costs = None if costs is None else [costs[i] for i in indices]
            ok, wait = self.fallback.acquire_many([keys[i] for i in indices], sub_costs,
                                                  with_retry_after=True)
            allowed[indices] = ok
            retry[indices] = wait
        elif self._fail_closed:
            allowed[indices] = False
            retry[indices] = self.error_retry_after_ns / 1e9
        else:
            allowed[indices] = True
            retry[indices] = 0.0


class TokenBucketBase(LimiterBase):
    """GCRA arguments and leases on top of LimiterBase; subclasses do the I/O."""

    __slots__ = ("rate", "burst", "emission_ns", "tau_ns", "_incs")

    def __init__(self, client, rate, burst=None, **options):
        emission_ns, tau_ns, burst = gcra_params(rate, burst)
        if tau_ns > MAX_TAU_NS:
            raise InvalidRate(
                f"burst {burst!r} at rate {rate!r} spans {tau_ns} ns; the Redis engine keeps "
                f"its arithmetic exact up to 2**50 ns (about 13 days)")
        super().__init__(client, b"tb:", 1, **options)   # leases counted in tokens
        self.rate = rate
        self.burst = burst
        self.emission_ns = emission_ns
        self.tau_ns = tau_ns
        self._incs = {}

    # -- arguments -------------------------------------------------------------------------

    def increment_ns(self, cost) -> int:
        """ceil(cost * T) in ns, exactly as the local bucket computes it; validates ``cost``."""
        increment = self._incs.get(cost)
        if increment is None:
            value = cost_value(cost)
            if value > self.burst:
                raise CostExceedsBurst(
                    f"cost {value!r} exceeds the burst {self.burst!r}: it could never be admitted")
            increment = math.ceil(Fraction(value) * self.emission_ns)
            if increment > self.tau_ns:
                raise CostExceedsBurst(
                    f"cost {value!r} needs {increment} ns of tolerance but the bucket holds "
                    f"{self.tau_ns} ns (burst {self.burst!r} rounded to whole ns)")
            if len(self._incs) >= COST_CACHE_SIZE:
                self._incs.clear()
            self._incs[cost] = increment
        return increment

    def argv(self, increment, mode, lease_max=0):
        """GCRA_LUA's ARGV for one call (now_s and now_sub empty: the server's TIME)."""
        now_s = now_sub = b""
        if self.clock is not None:
            now_s, now_sub = (b"%d" % part for part in divmod(self.clock.now_ns, 1_000_000_000))
        return (b"%d" % self.emission_ns, b"%d" % self.tau_ns, self._grace, now_s, now_sub,
                b"%d" % increment, mode, b"%d" % lease_max)

    def grant(self, name, reply, sent_ns):
        """The Decision of an admitted acquire that leased ``reply[4]`` tokens (GCRA_LUA's
        reply): they stay good for lease_ttl, since a bucket's tokens never go stale."""
        return self.lease_grant(name, reply)

    def __repr__(self):
        return (f"{type(self).__name__}(rate={self.rate!r}, burst={self.burst!r}, "
                f"prefix={self.prefix[:-3]!r}, on_error={self.on_error!r}, lease={self.lease})")
