"""The DNS records of the home-server directory service, as a pure function of the config.

A SIP client knows only its user's domain (the right-hand side of `alice@example.com`). It
finds a first server through DNS, and which names it asks depends on the client:

- Microsoft clients (Lync, Skype for Business, pidgin-sipe) ask SRV `_sipinternaltls._tcp`,
  then `_sipinternal._tcp` (TCP, where allowed), then `_sip._tls`, and connect to the first
  that answers (the Office Communications Server client DNS query order; see
  /work/shared/REFERENCE.md). `_sipfederationtls._tcp` is for federating servers, not for
  clients, and is not published here.
- RFC 3263 clients ask NAPTR on the domain to choose a transport (§4.1), then SRV
  `_sips._tcp`, `_sip._tcp` or `_sip._udp` (§4.2), then A/AAAA of the SRV target.

`zones_for(config)` builds one authoritative zone per `[server].domains` entry: SOA and NS (so
that resolvers accept and cache our answers, RFC 1034 §4.3.2, RFC 2308), the NAPTR and SRV
records above for the transports the servers actually offer, and A/AAAA for the servers'
names that fall inside the zone, including home servers whose `[home_servers]` table gives an
IP address (the director redirects clients to them by name). Nothing here touches the
network or the clock; the same records are served (`homeredirect.dns.server`) and printed
(`homeredirect.dns.zonefile`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import ClassVar

from attrs import frozen

from homeredirect.config.dns import DNS_TRANSPORTS, DnsConfig
from homeredirect.config.schema import Config

__all__ = [
    "SOA_EXPIRE",
    "SOA_REFRESH",
    "SOA_RETRY",
    "AddressRecord",
    "CannotPublish",
    "NaptrRecord",
    "NsRecord",
    "PublishedServer",
    "Record",
    "SoaRecord",
    "SrvRecord",
    "Zone",
    "published_servers",
    "zone_of",
    "zones_for",
]

SOA_REFRESH = 3_600
"""Seconds after which a secondary checks the serial (RFC 1035 §3.3.13)."""
SOA_RETRY = 600
"""Seconds a secondary waits to retry a failed refresh."""
SOA_EXPIRE = 1_209_600
"""Seconds (two weeks) after which a secondary that cannot refresh stops answering."""


class CannotPublish(Exception):
    """The configuration is valid table by table, but its tables together do not make
    records a client could use (a server name inside our zone without an address, a port
    chosen at start-up). `location` is the key path, as in `ConfigError`."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(location, problem)
        self.location = location
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.location}: {self.problem}"


@frozen
class SoaRecord:
    """Start of authority: the zone's primary name server, administrator mailbox (as a
    domain name), serial and timers; `minimum` is the negative-caching TTL (RFC 2308 §4)."""

    type: ClassVar[str] = "SOA"
    name: str
    ttl: int
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@frozen
class NsRecord:
    """A name server of the zone."""

    type: ClassVar[str] = "NS"
    name: str
    ttl: int
    target: str


@frozen
class NaptrRecord:
    """RFC 3403 naming authority pointer; for SIP (RFC 3263 §4.1) `flags` is "s", `service`
    names the transport (`SIPS+D2T`) and `replacement` the SRV name to ask next."""

    type: ClassVar[str] = "NAPTR"
    name: str
    ttl: int
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@frozen
class SrvRecord:
    """RFC 2782 service location: where `_service._proto.name` is offered."""

    type: ClassVar[str] = "SRV"
    name: str
    ttl: int
    priority: int
    weight: int
    port: int
    target: str


@frozen
class AddressRecord:
    """An A (IPv4) or AAAA (IPv6) record; `address` is the canonical text of the literal."""

    name: str
    ttl: int
    address: str

    @property
    def type(self) -> str:
        return "AAAA" if ipaddress.ip_address(self.address).version == 6 else "A"


Record = SoaRecord | NsRecord | NaptrRecord | SrvRecord | AddressRecord
"""Owner names are lowercase and fully qualified, without the trailing dot."""


