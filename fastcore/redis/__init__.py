"""Distributed limits on Redis: the local limiters' semantics shared by many processes/hosts.

``RedisTokenBucket`` runs the GCRA of ``fastcore.KeyedTokenBucket`` and ``RedisSlidingWindow``
the ring of ``fastcore.SlidingWindow``, each as one atomic Lua script per decision
(``EVALSHA``, reloaded by ``EVAL`` after ``NOSCRIPT``) on the server's clock, answering with
the same ``Decision`` fields. ``fastcore.redis.asyncio`` has the same classes for
``redis.asyncio`` clients. Requires the ``redis`` package (``pip install 'fastcore-edge[redis]'``).

Deadline: with a standalone ``redis.Redis`` client the limiter opens its own connections
(same address, credentials, TLS and database as the client) with ``timeout`` as connect and
read timeout and no retries, so one decision takes at most about ``3 * timeout`` even when
the server hangs (connect, ``EVALSHA``, and the ``EVAL`` that reloads the script), and no
time at all while the circuit breaker is open. A ``RedisCluster`` client is used as given:
build it with ``socket_timeout``/``socket_connect_timeout`` and ``retry=Retry(NoBackoff(), 0)``
(see the README), because redis-py retries a failed command up to 10 times by default.
"""

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from fastcore._core.decision import Decision
from fastcore.errors import BackendError
from fastcore.ratelimit import DegradedDecision
from fastcore.redis._window import WINDOW_LUA, WINDOW_SHA, WindowBase
from fastcore.redis._common import (
    ACQUIRE, CLOSED, GCRA_LUA, GCRA_SHA, GIVE_BACK, PEEK, InvalidKey, RespPacker, TokenBucketBase,
    key_list, own_connection_kwargs,
)

__all__ = ["RedisTokenBucket", "RedisSlidingWindow", "InvalidKey", "DegradedDecision"]

# What a failing Redis raises: redis-py's errors, and socket errors it lets through.
ERRORS = (RedisError, OSError)


