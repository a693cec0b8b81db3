"""LDAP search filters built from an address of record, safely (RFC 4515).

An AOR comes from a peer's REGISTER, so everything in it is hostile: a user part of `*` put
into `(mail=*@example.com)` unescaped would turn an equality match into a substring match on
every user of the domain. RFC 4515 §3 says which characters cannot appear literally in an
assertion value (`*`, `(`, `)`, `\\` and NUL); they, and every other control character, are
written as `\\XX`. And a value that is not a valid SIP AOR is refused before any filter is
built, so it never reaches the directory.

Pure functions, no I/O: the resolver and the unit tests share them.
"""

from __future__ import annotations

import re

from homeredirect.hostnames import normalize_uri_host
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = [
    "FilterTemplate",
    "InvalidAddress",
    "escape_filter_value",
]

# RFC 4515 §3: "The <valueencoding> rule ensures that the entire filter string is a valid
# UTF-8 string and provides that the octets that represent the ASCII characters "*" (ASCII
# 0x2a), "(" (ASCII 0x28), ")" (ASCII 0x29), "\" (ASCII 0x5c), and NUL (ASCII 0x00) are
# represented as a backslash "\" (ASCII 0x5c) followed by the two hexadecimal digits
# representing the value of the encoded octet." Other control characters may be escaped too,
# and are, so that a logged filter is always one printable line.
_SPECIAL = re.compile(r"[*()\\\x00-\x1f\x7f]")

# The user part of an AOR as it may reach a directory: what AddressOfRecord allows, bounded
# in length (no directory has 1 KB addresses; a longer one is an attack or garbage).
_USER = re.compile(r"[^\s@:\x00-\x1f\x7f]{1,256}")
_TOKEN = re.compile(r"\{(aor|user|domain)\}")


class InvalidAddress(ValueError):
    """The AOR is not one a directory could hold: the resolver answers "unknown user"
    without a query."""


def escape_filter_value(value: str) -> str:
    """Escape `value` for an LDAP filter assertion value (RFC 4515 §3).

    `*`, `(`, `)`, `\\`, NUL and the other ASCII control characters become `\\XX`; the rest,
    non-ASCII included, stays as is (the filter is UTF-8, RFC 4515 §3).
    """
    return _SPECIAL.sub(lambda match: f"\\{ord(match[0]):02x}", value)


def checked_parts(aor: AddressOfRecord) -> tuple[str, str]:
    """The (user, host) of `aor` after checking both again: `AddressOfRecord.of_uri_parts`
    trusts the parser, and this is the last gate before the directory. Raise
    `InvalidAddress`."""
    user, host = aor.user, aor.host
    if not isinstance(user, str) or _USER.fullmatch(user) is None:
        raise InvalidAddress(f"not a SIP user part: {user!r}")
    try:
        canonical = normalize_uri_host(host)
    except (ValueError, TypeError):
        raise InvalidAddress(f"not a SIP host: {host!r}") from None
    return user, canonical


class FilterTemplate:
    """A filter with `{aor}`, `{user}` and `{domain}` placeholders, e.g. `(mail={aor})`.

    Only those three names are replaced (no `str.format`, so a brace elsewhere in an
    operator's filter stays literal and nothing of the AOR is ever interpreted as a format).
    """

    def __init__(self, template: str) -> None:
        self.template = template

    def render(self, aor: AddressOfRecord) -> str:
        """The filter for `aor`, every value escaped; raise `InvalidAddress`."""
        user, host = checked_parts(aor)
        values = {"aor": f"{user}@{host}", "user": user, "domain": host}
        return _TOKEN.sub(lambda match: escape_filter_value(values[match[1]]), self.template)

    def match_all(self) -> str:
        """The filter with every placeholder a wildcard: every entry the template could find
        (`(mail={aor})` becomes the presence filter `(mail=*)`), for export."""
        return _TOKEN.sub("*", self.template)

    def aor_attribute(self) -> tuple[str, str] | None:
        """(attribute, prefix) when the template matches `{aor}` whole in one attribute, as
        `(mail={aor})` or `(msRTCSIP-PrimaryUserAddress=sip:{aor})` do: then an entry's
        AOR can be read back from it. None otherwise."""
        found = re.search(r"\(([A-Za-z][A-Za-z0-9-]*|[0-9.]+)=([^()*{}=]*)\{aor\}\)", self.template)
        if found is None:
            return None
        return found[1], found[2]
