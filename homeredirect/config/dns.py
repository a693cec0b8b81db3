"""`[dns]`: the home-server directory service, the DNS records by which clients find a
first server (`homeredirect dns` serves them, `homeredirect zone` prints them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from attrs import Attribute, field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import (
    Expect,
    integer,
    is_host_text,
    is_hostname_text,
    lower_optional,
    optional,
    to_host,
)
from homeredirect.hostnames import is_hostname

__all__ = ["DNS_TRANSPORTS", "DnsConfig", "DnsServer"]

DNS_TRANSPORTS = ("tls", "tcp", "udp")
"""The transports a `[[dns.servers]]` entry can offer, most preferred first (RFC 3263 §4.1
orders SIPS over TCP before SIP over TCP before SIP over UDP)."""

_SRV_FIELD = integer(0, 65_535)  # SRV priority and weight are 16-bit (RFC 2782)


def _to_addresses(value: Iterable[str]) -> tuple[str, ...]:
    """Canonical text of each address, so `::0:1` and `::1` are one record, in order."""
    if not isinstance(value, list | tuple):
        return value  # type: ignore[return-value]  # the validator rejects it
    canonical: list[object] = []
    for item in value:
        try:
            canonical.append(str(ipaddress.ip_address(item)) if isinstance(item, str) else item)
        except ValueError:
            canonical.append(item)
    return tuple(dict.fromkeys(canonical))  # type: ignore[arg-type]


def _check_addresses(instance: object, attribute: Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise InvalidField(attribute.name, "an array of IPv4 or IPv6 addresses", value)
    for number, item in enumerate(value, 1):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise InvalidField(
                f"{attribute.name}[{number}]", "an IPv4 or IPv6 address", item
            ) from None


def _to_transports(value: Mapping[str, int]) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        return value
    return MappingProxyType(dict(value))


def _check_transports(instance: object, attribute: Attribute[Any], value: object) -> None:
    expected = "a table of ports by transport, such as { tls = 5061, tcp = 5060 }"
    if not isinstance(value, Mapping) or not value:
        raise InvalidField(attribute.name, expected, value)
    for transport, port in value.items():
        if transport not in DNS_TRANSPORTS:
            raise InvalidField(
                f"{attribute.name}.{transport}", 'a key "tls", "tcp" or "udp"', transport
            )
        if not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65_535):
            raise InvalidField(f"{attribute.name}.{transport}", "a port from 1 to 65535", port)


def _to_mailbox(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def _is_mailbox(value: object) -> bool:
    """`local@domain` whose local part has no dot, since the SOA RNAME spells the mailbox as a
    domain name whose first label is the local part (RFC 1035 §3.3.13)."""
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    local, at, domain = value.partition("@")
    return at == "@" and is_hostname(f"{local}.{domain}") and "." not in local


@frozen(kw_only=True)
class DnsServer:
    """`[[dns.servers]]`: one SIP server that clients may pick as their first hop.

    - `fqdn` (required): the server's hostname, the target of the SRV records.
    - `addresses`: its IPv4 and IPv6 addresses, published as A and AAAA records; required
      when `fqdn` is inside one of `[server].domains`, as this service answers for those
      zones; must be empty otherwise (the name's own zone publishes them).
    - `transports`: ports by transport, `{ tls = 5061 }` by default; `"tls"`, `"tcp"`,
      `"udp"`. Each transport offered gets its SRV (and NAPTR) records.
    - `priority`, `weight`: SRV priority (default 10; lower is tried first) and weight
      (default 100; shares load among equal priorities), RFC 2782.
    """

    fqdn: str = field(converter=lower_optional, validator=Expect("a hostname", is_hostname_text))
    addresses: tuple[str, ...] = field(
        default=(), converter=_to_addresses, validator=_check_addresses
    )
    transports: Mapping[str, int] = field(
        factory=lambda: MappingProxyType({"tls": 5061}),
        converter=_to_transports,
        validator=_check_transports,
        hash=False,
    )
    priority: int = field(default=10, validator=_SRV_FIELD)
    weight: int = field(default=100, validator=_SRV_FIELD)


def _to_servers(value: Iterable[DnsServer]) -> tuple[DnsServer, ...]:
    return tuple(value) if isinstance(value, list | tuple) else value  # type: ignore[return-value]


@frozen(kw_only=True)
class DnsConfig:
    """`[dns]`: where the DNS service listens and what it publishes.

    - `host`: the address to bind (default `"127.0.0.1"`); `port`: default 5353, 0 for any.
      The service answers on UDP and TCP on the same port.
    - `ttl`: the TTL of every record, and the negative-caching TTL of the SOA (RFC 2308),
      seconds (default 300).
    - `nameserver`: this DNS server's own hostname, named by the NS and SOA records
      (default `[server].fqdn`).
    - `hostmaster`: the zone administrator's mailbox, written into the SOA (default
      `hostmaster@` each domain).
    - `serial`: the SOA serial (default 1); raise it whenever the records change if
      secondaries transfer the zone.
    - `servers`: the `[[dns.servers]]` entries; when there are none, this server is the one
      published: `[server].fqdn` with the addresses and ports of its `[[listen]]` entries.
    """

    host: str = field(
        default="127.0.0.1",
        converter=to_host,
        validator=Expect("an IPv4 or IPv6 address or a hostname", is_host_text),
    )
    port: int = field(default=5353, validator=integer(0, 65_535))
    ttl: int = field(default=300, validator=integer(0, 2**31 - 1))
    nameserver: str | None = field(
        default=None,
        converter=lower_optional,
        validator=Expect("a hostname", optional(is_hostname_text)),
    )
    hostmaster: str | None = field(
        default=None,
        converter=_to_mailbox,
        validator=Expect('a mailbox such as "hostmaster@example.com"', _is_mailbox),
    )
    serial: int = field(default=1, validator=integer(1, 2**32 - 1))
    servers: tuple[DnsServer, ...] = field(
        default=(),
        converter=_to_servers,
        validator=Expect(
            "an array of [[dns.servers]] tables",
            lambda value: (
                isinstance(value, tuple) and all(isinstance(item, DnsServer) for item in value)
            ),
        ),
    )
