"""The sliding window (``fastcore.SlidingWindow``'s ring of slices) as one Lua script.

State of one key in Redis: one string ``<prefix>sw:{<escaped key>}`` holding
``"<newest slice index>:<c_0>,...,<c_{slices-1}>"``, the units admitted in each slice at its
ring position (slice index mod slices); it expires when the newest nonzero slice leaves the
window, and an empty ring is deleted rather than written.

Exact integers: slice indices (now / slice_ns, below 2**53 for slices of 1 us or more) are
exact doubles; every time the script computes is relative to the start of the slice of
``now`` (``off``), bounded by the window, which is capped at 2**50 ns. The server's ``TIME``
gives ``M`` whole microseconds (below 2**53); with ``slice_ns / 1000 = b / a`` in lowest
terms (``g = gcd(1000, slice_ns)``), ``S = floor(M * a / b) = q * a + floor(r * a / b)`` for
``M = q * b + r``, and ``off = (r * a mod b) * g``: every product stays below ``a * b``,
which the limiter checks is below 2**53. A client clock's ns are split in Python.
Costs are the local limiter's fixed-point units: ``ceil(cost * 2**F)``.
"""

import hashlib
import math
import numbers
from fractions import Fraction

import numpy as np

from fastcore.errors import CostExceedsLimit, InvalidCost, InvalidRate
from fastcore.redis._common import LUA_DIV, LimiterBase

__all__ = ["WINDOW_LUA", "WINDOW_SHA", "WindowBase"]

WINDOW_LUA = LUA_DIV + """\
-- One sliding-window decision on KEYS[1]. ARGV: slice_ns, slices, limit_units, 2**F,
-- grace_ms, a, b, g, units, write (1 acquire, 0 peek), S, off (both empty: the server's TIME).
-- Returns {allowed, remaining, retry_after_ns, reset_after_ns}.
local slice_ns = tonumber(ARGV[1])
local slices = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local scale = tonumber(ARGV[4])
local grace_ms = tonumber(ARGV[5])
local units = tonumber(ARGV[9])
local write = ARGV[10] == '1'
local S, off
if ARGV[11] ~= '' then
  S = tonumber(ARGV[11])
  off = tonumber(ARGV[12])
else
  local t = redis.call('TIME')
  local M = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local a, b, g = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  local q = div(M, b)
  local x = (M - q * b) * a
  local y = div(x, b)
  S = q * a + y
  off = (x - y * b) * g
end
local function mod(n) return n - div(n, slices) * slices end

local newest, counts, total = S, {}, 0
for i = 0, slices - 1 do counts[i] = 0 end
local stored = redis.call('GET', KEYS[1])
if stored then
  local head, rest = string.match(stored, '^(%d+):(.*)$')
  newest = tonumber(head)
  local i = 0
  for c in string.gmatch(rest, '%d+') do
    counts[i] = tonumber(c)
    total = total + counts[i]
    i = i + 1
  end
end
-- Advance to the slice of now, zeroing what left; a decision dated before the newest slice
-- is made in it (as the local ring does).
if S > newest then
  if S - newest >= slices then
    for i = 0, slices - 1 do counts[i] = 0 end
    total = 0
  else
    for k = 1, S - newest do
      local p = mod(newest + k)
      total = total - counts[p]
      counts[p] = 0
    end
  end
  newest = S
end
local rel = (S - newest) * slice_ns + off          -- now - newest * slice_ns
local allowed = total + units <= limit
if allowed and write then
  local p = mod(newest)
  counts[p] = counts[p] + units
  total = total + units
end
local held = total
if allowed and not write then held = total + units end
local retry = 0
if not allowed then
  local need = total + units - limit
  local freed = 0
  retry = slices * slice_ns - rel
  for j = 1, slices do
    freed = freed + counts[mod(newest + j)]
    if freed >= need then
      retry = j * slice_ns - rel
      break
    end
  end
end
local reset = 0
if allowed and not write and units > 0 then
  reset = slices * slice_ns - rel
elseif total > 0 then
  for j = 0, slices - 1 do
    if counts[mod(newest - j)] ~= 0 then
      reset = (slices - j) * slice_ns - rel
      break
    end
  end
end
if reset < 0 then reset = 0 end
if allowed and write and units > 0 then
  local parts = {}
  for i = 0, slices - 1 do parts[i + 1] = string.format('%d', counts[i]) end
  redis.call('SET', KEYS[1], string.format('%d', newest) .. ':' .. table.concat(parts, ','),
             'PX', div(reset + 999999, 1000000) + grace_ms)
end
return {allowed and 1 or 0, div(limit - held, scale), retry, reset}
"""
WINDOW_SHA = hashlib.sha1(WINDOW_LUA.encode()).hexdigest()

