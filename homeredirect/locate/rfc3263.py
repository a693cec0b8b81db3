"""Locating a home server by DNS, as a SIP client does (RFC 3263 §4).

For a home server FQDN such as `home1.example.com`:

1. **Transport** (§4.1): NAPTR records of the FQDN whose flag is "s" and whose service is
   one we speak (`SIPS+D2T` TLS, `SIP+D2T` TCP, `SIP+D2U` UDP, limited to the configured
   transports), in order then preference; each names the SRV domain to ask. With no usable
   NAPTR record, the SRV names of our transports are asked in our order of preference
   (`_sips._tcp`, `_sip._tcp`, `_sip._udp`: TLS first).
2. **Servers** (§4.2): the first of those SRV domains that has records gives the servers,
   ordered by priority and weight (RFC 2782, `homeredirect.locate.srv`). A transport is
   never given up for a weaker one because its servers fail: once DNS has said "TLS", a
   home server is never tried in cleartext.
3. **Addresses**: A, then AAAA records of each SRV target, each address one target. With no
   SRV records at all, the A/AAAA records of the FQDN itself at the default port of our
   first transport (5061 for TLS, RFC 3261 §19.1.2).

Every target keeps the home server's FQDN as its `fqdn`, and TLS verifies the server's
certificate against that name, not against the SRV target (RFC 5922 §4.2).

Answers are cached by their TTL (`homeredirect.locate.cache`); lookups go through any
`IResolver` (`make_resolver` builds twisted.names's client for configured name servers, or
for /etc/resolv.conf), so nothing blocks the reactor.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.names import client, dns
from twisted.names.error import AuthoritativeDomainError, DomainError
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.locate.cache import TtlCache
from homeredirect.locate.interfaces import ILocator
from homeredirect.locate.srv import SrvEntry, order_srv
from homeredirect.locate.target import Target
from homeredirect.logs import FilteredLogger

__all__ = [
    "DEFAULT_PORTS",
    "NAPTR_SERVICES",
    "SRV_PREFIXES",
    "TRANSPORTS",
    "HomeServerNotFound",
    "LocateError",
    "Locator",
    "LocatorUnavailable",
    "make_resolver",
]

log = FilteredLogger()

TRANSPORTS = ("tls", "tcp", "udp")
"""The transports we can locate, most preferred first (RFC 3263 §4.1)."""

NAPTR_SERVICES = {"SIPS+D2T": "tls", "SIP+D2T": "tcp", "SIP+D2U": "udp"}
"""NAPTR service field -> transport (RFC 3263 §4.1, the IANA SIP NAPTR registry)."""

SRV_PREFIXES = {"tls": "_sips._tcp", "tcp": "_sip._tcp", "udp": "_sip._udp"}
"""The SRV name prefix of each transport (RFC 3263 §4.1)."""

DEFAULT_PORTS = {"tls": 5061, "tcp": 5060, "udp": 5060}
"""The port when DNS gives none (RFC 3261 §19.1.2)."""


class LocateError(Exception):
    """A home server could not be located; `fqdn` names it, `reason` says why."""

    def __init__(self, fqdn: str, reason: str) -> None:
        super().__init__(f"cannot locate {fqdn}: {reason}")
        self.fqdn = fqdn
        self.reason = reason


class HomeServerNotFound(LocateError):
    """DNS answered, and has no usable NAPTR, SRV, A or AAAA record for the name."""


class LocatorUnavailable(LocateError):
    """DNS could not answer (timeout, SERVFAIL, refused): try again later."""


class _Unavailable(Exception):
    """One query failed for a reason other than the name or type not existing."""


def make_resolver(
    reactor: Any, nameservers: Sequence[tuple[str, int]] = (), timeout: float = 2.0
) -> IResolver:
    """twisted.names's stub resolver for `nameservers` (/etc/resolv.conf if none).

    Each query is sent over UDP (TCP when the answer is truncated) to each name server in
    turn, at least twice in all, waiting `timeout` seconds for each.
    """
    tries = (timeout,) * max(2, len(nameservers))
    if nameservers:
        return client.Resolver(servers=list(nameservers), timeout=tries, reactor=reactor)
    return client.Resolver(resolv="/etc/resolv.conf", timeout=tries, reactor=reactor)


@implementer(ILocator)
class Locator:
    """RFC 3263 §4 client procedures for home server FQDNs (see the module docstring).

    `transports` limits and orders what we use (default TLS, TCP, UDP); `rng` orders SRV
    records of equal priority (seed it in tests); `negative_ttl` is how long an answer
    that a name or record type does not exist is kept when DNS gives no SOA to say.
    """

    def __init__(
        self,
        resolver: IResolver,
        clock: IReactorTime,
        rng: random.Random | None = None,
        *,
        transports: Sequence[str] = TRANSPORTS,
        negative_ttl: float = 30.0,
        max_entries: int = 4096,
    ) -> None:
        unknown = [transport for transport in transports if transport not in SRV_PREFIXES]
        if unknown or not transports:
            raise ValueError(f"transports must be some of {TRANSPORTS}, got {list(transports)}")
        self._resolver = resolver
        self._rng = rng or random.SystemRandom()
        self._transports = tuple(transports)
        self._negative_ttl = negative_ttl
        self._cache: TtlCache[tuple[str, int], tuple[Any, ...]] = TtlCache(clock, max_entries)

    def locate(self, fqdn: str) -> Deferred[list[Target]]:
        name = fqdn.lower().rstrip(".")
        locating = Deferred.fromCoroutine(self._locate(name))

        def located(targets: list[Target]) -> list[Target]:
            log.debug(
                "located {fqdn}: {targets}",
                fqdn=name,
                targets=[f"{t.transport}:{t.host}:{t.port}" for t in targets],
            )
            return targets

        def failed(failure: Failure) -> Failure:
            if failure.check(LocatorUnavailable):
                log.warn("cannot locate {fqdn}: {error}", fqdn=name, error=str(failure.value))
            return failure

        return locating.addCallbacks(located, failed)

    async def _locate(self, fqdn: str) -> list[Target]:
        unavailable = False
        for transport, srv_name in await self._services(fqdn):
            try:
                records = await self._query(srv_name, dns.SRV)
            except _Unavailable:
                unavailable = True
                continue
            servers = order_srv(
                (
                    SrvEntry(r.priority, r.weight, r.port, r.target.name.decode().lower())
                    for r in records
                ),
                self._rng,
            )
            if servers:
                return await self._targets(fqdn, transport, servers)
        if unavailable:
            raise LocatorUnavailable(fqdn, "an SRV query failed")
        transport = self._transports[0]
        addresses = await self._addresses(fqdn, strict=True)
        if not addresses:
            raise HomeServerNotFound(fqdn, "no NAPTR, SRV, A or AAAA records")
        return [Target(fqdn, address, DEFAULT_PORTS[transport], transport) for address in addresses]

    async def _services(self, fqdn: str) -> list[tuple[str, str]]:
        """(transport, SRV name) pairs to ask, best first (RFC 3263 §4.1)."""
        try:
            records = await self._query(fqdn, dns.NAPTR)
        except _Unavailable as error:
            raise LocatorUnavailable(fqdn, f"NAPTR query failed: {error}") from None
        usable = sorted(
            (
                (record.order, record.preference, transport, record.replacement.name.decode())
                for record in records
                if record.flags.string.lower() == b"s"
                and (transport := NAPTR_SERVICES.get(record.service.string.decode().upper()))
                in self._transports
            ),
            key=lambda usable: usable[:2],
        )
        if usable:
            return [(transport, replacement.lower()) for _, _, transport, replacement in usable]
        return [(transport, f"{SRV_PREFIXES[transport]}.{fqdn}") for transport in self._transports]

    async def _targets(self, fqdn: str, transport: str, servers: list[SrvEntry]) -> list[Target]:
        targets: dict[Target, None] = {}
        unavailable = 0
        for server in servers:
            try:
                addresses = await self._addresses(server.target, strict=False)
            except _Unavailable:
                unavailable += 1
                continue
            for address in addresses:
                targets[Target(fqdn, address, server.port, transport)] = None
        if targets:
            return list(targets)
        if unavailable:
            raise LocatorUnavailable(fqdn, "address queries for its SRV targets failed")
        raise HomeServerNotFound(fqdn, "its SRV targets have no A or AAAA records")

    async def _addresses(self, name: str, *, strict: bool) -> list[str]:
        """IPv4 then IPv6 addresses of `name`; raise `_Unavailable` only if neither query
        was answered (with `strict`, if either was not: the name itself is the answer)."""
        results = await gatherResults(
            [self._query_or_failure(name, dns.A), self._query_or_failure(name, dns.AAAA)]
        )
        addresses: list[str] = []
        failures = [result for result in results if isinstance(result, Failure)]
        for result in results:
            if not isinstance(result, Failure):
                addresses.extend(str(ipaddress.ip_address(record.address)) for record in result)
        if failures and (strict or len(failures) == len(results)) and not addresses:
            raise _Unavailable(str(failures[0].value))
        return list(dict.fromkeys(addresses))

    def _query_or_failure(self, name: str, kind: int) -> Deferred[tuple[Any, ...] | Failure]:
        querying: Deferred[tuple[Any, ...] | Failure] = Deferred.fromCoroutine(
            self._query(name, kind)
        )
        return querying.addErrback(lambda failure: failure)

    async def _query(self, name: str, kind: int) -> tuple[Any, ...]:
        """The payloads of `kind` records for `name`, from the cache or DNS; empty when the
        name or type does not exist. Raise `_Unavailable` when DNS gives no answer."""
        key = (name, kind)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        query = dns.Query(name, kind, dns.IN)
        try:
            # The timeouts are the resolver's own (IResolver's stub says they must be given).
            answer: Any = await self._resolver.query(query)  # type: ignore[call-arg]
            answers, authority, _ = answer
        except (DomainError, AuthoritativeDomainError) as error:  # NXDOMAIN: no such name
            message = error.args[0] if error.args else None
            self._cache.put(key, (), self._negative(getattr(message, "authority", [])))
            return ()
        except Exception as error:  # timeout, SERVFAIL, refused, unreachable name server
            raise _Unavailable(f"{type(error).__name__} for {name}") from None
        matching = [answer for answer in answers if answer.type == kind]
        payloads = tuple(answer.payload for answer in matching)
        if matching:
            self._cache.put(key, payloads, min(answer.ttl for answer in matching))
        else:  # NODATA
            self._cache.put(key, (), self._negative(authority))
        return payloads

    def _negative(self, authority: Sequence[Any]) -> float:
        """How long a negative answer is kept: the SOA's TTL and MINIMUM (RFC 2308 §5)."""
        for record in authority:
            if record.type == dns.SOA:
                return float(min(record.ttl, record.payload.minimum))
        return self._negative_ttl
