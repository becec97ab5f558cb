"""A deliberately naive SemanticCache, written from the freshness rules (not from the Cython).

Times are int ns; spans come from seconds as exact Fractions. Entries live in a plain
dict; the SIEVE queue is a Python list, oldest first, and the hand is a key.

Rules (a = now - stored):
  FRESH  a < max_age
  STALE  a < max_age + max(I.max_staleness, swr if I.serve_stale_while_revalidate else 0)
         and not must_revalidate
  MISS   otherwise
  error fallback: usable now, or a < max_age + sie when I.serve_stale_on_error and not
         must_revalidate
  dead   once no configured intent can use it: a >= max_age + (0 if must_revalidate else
         max(max I.max_staleness, swr if some I serves swr, sie if some I serves on error));
         a dead entry reads as absent and is dropped when looked up.
Eviction (SIEVE): the hand starts at the oldest entry, walks toward the newest clearing
visited bits and evicts the first unvisited or dead entry; the hand then points at the next
newer entry (None: start again from the oldest). New entries enter as newest; an overwrite
keeps the key's place and visited bit, and the hand passes over it while making room.
"""

from fractions import Fraction

NS = 10 ** 9
NO_FALLBACK = object()


def ns(seconds):
    return round(Fraction(seconds) * NS)


class Entry:
    def __init__(self, value, stored, fresh, swr, sie, must, negative, age, weight):
        self.value = value
        self.stored = stored
        self.fresh = fresh
        self.swr = swr
        self.sie = sie
        self.must = must
        self.negative = negative
        self.age = age
        self.weight = weight
        self.visited = False