MAX_WINDOW_NS = 1 << 50
WINDOW_SLICES_MAX = 1024


class WindowBase(LimiterBase):
    """Sliding-window arguments on top of LimiterBase; subclasses do the I/O."""

    __slots__ = ("limit", "window", "slices", "limit_units", "fraction_bits", "window_ns",
                 "slice_ns", "_fixed", "_units")

    def __init__(self, client, limit, window=None, *, slices=10, **options):
        from fastcore._units import window_params

        if isinstance(slices, bool) or not isinstance(slices, int):
            raise TypeError(f"slices must be an int, got {slices!r}")
        if not 1 <= slices <= WINDOW_SLICES_MAX:
            raise ValueError(f"slices must be between 1 and {WINDOW_SLICES_MAX}, got {slices}")
        limit_units, fraction_bits, window_ns, limit_value = window_params(limit, window, slices)
        slice_ns = window_ns // slices
        if window_ns > MAX_WINDOW_NS or slice_ns < 1000:
            raise InvalidRate(f"window {window!r} with {slices} slices: the Redis engine needs "
                              f"slices of at least 1 us and a window of at most 2**50 ns")
        g = math.gcd(1000, slice_ns)
        a, b = 1000 // g, slice_ns // g
        if a * b >= 1 << 53:
            raise InvalidRate(f"a slice of {slice_ns} ns is not a whole number of microseconds "
                              f"and too long to split exactly; pick a window divisible by "
                              f"{slices} us")
        super().__init__(client, b"sw:", 1 << fraction_bits, **options)
        self.limit = limit_value
        self.window = window_ns / 1e9
        self.slices = slices
        self.limit_units = limit_units
        self.fraction_bits = fraction_bits
        self.window_ns = window_ns
        self.slice_ns = slice_ns
        self._fixed = tuple(b"%d" % v for v in (slice_ns, slices, limit_units, 1 << fraction_bits))
        self._fixed += (self._grace,) + tuple(b"%d" % v for v in (a, b, g))
        self._units = {}

    def units(self, cost) -> int:
        """ceil(cost * 2**F), exactly as the local window counts it; validates ``cost``."""
        units = self._units.get(cost)
        if units is None:
            if not isinstance(cost, numbers.Real):
                raise TypeError(f"cost must be a number, got {cost!r}")
            value = float(cost)
            if not value >= 0.0 or math.isinf(value):
                raise InvalidCost(f"cost must be finite and >= 0, got {cost!r}")
            if value > self.limit:
                raise CostExceedsLimit(
                    f"cost {value!r} exceeds the limit {self.limit!r}: it could never be admitted")
            units = math.ceil(Fraction(value) * (1 << self.fraction_bits))
            if units > self.limit_units:
                raise CostExceedsLimit(
                    f"cost {value!r} is {units} units of 2**-{self.fraction_bits} but the limit "
                    f"{self.limit!r} holds {self.limit_units}: it could never be admitted")
            if len(self._units) >= 1024:
                self._units.clear()
            self._units[cost] = units
        return units

    def argv(self, units, write):
        """WINDOW_LUA's ARGV for one call (S and off empty: the server's TIME)."""
        now = (b"", b"")
        if self.clock is not None:
            now_ns = self.clock.now_ns
            index = now_ns // self.slice_ns
            now = (b"%d" % index, b"%d" % (now_ns - index * self.slice_ns))
        return self._fixed + (b"%d" % units, b"1" if write else b"0") + now

    def batch(self, keys, costs):
        """Names and ARGVs of a batch, validated whole before anything is sent."""
        names = [self.name(key) for key in keys]
        if costs is None:
            units = [self.units(1)] * len(names)
        else:
            values = list(np.asarray(costs, dtype=np.float64).reshape(-1))
            if len(values) != len(names):
                raise ValueError(f"keys and costs differ in length: {len(names)} != {len(values)}")
            units = [self.units(value) for value in values]
        return names, [self.argv(u, True) for u in units]

    def __repr__(self):
        return (f"{type(self).__name__}(limit={self.limit!r}, window={self.window!r}, "
                f"slices={self.slices}, prefix={self.prefix[:-3]!r}, on_error={self.on_error!r})")
