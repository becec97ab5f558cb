"""fastcore.rate_limited on plain and async functions, with hand-computed admissions on a
ManualClock; the asyncio Redis limiter against a real redis-server."""

import asyncio
import inspect
import pickle
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from redis_fixtures import async_token_bucket, prefix, redis_server  # noqa: E402,F401

import fastcore  # noqa: E402
from fastcore import (  # noqa: E402
    Decision, DegradedDecision, KeyedTokenBucket, ManualClock, RateLimitExceeded, SlidingWindow,
    TokenBucket, rate_limited,
)


def test_sync_function_burst_then_denied_with_exact_retry_after(clock):
    limiter = KeyedTokenBucket(1, 2, clock=clock)      # T = 1 s, tau = 2 s
    calls = []

    @rate_limited(limiter, key=lambda tenant, text: tenant)
    def handle(tenant, text):
        """Handle one request."""
        calls.append((tenant, text))
        return text.upper()

    assert handle("t1", "a") == "A" and handle("t1", text="b") == "B"
    with pytest.raises(RateLimitExceeded) as denied:
        handle("t1", "c")
    # retry_after = tat + T - tau - now = 2 + 1 - 2 = 1 s.
    assert denied.value.retry_after == 1.0
    assert isinstance(denied.value, fastcore.FastcoreError)
    assert "handle" in str(denied.value)
    assert calls == [("t1", "a"), ("t1", "b")]        # the denied call never ran
    assert handle("t2", "d") == "D"                    # another key, its own budget
    clock.advance_ns(999_999_999)                      # one ns early: still denied
    with pytest.raises(RateLimitExceeded) as early:
        handle("t1", "e")
    assert early.value.retry_after == 1e-9
    clock.advance_ns(1)                                # exactly at retry_after: admitted
    assert handle("t1", "f") == "F"


def test_wraps_keeps_the_functions_metadata():
    limiter = KeyedTokenBucket(1, 1)

    @rate_limited(limiter)
    def handle(tenant: str, *, cost: int = 1) -> str:
        """Handle one request."""
        return tenant

    assert handle.__name__ == "handle"
    assert handle.__doc__ == "Handle one request."
    assert handle.__qualname__.endswith("test_wraps_keeps_the_functions_metadata.<locals>.handle")
    assert str(inspect.signature(handle)) == "(tenant: str, *, cost: int = 1) -> str"
    assert handle.__wrapped__.__name__ == "handle"

    @rate_limited(limiter)
    async def fetch(url):
        """Fetch it."""

    assert inspect.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch it."


def test_async_function_and_cost_callable(clock):
    limiter = KeyedTokenBucket(1, 3, clock=clock)
    calls = []

    @rate_limited(limiter, key="llm", cost=lambda prompt, tokens: tokens)
    async def complete(prompt, tokens):
        calls.append(prompt)
        await asyncio.sleep(0)
        return prompt

    async def scenario():
        assert await complete("a", 2) == "a"
        with pytest.raises(RateLimitExceeded) as denied:
            await complete("b", 2)                     # 1 token left, 2 asked
        assert denied.value.retry_after == 1.0
        assert await complete("c", 1) == "c"
        assert "llm" in limiter

    asyncio.run(scenario())
    assert calls == ["a", "c"]


def test_default_key_is_one_budget_per_function(clock):
    limiter = KeyedTokenBucket(1, 1, clock=clock)

    @rate_limited(limiter)
    def first():
        return 1

    @rate_limited(limiter)
    def second():
        return 2

    assert first() == 1 and second() == 2
    with pytest.raises(RateLimitExceeded):
        first()
    assert len(limiter) == 2
    assert f"{__name__}.test_default_key_is_one_budget_per_function.<locals>.first" in limiter


def test_unkeyed_bucket_and_window_limiter(clock):
    bucket = TokenBucket(2, 1, clock=clock)

    @rate_limited(bucket)
    def ping():
        return "pong"

    assert ping() == "pong"
    with pytest.raises(RateLimitExceeded) as denied:
        ping()
    assert denied.value.retry_after == 0.5
    with pytest.raises(TypeError, match="takes no key"):
        rate_limited(bucket, key="k")

    window = SlidingWindow(2, 10.0, clock=clock)

    @rate_limited(window, key=lambda user: user)
    def act(user):
        return user

    assert act("u") == "u" and act("u") == "u"
    with pytest.raises(RateLimitExceeded) as denied:
        act("u")
    assert denied.value.retry_after > 0