@frozen
class Zone:
    """One authoritative zone: `origin` (a `[server].domains` entry) and its records, SOA
    first."""

    origin: str
    records: tuple[Record, ...]

    @property
    def soa(self) -> SoaRecord:
        first = self.records[0]
        assert isinstance(first, SoaRecord)
        return first


@frozen
class PublishedServer:
    """A server clients may pick as their first hop, once defaults are applied.

    `transports` pairs each offered transport with its port, in `DNS_TRANSPORTS` order;
    `source` is where it was configured, for error messages.
    """

    fqdn: str
    addresses: tuple[str, ...]
    transports: tuple[tuple[str, int], ...]
    priority: int
    weight: int
    source: str


# Per transport: the SRV names clients ask, in the order Microsoft clients and then RFC 3263
# clients ask them; and the NAPTR order and service (RFC 3263 §4.1: SIPS over TCP, then SIP
# over TCP, then SIP over UDP, as in its example).
_SRV_NAMES = (
    ("_sipinternaltls._tcp", "tls"),
    ("_sipinternal._tcp", "tcp"),
    ("_sip._tls", "tls"),
    ("_sips._tcp", "tls"),
    ("_sip._tcp", "tcp"),
    ("_sip._udp", "udp"),
)
_NAPTR = {
    "tls": (50, "SIPS+D2T", "_sips._tcp"),
    "tcp": (90, "SIP+D2T", "_sip._tcp"),
    "udp": (100, "SIP+D2U", "_sip._udp"),
}
_NAPTR_PREFERENCE = 50


def zone_of(name: str, domains: Iterable[str]) -> str | None:
    """The most specific of `domains` that `name` is, or is inside; None if none."""
    inside = [d for d in domains if name == d or name.endswith("." + d)]
    return max(inside, key=len) if inside else None


def _is_usable_address(host: str) -> bool:
    """An IP literal a client can connect to: not a hostname, not a wildcard."""
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def published_servers(config: Config) -> tuple[PublishedServer, ...]:
    """The `[[dns.servers]]` entries, or by default this server as its `[[listen]]` entries
    offer it. Raise `CannotPublish` for a listener on port 0 (it has no port until start-up,
    so there is nothing to publish)."""
    dns = config.dns or DnsConfig()
    if dns.servers:
        return tuple(
            PublishedServer(
                fqdn=server.fqdn,
                addresses=server.addresses,
                transports=tuple(
                    (transport, server.transports[transport])
                    for transport in DNS_TRANSPORTS
                    if transport in server.transports
                ),
                priority=server.priority,
                weight=server.weight,
                source=f"[[dns.servers]][{number}]",
            )
            for number, server in enumerate(dns.servers, 1)
        )
    addresses: dict[str, None] = {}
    ports: dict[str, int] = {}
    for number, listener in enumerate(config.listeners, 1):
        if listener.port == 0:
            raise CannotPublish(
                f"[[listen]][{number}].port",
                "expected a fixed port to publish in DNS, or [[dns.servers]] entries saying "
                "what to publish, got 0 (a port chosen at start-up)",
            )
        if _is_usable_address(listener.host):
            addresses[str(ipaddress.ip_address(listener.host))] = None
        ports.setdefault(str(listener.transport), listener.port)
    return (
        PublishedServer(
            fqdn=config.server.fqdn,
            addresses=tuple(addresses),
            transports=tuple((t, ports[t]) for t in DNS_TRANSPORTS if t in ports),
            priority=10,
            weight=100,
            source="[[listen]]",
        ),
    )


def _rname(hostmaster: str | None, origin: str) -> str:
    """The SOA mailbox as a domain name: `hostmaster@example.com` -> `hostmaster.example.com`
    (RFC 1035 §8); the configuration rejects local parts with dots, which would need escaping."""
    if hostmaster is None:
        return f"hostmaster.{origin}"
    local, _, domain = hostmaster.partition("@")
    return f"{local}.{domain}"


