# IdleQueue: which keys of a KeyTable may be idle now, exactly, at O(1) amortised cost.
#
# Promise: after idlequeue_advance(q, now), the DUE list holds every entry whose queued time is
# <= now, and no other. The key table keeps, for every live key, queued_ns <= the time the
# key's state last became what it is now, which gives the one property eviction needs:
#     a key that is idle at `now` (its state is indistinguishable from a fresh key's) is DUE.
# (Its idle time only grows with admissions; every push records either the push time or the
# key's idle time at the push, both <= now when the key is idle.) So draining DUE -- evicting
# the first entry whose state is idle, re-pushing the others at their real idle time -- finds
# an idle key whenever one exists, and proves that none exists when DUE runs empty.
#
# Layout: a radix heap over a cursor (Ahuja, Mehlhorn, Orlin and Tarjan 1990) with intrusive
# doubly linked lists. Per slot an IdleLink (16 B: queued_ns, next, prev); per queue 65 list
# heads (DUE and buckets 1..64), a 64-bit occupancy mask and the cursor. Times are mapped to
# unsigned order-preserving keys u(t) = t ^ 2**63 (flips the sign bit: t + 2**63 mod 2**64).
#
# Invariants:
#   every entry e with queued_ns <= cursor is in DUE; every other entry is in bucket
#     b = bit_length(u(queued_ns) ^ u(cursor)) in 1..64 (the highest bit where it differs
#     from the cursor is bit b-1, and there it has a 1)
#   bit b-1 of `occupied` is set iff bucket b is non-empty
#   floor_ns <= queued_ns of every bucketed entry, and exactly their minimum whenever
#     floor_ns > cursor_ns (unlinking the minimum sets it to the cursor: "find it again")
#   due_count is the length of DUE
#
# Cost: push, unlink O(1). advance(now) moves the entries of buckets 1..B, B = bit_length(
# u(now) ^ u(cursor)): those of buckets below B are all < now (they agree with the cursor above
# bit b-1 < B-1 and have a 0 at bit B-1, where now has a 1) and go to DUE; those of bucket B go
# to DUE or to a bucket below B. An entry only ever moves down, at most 64 times per push, so
# advance is O(1) amortised per push; buckets are found from the occupancy mask (no scan of
# empty ones).
#
# Worked example: cursor 8 (u = 8 + 2**63), entries queued at 9, 12 and 20.
#   9 ^ 8 = 0b00001 -> bucket 1;  12 ^ 8 = 0b00100 -> bucket 3;  20 ^ 8 = 0b11100 -> bucket 5.
#   advance(13): 13 ^ 8 = 0b0101 -> B = 3. Bucket 1 (9) goes to DUE; bucket 3 holds 12 <= 13:
#   DUE. 20 stays in bucket 5 (20 ^ 13 = 0b11001, bit length 5 as before). DUE = {9, 12}.
from libc.stdint cimport INT64_MAX, INT64_MIN, int32_t, int64_t, uint64_t

cdef extern from *:
    """
    static inline int idlequeue_bit_length(unsigned long long x) {
        return x ? 64 - __builtin_clzll(x) : 0;   /* floor(log2(x)) + 1, 0 for 0 */
    }
    static inline int idlequeue_lowest_bit(unsigned long long x) {
        return __builtin_ctzll(x);                /* index of the lowest set bit, x != 0 */
    }
    """
    int idlequeue_bit_length(uint64_t x) nogil
    int idlequeue_lowest_bit(uint64_t x) nogil
    const uint64_t IDLEQUEUE_SIGN "0x8000000000000000ULL"

cdef enum:
    IDLEQUEUE_DUE = 0              # the list of entries queued at or before the cursor
    IDLEQUEUE_LISTS = 65           # DUE and buckets 1..64


cdef struct IdleLink:
    int64_t queued_ns              # the entry's time in the queue
    int32_t next                   # next entry of its list, -1 at the end
    int32_t prev                   # previous entry, or -1 - list for the first of `list`


cdef struct IdleQueue:
    IdleLink* links                # one per slot, indexed like the key table's slots
    int32_t heads[65]              # first entry of each list, -1 when empty
    uint64_t occupied              # bit b-1 set iff bucket b (1..64) is non-empty
    int64_t cursor_ns              # never decreases; every entry in a bucket is later
    int64_t floor_ns               # lower bound on queued_ns over the buckets
    Py_ssize_t due_count


cdef inline void idlequeue_init(IdleQueue* q) noexcept nogil:
    cdef int i
    for i in range(IDLEQUEUE_LISTS):
        q.heads[i] = -1
    q.occupied = 0
    q.cursor_ns = INT64_MIN
    q.floor_ns = INT64_MAX
    q.due_count = 0


