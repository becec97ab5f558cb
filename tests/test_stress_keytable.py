"""Stress: the key table under KeyedTokenBucket, SlidingWindowCounter and SlidingWindow.

Re-entrant keys (``__eq__`` and ``__del__`` that call back into the limiter), threads
switching every microsecond, batches running beside inserts into a full table, and batches
that raise half way. Each test runs one scenario of ``stress_scenarios.py`` in a fresh
interpreter (``stress_runner.run_scenario``), so a segfault, a hang or an AddressSanitizer
report fails that test alone. Scenarios are bounded (iterations and about 2 s of wall clock)
and read a ``ManualClock``. ``pytest -m stress`` runs these and the cache scenarios only; CI
also runs them against a debug build under AddressSanitizer.
"""

import pytest

from stress_runner import run_scenario

pytestmark = pytest.mark.stress

KINDS = ["token", "counter", "window"]

def ids(params):
    return "-".join(str(p) for p in params)


# -- re-entrant __eq__ ---------------------------------------------------------------------

def _reentrant_cases():
    for kind in KINDS:
        for action in ("reset", "fill"):
            for op in ("try_acquire", "acquire_many"):
                yield pytest.param(kind, op, action, id=ids((kind, op, action)))
            yield pytest.param(kind, "handle", action, id=ids((kind, "handle", action)))
        yield pytest.param(kind, "reset_key", "fill", id=ids((kind, "reset_key", "fill")))


@pytest.mark.parametrize("kind,op,action", list(_reentrant_cases()))
def test_reentrant_eq_that_changes_the_table(kind, op, action):
    """A key equal to a stored one (not the same object) whose __eq__ calls reset() or
    fills the table: the call completes, counts on the right key, and the table is
    consistent afterwards (see stress_scenarios.reentrant_eq)."""
    run_scenario("reentrant_eq", kind=kind, op=op, action=action)


@pytest.mark.parametrize("kind", KINDS)
def test_reentrant_eq_in_reads_and_key_resets(kind):
    """peek, `in` and reset(key) whose key's __eq__ resets or fills the table: consistent
    answers and table."""
    runs = [["reentrant_eq", {"kind": kind, "op": op, "action": action}]
            for op in ("peek", "contains") for action in ("reset", "fill")]
    runs += [["reentrant_eq", {"kind": kind, "op": "reset_key", "action": "reset"}]]
    run_scenario("several", runs=runs)


# -- threads -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_batches_beside_inserts_into_a_full_table(kind):
    run_scenario("batches_while_inserting", kind=kind)


@pytest.mark.parametrize("kind", KINDS)
def test_eviction_waits_for_one_batch_not_for_all(kind):
    """The wait of an evicting try_acquire beside looping batches is bounded by 1.5 s, many
    batches' worth (a batch of 100,000 handles takes about a millisecond)."""
    result = run_scenario("eviction_beside_batches", kind=kind, bound=1.5)
    assert result["waited"] < 1.5


# -- __del__ of a dropped key --------------------------------------------------------------

@pytest.mark.parametrize("kind,trigger", [
    pytest.param(kind, trigger, id=ids((kind, trigger)))
    for kind in KINDS for trigger in ("evict", "idle")])
def test_del_of_a_dropped_key_inserts_a_key(kind, trigger):
    run_scenario("del_reenters", kind=kind, action="insert", trigger=trigger)


@pytest.mark.parametrize("kind", KINDS)
def test_del_of_a_dropped_key_resets_the_table(kind):
    """__del__ calling reset() (on eviction, on idle drops, in reset() itself), and
    __del__ inserting while reset() empties the table."""
    runs = [["del_reenters", {"kind": kind, "action": "reset", "trigger": trigger}]
            for trigger in ("evict", "idle", "reset")]
    runs.append(["del_reenters", {"kind": kind, "action": "insert", "trigger": "reset"}])
    run_scenario("several", runs=runs)


# -- errors change nothing -----------------------------------------------------------------

@pytest.mark.parametrize("kind,case", [
    pytest.param(kind, case, id=ids((kind, case)))
    for kind in KINDS for case in ("eq", "eq_full")])
def test_batch_whose_key_eq_raises_changes_nothing(kind, case):
    run_scenario("raising_batch", kind=kind, case=case)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_that_raises_before_deciding_changes_nothing(kind):
    """A key that fails to hash (or is unhashable) last in the list, a negative cost, a
    cost above the limit, costs of the wrong length, a stale handle among live ones."""
    runs = [["raising_batch", {"kind": kind, "case": case}]
            for case in ("hash", "unhashable", "cost", "too_costly", "lengths", "stale")]
    results = run_scenario("several", runs=runs)
    assert [r["error"] for r in results] == [
        "RuntimeError", "TypeError", "InvalidCost",
        "CostExceedsBurst" if kind == "token" else "CostExceedsLimit", "ValueError",
        "IndexError"]