class DirectTransport(RespPacker):
    """Pre-packed RESP over the limiter's own connections to a standalone server.

    Connections are borrowed from a list used as a stack (``pop``/``append`` are atomic), so
    threads never share one mid-command; each has ``timeout`` for connect and read and no
    retries, whatever the client was configured with.
    """

    __slots__ = ("_factory", "_idle")

    def __init__(self, client, limiter):
        super().__init__(limiter)
        pool = client.connection_pool
        kwargs = own_connection_kwargs(pool, limiter.timeout, Retry(NoBackoff(), 0))
        connection_class = pool.connection_class
        self._factory = lambda: connection_class(**kwargs)
        self._idle = []

    def call(self, name, increment, mode, lease_max=0):
        """One decision: the script's reply list. Raises redis/socket errors."""
        body = self._body(name, increment, mode, lease_max)
        idle = self._idle
        conn = idle.pop() if idle else self._factory()
        try:
            conn.send_packed_command((self._head + body,), False)
            try:
                reply = conn.read_response()
            except NoScriptError:
                self._limiter._reloads += 1
                conn.send_packed_command((self._eval_head + body,), False)
                reply = conn.read_response()
        except BaseException:
            conn.disconnect()
            idle.append(conn)
            raise
        idle.append(conn)
        return reply

    def call_many(self, names, increments, mode, lease_maxes):
        """A GCRA batch in one round trip: per entry, the five fields or the ResponseError."""
        calls, replies = self._run(lambda evaluate: self._payloads(
            names, increments, mode, lease_maxes, evaluate))
        return self._unpack(calls, replies)

    def scripts(self, sha, lua, names, argvs):
        """Single-key calls of any script in one round trip: replies or ResponseErrors."""
        return (self._run(lambda evaluate: self._script_payloads(
            sha, lua, names, argvs, evaluate)))[1]

    def _run(self, payloads):
        """Send the calls ``payloads(False)`` in one round trip; those answered NOSCRIPT go
        again as EVAL (``payloads(True)``) on the same connection. ``(calls, replies)``."""
        calls = payloads(False)
        idle = self._idle
        conn = idle.pop() if idle else self._factory()
        try:
            replies = self._exchange(conn, [payload for _, payload in calls])
            missing = [j for j, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                self._limiter._reloads += 1
                again = payloads(True)
                for j, reply in zip(missing, self._exchange(
                        conn, [again[j][1] for j in missing])):
                    replies[j] = reply
        except BaseException:
            conn.disconnect()
            idle.append(conn)
            raise
        idle.append(conn)
        return calls, replies

    @staticmethod
    def _exchange(conn, payloads):
        conn.send_packed_command((b"".join(payloads),), False)
        replies = []
        for _ in payloads:
            try:
                replies.append(conn.read_response())
            except ResponseError as error:  # the connection stays in step: read the rest
                replies.append(error)
        return replies

    def close(self):
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()


class ClientTransport:
    """Through the client's own commands and pipelines (Redis Cluster routes by key slot)."""

    __slots__ = ("_client", "_limiter")

    def __init__(self, client, limiter):
        self._client = client
        self._limiter = limiter

    def call(self, name, increment, mode, lease_max=0):
        argv = self._limiter.argv(increment, mode, lease_max)
        try:
            return self._client.execute_command("EVALSHA", GCRA_SHA, 1, name, *argv)
        except NoScriptError:
            self._limiter._reloads += 1
            return self._client.execute_command("EVAL", GCRA_LUA, 1, name, *argv)

    def call_many(self, names, increments, mode, lease_maxes):
        argvs = [self._limiter.argv(increment, mode, lease_max)
                 for increment, lease_max in zip(increments, lease_maxes)]
        return self.scripts(GCRA_SHA, GCRA_LUA, names, argvs)

    def scripts(self, sha, lua, names, argvs):
        """Single-key calls of any script, pipelined: replies or ResponseErrors."""
        replies = self._pipeline("EVALSHA", sha, names, argvs)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._limiter._reloads += 1
            for i, reply in zip(missing, self._pipeline(
                    "EVAL", lua, [names[i] for i in missing], [argvs[i] for i in missing])):
                replies[i] = reply
        return replies

    def _pipeline(self, command, script, names, argvs):
        pipe = self._client.pipeline(transaction=False)
        for name, argv in zip(names, argvs):
            pipe.execute_command(command, script, 1, name, *argv)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                raise reply
        return replies

    def close(self):
        pass


def transport(client, limiter):
    """Our own connections for a standalone server; the client itself for a cluster."""
    if isinstance(client, RedisCluster):
        return ClientTransport(client, limiter)
    if isinstance(client, redis.Redis):
        return DirectTransport(client, limiter)
    raise TypeError(f"client must be a redis.Redis or redis.cluster.RedisCluster, got "
                    f"{type(client).__name__} (use fastcore.redis.asyncio for redis.asyncio "
                    f"clients)")


class RedisTokenBucket(TokenBucketBase):
    """One GCRA token bucket per key, shared through Redis by every process and host.

    Same arguments and ``Decision`` fields as ``fastcore.KeyedTokenBucket`` (``rate`` in
    tokens per second or a rate string, ``burst`` in tokens), decided atomically on the
    server with its clock. Keys are str (UTF-8) or bytes; each bucket is one Redis key
    ``<prefix>tb:{<key>}`` that expires when the bucket is full again.

    ``client``: a ``redis.Redis`` or ``redis.cluster.RedisCluster``.
    ``on_error``: what a decision answers when Redis fails or the breaker is open:
    ``"fail_closed"`` (deny; ``retry_after = error_retry_after`` seconds), ``"fail_open"``
    (admit) or ``"fallback"`` (ask ``fallback``, a local limiter such as a
    ``KeyedTokenBucket`` holding this process's share of the quota). ``try_acquire`` and
    ``acquire`` never raise for a Redis failure; ``acquire`` and ``peek`` return those
    answers as a ``DegradedDecision`` (``on_error`` names the mode), Redis's own as a plain
    ``Decision``, so callers can tell an outage from a quota denial.
    ``timeout``: seconds for each connect and read (standalone clients; see the module doc).
    ``breaker_threshold`` consecutive failures open the breaker; after ``breaker_cooldown``
    seconds one decision probes Redis again. ``status()`` reports both.
    ``lease=N``: an admitted round trip also takes up to N - cost extra whole tokens that
    this process spends locally (for ``lease_ttl`` seconds); ``close()`` gives back what is
    left. ``clock``: tests only; the scripts then use this clock's time, not ``TIME``.
    Raises ``InvalidRate``, ``InvalidCost``, ``CostExceedsBurst``, ``InvalidKey``,
    ``TypeError`` and ``ValueError`` for bad arguments, before anything is sent.

    Example::

        limiter = RedisTokenBucket(redis.Redis(), "100/minute", on_error="fail_open")
        decision = limiter.acquire("tenant-1")
        if not decision:
            return 429, {"Retry-After": str(math.ceil(decision.retry_after))}
    """

    __slots__ = ("_io",)

    def __init__(self, client, rate, burst=None, **options):
        super().__init__(client, rate, burst, **options)
        self._io = transport(client, self)

    def try_acquire(self, key, cost=1):
        """Take ``cost`` tokens from ``key``'s bucket if available; True when admitted."""
        increment = self.increment_ns(cost)
        name = self.name(key)
        if self.lease:
            return self._leased(key, name, cost, increment).allowed
        if self._state == CLOSED or self.may_call():
            try:
                reply = self._io.call(name, increment, ACQUIRE)
            except ERRORS as error:
                self.failed(error)
            else:
                if self._failures or self._state:
                    self.succeeded()
                return reply[0] == 1
        return self.degraded_try(key, cost)

    def acquire(self, key, cost=1):
        """Take ``cost`` tokens from ``key``'s bucket if available; the full ``Decision``."""
        increment = self.increment_ns(cost)
        name = self.name(key)
        if self.lease:
            return self._leased(key, name, cost, increment)
        return self._decide(key, name, cost, increment, ACQUIRE)

    def peek(self, key, cost=1):
        """The ``Decision`` that ``acquire(key, cost)`` would return now (tokens this process
        holds in a lease are not counted), consuming nothing."""
        return self._decide(key, self.name(key), cost, self.increment_ns(cost), PEEK)

    def _decide(self, key, name, cost, increment, mode, lease_max=0):
        if self._state == CLOSED or self.may_call():
            try:
                reply = self._io.call(name, increment, mode, lease_max)
            except ERRORS as error:
                self.failed(error)
            else:
                if self._failures or self._state:
                    self.succeeded()
                if lease_max and reply[0]:
                    return self.grant(name, reply, None)
                return Decision(reply[0] == 1, reply[1], reply[2], reply[3])
        return self.degraded_decision(key, cost, mode is PEEK)

    def _leased(self, key, name, cost, increment):
        decision = self.lease_spend(name, cost)
        if decision is not None:
            return decision
        return self._decide(key, name, cost, increment, ACQUIRE, self.lease_max(cost))

    def acquire_many(self, keys, costs=None, *, with_retry_after=False):
        """Decide a batch in one pipelined round trip; a numpy bool array, one per key.

        ``costs``: None (1 each) or a sequence of the same length. ``with_retry_after=True``
        returns ``(allowed, retry_after)`` with float64 seconds (0.0 where admitted).
        Entries paid from a lease need no round trip. Bad keys or costs raise before
        anything is sent; Redis failures give the ``on_error`` answers.
        """
        keys = key_list(keys)
        names, increments, cost_list = self.batch(keys, costs, self.increment_ns)
        n = len(keys)
        allowed = np.zeros(n, dtype=np.bool_)
        retry = np.zeros(n, dtype=np.float64)
        pending = self.lease_pending(names, cost_list, allowed)
        if pending:
            self._decide_many(keys, names, increments, cost_list, pending, allowed, retry, costs)
        return (allowed, retry) if with_retry_after else allowed

    def _decide_many(self, keys, names, increments, cost_list, pending, allowed, retry, costs):
        failed = pending
        if self._state == CLOSED or self.may_call():
            lease_maxes = [self.lease_max(cost_list[i]) if self.lease else 0 for i in pending]
            try:
                replies = self._io.call_many([names[i] for i in pending],
                                             [increments[i] for i in pending], ACQUIRE,
                                             lease_maxes)
            except ERRORS as error:
                self.failed(error)
            else:
                failed = self.settle(pending, replies, names, allowed, retry, None)
        self.degraded_many(keys, None if costs is None else cost_list, allowed, retry, failed)

    def reset(self, key=None):
        """Refill ``key``'s bucket (and drop this process's lease on it), or with no key
        delete every bucket under this limiter's prefix. Raises ``BackendError`` when
        Redis fails (reset is an administrative call, not a decision)."""
        try:
            if key is not None:
                name = self.name(key)
                self.drop_lease(name)
                self._client.delete(name)
                return
            with self._lock:
                self._leases.clear()
            pattern = self.prefix.replace(b"\\", b"\\\\")
            for special in (b"*", b"?", b"["):
                pattern = pattern.replace(special, b"\\" + special)
            for name in self._client.scan_iter(match=pattern + b"*", count=1000):
                self._client.delete(name)
        except ERRORS as error:
            raise BackendError(f"reset failed: {error}", error) from error

    def close(self):
        """Give back the whole tokens still leased by this process (one pipelined round
        trip; on failure they simply expire) and close the limiter's connections."""
        if self._closed:
            return
        self._closed = True
        leases = self.take_leases()
        try:
            if leases and self.may_call():
                self._give_back(leases)
        except ERRORS as error:
            self.failed(error)
        finally:
            self._io.close()

    def _give_back(self, leases):
        self._io.call_many([name for name, _, _ in leases],
                           [tokens * self.emission_ns for _, tokens, _ in leases],
                           GIVE_BACK, [0] * len(leases))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class RedisSlidingWindow(WindowBase):
    """``fastcore.SlidingWindow`` (a ring of ``slices`` sub-windows per key), shared
    through Redis by every process and host, with the same ``Decision`` fields.

    ``limit`` in cost units per ``window`` seconds (or a rate string such as "100/minute"
    with ``window=None``); ``slices`` 1..1024. The ring is aligned on the server's clock
    (``TIME``) unless ``clock=`` is given (tests). Options, failure modes and deadlines are
    those of ``RedisTokenBucket``. ``lease=N``: an admitted round trip also counts up to
    N - cost extra whole costs that this process spends locally until the earlier of
    ``lease_ttl`` seconds and the end of the slice they were counted in (see the module
    ``fastcore.redis._window`` for why); ``close()`` gives back what is left while that slice
    is in the ring. Raises ``InvalidRate``, ``InvalidCost``, ``CostExceedsLimit``,
    ``InvalidKey``, ``TypeError`` and ``ValueError`` for bad arguments, before anything is
    sent.

    Example::

        limiter = RedisSlidingWindow(redis.Redis(), 1000, 60.0, slices=12)
        if not limiter.try_acquire("tenant-1"):
            ...
    """

    __slots__ = ("_io",)

    def __init__(self, client, limit, window=None, **options):
        super().__init__(client, limit, window, **options)
        self._io = transport(client, self)

    def _call(self, name, units, mode, lease_max=0):
        """The script's reply, or None when Redis failed or the breaker is open."""
        if self._state == CLOSED or self.may_call():
            try:
                reply = self._io.scripts(WINDOW_SHA, WINDOW_LUA, [name],
                                         [self.argv(units, mode, lease_max)])[0]
                if isinstance(reply, Exception):
                    raise reply
            except ERRORS as error:
                self.failed(error)
            else:
                if self._failures or self._state:
                    self.succeeded()
                return reply
        return None

    def try_acquire(self, key, cost=1):
        """Count ``cost`` against ``key`` if the window has room; True when admitted."""
        if self.lease:
            return self.acquire(key, cost).allowed
        reply = self._call(self.name(key), self.units(cost), ACQUIRE)
        if reply is None:
            return self.degraded_try(key, cost)
        return reply[0] == 1

    def acquire(self, key, cost=1):
        """Count ``cost`` against ``key`` if the window has room; the full ``Decision``
        (paid from this process's lease on ``key`` when it holds enough)."""
        units = self.units(cost)
        name = self.name(key)
        paid, lease_max = self.lease_first(name, units, cost)
        if paid is not None:
            return paid
        sent_ns = self._now_ns()
        reply = self._call(name, units, ACQUIRE, lease_max)
        if reply is None:
            return self.degraded_decision(key, cost)
        return self.answer(name, reply, sent_ns)

    def peek(self, key, cost=1):
        """The ``Decision`` that ``acquire(key, cost)`` would return now (units this process
        holds in a lease are not counted), counting nothing."""
        reply = self._call(self.name(key), self.units(cost), PEEK)
        if reply is None:
            return self.degraded_decision(key, cost, True)
        return self.answer(None, reply, None)

    def acquire_many(self, keys, costs=None, *, with_retry_after=False):
        """Decide a batch, pipelined in one round trip; a numpy bool array, one per key
        (``(allowed, retry_after)`` with ``with_retry_after=True``). Entries paid from a
        lease need no round trip."""
        keys = key_list(keys)
        names, units, cost_list = self.batch(keys, costs, self.units)
        allowed = np.zeros(len(keys), dtype=np.bool_)
        retry = np.zeros(len(keys), dtype=np.float64)
        failed = pending = self.lease_pending(names, units, allowed)
        if pending and (self._state == CLOSED or self.may_call()):
            sent_ns = self._now_ns()
            try:
                replies = self._io.scripts(WINDOW_SHA, WINDOW_LUA, [names[i] for i in pending],
                                           self.batch_argvs(pending, units, cost_list))
            except ERRORS as error:
                self.failed(error)
            else:
                failed = self.settle(pending, replies, names, allowed, retry, sent_ns)
        self.degraded_many(keys, None if costs is None else cost_list, allowed, retry, failed)
        return (allowed, retry) if with_retry_after else allowed

    reset = RedisTokenBucket.reset
    # close() gives back the units still leased to the slices they were counted in (one
    # pipelined round trip; on failure they stay counted until their slices leave).
    close = RedisTokenBucket.close

    def _give_back(self, leases):
        self._io.scripts(WINDOW_SHA, WINDOW_LUA, [name for name, _, _ in leases],
                         self.give_back_argvs(leases))

    __enter__ = RedisTokenBucket.__enter__
    __exit__ = RedisTokenBucket.__exit__
