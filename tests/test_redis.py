"""RedisTokenBucket against real redis-server processes: hand-computed cases, bad input, key
names, expiry, SCRIPT FLUSH, every on_error mode across a server kill and restart, the
breaker, the decision deadline with a hung server, leases, and four processes on one key."""

import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from redis_fixtures import own_server, prefix, redis_server  # noqa: E402,F401,F811

redis = pytest.importorskip("redis")

from fastcore import (  # noqa: E402
    CostExceedsBurst, Decision, DegradedDecision, InvalidCost, InvalidRate, KeyedTokenBucket,
    ManualClock,
)
from fastcore.redis import InvalidKey, RedisSlidingWindow, RedisTokenBucket  # noqa: E402


@pytest.fixture
def client(redis_server):
    with redis_server.client() as conn:
        yield conn


def bucket(client, rate, burst, prefix, **options):
    return RedisTokenBucket(client, rate, burst, prefix=prefix, **options)


def test_worked_example_from_gcra_pxd(client, prefix):
    # rate 3/s, burst 3: T = 333_333_334 ns, tau = 1_000_000_002 ns (src_cy/gcra.pxd).
    clock = ManualClock(50.0)
    limiter = bucket(client, 3, 3, prefix, clock=clock)
    assert (limiter.emission_ns, limiter.tau_ns) == (333_333_334, 1_000_000_002)
    assert limiter.acquire("k") == Decision(True, 2, 0, 333_333_334)
    assert limiter.acquire("k") == Decision(True, 1, 0, 666_666_668)
    assert limiter.acquire("k") == Decision(True, 0, 0, 1_000_000_002)
    assert limiter.acquire("k") == Decision(False, 0, 333_333_334, 1_000_000_002)
    assert limiter.peek("k") == Decision(False, 0, 333_333_334, 1_000_000_002)
    clock.advance_ns(333_333_333)        # 1 ns too early
    assert not limiter.try_acquire("k")
    clock.advance_ns(1)                  # exactly at retry_after
    assert limiter.acquire("k") == Decision(True, 0, 0, 1_000_000_002)


def test_fractional_costs_round_like_the_local_bucket(client, prefix):
    clock = ManualClock(7.25)
    remote = bucket(client, 7, 10.5, prefix, clock=clock)
    local = KeyedTokenBucket(7, 10.5, clock=clock)
    for cost in (0.1, 2.75, 1e-9, 0, 3.3333, 4.0, 0.5):
        assert remote.acquire("k", cost) == local.acquire("k", cost)
        clock.advance_ns(12_345_679)
    assert remote.peek("k", 10) == local.peek("k", 10)
    with pytest.raises(CostExceedsBurst):   # 10.5 * T rounds past floor(10.5 * T)
        remote.peek("k", 10.5)
    with pytest.raises(CostExceedsBurst):
        local.peek("k", 10.5)


def test_server_time_burst_then_denial(client, prefix):
    limiter = bucket(client, 0.001, 5, prefix)
    assert [limiter.try_acquire("k") for _ in range(6)] == [True] * 5 + [False]
    denied = limiter.acquire("k")
    assert not denied and denied.remaining == 0
    assert 990 < denied.retry_after <= 1000      # a token every 1000 s
    # The key expires when the bucket is full again: 5 tokens at 1 per 1000 s.
    ttl_ms = client.pttl(limiter.name("k"))
    assert 4_990_000 < ttl_ms <= 5_000_000


def test_idle_key_is_deleted_not_stored(client, prefix):
    limiter = bucket(client, 10, 10, prefix)
    assert limiter.acquire("zero", 0) == Decision(True, 10, 0, 0)
    assert not client.exists(limiter.name("zero"))


def test_expiry_refills(client, prefix):
    # The server's clock runs on, so nothing here may depend on how long a call takes: the
    # decision and the expiry are both read from the one admitting call.
    limiter = bucket(client, 1000, 2, prefix)    # full again 2 ms after the last admit
    assert limiter.acquire("k", 2) == Decision(True, 0, 0, 2_000_000)
    assert client.pttl(limiter.name("k")) in (-2, 0, 1, 2)   # -2: already expired
    deadline = time.monotonic() + 5
    while client.exists(limiter.name("k")) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not client.exists(limiter.name("k"))
    assert limiter.acquire("k", 2) == Decision(True, 0, 0, 2_000_000)


