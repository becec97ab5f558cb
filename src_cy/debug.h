/* FASTCORE_DEBUG is 0 in release builds (setup.py defines it); FASTCORE_DEBUG=1 at build
 * time turns on the invariant checks written as `if FASTCORE_DEBUG:` in the .pyx files,
 * which the C compiler removes entirely when it is 0. */
#ifndef FASTCORE_DEBUG
#define FASTCORE_DEBUG 0
#endif
