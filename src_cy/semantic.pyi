"""Types of the compiled SemanticCache core (src_cy/semantic.pyx)."""

import enum
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Optional, Union

from fastcore._core.clock import Clock

class CacheState(str, enum.Enum):
    FRESH = "FRESH"
    STALE = "STALE"
    MISS = "MISS"
    ERROR = "ERROR"

class Freshness:
    max_age_ns: int
    stale_while_revalidate_ns: int
    stale_if_error_ns: int
    age_ns: int
    must_revalidate: bool
    negative: bool
    def __init__(self, max_age: float, stale_while_revalidate: float = 0.0,
                 stale_if_error: float = 0.0, *, must_revalidate: bool = False,
                 age: float = 0.0, negative: bool = False) -> None: ...
    @classmethod
    def from_cache_control(cls, header: Union[str, bytes, list, None],
                           age: Union[float, str] = 0.0, *,
                           shared: bool = True) -> Optional["Freshness"]: ...
    @classmethod
    def from_response(cls, status: int, headers: Any, *, shared: bool = True,
                      heuristic: float = 0.0) -> Optional["Freshness"]: ...
    @property
    def max_age(self) -> float: ...
    @property
    def stale_while_revalidate(self) -> float: ...
    @property
    def stale_if_error(self) -> float: ...
    @property
    def age(self) -> float: ...

class Intent:
    name: str
    max_staleness_ns: int
    serve_stale_while_revalidate: bool
    serve_stale_on_error: bool
    def __init__(self, name: str, max_staleness: float = 0.0,
                 serve_stale_while_revalidate: bool = True,
                 serve_stale_on_error: bool = True) -> None: ...
    @property
    def max_staleness(self) -> float: ...

class Lookup:
    state: CacheState
    value: Any
    negative: bool
    @property
    def age(self) -> Optional[float]: ...

class Loaded:
    value: Any
    freshness: Optional[Freshness]
    def __init__(self, value: Any, freshness: Optional[Freshness]) -> None: ...

IntentArg = Union[None, str, Intent]

class SemanticCacheCore:
    maxsize: int
    currsize: int
    getsizeof: Optional[Callable[[Any], int]]
    clock: Clock
    default: Freshness
    negative_default: Freshness
    default_intent: Intent
    xfetch_beta: float
    load_timeout: Optional[float]
    refresh_workers: int
    def __init__(self, maxsize: int, *, default: Optional[Freshness] = None,
                 intents: Union[Mapping[str, Intent], Iterable[Intent], None] = None,
                 default_intent: IntentArg = None, negative_ttl: float = 10.0,
                 getsizeof: Optional[Callable[[Any], int]] = None,
                 clock: Optional[Clock] = None, xfetch_beta: float = 1.0,
                 random: Optional[Callable[[], float]] = None,
                 executor: Any = None, load_timeout: Optional[float] = None,
                 refresh_workers: int = 4) -> None: ...
    def lookup(self, key: Hashable, intent: IntentArg = None) -> Lookup: ...
    def set(self, key: Hashable, value: Any, freshness: Optional[Freshness] = None) -> None: ...
    def set_negative(self, key: Hashable, freshness: Optional[Freshness] = None) -> None: ...
    def delete(self, key: Hashable) -> bool: ...
    def clear(self) -> None: ...
    def expire(self) -> int: ...
    def keys(self) -> list: ...
    def intent(self, name: IntentArg) -> Intent: ...
    @property
    def intents(self) -> dict[str, Intent]: ...
    def stats(self) -> dict[str, int]: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