def test_bad_input_raises_and_sends_nothing(client, prefix):
    limiter = bucket(client, 5, 5, prefix)
    before = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    for cost, error in ((-1, InvalidCost), (float("nan"), InvalidCost), ("2", TypeError),
                        (float("inf"), InvalidCost), (5.5, CostExceedsBurst)):
        with pytest.raises(error):
            limiter.acquire("k", cost)
        with pytest.raises(error):
            limiter.try_acquire("k", cost)
        if not isinstance(cost, str):   # batches convert costs with numpy, as locally
            with pytest.raises(error):
                limiter.acquire_many(["k", "j"], [1, cost])
    with pytest.raises(TypeError):
        limiter.acquire(12)
    with pytest.raises(TypeError):
        limiter.acquire_many(["ok", ("tuple",)])
    with pytest.raises(InvalidKey):
        limiter.acquire("x" * 1025)
    with pytest.raises(InvalidKey, match="not valid UTF-8") as caught:
        limiter.acquire("secret-api-key-\ud800")
    assert "secret" not in str(caught.value)            # keys may be secrets: never quoted
    with pytest.raises(ValueError):
        limiter.acquire_many(["a", "b"], [1])
    after = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert after == before
    assert not client.keys(prefix + "*")


@pytest.mark.parametrize("options, error", [
    ({"prefix": "a{b"}, ValueError), ({"prefix": 5}, TypeError),
    ({"on_error": "ignore"}, ValueError), ({"on_error": "fallback"}, ValueError),
    ({"fallback": KeyedTokenBucket(1)}, ValueError),
    ({"on_error": "fallback", "fallback": object()}, TypeError),
    ({"lease": -1}, ValueError), ({"lease": 2.5}, ValueError),
    ({"timeout": 0}, ValueError), ({"breaker_threshold": 0}, ValueError),
    ({"clock": object()}, TypeError),
])
def test_bad_options(client, options, error):
    with pytest.raises(error):
        RedisTokenBucket(client, 1, 1, **options)


def test_bad_rates(client):
    with pytest.raises(InvalidRate):
        RedisTokenBucket(client, 0, 1)
    with pytest.raises(InvalidRate, match="2\\*\\*50"):
        RedisTokenBucket(client, "1/day", 1000)      # tau of 1000 days is past 2**50 ns
    with pytest.raises(TypeError):
        RedisTokenBucket(object(), 1, 1)


def test_key_names_are_escaped_hash_tags(client, prefix):
    limiter = bucket(client, 0.001, 1, prefix)     # no refill while the test runs
    assert limiter.name("tenant-1") == prefix.encode() + b"tb:{tenant-1}"
    assert limiter.name("a{b}") == prefix.encode() + b"tb:{a%7Bb%7D}"
    assert limiter.name("") == prefix.encode() + b"tb:{%}"
    assert limiter.name(b"\xff") == prefix.encode() + b"tb:{\xff}"
    hostile = ["a{b}", "a%7Bb%7D", "a%", "", "%", "'); redis.call('FLUSHALL') --", "\n\r*1",
               "}{", "x" * 300]
    assert len({limiter.name(key) for key in hostile}) == len(hostile)
    client.set(prefix + "sentinel", "1")
    for key in hostile:
        assert limiter.try_acquire(key)
        assert not limiter.try_acquire(key)
    assert client.get(prefix + "sentinel") == b"1"
    assert len(client.keys(prefix + "tb:*")) == len(hostile)


def test_acquire_many_matches_sequential_local(client, prefix):
    clock = ManualClock(3.0)
    remote = bucket(client, 4, 6, prefix, clock=clock)
    local = KeyedTokenBucket(4, 6, clock=clock)
    rng = np.random.default_rng(7)
    for _ in range(5):
        keys = [f"k{i}" for i in rng.integers(0, 5, 40)]
        costs = rng.choice([0.5, 1, 2, 3], 40)
        got, wait = remote.acquire_many(keys, costs, with_retry_after=True)
        want, want_wait = local.acquire_many(keys, costs, with_retry_after=True)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(wait, want_wait, rtol=0, atol=1e-9)
        clock.advance(0.7)
    assert remote.acquire_many([]).shape == (0,)


