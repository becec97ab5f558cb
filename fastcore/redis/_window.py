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

Leases (``lease=N``). An admitted acquire may also count up to ``N - ceil(cost)`` whole
costs more in the same slice, in the same script run as the decision (so they pass the same
``count + units <= limit`` test), and the process spends them locally. The script answers
with the slice G they were counted in and the ns until G *ends*; the process stops spending
at the earlier of ``lease_ttl`` and that many ns after it sent the request (the script read
the time after the send, so on the server's clock this is still inside G whatever the
offset between the clocks). ``close()`` gives the unspent units back to G only while G is
still in the ring (else its count has left already and its position holds a newer slice),
never below zero.

Why a lease must end with its slice, not when the slice leaves the ring: a unit counted in
G but spent k slices later is invisible to the ring of the slice it is spent in once G has
left, so with leases spent up to ``slices - 1`` slices late (limit 10, 10 slices: 10
counted in slice 0, 9 of them spent in slice 9, then 10 more admitted in slice 10, when
slice 0 has left) an interval of two slices would admit 19.

Bound (proof), the local ring's unchanged: within any interval (t - (window - slice), t]
a key is spent at most ``limit`` (admitted directly or from leases, by every process).
Let spent(X) be the units spent at server times in slice X and final(X) the count slice X
holds when it leaves the ring. (1) spent(X) <= final(X): a unit admitted directly is counted
in the slice of its decision (a decision dated before the newest slice counts in, and is
dated at the start of, the newest: the local ring's rule); a leased unit is spent inside the
slice it was counted in, by the expiry rule; a give-back subtracts only units never to be
spent (the lease is dropped before it is sent), and only from their own slice. (2) Any
``slices`` consecutive slices X0..X0+slices-1 have final counts summing to at most
``limit``: counts grow only in the newest slice, by an admitting script; take the last such
growth in the range, in slice Xk; the ring then covered Xk - slices + 1..Xk, which holds
every slice of the range with a nonzero count, and its total after the growth was <= limit;
later the range's counts only fall (give-backs, or leaving). (3) The interval's spends lie
in the slices of times in (t - (window - slice), t], at most ``slices`` consecutive ones
(Xt - slices + 1..Xt), so by (1) and (2) they sum to at most ``limit``. As for the local
ring, any interval of one window then spends at most ``limit`` plus one slice's spending.
The fairness cost (README, Leases): units in a lease are spent only by their process, and
units unspent when a lease expires stay counted until their slice leaves.
"""

import hashlib
import math
from fractions import Fraction


from fastcore._core.decision import Decision
from fastcore.errors import CostExceedsLimit, InvalidRate
from fastcore.redis._common import ACQUIRE, GIVE_BACK, LUA_DIV, LimiterBase, cost_value

__all__ = ["WINDOW_LUA", "WINDOW_SHA", "WindowBase"]

WINDOW_LUA = LUA_DIV + """\
-- One sliding-window decision on KEYS[1]. ARGV: slice_ns, slices, limit_units, 2**F,
-- grace_ms, a, b, g, units, mode (0 peek, 1 acquire, 2 give `units` back to slice ARGV[14]),
-- S, off (both empty: the server's TIME), lease_max (whole costs an admitted acquire may
-- also take), the give-back's slice. Returns {allowed, remaining, retry_after_ns,
-- reset_after_ns, leased (whole costs), the slice counted in, ns until that slice ends}.
local slice_ns = tonumber(ARGV[1])
local slices = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local scale = tonumber(ARGV[4])
local grace_ms = tonumber(ARGV[5])
local units = tonumber(ARGV[9])
local mode = ARGV[10]
local write = mode == '1'
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
local allowed, counted, leased = total + units <= limit, 0, 0
if mode == '2' then
  -- Give back units leased in slice G, only while G is still in the ring (else its count
  -- has left already and the position holds a newer slice), and never below zero.
  local G = tonumber(ARGV[14])
  if G <= newest and G > newest - slices then
    local p = mod(G)
    local back = math.min(units, counts[p])
    counts[p] = counts[p] - back
    total = total - back
  end
  allowed, units = true, 0
elseif allowed and write then
  counted = units
  local lease_max = tonumber(ARGV[13])
  if lease_max > 0 then
    leased = math.min(lease_max, div(limit - total - units, scale))
    counted = units + leased * scale
  end
  local p = mod(newest)
  counts[p] = counts[p] + counted
  total = total + counted
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
if counted > 0 or (mode == '2' and stored) then
  if total > 0 then
    local parts = {}
    for i = 0, slices - 1 do parts[i + 1] = string.format('%d', counts[i]) end
    redis.call('SET', KEYS[1], string.format('%d', newest) .. ':' .. table.concat(parts, ','),
               'PX', div(reset + 999999, 1000000) + grace_ms)
  else
    redis.call('DEL', KEYS[1])
  end
end
return {allowed and 1 or 0, div(limit - held, scale), retry, reset, leased, newest,
        slice_ns - rel}
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
        # Leases are held in the script's units: exact, so a give-back is exact too.
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
            value = cost_value(cost)
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

    def argv(self, units, mode, lease_max=0, slice_index=b""):
        """WINDOW_LUA's ARGV for one call (S and off empty: the server's TIME)."""
        now = (b"", b"")
        if self.clock is not None:
            now_ns = self.clock.now_ns
            index = now_ns // self.slice_ns
            now = (b"%d" % index, b"%d" % (now_ns - index * self.slice_ns))
        return self._fixed + (b"%d" % units, mode) + now + (b"%d" % lease_max, slice_index)

    def batch_argvs(self, pending, units, costs):
        """ARGVs of a batch's entries at ``pending`` (acquires, leasing when enabled)."""
        return [self.argv(units[i], ACQUIRE, self.lease_max(costs[i]) if self.lease else 0)
                for i in pending]

    def give_back_argvs(self, leases):
        """ARGVs returning ``take_leases()``'s units, each to the slice it was counted in."""
        return [self.argv(units, GIVE_BACK, 0, b"%d" % slice_index)
                for _, units, slice_index in leases]

    def answer(self, name, reply, sent_ns):
        """The Decision of a WINDOW_LUA reply, recording the lease it carries."""
        if reply[4]:
            return self.grant(name, reply, sent_ns)
        return Decision(reply[0] == 1, reply[1], reply[2], reply[3])

    def grant(self, name, reply, sent_ns):
        """The Decision of an admitted acquire that leased ``reply[4]`` whole costs, counted
        in slice ``reply[5]``, which ends ``reply[6]`` ns after the script read the time.

        The lease lasts until that slice ends, measured from when the request was *sent*
        (``sent_ns``, this limiter's clock): the script ran after the send, so on the server's
        clock the slice ends at least ``reply[6]`` ns after the send, whatever the offset
        between the two clocks (only their rates must agree). See the module docstring for
        why a lease must not outlive its slice."""
        return self.lease_grant(name, reply, sent_ns + reply[6], reply[5])

    def __repr__(self):
        return (f"{type(self).__name__}(limit={self.limit!r}, window={self.window!r}, "
                f"slices={self.slices}, prefix={self.prefix[:-3]!r}, on_error={self.on_error!r}, "
                f"lease={self.lease})")
