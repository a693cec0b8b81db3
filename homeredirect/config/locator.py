"""`[locator]`: how home servers are found in DNS (RFC 3263), for `locate = "dns"`."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from attrs import Attribute, field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import SECONDS, integer, one_of, to_seconds

__all__ = ["LOCATE_METHODS", "LOCATOR_TRANSPORTS", "LocatorConfig", "parse_nameserver"]

LOCATE_METHODS = ("static", "dns")
"""How a home server is found: its `[home_servers]` table, or DNS."""

LOCATOR_TRANSPORTS = ("tls", "tcp", "udp")
"""The transports the locator may use, in RFC 3263 §4.1's order of preference."""

_NAMESERVER = 'an IP address with an optional port, such as "127.0.0.1:5353" or "[::1]:53"'


def parse_nameserver(text: str) -> tuple[str, int]:
    """`"192.0.2.1"`, `"192.0.2.1:5353"`, `"::1"` or `"[::1]:5353"` -> (address, port).

    Name servers must be addresses: a name would itself need resolving. Raise ValueError.
    """
    host, port = text, 53
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(text)
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    if not 1 <= port <= 65_535:
        raise ValueError(text)
    return str(ipaddress.ip_address(host)), port


def _to_nameservers(value: Iterable[str]) -> Any:
    if not isinstance(value, list | tuple):
        return value  # the validator rejects it
    parsed: list[object] = []
    for item in value:
        try:
            parsed.append(parse_nameserver(item) if isinstance(item, str) else item)
        except ValueError:
            parsed.append(item)
    return tuple(parsed)


def _check_nameservers(instance: object, attribute: Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise InvalidField(attribute.name, f"an array of {_NAMESERVER}", value)
    for number, item in enumerate(value, 1):
        if not isinstance(item, tuple):
            raise InvalidField(f"{attribute.name}[{number}]", _NAMESERVER, item)


def _to_transports(value: Iterable[str]) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _check_transports(instance: object, attribute: Attribute[Any], value: object) -> None:
    expected = 'a non-empty array of "tls", "tcp" and "udp", each at most once'
    if not isinstance(value, tuple) or not value or len(set(value)) != len(value):
        raise InvalidField(attribute.name, expected, value)
    for number, item in enumerate(value, 1):
        if item not in LOCATOR_TRANSPORTS:
            raise InvalidField(f"{attribute.name}[{number}]", 'one of "tls", "tcp", "udp"', item)


@frozen(kw_only=True)
class LocatorConfig:
    """`[locator]`: the DNS resolution of home servers (RFC 3263 §4).

    - `default`: how a home server whose `[home_servers]` table has no `locate` key, or that
      has no table, is found: `"static"` (default: its table, or the FQDN on 5061 over TLS)
      or `"dns"` (NAPTR, SRV, then A/AAAA of its FQDN).
    - `nameservers`: the DNS servers to ask, IP addresses with optional ports
      (`["10.0.0.53", "127.0.0.1:5353"]`); default: those of /etc/resolv.conf.
    - `timeout`: seconds to wait for each try of a query (default 2); each name server is
      tried in turn, at least twice in all.
    - `transports`: the transports we may use, in our order of preference when DNS has no
      NAPTR records (default `["tls", "tcp", "udp"]`); `["tls"]` never sends to a home
      server in cleartext. Without SRV records the first is used at its default port.
    - `negative_ttl`: seconds a "no such record" answer is kept when DNS sends no SOA to
      say (default 30).
    """

    default: str = field(default="static", validator=one_of(*LOCATE_METHODS))
    nameservers: tuple[tuple[str, int], ...] = field(
        default=(), converter=_to_nameservers, validator=_check_nameservers
    )
    timeout: float = field(default=2.0, converter=to_seconds, validator=SECONDS)
    transports: tuple[str, ...] = field(
        default=LOCATOR_TRANSPORTS, converter=_to_transports, validator=_check_transports
    )
    negative_ttl: int = field(default=30, validator=integer(0, 86_400))