def test_reset(client, prefix):
    limiter = bucket(client, 0.001, 2, prefix)
    other = bucket(client, 0.001, 2, prefix + "other:")
    for key in ("a", "b"):
        limiter.acquire(key, 2)
    other.acquire("a", 2)
    limiter.reset("a")
    assert limiter.peek("a", 2) and not limiter.peek("b", 2)
    limiter.reset()
    assert limiter.peek("b", 2)
    assert not other.peek("a", 2)                # another prefix is untouched


def test_script_flush_mid_run(client, prefix):
    clock = ManualClock(1.0)
    remote = bucket(client, 10, 5, prefix, clock=clock)
    local = KeyedTokenBucket(10, 5, clock=clock)
    for step in range(30):
        if step % 7 == 3:
            client.script_flush()
        if step % 2:
            keys = ["a", "b", "a"]
            np.testing.assert_array_equal(remote.acquire_many(keys), local.acquire_many(keys))
        else:
            assert remote.acquire("a") == local.acquire("a")
        clock.advance(0.03)
    status = remote.status()
    assert status["script_reloads"] >= 4 and status["errors"] == 0


# -- faults -----------------------------------------------------------------------------------

def fault_limiter(server, mode, clock, **options):
    fallback = KeyedTokenBucket(0.001, 3, clock=clock) if mode == "fallback" else None
    options = {"breaker_threshold": 2, "breaker_cooldown": 5.0, "error_retry_after": 0.5,
               **options}
    return RedisTokenBucket(server.client(), 0.001, 10, on_error=mode, fallback=fallback,
                            clock=clock, **options)


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open", "fallback"])
def test_kill_and_restart(own_server, mode):
    clock = ManualClock(100.0)
    # a killed server refuses at once; the long deadline only keeps a loaded machine's slow
    # reconnect after the restart from counting as an outage
    limiter = fault_limiter(own_server, mode, clock, timeout=2.0)
    redis_admitted = sum(limiter.try_acquire("k") for _ in range(6))
    assert redis_admitted == 6
    own_server.kill()
    answers = [limiter.acquire("k") for _ in range(5)]
    answers += [limiter.try_acquire("k") for _ in range(5)]
    answers += list(limiter.acquire_many(["k", "j"]))
    status = limiter.status()
    assert status["breaker"] == "open" and status["mode"] == mode
    assert status["errors"] == 2 and status["breaker_opens"] == 1   # then no more calls
    assert status["degraded_decisions"] == 12
    if mode == "fail_closed":
        assert answers[0] == Decision(False, 0, 500_000_000, 0)
        assert not any(answers)
    elif mode == "fail_open":
        assert answers[0] == Decision(True, 0, 0, 0) and all(answers)
    else:   # the fallback's own quota of 3 for "k", then denials; "j" is a new key
        assert [bool(a) for a in answers] == [True] * 3 + [False] * 7 + [False, True]
    # What Redis did not decide is marked, so a caller can tell an outage from a quota.
    for answer in answers[:5]:
        assert isinstance(answer, DegradedDecision) and answer.on_error == mode
    own_server.start()                   # the append-only file restores the bucket
    clock.advance(4.0)
    assert limiter.status()["breaker"] == "open"       # still cooling down
    clock.advance(1.0)
    # The probe goes through; the 4 tokens left are admitted once, never again.
    admitted = sum(limiter.try_acquire("k") for _ in range(8))
    assert limiter.status()["breaker"] == "closed"
    assert redis_admitted + admitted == 10
    assert limiter.status()["switches"] == 3       # closed -> open -> half_open -> closed


def test_breaker_probe_failure_reopens(own_server):
    clock = ManualClock(0.0)
    limiter = fault_limiter(own_server, "fail_closed", clock, breaker_cooldown=1.0)
    own_server.kill()
    assert not limiter.try_acquire("k") and not limiter.try_acquire("k")
    assert limiter.status()["breaker"] == "open"
    clock.advance(1.0)
    assert not limiter.try_acquire("k")            # the probe fails: open again
    status = limiter.status()
    assert status["breaker"] == "open" and status["breaker_opens"] == 2
    assert status["errors"] == 3
    assert "ConnectionError" in status["last_error"]
    own_server.start()
    clock.advance(0.5)
    assert not limiter.try_acquire("k")            # cooldown restarted at the failed probe
    assert limiter.status()["errors"] == 3
    clock.advance(0.5)
    assert limiter.try_acquire("k")
    assert limiter.status()["breaker"] == "closed"