def _host_addresses(
    config: Config, servers: tuple[PublishedServer, ...], nameserver: str
) -> dict[str, tuple[str, ...]]:
    """The addresses to publish, by hostname, for the names inside our zones."""
    domains = config.server.domains
    dns = config.dns or DnsConfig()
    hosts: dict[str, dict[str, None]] = {}
    for server in servers:
        if zone_of(server.fqdn, domains) is None:
            if server.addresses and server.source != "[[listen]]":
                raise CannotPublish(
                    f"{server.source}.addresses",
                    f"expected no addresses for {server.fqdn}, which is inside none of "
                    "[server].domains, so this service cannot answer for it (its own zone "
                    f"publishes them), got {list(server.addresses)}",
                )
            continue
        if not server.addresses:
            if server.source == "[[listen]]":
                raise CannotPublish(
                    "[[listen]]",
                    "expected a host that is an IP address clients can reach (not a wildcard or a "
                    f"hostname), to publish as the address of {server.fqdn}; or "
                    "[[dns.servers]] entries with addresses",
                )
            raise CannotPublish(
                f"{server.source}.addresses",
                f"expected at least one IPv4 or IPv6 address: {server.fqdn} is inside the zone "
                f"{zone_of(server.fqdn, domains)}, which this service answers for, got []",
            )
        hosts.setdefault(server.fqdn, {}).update(dict.fromkeys(server.addresses))
    for home in config.home_servers.values():
        if home.fqdn in hosts or zone_of(home.fqdn, domains) is None:
            continue
        if _is_usable_address(home.host):
            hosts[home.fqdn] = {str(ipaddress.ip_address(home.host)): None}
    if nameserver not in hosts and zone_of(nameserver, domains) is not None:
        if not _is_usable_address(dns.host):
            raise CannotPublish(
                "[dns].nameserver",
                f"expected a name server whose address is known: {nameserver} is inside the zone "
                f"{zone_of(nameserver, domains)}, but [dns].host ({dns.host}) is not an "
                "address clients can reach; name one of the servers, or bind an address",
            )
        hosts[nameserver] = {str(ipaddress.ip_address(dns.host)): None}
    return {name: tuple(addresses) for name, addresses in hosts.items()}


def zones_for(config: Config) -> tuple[Zone, ...]:
    """One zone per `[server].domains` entry, in the configured order (see the module
    docstring for what each holds). Raise `CannotPublish` when the configuration's tables
    together cannot make usable records."""
    dns = config.dns or DnsConfig()
    ttl = dns.ttl
    nameserver = dns.nameserver or config.server.fqdn
    servers = published_servers(config)
    hosts = _host_addresses(config, servers, nameserver)
    by_priority = sorted(servers, key=lambda server: server.priority)  # stable: config order
    offered = {transport for server in servers for transport, _ in server.transports}
    zones = []
    for origin in config.server.domains:
        records: list[Record] = [
            SoaRecord(
                name=origin,
                ttl=ttl,
                mname=nameserver,
                rname=_rname(dns.hostmaster, origin),
                serial=dns.serial,
                refresh=SOA_REFRESH,
                retry=SOA_RETRY,
                expire=SOA_EXPIRE,
                minimum=ttl,
            ),
            NsRecord(name=origin, ttl=ttl, target=nameserver),
        ]
        for transport in DNS_TRANSPORTS:
            if transport in offered:
                order, service, prefix = _NAPTR[transport]
                records.append(
                    NaptrRecord(
                        name=origin,
                        ttl=ttl,
                        order=order,
                        preference=_NAPTR_PREFERENCE,
                        flags="s",
                        service=service,
                        regexp="",
                        replacement=f"{prefix}.{origin}",
                    )
                )
        for prefix, transport in _SRV_NAMES:
            for server in by_priority:
                ports = dict(server.transports)
                if transport in ports:
                    records.append(
                        SrvRecord(
                            name=f"{prefix}.{origin}",
                            ttl=ttl,
                            priority=server.priority,
                            weight=server.weight,
                            port=ports[transport],
                            target=server.fqdn,
                        )
                    )
        for host in sorted(hosts):
            if zone_of(host, config.server.domains) == origin:
                records.extend(
                    AddressRecord(name=host, ttl=ttl, address=address) for address in hosts[host]
                )
        zones.append(Zone(origin=origin, records=tuple(records)))
    return tuple(zones)
