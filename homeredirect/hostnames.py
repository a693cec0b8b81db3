"""Check and normalise hostnames and IP literals, once, where values are built.

Configuration keys and assignment files name servers by FQDN. Checking the syntax when a
value is built (STYLE b.4) turns a typo into a load-time error naming the line instead of a
DNS failure on the first call. Hostnames compare case-insensitively (RFC 3261 §19.1.4), so
the normal form is lowercase. This module never touches the network.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "is_hostname",
    "is_ip_address",
    "normalize_host",
    "normalize_hostname",
    "normalize_uri_host",
]

# RFC 3261 §25.1: hostname = *( domainlabel "." ) toplabel; a toplabel starts with a letter,
# which is what tells "example.com" from "192.0.2.1". Labels are at most 63 octets and the
# whole name at most 253 (RFC 1123 §2.1). No trailing dot: a key must have one spelling.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TOPLABEL = r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_TOPLABEL}", re.ASCII | re.IGNORECASE)
_MAX_HOSTNAME_LENGTH = 253


def is_hostname(text: str) -> bool:
    """Tell whether `text` is a DNS hostname (RFC 3261 §25.1 `hostname`, no trailing dot)."""
    return len(text) <= _MAX_HOSTNAME_LENGTH and _HOSTNAME.fullmatch(text) is not None


def is_ip_address(text: str) -> bool:
    """Tell whether `text` is an IPv4 or IPv6 address literal without brackets."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normalize_hostname(text: str) -> str:
    """Return `text` lowercased; raise `ValueError` if it is not a hostname.

    IP literals are rejected: callers that accept them use `normalize_host`.
    """
    if not is_hostname(text):
        raise ValueError(f"not a hostname: {text!r}")
    return text.lower()


def normalize_host(text: str) -> str:
    """Return a hostname lowercased or an IP literal in canonical form, for binding or dialling.

    IPv6 may be given with or without brackets and comes back without them, which is what
    socket and Twisted APIs take. Raise `ValueError` for anything else.
    """
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(literal))
    except ValueError:
        return normalize_hostname(text)


def normalize_uri_host(text: str) -> str:
    """Return the host part of a SIP URI in the form used for comparisons.

    RFC 3261 §19.1.1 `host` is a hostname, an IPv4 address or a bracketed IPv6 reference;
    hostnames compare case-insensitively (§19.1.4) and IPv6 references as addresses
    (RFC 5954 §4.1), so both are canonicalised. Raise `ValueError` for anything else.
    """
    if text.startswith("[") and text.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(text[1:-1])}]"
        except ValueError:
            raise ValueError(f"not an IPv6 reference: {text!r}") from None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return normalize_hostname(text)
