"""`MemoryLocationStore`: bindings in a dict, for tests and throwaway home servers.

Everything happens synchronously on the reactor thread, so each `modify` is trivially
atomic: the change function runs, and only if it returns is its result stored. The
Deferred API is the same as the persistent stores', so the registrar cannot tell them apart.
Bindings are lost when the process stops (`[location] backend = "memory"`).

Expiry is kept in a heap of (earliest expiry, AOR) entries, one pushed per write, so that
the purge timer looks only at the AORs whose bindings may have expired: sweeping every AOR
stopped the reactor for about 75 ms per 100,000 bindings, every `purge_interval`.
"""

from __future__ import annotations

import heapq
from itertools import count

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from homeredirect.registrar.location import Binding, BindingChange, ILocationStore
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["MemoryLocationStore"]


@implementer(ILocationStore)
class MemoryLocationStore:
    """An `ILocationStore` over a dict from AOR to its bindings."""

    def __init__(self) -> None:
        self._bindings: dict[AddressOfRecord, tuple[Binding, ...]] = {}
        # (earliest expiry of a write, tie-breaker, AOR): an entry whose AOR was written
        # again since is stale and skipped when its time comes (the later write pushed
        # its own); so each AOR has about one entry per write within its expiry.
        self._expiries: list[tuple[float, int, AddressOfRecord]] = []
        self._order = count()

    def lookup(self, aor: AddressOfRecord, now: float) -> Deferred[tuple[Binding, ...]]:
        return succeed(self._current(aor, now))

    def modify(
        self, aor: AddressOfRecord, change: BindingChange, now: float
    ) -> Deferred[tuple[Binding, ...]]:
        try:
            updated = tuple(change(self._current(aor, now)))
        except Exception:
            return fail()
        if updated:
            self._store(aor, updated)
        else:
            self._bindings.pop(aor, None)
        return succeed(updated)

    def _store(self, aor: AddressOfRecord, bindings: tuple[Binding, ...]) -> None:
        self._bindings[aor] = bindings
        earliest = min(binding.expires_at for binding in bindings)
        heapq.heappush(self._expiries, (earliest, next(self._order), aor))

    def purge(self, now: float) -> Deferred[int]:
        """Drop the bindings expired at `now`, visiting only the AORs due by then."""
        expiries = self._expiries
        dropped = 0
        while expiries and expiries[0][0] <= now:
            aor = heapq.heappop(expiries)[2]
            bindings = self._bindings.get(aor)
            if bindings is None:
                continue
            kept = tuple(b for b in bindings if b.expires_at > now)
            if len(kept) == len(bindings):
                continue  # written again since this entry: its own entry is due later
            dropped += len(bindings) - len(kept)
            if kept:
                self._store(aor, kept)
            else:
                del self._bindings[aor]
        return succeed(dropped)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def __len__(self) -> int:
        """How many bindings are held, expired or not (for tests and metrics)."""
        return sum(len(bindings) for bindings in self._bindings.values())

    def _current(self, aor: AddressOfRecord, now: float) -> tuple[Binding, ...]:
        return tuple(b for b in self._bindings.get(aor, ()) if b.expires_at > now)