class SemanticModel:
    def __init__(self, maxsize, default, negative_ttl, intents, default_intent):
        # default: (max_age, swr, sie, must) in seconds; intents: {name: (staleness, swr, soe)}
        self.maxsize = maxsize
        self.default = default
        self.negative_ttl = negative_ttl
        self.intents = dict(intents)
        self.default_intent = default_intent
        self.entries = {}
        self.queue = []           # keys, oldest first
        self.hand = None
        self.stats = {"hits": 0, "stale_hits": 0, "misses": 0, "evictions": 0, "loads": 0,
                      "load_errors": 0}
        self.pending = {}         # key -> outcome of the queued background refresh

    # -- the rules -----------------------------------------------------------------------

    def keep(self, e):
        if e.must:
            return e.fresh
        staleness = max(ns(s) for s, _, _ in self.intents.values())
        candidates = [staleness]
        if any(swr for _, swr, _ in self.intents.values()):
            candidates.append(e.swr)
        if any(soe for _, _, soe in self.intents.values()):
            candidates.append(e.sie)
        return e.fresh + max(candidates)

    def dead(self, e, now):
        return now - e.stored >= self.keep(e)

    def state(self, e, intent, now):
        staleness, use_swr, _ = intent
        a = now - e.stored
        if a < e.fresh:
            return "FRESH"
        if not e.must and a < e.fresh + max(ns(staleness), e.swr if use_swr else 0):
            return "STALE"
        return "MISS"

    def resolve(self, intent):
        return self.intents[intent if intent is not None else self.default_intent]

    # -- operations ----------------------------------------------------------------------

    def remove(self, key):
        i = self.queue.index(key)
        if self.hand == key:
            self.hand = self.queue[i + 1] if i + 1 < len(self.queue) else None
        self.queue.pop(i)
        del self.entries[key]

    def lookup(self, key, intent, now):
        """-> (state, value, age_ns or None, negative)."""
        e = self.entries.get(key)
        if e is not None and self.dead(e, now):
            self.remove(key)
            e = None
        if e is None:
            self.stats["misses"] += 1
            return ("MISS", None, None, False)
        e.visited = True
        st = self.state(e, self.resolve(intent), now)
        if st == "MISS":
            self.stats["misses"] += 1
            return ("MISS", None, None, False)
        self.stats["hits" if st == "FRESH" else "stale_hits"] += 1
        return (st, e.value, now - e.stored + e.age, e.negative)

    def peek(self, key, intent, now):
        """The state a lookup would report, without counting or touching anything."""
        e = self.entries.get(key)
        if e is None or self.dead(e, now):
            return "MISS"
        return self.state(e, self.resolve(intent), now)

    def fallback(self, key, intent, now):
        e = self.entries.get(key)
        if e is None or self.dead(e, now):
            return NO_FALLBACK
        staleness, use_swr, soe = self.resolve(intent)
        a = now - e.stored
        usable = self.state(e, (staleness, use_swr, soe), now) != "MISS"
        if usable or (soe and not e.must and a < e.fresh + e.sie):
            return e.value
        return NO_FALLBACK

    def get_or_load(self, key, intent, outcome, now, weight, error):
        """-> the value, or raises ``error``; ``outcome`` is what the loader returns or
        ``error`` (the exception it raises). A STALE answer queues one refresh per key."""
        state, value, _, _ = self.lookup(key, intent, now)
        if state == "FRESH":
            return value
        if state == "STALE":
            self.pending.setdefault(key, outcome)
            return value
        self.stats["loads"] += 1
        if outcome is not error:
            self.set(key, outcome, None, False, now, weight)
            return outcome
        self.stats["load_errors"] += 1
        found = self.fallback(key, intent, now)
        if found is NO_FALLBACK:
            raise error
        return found

    def run_refreshes(self, now, weigh, error):
        pending, self.pending = self.pending, {}
        for key, outcome in pending.items():
            self.stats["loads"] += 1
            if outcome is error:
                self.stats["load_errors"] += 1
            else:
                self.set(key, outcome, None, False, now, weigh(outcome))

    def weight_of(self, value, getsizeof):
        return 1 if getsizeof is None else getsizeof(value)

    def set(self, key, value, freshness, negative, now, weight):
        """freshness: (max_age, swr, sie, must, age, negative) in seconds or None (default)."""
        if freshness is None:
            if negative:
                freshness = (self.negative_ttl, 0, 0, False, 0, True)
            else:
                freshness = tuple(self.default) + (0, False)
        max_age, swr, sie, must, age, f_negative = freshness
        if weight > self.maxsize:
            raise ValueError("too large")
        e = Entry(value, now, ns(max_age), ns(swr), ns(sie), must, negative or f_negative,
                  ns(age), weight)
        if key in self.entries:
            if self.dead(e, now):
                self.remove(key)
                return
            e.visited = self.entries[key].visited
            self.entries[key] = e            # same place in the queue
            while self.currsize() > self.maxsize:
                self.evict(now, spare=key)
            return
        if self.dead(e, now):
            return
        while self.currsize() + weight > self.maxsize:
            self.evict(now)
        self.entries[key] = e
        self.queue.append(key)

    def evict(self, now, spare=None):
        i = self.queue.index(self.hand) if self.hand is not None else 0
        while True:
            key = self.queue[i]
            if key != spare:
                e = self.entries[key]
                if not e.visited or self.dead(e, now):
                    break
                e.visited = False
            i = (i + 1) % len(self.queue)
        self.hand = self.queue[i + 1] if i + 1 < len(self.queue) else None
        self.queue.pop(i)
        del self.entries[key]
        self.stats["evictions"] += 1

    def delete(self, key, now):
        e = self.entries.get(key)
        if e is None:
            return False
        self.remove(key)
        return not self.dead(e, now)

    def expire(self, now):
        dead = [k for k in self.queue if self.dead(self.entries[k], now)]
        for k in dead:
            self.remove(k)
        return len(dead)

    def contains(self, key, now):
        e = self.entries.get(key)
        return e is not None and not self.dead(e, now)

    def currsize(self):
        return sum(e.weight for e in self.entries.values())
