"""What authenticating a request can come to: go on, challenge, or refuse."""

from __future__ import annotations

from attrs import frozen

from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["AuthOutcome", "Authenticated", "Challenge", "Refused"]


@frozen
class Authenticated:
    """The client proved to be `aor`."""

    aor: AddressOfRecord


@frozen
class Challenge:
    """Answer `status` (401, or 407 from a proxy) with `headers` (name, value) pairs."""

    status: int
    headers: tuple[tuple[str, str], ...]


@frozen
class Refused:
    status: int
    reason: str


AuthOutcome = Authenticated | Challenge | Refused
