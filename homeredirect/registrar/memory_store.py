"""`MemoryLocationStore`: bindings in a dict, for tests and throwaway home servers.

Everything happens synchronously on the reactor thread, so each `modify` is trivially
atomic: the change function runs, and only if it returns is its result stored. The
Deferred API is the same as the persistent stores', so the registrar cannot tell them apart.
Bindings are lost when the process stops (`[location] backend = "memory"`).
"""

from __future__ import annotations

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
            self._bindings[aor] = updated
        else:
            self._bindings.pop(aor, None)
        return succeed(updated)

    def purge(self, now: float) -> Deferred[int]:
        dropped = 0
        for aor in list(self._bindings):
            bindings = self._bindings[aor]
            kept = tuple(b for b in bindings if b.expires_at > now)
            dropped += len(bindings) - len(kept)
            if kept:
                self._bindings[aor] = kept
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