def test_limiter_errors_propagate(clock):
    limiter = KeyedTokenBucket(1, 2, clock=clock)

    @rate_limited(limiter, key=lambda item: item)
    def take(item):
        return item

    with pytest.raises(TypeError, match="unhashable") as caught:
        take(["list"])
    assert "rate_limited(test_limiter_errors_propagate.<locals>.take): the limiter refused " \
        "the key (list)" in str(caught.value)

    @rate_limited(limiter, key="k", cost=lambda text: text)
    def priced(text):
        return text

    with pytest.raises(TypeError, match=r"rate_limited\(.*priced\): cost must be a number, "
                                        r"got str"):
        priced("2")
    with pytest.raises(fastcore.InvalidCost, match="cost"):
        priced(-1.0)

    # A constant cost above the burst could never be admitted: refused when decorating.
    with pytest.raises(fastcore.CostExceedsBurst, match="cost 3"):
        rate_limited(limiter, cost=3)

    @rate_limited(limiter, key="k", cost=lambda size: size)
    def too_big(size):
        return None

    with pytest.raises(fastcore.CostExceedsBurst):
        too_big(3)
    assert len(limiter) == 0


def test_bad_arguments_are_refused():
    limiter = KeyedTokenBucket(1, 1)
    with pytest.raises(TypeError, match="cost"):
        rate_limited(limiter, cost="2")
    with pytest.raises(TypeError, match="acquire"):
        rate_limited(object())(lambda: None)


def test_async_redis_limiter_on_async_function(redis_server, prefix):
    from fastcore.redis import RedisTokenBucket as SyncRedisTokenBucket

    async def scenario():
        clock = ManualClock(50.0)
        calls = []
        async with async_token_bucket(redis_server, 1, 2, prefix=prefix,
                                      clock=clock) as limiter:
            @rate_limited(limiter, key=lambda agent: agent)
            async def run(agent):
                calls.append(agent)
                return agent

            assert await run("a") == "a" and await run("a") == "a"
            with pytest.raises(RateLimitExceeded) as denied:
                await run("a")
            assert denied.value.retry_after == 1.0
            clock.advance(1.0)
            assert await run("a") == "a"
            with pytest.raises(TypeError, match="only limit async def"):
                rate_limited(limiter)(lambda: None)
        assert limiter.status()["errors"] == 0
        return calls

    assert asyncio.run(scenario()) == ["a", "a", "a"]

    with redis_server.client() as client:
        sync_limiter = SyncRedisTokenBucket(client, 1, 1, prefix=prefix)

        @rate_limited(sync_limiter)
        def plain():
            return "ok"

        assert plain() == "ok"                         # sync Redis serves plain functions
        with pytest.raises(TypeError, match="block the event loop"):
            @rate_limited(sync_limiter)
            async def on_loop():
                return None
        sync_limiter.close()


def test_async_redis_limiter_errors_name_the_argument(redis_server, prefix):
    async def scenario():
        async with async_token_bucket(redis_server, 1, 2, prefix=prefix) as limiter:
            @rate_limited(limiter, key=lambda agent, cost: agent, cost=lambda agent, cost: cost)
            async def run(agent, cost):
                return agent

            with pytest.raises(TypeError, match=r"cost must be a number, got str"):
                await run("a", "2")
            with pytest.raises(TypeError, match=r"refused the key \(int\)"):
                await run(7, 1)
            with pytest.raises(fastcore.CostExceedsBurst, match="cost 3.0 exceeds"):
                await run("a", 3)
            assert await run("a", 1) == "a"
            with pytest.raises(fastcore.CostExceedsBurst, match="cost"):
                rate_limited(limiter, cost=3)

    asyncio.run(scenario())


def test_degraded_decision_contract():
    d = DegradedDecision(False, 0, 2_500_000_000, 0, "fail_closed")
    assert not d and d.retry_after == 2.5 and d.on_error == "fail_closed"
    assert d == Decision(False, 0, 2_500_000_000, 0) and isinstance(d, Decision)
    assert repr(d) == ("DegradedDecision(allowed=False, remaining=0, retry_after=2.5, "
                       "reset_after=0.0, on_error='fail_closed')")
    again = pickle.loads(pickle.dumps(d))
    assert type(again) is DegradedDecision and again.on_error == "fail_closed" and again == d
    for bad in ("closed", None, 1):
        with pytest.raises(ValueError, match="on_error"):
            DegradedDecision(True, 0, 0, 0, bad)
