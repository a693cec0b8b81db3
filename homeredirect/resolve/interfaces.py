"""The assignment-lookup extension point: which home server a user belongs to.

Backends (a file, LDAP, SQL, Redis) provide `IAssignmentResolver`; the director only sees
`AddressOfRecord` in and `Assignment` out, both validated when built (STYLE b.4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from attrs import Attribute, field, frozen
from twisted.internet.defer import Deferred
from zope.interface import Interface

from homeredirect.hostnames import normalize_hostname, normalize_uri_host

__all__ = ["AddressOfRecord", "Assignment", "IAssignmentResolver", "IAssignmentStore"]

# A user part as found in a SIP URI's userinfo: no whitespace or control characters, no "@",
# and no ":" (which would start a password, RFC 3261 §19.1.1). Kept loose on purpose: the
# parser has already checked the grammar, and an AOR only has to be a reliable lookup key.
_USER = re.compile(r"[^\s@:\x00-\x1f\x7f]+")
_AOR = re.compile(r"(?:[Ss][Ii][Pp][Ss]?:)?([^\s@:\x00-\x1f\x7f<>\"]+)@([^\s@<>\"]+)")


def _check_user(instance: object, attribute: Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or _USER.fullmatch(value) is None:
        raise ValueError(f"not a SIP user part: {value!r}")


@frozen
class AddressOfRecord:
    """A user's SIP identity, `user@host`, as a lookup key (RFC 3261 §10.3 step 5).

    The host is lowercased (hosts compare case-insensitively) but the user is kept as
    written, because RFC 3261 §19.1.4 compares userinfo case-sensitively: `Alice` and
    `alice` are different users. `str()` gives `user@host`, without scheme, which is also
    the key assignment backends store.
    """

    user: str = field(validator=_check_user)
    host: str = field(converter=normalize_uri_host)

    @classmethod
    def parse(cls, text: str) -> AddressOfRecord:
        """Parse `sip:alice@example.com`, `sips:alice@example.com` or `alice@example.com`.

        Raise `ValueError` for an empty user or host, whitespace, or a malformed host.
        """
        match = _AOR.fullmatch(text)
        if match is None:
            raise ValueError(f"not a SIP address of record (user@host): {text!r}")
        return cls(user=match[1], host=match[2])

    @classmethod
    def of_uri_parts(cls, user: str, host: str) -> AddressOfRecord:
        """The AOR of a SIP URI the parser has already validated (RFC 3261 §10.3
        step 5): *user* unescaped, *host* lowercased.

        This runs for every REGISTER, so the general checks run only where they can
        change the result: an escaped user may decode to characters an AOR cannot
        hold, and an IP literal has one canonical spelling.
        """
        if "@" in user or ":" in user or _USER.fullmatch(user) is None:
            raise ValueError(f"not a SIP user part: {user!r}")
        if host[:1] == "[" or host[-1:].isdigit():
            host = normalize_uri_host(host)
        aor = cls.__new__(cls)
        object.__setattr__(aor, "user", user)
        object.__setattr__(aor, "host", host)
        return aor

    def __str__(self) -> str:
        return f"{self.user}@{self.host}"


@frozen
class Assignment:
    """The home server a user is assigned to, by FQDN (lowercased, checked as a hostname).

    How to reach it (address, port, transport, backup) is configuration, not assignment
    data: see `homeredirect.config.schema.Config.home_server`.
    """

    home_server: str = field(converter=normalize_hostname)


class IAssignmentResolver(Interface):
    """Looks up which home server a user is assigned to."""

    def resolve(aor: AddressOfRecord) -> Deferred[Assignment | None]:
        """Fire with the user's assignment, or None for a user the directory does not know.

        Fail with `DirectoryUnavailable` when the backend cannot answer, which the director
        turns into 503 with Retry-After, never into "unknown user".
        """


class IAssignmentStore(Interface):
    """Writes assignments: what the rebalancer and `homeredirect assignments` use.

    Backends that provide it (file, SQL, Redis, LDAP) usually provide
    `IAssignmentResolver` too; a write is visible to other directors sharing the store
    within their cache TTL.
    """

    def move(aor: AddressOfRecord, home_server: str) -> Deferred[None]:
        """Assign `aor` to `home_server` (an FQDN), adding the user if new.

        Fail with `DirectoryUnavailable` when the store cannot be reached, and with
        `AssignmentWriteError` when it refuses the write (a permission error, say).
        """

    def move_many(moves: Iterable[tuple[AddressOfRecord, str]]) -> Deferred[int]:
        """Apply several moves, all or (where the store allows) none; fire with the count."""

    def export() -> Deferred[list[tuple[AddressOfRecord, Assignment]]]:
        """Fire with every assignment in the store, for `homeredirect assignments export`."""
