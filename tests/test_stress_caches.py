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

# KNOWN FAILURES, outside the key table: SemanticCache (src_cy/semantic.pyx) crashes or
# deadlocks in the scenarios marked below, and TTLCache (src_cy/ttlcache.pyx) keeps one
# expired item past expire(). xfail(strict=True) until those are fixed, then the marks go;
# strict: a scenario that starts passing fails the run.
SEMANTIC_FREED_DICT = pytest.mark.xfail(strict=True, reason=(
    "SemanticCache: a lookup's dict.get runs the key's __eq__ on a dict that clear() "
    "replaces and frees meanwhile (self._map is not held): use after free, SIGSEGV"))
SEMANTIC_DEADLOCK = pytest.mark.xfail(strict=True, reason=(
    "SemanticCache: set()/delete() run the key's __eq__ (dict lookups) while holding the "
    "cache's non-reentrant mutex; an __eq__ that writes to the cache deadlocks"))


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


@pytest.mark.xfail(strict=True, reason=(
    "TTLCache: the item stored meanwhile gets a later expiry than the outer item linked "
    "after it, so expire() stops before the expired outer item (cachetools reads its timer "
    "once for nested calls); len() and currsize count it, iteration skips it"))
def test_ttlcache_expire_after_a_hash_that_moved_the_clock():
    run_scenario("ttl_hash_moves_clock")


# -- SemanticCache -------------------------------------------------------------------------

@pytest.mark.parametrize("op", [
    pytest.param("lookup", marks=SEMANTIC_FREED_DICT),
    pytest.param("contains", marks=SEMANTIC_FREED_DICT),
])
def test_semantic_reentrant_eq_that_clears(op):
    run_scenario("cache_reentrant_eq", which="semantic", op=op, action="clear")


@pytest.mark.parametrize("op", [
    pytest.param("set", marks=SEMANTIC_DEADLOCK),
    pytest.param("delete", marks=SEMANTIC_DEADLOCK),
])
def test_semantic_reentrant_eq_in_a_write(op):
    run_scenario("cache_reentrant_eq", which="semantic", op=op, action="write")


def test_semantic_reentrant_eq_in_reads_that_write():
    """lookup and `in` whose key's __eq__ fills the cache past maxsize or writes one item
    (these pass on the current cache)."""
    runs = [["cache_reentrant_eq", {"which": "semantic", "op": op, "action": action}]
            for op in ("lookup", "contains") for action in ("fill", "write")]
    run_scenario("several", runs=runs)


@pytest.mark.parametrize("sized", [False, True], ids=["counted", "sized"])
def test_semantic_threads(sized):
    """4 threads, switch interval 1e-6, keys with a Python __eq__, lookups, writes,
    deletes and expire() while the clock moves."""
    run_scenario("cache_threads", which="semantic", sized=sized, clear=0.0)


@pytest.mark.xfail(strict=False, reason=(
    "SemanticCache: clear() in one thread frees the dict another thread's lookup is "
    "searching (see SEMANTIC_FREED_DICT); a race, so it crashes in about half the runs "
    "only: not strict, but an AddressSanitizer build sees most of them"))
def test_semantic_threads_with_clear():
    run_scenario("cache_threads", which="semantic", sized=False, clear=0.05)
