"""The Decision record every limiter returns from acquire() and peek()."""
import numbers
import operator

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport INT64_MAX, INT64_MIN

from fastcore._units import shown


@cython.freelist(64)
cdef class Decision:
    """Decision(allowed, remaining, retry_after_ns, reset_after_ns)
--

A limiter's answer: ``allowed``, ``remaining``, ``retry_after``, ``reset_after``.

    ``remaining`` is the whole number of tokens (or window units) left after this decision;
    ``retry_after`` the seconds after which the same call would be admitted if nothing else
    arrives (0.0 when admitted); ``reset_after`` the seconds until the key is fresh again.
    ``retry_after_ns`` and ``reset_after_ns`` give the exact integer nanoseconds.
    ``bool(decision)`` is ``decision.allowed``. The constructor takes ints (numpy integers
    too) that fit in 64 bits, else raises ``TypeError`` / ``ValueError`` naming the field.

    Example::

        d = bucket.acquire("tenant-1")
        if not d:
            return 429, {"Retry-After": str(math.ceil(d.retry_after))}
    """

    def __init__(self, allowed, remaining, retry_after_ns, reset_after_ns):
        # limiters build theirs with decision_new; this path checks a caller's numbers
        self.remaining = _int64_field(remaining, "remaining")
        self.retry_after_ns = _int64_field(retry_after_ns, "retry_after_ns")
        self.reset_after_ns = _int64_field(reset_after_ns, "reset_after_ns")
        self.allowed = allowed

    @property
    def retry_after(self):
        """Seconds until the same call would be admitted (0.0 when admitted)."""
        return self.retry_after_ns / 1e9

    @property
    def reset_after(self):
        """Seconds until the key is back to its fresh state."""
        return self.reset_after_ns / 1e9

    def __bool__(self):
        return self.allowed

    def __eq__(self, other):
        if not isinstance(other, Decision):
            return NotImplemented
        cdef Decision o = <Decision>other
        return (self.allowed == o.allowed and self.remaining == o.remaining
                and self.retry_after_ns == o.retry_after_ns
                and self.reset_after_ns == o.reset_after_ns)

    def __hash__(self):
        return hash((self.allowed, self.remaining, self.retry_after_ns, self.reset_after_ns))

    def __repr__(self):
        return (f"Decision(allowed={bool(self.allowed)}, remaining={self.remaining}, "
                f"retry_after={self.retry_after_ns / 1e9!r}, "
                f"reset_after={self.reset_after_ns / 1e9!r})")

    def __reduce__(self):
        return (Decision, (bool(self.allowed), self.remaining, self.retry_after_ns,
                           self.reset_after_ns))


cdef inline int64_t _int64_field(object value, str name) except? -1:
    """An int field (a numpy integer too, never a bool) that must fit int64.

    The Redis limiters build a Decision per call from reply ints: those take one C call."""
    cdef int overflow = 0
    cdef long long n
    if type(value) is int:
        n = PyLong_AsLongLongAndOverflow(value, &overflow)
        if not overflow:
            return n
    return _int64_field_checked(value, name)


cdef int64_t _int64_field_checked(object value, str name) except? -1:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {shown(value)}")
    value = operator.index(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{name} must fit in 64 bits, got {shown(value)}")
    return value


cdef Decision decision_new(bint allowed, int64_t remaining, int64_t retry_after_ns,
                           int64_t reset_after_ns):
    cdef Decision d = Decision.__new__(Decision)
    d.allowed = allowed
    d.remaining = remaining
    d.retry_after_ns = retry_after_ns
    d.reset_after_ns = reset_after_ns
    return d
