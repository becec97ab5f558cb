# GCRA token buckets: TokenBucket (one bucket) and KeyedTokenBucket (one per key).
#
# Promise: exactly a token bucket of `rate` tokens per second and capacity `burst`, stored as
# one int64 theoretical arrival time (TAT, ns) per bucket and updated with one
# compare-and-swap, so concurrent nogil batches never admit more than the budget.
#
# Math. Emission interval T = 1/rate, tolerance tau = T * burst.
# Acquiring `cost` at `now`:   new = max(tat, now) + cost*T
#                              admitted  iff  new - now <= tau;  on admission tat = new.
# Tau convention: tau = T * burst (a full bucket, tat <= now, admits up to `burst` tokens at
# once), not the T * (burst - 1) of the ATM original.
# Integers: T_ns = ceil(1e9 / rate), rounded up so the sustained rate never exceeds the one
# asked for; tau_ns = floor(burst * T_ns); cost*T is ceil(cost * T_ns), exact for any double
# cost (mantissa * T_ns in 128 bits). With whole costs a full bucket admits exactly `burst`
# tokens: k * T_ns <= burst * T_ns iff k <= burst.
# Reported fields, with tat' the TAT after the decision:
#   remaining   = floor((tau_ns - max(tat' - now, 0)) / T_ns)    whole tokens left
#   retry_after = tat + cost*T - tau - now   when denied (the exact earliest admitting time:
#                 at now' = tat + cost*T - tau, new - now' = tau); 0 when admitted
#   reset_after = max(tat' - now, 0)                               time until full again
# Invariant: tat - now <= tau whenever a decision is made (tat only grows by admissions that
# satisfied it, and now only grows), so remaining >= 0 and reset_after <= tau.
# Worked example: rate 3/s, burst 3 -> T_ns = 333_333_334, tau_ns = 1_000_000_002.
#   At now = 0 with a fresh bucket (tat = 0), three acquires of 1 give tat = 333_333_334,
#   666_666_668, 1_000_000_002 (each new - now <= tau). A fourth: new = 1_333_333_336,
#   new - now > tau -> denied, retry_after = 1_000_000_002 + 333_333_334 - 1_000_000_002
#   = 333_333_334 ns, reset_after = 1_000_000_002 ns, remaining = 0.
# State: 8 bytes (TAT) per bucket; KeyedTokenBucket adds the KeyTable's 36 bytes per key.
# Cost: try_acquire = one hash lookup + one clock read + one CAS; acquire adds a Decision.
from libc.math cimport frexp, ldexp
from libc.stdint cimport int64_t, uint8_t

from fastcore._core.atomic cimport fc_atomic_cas_i64, fc_atomic_load_i64
from fastcore._core.clock cimport Clock
from fastcore._core.decision cimport Decision, decision_new
from fastcore._core.keytable cimport KeyTable

cdef extern from *:
    ctypedef long long int128 "__int128"


cdef class TokenBucket:
    cdef int64_t tat_ns
    cdef int64_t emission_ns
    cdef int64_t tau_ns
    cdef double burst_
    cdef object rate_
    cdef Clock clock_


cdef class KeyedTokenBucket(KeyTable):
    cdef int64_t emission_ns
    cdef int64_t tau_ns
    cdef double burst_
    cdef object rate_

    cdef int64_t[::1] batch_costs(self, object costs, Py_ssize_t n)
    cdef void decide_range(self, const int64_t* slots_or_handles, int64_t slot_mask,
                           Py_ssize_t n, const int64_t* increments, int64_t now_ns,
                           uint8_t* allowed, double* retry) noexcept nogil
    cdef int64_t idle_horizon_ns(self, int64_t now_ns) noexcept nogil


cdef int64_t gcra_checked_cost_ns(double cost, int64_t emission_ns, int64_t tau_ns,
                                  double burst) except -1


cdef inline int64_t gcra_increment_ns(double cost, int64_t emission_ns) noexcept nogil:
    """ceil(cost * emission_ns), exact for every finite cost >= 0 with a result < 2**62.

    cost = mantissa * 2**exponent with 0.5 <= mantissa < 1, so cost = m * 2**(exponent - 53)
    for the 53-bit integer m = mantissa * 2**53; m * emission_ns fits in 128 bits, and the
    ceiling of a division by 2**shift is (x + 2**shift - 1) >> shift.
    """
    cdef int exponent
    cdef int shift
    cdef int128 product
    if cost == 1.0:
        return emission_ns
    if cost == 0.0:
        return 0
    product = <int128>(<int64_t>ldexp(frexp(cost, &exponent), 53)) * emission_ns
    shift = 53 - exponent
    if shift <= 0:
        return <int64_t>(product << -shift)
    if shift >= 120:            # product < 2**116, so 0 < cost * emission_ns < 1
        return 1
    return <int64_t>((product + ((<int128>1 << shift) - 1)) >> shift)


cdef inline int64_t gcra_cost_ns(double cost, int64_t emission_ns, int64_t tau_ns,
                                 double burst) except -1:
    """cost*T in ns for a valid cost; raises InvalidCost / CostExceedsBurst otherwise."""
    if cost == 1.0 and emission_ns <= tau_ns:
        return emission_ns
    return gcra_checked_cost_ns(cost, emission_ns, tau_ns, burst)


cdef inline bint gcra_admit(int64_t* tat_ns, int64_t increment_ns, int64_t tau_ns,
                            int64_t now_ns, int64_t* tat_after_ns) noexcept nogil:
    """One GCRA decision, lock-free: retried only when another thread moved the TAT.

    On return *tat_after_ns is the new TAT if admitted, else the TAT that denied.
    """
    cdef int64_t tat = fc_atomic_load_i64(tat_ns)
    cdef int64_t new_tat
    while True:
        new_tat = (tat if tat > now_ns else now_ns) + increment_ns
        if new_tat - now_ns > tau_ns:
            tat_after_ns[0] = tat
            return False
        if fc_atomic_cas_i64(tat_ns, &tat, new_tat):
            tat_after_ns[0] = new_tat
            return True


cdef inline bint gcra_would_admit(int64_t tat_ns, int64_t increment_ns, int64_t tau_ns,
                                  int64_t now_ns, int64_t* tat_after_ns) noexcept nogil:
    """gcra_admit without the update (peek)."""
    cdef int64_t new_tat = (tat_ns if tat_ns > now_ns else now_ns) + increment_ns
    if new_tat - now_ns > tau_ns:
        tat_after_ns[0] = tat_ns
        return False
    tat_after_ns[0] = new_tat
    return True


cdef inline Decision gcra_decision(bint allowed, int64_t tat_after_ns, int64_t increment_ns,
                                   int64_t now_ns, int64_t emission_ns, int64_t tau_ns):
    """The Decision fields from the TAT after the decision (see the header's formulas)."""
    cdef int64_t reset_ns = tat_after_ns - now_ns if tat_after_ns > now_ns else 0
    cdef int64_t retry_ns = 0 if allowed else tat_after_ns + increment_ns - tau_ns - now_ns
    return decision_new(allowed, (tau_ns - reset_ns) // emission_ns, retry_ns, reset_ns)
