"""What authenticating a request can come to: go on, challenge, or refuse."""

from __future__ import annotations

from collections.abc import Callable

from attrs import field, frozen

from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.message import Response

__all__ = ["AuthOutcome", "Authenticated", "Challenge", "Refused"]


@frozen
class Authenticated:
    """The client proved to be `aor`.

    `sign`, when given, turns each response sent in the request's transaction into its
    signed form: schemes with a security association ([MS-SIPAE]) sign every message.
    """

    aor: AddressOfRecord
    sign: Callable[[Response], Response] | None = field(default=None, eq=False)


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
