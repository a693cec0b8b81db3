"""DNS answers kept for their TTL (RFC 1035 §3.2.1), on an injected clock.

The locator asks the same NAPTR, SRV and A/AAAA questions for every request to a home
server; keeping each answer for as long as its records say saves a round trip per request
and keeps a busy proxy from flooding its resolver. Negative answers (the name or the record
type does not exist) are kept too, for the SOA's negative TTL (RFC 2308 §5), so that a
missing NAPTR does not cost a query per request either.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

__all__ = ["TtlCache"]

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most `max_entries` values, each until its own expiry; least recently used go first.

    A TTL of 0 means "do not cache" (RFC 1035 §3.2.1), so such a value is not stored.
    """

    def __init__(self, clock: IReactorTime, max_entries: int = 4096) -> None:
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value stored under `key` if it has not expired, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock.seconds() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        """Keep `value` for `ttl` seconds."""
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock.seconds() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
