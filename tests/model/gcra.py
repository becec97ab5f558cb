"""Reference model of the GCRA token buckets, written from the documented GCRA rule with
exact rationals; it shares no code with src_cy/gcra.pyx.

A bucket of `rate` tokens/s and capacity `burst`: T = 1/rate, tau = T * burst. Acquiring
`cost` at `now`: new = max(tat, now) + cost*T; admitted iff new - now <= tau.
Integer rules (the foundation issue): T rounded up to whole ns; tau = floor(burst * T_ns);
cost*T rounded up to whole ns. The keyed model holds keys in LRU order (an OrderedDict,
most recent last) and, when full, drops every idle key (tat <= now) before evicting the
least recently used live key or denying the new one.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

NS = 10**9
UNITS = {"second": 1, "s": 1, "minute": 60, "hour": 3600, "day": 86400}


def rate_per_ns(rate) -> Fraction:
    """Tokens per ns as an exact fraction, from a number or a "N/[M ]unit" string."""
    if isinstance(rate, str):
        limit, count, unit = re.fullmatch(r"(\d+)/(\d+ )?(\w+?)s?", rate).groups()
        seconds = int(count or 1) * UNITS[unit]
        return Fraction(int(limit), seconds * NS)
    return Fraction(rate) / NS


@dataclass(frozen=True)
class ModelDecision:
    allowed: bool
    remaining: int
    retry_after_ns: int
    reset_after_ns: int


class ModelBucket:
    """One bucket; time is integer ns."""

    def __init__(self, rate, burst):
        self.emission_ns = math.ceil(1 / rate_per_ns(rate))
        self.tau_ns = math.floor(Fraction(burst) * self.emission_ns)
        self.burst = Fraction(burst)
        self.tat = 0

    def increment(self, cost) -> int:
        return math.ceil(Fraction(cost) * self.emission_ns)

    def valid_cost(self, cost) -> bool:
        return (not math.isnan(cost) and not math.isinf(cost) and cost >= 0
                and Fraction(cost) <= self.burst and self.increment(cost) <= self.tau_ns)

    def decide(self, tat, cost, now, commit):
        inc = self.increment(cost)
        new = max(tat, now) + inc
        allowed = new - now <= self.tau_ns
        after = new if allowed else tat
        if allowed and commit is not None:
            commit(new)
        reset = max(after - now, 0)
        remaining = (self.tau_ns - reset) // self.emission_ns
        retry = 0 if allowed else tat + inc - self.tau_ns - now
        return ModelDecision(allowed, remaining, retry, reset)

    def acquire(self, cost, now):
        return self.decide(self.tat, cost, now, lambda new: setattr(self, "tat", new))

    def peek(self, cost, now):
        return self.decide(self.tat, cost, now, None)


@dataclass(frozen=True)
class TableFull:
    """A new key refused because every key is live (on_full="deny"): the compiled limiter
    reports retry_after somewhere in [1 ns, min_wait_ns]."""

    min_wait_ns: int


class ModelKeyedBucket:
    def __init__(self, rate, burst, max_keys, on_full):
        self.shape = ModelBucket(rate, burst)
        self.max_keys = max_keys
        self.on_full = on_full
        self.tats: OrderedDict = OrderedDict()   # key -> tat, least recently used first
        self.evictions = 0

    def _room(self, now, commit: bool) -> bool:
        if len(self.tats) < self.max_keys:
            return True
        idle = [key for key, tat in self.tats.items() if tat <= now]
        if idle:
            if commit:
                for key in idle:
                    del self.tats[key]
            return True
        if self.on_full == "deny":
            return False
        if commit:
            self.tats.popitem(last=False)
            self.evictions += 1
        return True

    def _table_full(self, now):
        return TableFull(min(tat for tat in self.tats.values()) - now)

    def _slot(self, key, now):
        """The key's tat, inserting a fresh key (tat 0) as most recently used; None if denied."""
        if key in self.tats:
            self.tats.move_to_end(key)
            return True
        if not self._room(now, commit=True):
            return False
        self.tats[key] = 0
        return True

    def acquire(self, key, cost, now):
        if not self._slot(key, now):
            return self._table_full(now)

        def commit(new):
            self.tats[key] = new
        return self.shape.decide(self.tats[key], cost, now, commit)

    def peek(self, key, cost, now):
        if key not in self.tats and not self._room(now, commit=False):
            return self._table_full(now)
        return self.shape.decide(self.tats.get(key, 0), cost, now, None)

    def handle(self, key, now):
        """handle() inserts an absent key (most recently used) but does not touch a present one."""
        if key not in self.tats:
            if not self._room(now, commit=True):
                return False
            self.tats[key] = 0
        return True

    def reset(self, key=None):
        if key is None:
            self.tats.clear()
        elif key in self.tats:
            self.tats[key] = 0
