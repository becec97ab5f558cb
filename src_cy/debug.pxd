# Compile-time debug flag: `if FASTCORE_DEBUG:` blocks cost nothing in release builds.
cdef extern from "debug.h":
    const bint FASTCORE_DEBUG