def timed(call, *args):
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def test_deadline_with_a_hung_and_a_dead_server(own_server):
    """A SIGSTOPped server accepts connections and never answers: each decision waits one
    read timeout (0.05 s) until the breaker opens, then answers without any I/O. redis-py's
    defaults would retry each command 10 times with back-off (seconds per call).

    The bound asserted is 2 s, 40x the timeout, so a loaded CI machine cannot fail it,
    while a limiter inheriting redis-py's retries (about 4 s) or no timeout (forever) would.
    """
    limiter = RedisTokenBucket(own_server.client(), 100, 100, timeout=0.05,
                               breaker_threshold=3)
    assert limiter.try_acquire("k")
    own_server.pause()
    try:
        hung = [timed(limiter.acquire, "k") for _ in range(3)]
        open_ = [timed(limiter.acquire, "k") for _ in range(100)]
        batch = timed(limiter.acquire_many, ["k"] * 100)
        # The open breaker answered 200 decisions without trying the server: no new errors.
        # (Counted, not timed: a loaded machine may pause any call.)
        assert limiter.status()["errors"] == 3
    finally:
        own_server.resume()
    own_server.kill()
    limiter.succeeded()               # close the breaker by hand to measure refused connects
    dead = [timed(limiter.acquire, "k") for _ in range(3)]
    print(f"\nhung server: {[round(t * 1e3, 1) for t in hung]} ms; breaker open: max "
          f"{max(open_) * 1e6:.0f} us; batch of 100 {batch * 1e6:.0f} us; dead server: "
          f"{[round(t * 1e3, 2) for t in dead]} ms")
    assert all(0.04 < t < 2.0 for t in hung)
    assert max(dead) < 2.0
    assert limiter.status()["errors"] == 6


# -- leases and many processes ------------------------------------------------------------

def test_lease_takes_tokens_from_redis_and_gives_them_back(client, prefix):
    clock = ManualClock(10.0)
    one = bucket(client, 0.001, 100, prefix, lease=10, clock=clock)
    two = bucket(client, 0.001, 100, prefix, lease=10, clock=clock)
    first = one.acquire("k")
    assert first == Decision(True, 99, 0, first.reset_after_ns)   # 90 in Redis + 9 leased
    assert two.peek("k").remaining == 89       # Redis knows 10 are gone (peek counts its own 1)
    assert sum(one.try_acquire("k") for _ in range(9)) == 9        # no round trip
    assert sum(two.try_acquire("k") for _ in range(95)) == 90      # never more than 100
    assert not one.try_acquire("k")
    one.close()
    two.close()                                                     # 9 tokens go back
    assert one.peek("k").remaining == 0
    assert bucket(client, 0.001, 100, prefix, clock=clock).peek("k").remaining == 0


def test_lease_returned_on_close_and_expired_otherwise(client, prefix):
    clock = ManualClock(10.0)
    with bucket(client, 0.001, 100, prefix, lease=30, lease_ttl=2.0, clock=clock) as limiter:
        assert limiter.try_acquire("k", 5) and limiter.try_acquire("j")
        assert limiter.status()["leased_keys"] == 2
        clock.advance(1.0)
        assert limiter.try_acquire("k")        # from the lease
    plain = bucket(client, 0.001, 100, prefix, clock=clock)
    assert plain.peek("k").remaining == 93 and plain.peek("j").remaining == 98
    # Not closed, past lease_ttl: the leased tokens are simply not used again.
    limiter = bucket(client, 0.001, 100, prefix, lease=30, lease_ttl=2.0, clock=clock)
    assert limiter.try_acquire("x")
    clock.advance(2.0)
    assert limiter.try_acquire("x")            # a new round trip and a new lease
    assert plain.peek("x").remaining == 100 - 30 - 30 - 1
    assert limiter.status()["leased_keys"] == 1


def limiter_of(kind, client, prefix, lease=0):
    """A limiter of 100 on a tiny rate: a bucket of burst 100 refilling 1 token per 1000 s,
    or a window of 100 per 10**6 s in one slice (the ring leaves and leases end only at a
    slice boundary, every 11.6 days: none falls inside a test)."""
    if kind == "bucket":
        return RedisTokenBucket(client, 0.001, 100, prefix=prefix, lease=lease)
    return RedisSlidingWindow(client, 100, 1e6, slices=1, prefix=prefix, lease=lease)