cdef inline int idlequeue_list_of(IdleQueue* q, int64_t t) noexcept nogil:
    """DUE for t <= cursor, else the bucket bit_length(u(t) ^ u(cursor)) in 1..64."""
    if t <= q.cursor_ns:
        return IDLEQUEUE_DUE
    return idlequeue_bit_length((<uint64_t>t ^ IDLEQUEUE_SIGN) ^ (<uint64_t>q.cursor_ns ^ IDLEQUEUE_SIGN))


cdef inline void idlequeue_link(IdleQueue* q, int32_t s, int lst) noexcept nogil:
    cdef IdleLink* link = &q.links[s]
    link.next = q.heads[lst]
    link.prev = -1 - lst
    if link.next >= 0:
        q.links[link.next].prev = s
    q.heads[lst] = s
    if lst == IDLEQUEUE_DUE:
        q.due_count += 1
    else:
        q.occupied |= (<uint64_t>1) << (lst - 1)


cdef inline void idlequeue_push(IdleQueue* q, int32_t s, int64_t t) noexcept nogil:
    """Queue slot s (not queued) at time t."""
    cdef int lst = idlequeue_list_of(q, t)
    q.links[s].queued_ns = t
    idlequeue_link(q, s, lst)
    if lst != IDLEQUEUE_DUE and t < q.floor_ns:
        q.floor_ns = t


cdef inline void idlequeue_unlink(IdleQueue* q, int32_t s) noexcept nogil:
    """Take slot s (queued) out of its list."""
    cdef IdleLink* link = &q.links[s]
    cdef int lst = idlequeue_list_of(q, link.queued_ns)
    if link.prev < 0:
        q.heads[lst] = link.next
        if link.next < 0 and lst != IDLEQUEUE_DUE:
            q.occupied &= ~((<uint64_t>1) << (lst - 1))
    else:
        q.links[link.prev].next = link.next
    if link.next >= 0:
        q.links[link.next].prev = link.prev
    if lst == IDLEQUEUE_DUE:
        q.due_count -= 1
    elif link.queued_ns == q.floor_ns:
        q.floor_ns = q.cursor_ns                # the earliest entry left: find it again


cdef inline void idlequeue_move(IdleQueue* q, int32_t s, int64_t t) noexcept nogil:
    """Queue slot s (queued) at time t instead."""
    idlequeue_unlink(q, s)
    idlequeue_push(q, s, t)


cdef inline void idlequeue_advance(IdleQueue* q, int64_t now_ns) noexcept nogil:
    """Move the cursor to now_ns (never back): every entry queued at or before it is DUE."""
    cdef int top, b
    cdef int32_t s, next_s, carried
    cdef uint64_t low
    if now_ns <= q.cursor_ns:
        return
    top = idlequeue_bit_length((<uint64_t>now_ns ^ IDLEQUEUE_SIGN)
                               ^ (<uint64_t>q.cursor_ns ^ IDLEQUEUE_SIGN))
    # buckets 1..top-1 (mask bits 0..top-2) lie wholly before now: every entry goes to DUE
    low = q.occupied & (((<uint64_t>1) << (top - 1)) - 1)
    while low:
        b = idlequeue_lowest_bit(low) + 1
        low &= low - 1                              # clear the lowest set bit
        s = q.heads[b]
        q.heads[b] = -1
        while s >= 0:
            next_s = q.links[s].next
            idlequeue_link(q, s, IDLEQUEUE_DUE)
            s = next_s
    q.occupied &= ~(((<uint64_t>1) << (top - 1)) - 1)
    # bucket `top` straddles now: detach it, move the cursor, then place each entry again
    carried = -1
    if q.occupied & ((<uint64_t>1) << (top - 1)):
        carried = q.heads[top]
        q.heads[top] = -1
        q.occupied &= ~((<uint64_t>1) << (top - 1))
    q.cursor_ns = now_ns
    while carried >= 0:
        next_s = q.links[carried].next
        idlequeue_link(q, carried, idlequeue_list_of(q, q.links[carried].queued_ns))
        carried = next_s


cdef inline int64_t idlequeue_next_ns(IdleQueue* q) noexcept nogil:
    """The earliest queued time among bucketed entries (INT64_MAX when none): floor_ns when
    it is exact, else found by scanning the lowest non-empty bucket."""
    cdef int32_t s
    cdef int64_t low_ns
    if q.occupied == 0:
        q.floor_ns = INT64_MAX
        return INT64_MAX
    if q.floor_ns <= q.cursor_ns:
        # every entry of a lower bucket is earlier than every entry of a higher one
        s = q.heads[idlequeue_lowest_bit(q.occupied) + 1]
        low_ns = INT64_MAX
        while s >= 0:
            if q.links[s].queued_ns < low_ns:
                low_ns = q.links[s].queued_ns
            s = q.links[s].next
        q.floor_ns = low_ns
    return q.floor_ns
