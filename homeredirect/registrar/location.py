"""The location service's extension point: where a home server keeps bindings.

A binding maps an address of record to one contact of one device (RFC 3261 §10.3). Every
change to an AOR's bindings is one atomic read-modify-write (`ILocationStore.modify`), so
that two home servers of a pool sharing one store cannot interleave a refresh and a
removal, and a registrar that rejects a REGISTER (an out-of-order CSeq, say) writes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import field, frozen
from twisted.internet.defer import Deferred
from zope.interface import Interface

from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = [
    "Binding",
    "BindingChange",
    "ILocationStore",
    "LocationStoreError",
    "bindings_from_json",
    "bindings_to_json",
]


def _finite(instance: object, attribute: Any, value: float) -> None:
    if not isinstance(value, float | int) or not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value!r}")


def _to_hops(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@frozen
class Binding:
    """One registered contact of one AOR.

    - `contact`: the Contact URI as the client sent it (its text, without the name-addr
      brackets or header parameters), the address requests to the user are sent to.
    - `expires_at`: absolute time, in the injected clock's seconds (wall-clock seconds with
      the reactor, so that a persistent store survives a restart).
    - `q`: the Contact's q-value (RFC 3261 §20.10), None when not given.
    - `call_id`, `cseq`: of the REGISTER that last wrote the binding; a REGISTER with the same
      Call-ID and a CSeq not higher is out of order (RFC 3261 §10.3 step 7).
    - `path`: the Path header values recorded with it, first hop first (RFC 3327 §5.3).
    - `instance`, `reg_id`: the `+sip.instance` and `reg-id` Contact parameters
      (RFC 5626 §6); with an instance, the binding's identity is the device, not the URI.
    - `received`: where the REGISTER came from (`transport:host:port`), for routing back
      over the same flow to a client behind NAT (RFC 5626 §5.3).
    - `user_agent`, `epid`: informational; `epid` is the Microsoft endpoint id from the
      From header ([MS-SIPREGE]).
    """

    aor: AddressOfRecord
    contact: str
    expires_at: float = field(validator=_finite)
    call_id: str
    cseq: int
    q: float | None = None
    path: tuple[str, ...] = field(default=(), converter=_to_hops)
    instance: str | None = None
    reg_id: int | None = None
    received: str | None = None
    user_agent: str | None = None
    epid: str | None = None

    @property
    def key(self) -> tuple[str, int | None] | str:
        """What makes two bindings of one AOR the same binding: the device instance and
        reg-id when the client sent `+sip.instance` (RFC 5626 §6), else the contact URI."""
        if self.instance is not None:
            return (self.instance, self.reg_id)
        return self.contact

    def expires_in(self, now: float) -> int:
        """Whole seconds left, never negative: the Contact `expires` we report."""
        return max(0, int(self.expires_at - now + 0.5))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form, for stores that keep bindings as documents."""
        return {
            "aor": str(self.aor),
            "contact": self.contact,
            "expires_at": self.expires_at,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "q": self.q,
            "path": list(self.path),
            "instance": self.instance,
            "reg_id": self.reg_id,
            "received": self.received,
            "user_agent": self.user_agent,
            "epid": self.epid,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Binding:
        """The inverse of `to_json`; raise `ValueError` (or `KeyError`) for bad data."""
        return cls(
            aor=AddressOfRecord.parse(data["aor"]),
            contact=str(data["contact"]),
            expires_at=float(data["expires_at"]),
            call_id=str(data["call_id"]),
            cseq=int(data["cseq"]),
            q=None if data.get("q") is None else float(data["q"]),
            path=tuple(str(hop) for hop in data.get("path", ())),
            instance=data.get("instance"),
            reg_id=None if data.get("reg_id") is None else int(data["reg_id"]),
            received=data.get("received"),
            user_agent=data.get("user_agent"),
            epid=data.get("epid"),
        )


def bindings_to_json(bindings: tuple[Binding, ...]) -> str:
    """Serialise an AOR's bindings as one JSON document (compact)."""
    return json.dumps([b.to_json() for b in bindings], separators=(",", ":"))


def bindings_from_json(text: str | bytes) -> tuple[Binding, ...]:
    """The inverse of `bindings_to_json`."""
    return tuple(Binding.from_json(item) for item in json.loads(text))


BindingChange = Callable[[tuple[Binding, ...]], tuple[Binding, ...]]
"""A pure function from an AOR's current bindings to its new ones. It may run more than
once (an optimistic store retries after a conflicting write) and in another thread, so it
must not have side effects; it may raise to abort the change, which then writes nothing."""


class LocationStoreError(Exception):
    """The location store could not read or write; the registrar answers 500 and the
    store holds exactly what it held before."""


class ILocationStore(Interface):
    """Where bindings live: memory, SQLite or Redis (RFC 3261 §10.3's location service)."""

    def lookup(aor: AddressOfRecord, now: float) -> Deferred[tuple[Binding, ...]]:
        """Fire with the AOR's bindings that have not expired at `now`, in no set order;
        fail with `LocationStoreError`."""

    def modify(
        aor: AddressOfRecord, change: BindingChange, now: float
    ) -> Deferred[tuple[Binding, ...]]:
        """Atomically replace the AOR's unexpired bindings with `change(bindings)`.

        Fire with what was stored. If `change` raises, fail with that exception and store
        nothing; fail with `LocationStoreError` if the store cannot be read or written.
        """

    def purge(now: float) -> Deferred[int]:
        """Drop every binding expired at `now`; fire with how many were dropped."""

    def close() -> Deferred[None]:
        """Release connections and threads; called when the service stops."""
