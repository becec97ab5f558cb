# Lock-free single-word primitives (GCC/Clang __atomic builtins), for nogil hot paths.
#
#   fc_atomic_load_i64(p)            acquire load
#   fc_atomic_store_i64(p, v)        release store
#   fc_atomic_cas_i64(p, &exp, new)  compare-and-swap; on failure exp receives the current value
#   fc_atomic_add_*(p, v)            fetch-and-add, returns the new value
#   fc_atomic_min_i64(p, v)          lowers *p to v when v is smaller (CAS loop)
#
# Users of these need "atomic.h" on the include path: fastcore.get_include() gives it.
from libc.stdint cimport int64_t, uint64_t, uint32_t

cdef extern from "atomic.h" nogil:
    int64_t fc_atomic_load_i64(const int64_t *p)
    void fc_atomic_store_i64(int64_t *p, int64_t v)
    bint fc_atomic_cas_i64(int64_t *p, int64_t *expected, int64_t desired)
    int64_t fc_atomic_add_i64(int64_t *p, int64_t v)
    uint64_t fc_atomic_add_u64(uint64_t *p, uint64_t v)
    uint32_t fc_atomic_add_u32(uint32_t *p, uint32_t v)
    void fc_atomic_min_i64(int64_t *p, int64_t v)
