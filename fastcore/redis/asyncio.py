"""``fastcore.redis`` for ``redis.asyncio`` clients: the same limiters with awaitable decisions.

Semantics, arguments, key names, failure modes and deadlines are those of
``fastcore.redis.RedisTokenBucket``; only the I/O is asynchronous. With a standalone
``redis.asyncio.Redis`` client the limiter uses its own connections (``timeout`` for connect
and read, no retries); a ``redis.asyncio.cluster.RedisCluster`` client is used as given.
"""

import numpy as np
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from fastcore._core.decision import Decision
from fastcore.errors import BackendError
from fastcore.ratelimit import DegradedDecision
from fastcore.redis import ERRORS
from fastcore.redis._window import WINDOW_LUA, WINDOW_SHA, WindowBase
from fastcore.redis._common import (
    ACQUIRE, CLOSED, GCRA_LUA, GCRA_SHA, GIVE_BACK, PEEK, InvalidKey, RespPacker, TokenBucketBase,
    key_list, own_connection_kwargs,
)

__all__ = ["RedisTokenBucket", "RedisSlidingWindow", "InvalidKey", "DegradedDecision"]


class DirectTransport(RespPacker):
    """Pre-packed RESP over the limiter's own asyncio connections (one per concurrent call)."""

    __slots__ = ("_factory", "_idle")

    def __init__(self, client, limiter):
        super().__init__(limiter)
        pool = client.connection_pool
        kwargs = own_connection_kwargs(pool, limiter.timeout, Retry(NoBackoff(), 0))
        connection_class = pool.connection_class
        self._factory = lambda: connection_class(**kwargs)
        self._idle = []

    async def call(self, name, increment, mode, lease_max=0):
        body = self._body(name, increment, mode, lease_max)
        idle = self._idle
        conn = idle.pop() if idle else self._factory()
        try:
            await conn.send_packed_command((self._head + body,), False)
            try:
                reply = await conn.read_response()
            except NoScriptError:
                self._limiter._reloads += 1
                await conn.send_packed_command((self._eval_head + body,), False)
                reply = await conn.read_response()
        except BaseException:
            await conn.disconnect()
            idle.append(conn)
            raise
        idle.append(conn)
        return reply

    async def call_many(self, names, increments, mode, lease_maxes):
        """A GCRA batch in one round trip: per entry, the five fields or the ResponseError."""
        calls, replies = await self._run(lambda evaluate: self._payloads(
            names, increments, mode, lease_maxes, evaluate))
        return self._unpack(calls, replies)

    async def scripts(self, sha, lua, names, argvs):
        """Single-key calls of any script in one round trip: replies or ResponseErrors."""
        return (await self._run(lambda evaluate: self._script_payloads(
            sha, lua, names, argvs, evaluate)))[1]

    async def _run(self, payloads):
        """Send the calls ``payloads(False)`` in one round trip; those answered NOSCRIPT go
        again as EVAL (``payloads(True)``) on the same connection. ``(calls, replies)``."""
        calls = payloads(False)
        idle = self._idle
        conn = idle.pop() if idle else self._factory()
        try:
            replies = await self._exchange(conn, [payload for _, payload in calls])
            missing = [j for j, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                self._limiter._reloads += 1
                again = payloads(True)
                for j, reply in zip(missing, await self._exchange(
                        conn, [again[j][1] for j in missing])):
                    replies[j] = reply
        except BaseException:
            await conn.disconnect()
            idle.append(conn)
            raise
        idle.append(conn)
        return calls, replies

    @staticmethod
    async def _exchange(conn, payloads):
        await conn.send_packed_command((b"".join(payloads),), False)
        replies = []
        for _ in payloads:
            try:
                replies.append(await conn.read_response())
            except ResponseError as error:  # the connection stays in step: read the rest
                replies.append(error)
        return replies

    async def close(self):
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()


class ClientTransport:
    """Through the asyncio client's own commands and pipelines (cluster routing by slot)."""

    __slots__ = ("_client", "_limiter")

    def __init__(self, client, limiter):
        self._client = client
        self._limiter = limiter

    async def call(self, name, increment, mode, lease_max=0):
        argv = self._limiter.argv(increment, mode, lease_max)
        try:
            return await self._client.execute_command("EVALSHA", GCRA_SHA, 1, name, *argv)
        except NoScriptError:
            self._limiter._reloads += 1
            return await self._client.execute_command("EVAL", GCRA_LUA, 1, name, *argv)

    async def call_many(self, names, increments, mode, lease_maxes):
        argvs = [self._limiter.argv(increment, mode, lease_max)
                 for increment, lease_max in zip(increments, lease_maxes)]
        return await self.scripts(GCRA_SHA, GCRA_LUA, names, argvs)

    async def scripts(self, sha, lua, names, argvs):
        """Single-key calls of any script, pipelined: replies or ResponseErrors."""
        replies = await self._pipeline("EVALSHA", sha, names, argvs)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._limiter._reloads += 1
            for i, reply in zip(missing, await self._pipeline(
                    "EVAL", lua, [names[i] for i in missing], [argvs[i] for i in missing])):
                replies[i] = reply
        return replies

    async def _pipeline(self, command, script, names, argvs):
        pipe = self._client.pipeline(transaction=False)
        for name, argv in zip(names, argvs):
            pipe.execute_command(command, script, 1, name, *argv)
        replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                raise reply
        return replies

    async def close(self):
        pass


def transport(client, limiter):
    """Our own connections for a standalone server; the client itself for a cluster."""
    if isinstance(client, RedisCluster):
        return ClientTransport(client, limiter)
    if isinstance(client, redis.asyncio.Redis):
        return DirectTransport(client, limiter)
    raise TypeError(f"client must be a redis.asyncio.Redis or RedisCluster, got "
                    f"{type(client).__name__} (use fastcore.redis for sync clients)")


class RedisTokenBucket(TokenBucketBase):
    """``fastcore.redis.RedisTokenBucket`` for ``redis.asyncio`` clients (awaitable calls).

    ``client``: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``; every
    other argument, the errors and the ``Decision`` fields are those of the sync class.

    Example::

        limiter = RedisTokenBucket(redis.asyncio.Redis(), "100/minute")
        if not await limiter.try_acquire("tenant-1"):
            ...
        await limiter.close()
    """

    __slots__ = ("_io",)

    def __init__(self, client, rate, burst=None, **options):
        super().__init__(client, rate, burst, **options)
        self._io = transport(client, self)

    async def try_acquire(self, key, cost=1):
        """Take ``cost`` tokens from ``key``'s bucket if available; True when admitted."""
        increment = self.increment_ns(cost)
        name = self.name(key)
        if self.lease:
            return (await self._leased(key, name, cost, increment)).allowed
        if self._state == CLOSED or self.may_call():
            try:
                reply = await self._io.call(name, increment, ACQUIRE)
            except ERRORS as error:
                self.failed(error)
            else:
                if self._failures or self._state:
                    self.succeeded()
                return reply[0] == 1
        return self.degraded_try(key, cost)

    async def acquire(self, key, cost=1):
        """Take ``cost`` tokens from ``key``'s bucket if available; the full ``Decision``."""
        increment = self.increment_ns(cost)
        name = self.name(key)
        if self.lease:
            return await self._leased(key, name, cost, increment)
        return await self._decide(key, name, cost, increment, ACQUIRE)

    async def peek(self, key, cost=1):
        """The ``Decision`` that ``acquire(key, cost)`` would return now, consuming nothing."""
        return await self._decide(key, self.name(key), cost, self.increment_ns(cost), PEEK)

    async def _decide(self, key, name, cost, increment, mode, lease_max=0):
        if self._state == CLOSED or self.may_call():
            try:
                reply = await self._io.call(name, increment, mode, lease_max)
            except ERRORS as error:
                self.failed(error)
            else:
                if self._failures or self._state:
                    self.succeeded()
                if lease_max and reply[0]:
                    return self.grant(name, reply, None)
                return Decision(reply[0] == 1, reply[1], reply[2], reply[3])
        return self.degraded_decision(key, cost, mode is PEEK)

    async def _leased(self, key, name, cost, increment):
        decision = self.lease_spend(name, cost)
        if decision is not None:
            return decision
        return await self._decide(key, name, cost, increment, ACQUIRE, self.lease_max(cost))

    async def acquire_many(self, keys, costs=None, *, with_retry_after=False):
        """Decide a batch in one pipelined round trip; a numpy bool array, one per key."""
        keys = key_list(keys)
        names, increments, cost_list = self.batch(keys, costs, self.increment_ns)
        n = len(keys)
        allowed = np.zeros(n, dtype=np.bool_)
        retry = np.zeros(n, dtype=np.float64)
        pending = self.lease_pending(names, cost_list, allowed)
        failed = pending
        if pending and (self._state == CLOSED or self.may_call()):
            lease_maxes = [self.lease_max(cost_list[i]) if self.lease else 0 for i in pending]
            try:
                replies = await self._io.call_many([names[i] for i in pending],
                                                   [increments[i] for i in pending], ACQUIRE,
                                                   lease_maxes)
            except ERRORS as error:
                self.failed(error)
            else:
                failed = self.settle(pending, replies, names, allowed, retry, None)
        self.degraded_many(keys, None if costs is None else cost_list, allowed, retry, failed)
        return (allowed, retry) if with_retry_after else allowed

    async def reset(self, key=None):
        """Refill ``key``'s bucket, or delete every bucket under the prefix (no key).
        Raises ``BackendError`` when Redis fails."""
        try:
            if key is not None:
                name = self.name(key)
                self.drop_lease(name)
                await self._client.delete(name)
                return
            with self._lock:
                self._leases.clear()
            pattern = self.prefix.replace(b"\\", b"\\\\")
            for special in (b"*", b"?", b"["):
                pattern = pattern.replace(special, b"\\" + special)
            async for name in self._client.scan_iter(match=pattern + b"*", count=1000):
                await self._client.delete(name)
        except ERRORS as error:
            raise BackendError(f"reset failed: {error}", error) from error

    async def close(self):
        """Give back the whole tokens still leased (one pipelined round trip) and close the
        limiter's connections."""
        if self._closed:
            return
        self._closed = True
        leases = self.take_leases()
        try:
            if leases and self.may_call():
                await self._give_back(leases)
        except ERRORS as error:
            self.failed(error)
        finally:
            await self._io.close()

    async def _give_back(self, leases):
        await self._io.call_many([name for name, _, _ in leases],
                                 [tokens * self.emission_ns for _, tokens, _ in leases],
                                 GIVE_BACK, [0] * len(leases))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()


class RedisSlidingWindow(WindowBase):
    """``fastcore.redis.RedisSlidingWindow`` for ``redis.asyncio`` clients (awaitable calls),
    leases included.

    Example::

        limiter = RedisSlidingWindow(redis.asyncio.Redis(), 1000, 60.0, slices=12)
        if not await limiter.try_acquire("tenant-1"):
            ...
    """

    __slots__ = ("_io",)

    def __init__(self, client, limit, window=None, **options):
        super().__init__(client, limit, window, **options)
        self._io = transport(client, self)

    async def _call(self, name, units, mode, lease_max=0):
        """The script's reply, or None when Redis failed or the breaker is open."""
        if self._state == CLOSED or self.may_call():
            try:
                reply = (await self._io.scripts(WINDOW_SHA, WINDOW_LUA, [name],
                                                [self.argv(units, mode, lease_max)]))[0]
                if isinstance(reply, Exception):
                    raise reply
            except ERRORS as error:
                self.failed(error)
            else:
                if self._failures or self._state:
                    self.succeeded()
                return reply
        return None

    async def try_acquire(self, key, cost=1):
        """Count ``cost`` against ``key`` if the window has room; True when admitted."""
        if self.lease:
            return (await self.acquire(key, cost)).allowed
        reply = await self._call(self.name(key), self.units(cost), ACQUIRE)
        if reply is None:
            return self.degraded_try(key, cost)
        return reply[0] == 1

    async def acquire(self, key, cost=1):
        """Count ``cost`` against ``key`` if the window has room; the full ``Decision``
        (paid from this process's lease on ``key`` when it holds enough)."""
        units = self.units(cost)
        name = self.name(key)
        paid, lease_max = self.lease_first(name, units, cost)
        if paid is not None:
            return paid
        sent_ns = self._now_ns()
        reply = await self._call(name, units, ACQUIRE, lease_max)
        if reply is None:
            return self.degraded_decision(key, cost)
        return self.answer(name, reply, sent_ns)

    async def peek(self, key, cost=1):
        """The ``Decision`` that ``acquire(key, cost)`` would return now, counting nothing."""
        reply = await self._call(self.name(key), self.units(cost), PEEK)
        if reply is None:
            return self.degraded_decision(key, cost, True)
        return self.answer(None, reply, None)

    async def acquire_many(self, keys, costs=None, *, with_retry_after=False):
        """Decide a batch, pipelined in one round trip; a numpy bool array, one per key."""
        keys = key_list(keys)
        names, units, cost_list = self.batch(keys, costs, self.units)
        allowed = np.zeros(len(keys), dtype=np.bool_)
        retry = np.zeros(len(keys), dtype=np.float64)
        failed = pending = self.lease_pending(names, units, allowed)
        if pending and (self._state == CLOSED or self.may_call()):
            sent_ns = self._now_ns()
            try:
                replies = await self._io.scripts(
                    WINDOW_SHA, WINDOW_LUA, [names[i] for i in pending],
                    self.batch_argvs(pending, units, cost_list))
            except ERRORS as error:
                self.failed(error)
            else:
                failed = self.settle(pending, replies, names, allowed, retry, sent_ns)
        self.degraded_many(keys, None if costs is None else cost_list, allowed, retry, failed)
        return (allowed, retry) if with_retry_after else allowed

    reset = RedisTokenBucket.reset
    close = RedisTokenBucket.close     # gives back the leased units, as the sync close()

    async def _give_back(self, leases):
        await self._io.scripts(WINDOW_SHA, WINDOW_LUA, [name for name, _, _ in leases],
                               self.give_back_argvs(leases))

    __aenter__ = RedisTokenBucket.__aenter__
    __aexit__ = RedisTokenBucket.__aexit__
