"""Stress: TTLCache and SemanticCache under the attacks of test_stress_keytable.py.

Re-entrant ``__eq__`` that changes the cache in the middle of a lookup, ``__del__`` of
evicted, expired, overwritten or deleted keys and values that writes to the cache or
clears it, and 4 threads switching every microsecond inside Python ``__eq__``. Afterwards
``len()``, iteration (``keys()``) and ``currsize`` must agree. One fresh interpreter per
scenario (``stress_runner.run_scenario``); ``pytest -m stress`` selects these.
"""

import pytest

from stress_runner import run_scenario

pytestmark = pytest.mark.stress

TTL_OPS = ["get", "getitem", "setitem", "delitem", "pop", "setdefault", "contains"]
ACTIONS = ["clear", "fill", "write"]


# -- TTLCache ------------------------------------------------------------------------------

def test_ttlcache_reentrant_eq_that_changes_the_cache():
    """Every lookup path with a key whose __eq__ clears the cache, fills it past maxsize
    (evicting, growing) or writes one item."""
    runs = [["cache_reentrant_eq", {"which": "ttl", "op": op, "action": action}]
            for op in TTL_OPS for action in ACTIONS]
    run_scenario("several", runs=runs)


def _del_runs(which):
    for part in ("key", "value"):
        for action in ("insert", "clear"):
            for trigger in ("evict", "expire", "overwrite", "delete", "clear"):
                if trigger == "overwrite" and part == "key":
                    continue                   # an overwrite drops the old value only
                yield ["cache_del_reenters", {"which": which, "part": part, "action": action,
                                              "trigger": trigger}]


@pytest.mark.parametrize("which", ["ttl", "semantic"])
def test_del_of_a_dropped_item_writes_or_clears(which):
    """A key's or a value's __del__, run when the cache drops it (eviction, expiry,
    overwrite, deletion, clear()), inserts an item or clears the cache."""
    results = run_scenario("several", runs=list(_del_runs(which)))
    assert all(r["held"] >= 0 for r in results)
    assert sum(r["inserted"] for r in results) > 0      # the __del__ hooks did run


@pytest.mark.parametrize("sized", [False, True], ids=["counted", "sized"])
def test_ttlcache_threads(sized):
    """4 threads, switch interval 1e-6, keys with a Python __eq__, every operation
    including clear() while the clock moves."""
    run_scenario("cache_threads", which="ttl", sized=sized, clear=0.05)


def test_ttlcache_expire_after_a_hash_that_moved_the_clock():
    run_scenario("ttl_hash_moves_clock")


# -- SemanticCache -------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["lookup", "contains"])
def test_semantic_reentrant_eq_that_clears(op):
    """clear() from a key's __eq__ in a read: the read holds the dict it searches."""
    run_scenario("cache_reentrant_eq", which="semantic", op=op, action="clear")


@pytest.mark.parametrize("op", ["set", "delete"])
def test_semantic_reentrant_eq_in_a_write(op):
    """A write from a key's __eq__ inside a write: refused with RuntimeError, no deadlock,
    nothing half-changed."""
    run_scenario("cache_reentrant_eq", which="semantic", op=op, action="write")


def test_semantic_reentrant_eq_in_reads_that_write():
    """lookup and `in` whose key's __eq__ fills the cache past maxsize or writes one item."""
    runs = [["cache_reentrant_eq", {"which": "semantic", "op": op, "action": action}]
            for op in ("lookup", "contains") for action in ("fill", "write")]
    run_scenario("several", runs=runs)


@pytest.mark.parametrize("sized", [False, True], ids=["counted", "sized"])
def test_semantic_threads(sized):
    """4 threads, switch interval 1e-6, keys with a Python __eq__, lookups, writes,
    deletes and expire() while the clock moves."""
    run_scenario("cache_threads", which="semantic", sized=sized, clear=0.0)


def test_semantic_threads_with_clear():
    run_scenario("cache_threads", which="semantic", sized=False, clear=0.05)
