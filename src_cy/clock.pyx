"""Compiled clocks: the system monotonic clock, its coarse variant and a manual test clock."""
from posix.time cimport clock_getres

import numbers
import operator

from fastcore._units import seconds_to_ns, shown


cdef class Clock:
    """Base of the compiled clocks; structures read any of them without calling Python."""

    def __cinit__(self, *args, **kwargs):
        self.kind = CLOCK_KIND_MONOTONIC
        self.manual_ns = 0

    def now(self):
        """The current time in float seconds."""
        return clock_now_ns(self) / 1e9

    @property
    def now_ns(self):
        """The current time in integer nanoseconds."""
        return clock_now_ns(self)

    def __call__(self):
        """The current time in float seconds, so a clock also serves as a ``timer=`` callable."""
        return clock_now_ns(self) / 1e9


cdef class MonotonicClock(Clock):
    """MonotonicClock()
--

The system monotonic clock (``CLOCK_MONOTONIC``), read in C: the default everywhere.

    Example::

        MonotonicClock().now_ns  # same timeline as fastcore.monotonic_ns()
    """

    def __repr__(self):
        return "MonotonicClock()"


cdef class CoarseClock(Clock):
    """CoarseClock()
--

``CLOCK_MONOTONIC_COARSE``: about 3 ns a read instead of about 20, at the resolution
    of one kernel tick (``CoarseClock.resolution()``, typically 1 to 4 ms).

    Choose it for limits and caches whose windows and TTLs are long compared with that
    resolution (a 100/minute limit, a 60 s TTL); keep the default for sub-second limits.
    """

    def __cinit__(self, *args, **kwargs):
        self.kind = CLOCK_KIND_COARSE

    @staticmethod
    def resolution():
        """The coarse clock's resolution in float seconds, as the kernel reports it."""
        cdef timespec ts
        clock_getres(CLOCK_MONOTONIC_COARSE, &ts)
        return ts.tv_sec + ts.tv_nsec / 1e9

    def __repr__(self):
        return f"CoarseClock(resolution={CoarseClock.resolution()!r})"


cdef class ManualClock(Clock):
    """ManualClock(start=0.0)
--

A clock that moves only when told to: deterministic tests and simulations.

    Seconds are rounded to the nearest nanosecond; ``advance_ns``/``set_ns`` are exact.
    Moving it backwards raises ``ValueError``.

    Example::

        clock = ManualClock(start=10.0)
        bucket = TokenBucket(5, 5, clock=clock)
        clock.advance(0.2)          # one token (1/5 s) refilled
        clock.now_ns                # 10_200_000_000
    """

    def __cinit__(self, *args, **kwargs):
        self.kind = CLOCK_KIND_MANUAL

    def __init__(self, start=0.0):
        self.manual_ns = self._checked(seconds_to_ns(start, "start"))

    cdef int64_t _checked(self, object ns) except -1:
        if ns < 0 or ns > CLOCK_MAX_NS:
            raise ValueError(
                f"ManualClock time must be between 0 and {CLOCK_MAX_NS} ns, got {shown(ns)} ns")
        if ns < self.manual_ns:
            raise ValueError(
                f"ManualClock cannot move backwards: at {self.manual_ns} ns, asked for {ns} ns")
        return ns

    def advance(self, seconds):
        """Move forward by ``seconds`` (float, rounded to the nearest ns; must be >= 0)."""
        self.manual_ns = self._checked(self.manual_ns + seconds_to_ns(seconds, "seconds"))

    def advance_ns(self, nanoseconds):
        """Move forward by an exact integer number of nanoseconds (>= 0)."""
        self.manual_ns = self._checked(self.manual_ns + _as_int_ns(nanoseconds))

    def set(self, seconds):
        """Jump to ``seconds`` (float, rounded to the nearest ns; never earlier than now)."""
        self.manual_ns = self._checked(seconds_to_ns(seconds, "seconds"))

    def set_ns(self, nanoseconds):
        """Jump to an exact integer time in nanoseconds (never earlier than now)."""
        self.manual_ns = self._checked(_as_int_ns(nanoseconds))

    def __repr__(self):
        return f"ManualClock(now_ns={self.manual_ns})"


cdef object _as_int_ns(object nanoseconds):
    """An int (a numpy integer too, not a bool) as a Python int."""
    if isinstance(nanoseconds, bool) or not isinstance(nanoseconds, numbers.Integral):
        raise TypeError(f"nanoseconds must be an int, got {shown(nanoseconds)}")
    return operator.index(nanoseconds)


cdef MonotonicClock _DEFAULT_CLOCK = MonotonicClock()


cdef Clock clock_resolve(object clock):
    """``None`` -> the shared system monotonic clock; a compiled clock -> itself."""
    if clock is None:
        return _DEFAULT_CLOCK
    if isinstance(clock, Clock):
        return <Clock>clock
    raise TypeError(
        "clock must be None, fastcore.ManualClock, fastcore.MonotonicClock or "
        f"fastcore.CoarseClock, got {type(clock).__name__}")


def default_clock():
    """The shared ``MonotonicClock`` that ``clock=None`` stands for."""
    return _DEFAULT_CLOCK


def monotonic_ns():
    """``CLOCK_MONOTONIC`` in integer nanoseconds: the clock the core reads by default."""
    return clock_now_ns(_DEFAULT_CLOCK)
