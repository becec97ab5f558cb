"""Naive reference models of the sliding windows, written from the issue's definitions.

Everything is a Fraction of a cost or an integer ns. The one representation rule shared with
the compiled limiters is their documented fixed-point counting: a cost counts as
ceil(cost * 2**F) / 2**F and the limit as floor(limit * 2**F) / 2**F, with F the largest
in 0..40 such that floor(limit * 2**F) < 2**24. retry_after and reset_after are found by
bisection over integer ns on the model's own count (which only falls while nothing arrives),
not from the closed forms the compiled code uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

COUNT_MAX = 2**24 - 1


def fraction_bits(limit) -> int:
    return max(f for f in range(41) if math.floor(Fraction(limit) * 2**f) <= COUNT_MAX)


def counted_cost(cost, bits) -> Fraction:
    return Fraction(math.ceil(Fraction(cost) * 2**bits), 2**bits)


def counted_limit(limit, bits) -> Fraction:
    return Fraction(math.floor(Fraction(limit) * 2**bits), 2**bits)


@dataclass(frozen=True)
class ModelDecision:
    allowed: bool
    remaining: int
    retry_after_ns: int
    reset_after_ns: int


class CostTooHigh(Exception):
    """The cost can never be admitted (the compiled limiter raises CostExceedsLimit)."""


def first_time(predicate, start: int, stop: int) -> int:
    """The smallest integer t in [start, stop] with predicate(t), predicate monotone."""
    assert predicate(stop)
    while start < stop:
        middle = (start + stop) // 2
        if predicate(middle):
            stop = middle
        else:
            start = middle + 1
    return start


class _Window:
    """Shared by both models: limit in counted units, decisions from count_at(t)."""

    horizon_ns: int

    def __init__(self, limit, window_ns: int):
        self.bits = fraction_bits(limit)
        self.limit = counted_limit(limit, self.bits)
        self.raw_limit = Fraction(limit)
        self.window_ns = window_ns

    def cost(self, cost) -> Fraction:
        counted = counted_cost(cost, self.bits)
        if Fraction(cost) > self.raw_limit or counted > self.limit:
            raise CostTooHigh(cost)
        return counted

    def decide(self, cost, now_ns: int, write=True) -> ModelDecision:
        cost = self.cost(cost)
        count = self.count_at(now_ns)
        allowed = count + cost <= self.limit
        if allowed:
            if write:
                self.add(cost, now_ns)
                after = self.count_at
            else:
                after = lambda t: self.count_at(t) + (self.with_cost_at(cost, now_ns, t))
            retry = 0
        else:
            after = self.count_at
            retry = first_time(lambda t: self.count_at(t) + cost <= self.limit,
                               now_ns, now_ns + self.horizon_ns) - now_ns
        remaining = math.floor(self.limit - after(now_ns))
        reset = first_time(lambda t: after(t) == 0, now_ns, now_ns + self.horizon_ns) - now_ns
        return ModelDecision(allowed, remaining, retry, reset)


class CounterModel(_Window):
    """One key of SlidingWindowCounter: estimate = previous * (window - elapsed) / window + current."""

    def __init__(self, limit, window_ns: int):
        super().__init__(limit, window_ns)
        self.horizon_ns = 2 * window_ns
        self.counts = {}                    # aligned window index -> admitted cost

    def count_at(self, t: int) -> Fraction:
        w = t // self.window_ns
        elapsed = t - w * self.window_ns
        previous = self.counts.get(w - 1, 0)
        current = self.counts.get(w, 0)
        return previous * Fraction(self.window_ns - elapsed, self.window_ns) + current

    def add(self, cost, t: int):
        w = t // self.window_ns
        self.counts[w] = self.counts.get(w, 0) + cost

    def with_cost_at(self, cost, at: int, t: int) -> Fraction:
        """What a cost added at `at` contributes to the estimate at t."""
        w, now_w = at // self.window_ns, t // self.window_ns
        if now_w == w:
            return cost
        if now_w == w + 1:
            return cost * Fraction(self.window_ns - (t - now_w * self.window_ns), self.window_ns)
        return Fraction(0)


class RingModel(_Window):
    """One key of SlidingWindow: the sum of the current slice and the slices - 1 before it."""

    def __init__(self, limit, window_ns: int, slices: int):
        self.slices = slices
        self.slice_ns = -(-window_ns // slices)
        super().__init__(limit, self.slice_ns * slices)
        self.horizon_ns = self.window_ns
        self.counts = {}                    # aligned slice index -> admitted cost

    def count_at(self, t: int) -> Fraction:
        newest = t // self.slice_ns
        return sum((c for s, c in self.counts.items() if newest - self.slices < s <= newest),
                   Fraction(0))

    def add(self, cost, t: int):
        s = t // self.slice_ns
        self.counts[s] = self.counts.get(s, 0) + cost

    def with_cost_at(self, cost, at: int, t: int) -> Fraction:
        s, newest = at // self.slice_ns, t // self.slice_ns
        return cost if newest - self.slices < s <= newest else Fraction(0)


class ExactLog:
    """Ground truth: every admitted (time, cost); the count is the cost in (t - window, t]."""

    def __init__(self, limit, window_ns: int):
        self.limit = Fraction(limit)
        self.window_ns = window_ns
        self.log = []

    def count_at(self, t: int) -> Fraction:
        return sum((c for at, c in self.log if t - self.window_ns < at <= t), Fraction(0))

    def would_admit(self, cost, t: int) -> bool:
        return self.count_at(t) + cost <= self.limit

    def add(self, cost, t: int):
        self.log.append((t, Fraction(cost)))


class Keyed:
    """A model per key (no table bound: tests keep the key count within max_keys)."""

    def __init__(self, make):
        self.make = make
        self.keys = {}

    def decide(self, key, cost, now_ns, write=True) -> ModelDecision:
        model = self.keys.get(key)
        if model is None:
            model = self.make()
            model.cost(cost)                # a bad cost adds no key
            if write:
                self.keys[key] = model
        return model.decide(cost, now_ns, write)

    def touch(self, key):
        if key not in self.keys:
            self.keys[key] = self.make()

    def reset(self, key=None):
        if key is None:
            self.keys.clear()
        elif key in self.keys:
            self.keys[key] = self.make()
