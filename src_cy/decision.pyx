"""The Decision record every limiter returns from acquire() and peek()."""
cimport cython


@cython.freelist(64)
cdef class Decision:
    """A limiter's answer: ``allowed``, ``remaining``, ``retry_after``, ``reset_after``.

    ``remaining`` is the whole number of tokens (or window units) left after this decision;
    ``retry_after`` the seconds after which the same call would be admitted if nothing else
    arrives (0.0 when admitted); ``reset_after`` the seconds until the key is fresh again.
    ``retry_after_ns`` and ``reset_after_ns`` give the exact integer nanoseconds.
    ``bool(decision)`` is ``decision.allowed``.

    Example::

        d = bucket.acquire("tenant-1")
        if not d:
            return 429, {"Retry-After": str(math.ceil(d.retry_after))}
    """

    def __init__(self, allowed, remaining, retry_after_ns, reset_after_ns):
        self.allowed = allowed
        self.remaining = remaining
        self.retry_after_ns = retry_after_ns
        self.reset_after_ns = reset_after_ns

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


cdef Decision decision_new(bint allowed, int64_t remaining, int64_t retry_after_ns,
                           int64_t reset_after_ns):
    cdef Decision d = Decision.__new__(Decision)
    d.allowed = allowed
    d.remaining = remaining
    d.retry_after_ns = retry_after_ns
    d.reset_after_ns = reset_after_ns
    return d