def hammer(url, kind, prefix, lease, attempts, queue):
    client = redis.Redis.from_url(url)
    limiter = limiter_of(kind, client, prefix, lease)
    admitted = sum(limiter.try_acquire("hot") for _ in range(attempts))
    limiter.close()
    queue.put(admitted)


@pytest.mark.parametrize("kind", ["bucket", "window"])
@pytest.mark.parametrize("lease", [0, 7])
def test_four_processes_admit_exactly_the_limit(redis_server, prefix, kind, lease):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=hammer,
                               args=(redis_server.url, kind, prefix, lease, 150, queue))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    totals = [queue.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(10)
    if lease:
        # Leases never over-admit; units left in a lease when the loops end go back on close.
        assert sum(totals) <= 100
        with redis_server.client() as client:
            left = limiter_of(kind, client, prefix).peek("hot", 0).remaining
        assert sum(totals) + left == 100
    else:
        assert sum(totals) == 100


def test_no_exception_escapes_when_redis_is_down_mid_batch(own_server):
    clock = ManualClock(0.0)
    limiter = fault_limiter(own_server, "fail_closed", clock, lease=3)
    assert limiter.try_acquire("k")
    own_server.kill()
    assert limiter.try_acquire("k") and limiter.try_acquire("k")     # from the lease
    assert not limiter.try_acquire("k")
    assert not limiter.acquire_many(["k", "j"]).any()
    limiter.close()                            # give-back fails quietly
    assert math.isclose(limiter.acquire("k").retry_after, 0.5)


def test_threads_share_one_limiter_exactly(client, prefix):
    """Threads borrow separate connections from the limiter's stack; still exactly burst."""
    import threading

    limiter = bucket(client, 0.001, 100, prefix)
    counts = []

    def work():
        counts.append(sum(limiter.try_acquire("hot") for _ in range(60)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 100
    assert limiter.status()["errors"] == 0


def test_reset_all_escapes_glob_characters_in_the_prefix(client, prefix):
    star = bucket(client, 0.001, 1, prefix + "a*")
    plain = bucket(client, 0.001, 1, prefix + "ab")
    star.acquire("k")
    plain.acquire("k")
    star.reset()
    assert star.peek("k") and not plain.peek("k")


def test_reset_raises_backend_error_when_redis_is_down(own_server):
    from fastcore.errors import BackendError

    limiter = RedisTokenBucket(own_server.client(socket_timeout=0.2, socket_connect_timeout=0.2,
                                                 retry=None), 1, 1)
    own_server.kill()
    with pytest.raises(BackendError):
        limiter.reset("k")


def test_errors_name_the_argument(client, prefix):
    limiter = bucket(client, 5, 5, prefix)
    window = RedisSlidingWindow(client, 5, 1.0, prefix=prefix)
    for subject in (limiter, window):
        with pytest.raises(TypeError, match=r"^cost must be a number, got '2'"):
            subject.acquire("k", cost="2")
        with pytest.raises(TypeError, match="^key must be str or bytes"):
            subject.peek(12)
        with pytest.raises(TypeError, match="^keys must be an iterable"):
            subject.acquire_many(5)
        with pytest.raises(TypeError, match="^keys must be a sequence of keys, not one str"):
            subject.acquire_many("abc")
        with pytest.raises(TypeError, match=r"^keys\[1\]: key must be str or bytes"):
            subject.acquire_many(["ok", 3])
        with pytest.raises(InvalidKey, match=r"^keys\[2\]: key of 1025 bytes"):
            subject.acquire_many(["a", "b", "x" * 1025])
        with pytest.raises(ValueError, match="^costs must be None or a sequence of numbers"):
            subject.acquire_many(["a"], ["two"])
        with pytest.raises(TypeError, match="^costs must be None or a sequence of numbers"):
            subject.acquire_many(["a"], [object()])
        with pytest.raises(InvalidCost, match=r"^costs\[1\]: cost must be finite"):
            subject.acquire_many(["a", "b"], [1, -1])
        with pytest.raises(ValueError, match=r"^costs\[0\]: cost 6.0 exceeds"):
            subject.acquire_many(["a", "b"], [6, 1])
    assert not client.keys(prefix + "*")          # nothing was sent
