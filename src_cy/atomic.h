/* Lock-free primitives for the nogil paths: thin names over the GCC/Clang __atomic builtins.
 * Sequentially consistent ordering throughout: every call site is a single-word
 * read-modify-write whose cost is dominated by the locked instruction, not the fence. */
#ifndef FASTCORE_ATOMIC_H
#define FASTCORE_ATOMIC_H
#include <stdint.h>

static inline int64_t fc_atomic_load_i64(const int64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void fc_atomic_store_i64(int64_t *p, int64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
/* On failure *expected receives the current value, as in C11. Returns 1 on success. */
static inline int fc_atomic_cas_i64(int64_t *p, int64_t *expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
}
static inline int64_t fc_atomic_add_i64(int64_t *p, int64_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
}
static inline uint64_t fc_atomic_add_u64(uint64_t *p, uint64_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}
static inline uint32_t fc_atomic_add_u32(uint32_t *p, uint32_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}
/* Lowers *p to v if v is smaller; never raises it. */
static inline void fc_atomic_min_i64(int64_t *p, int64_t v) {
    int64_t cur = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
    }
}
#endif
