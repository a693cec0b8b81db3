"""Serve the directory service's zones authoritatively with twisted.names, UDP and TCP.

`make_dns_service(config, reactor)` returns an `IService`; `homeredirect dns` runs it, and
tests and embedders start it in-process. The answers come from twisted.names's
`FileAuthority` search logic over zones held in memory; this module adds what an
authoritative-only server owes its clients and twisted.names's recursive-server defaults
leave out: the AA bit on every answer from our zones (RFC 1035 §4.1.1), NXDOMAIN with the
zone's SOA for a name in a zone that does not exist (RFC 2308 §2.1, so resolvers cache the
negative answer), and REFUSED for names outside our zones instead of pretending they do not
exist.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import LogLevel
from twisted.names import dns
from twisted.names.authority import FileAuthority
from twisted.names.server import DNSServerFactory
from twisted.python.failure import Failure

from homeredirect.config.dns import DnsConfig
from homeredirect.config.schema import Config
from homeredirect.dns.records import (
    AddressRecord,
    NaptrRecord,
    NsRecord,
    Record,
    SoaRecord,
    SrvRecord,
    Zone,
    zone_of,
    zones_for,
)
from homeredirect.logs import FilteredLogger

__all__ = ["AuthoritativeServerFactory", "DnsService", "ZoneAuthority", "make_dns_service"]

log = FilteredLogger()

_BIND_ATTEMPTS = 20  # for port 0: tries to find a port free for both UDP and TCP


def _payload(record: Record) -> Any:
    """The twisted.names record for one of ours."""
    match record:
        case SoaRecord():
            return dns.Record_SOA(
                mname=record.mname.encode(),
                rname=record.rname.encode(),
                serial=record.serial,
                refresh=record.refresh,
                retry=record.retry,
                expire=record.expire,
                minimum=record.minimum,
                ttl=record.ttl,
            )
        case NsRecord():
            return dns.Record_NS(record.target.encode(), ttl=record.ttl)
        case NaptrRecord():
            return dns.Record_NAPTR(
                order=record.order,
                preference=record.preference,
                flags=record.flags.encode(),
                service=record.service.encode(),
                regexp=record.regexp.encode(),
                replacement=record.replacement.encode(),
                ttl=record.ttl,
            )
        case SrvRecord():
            return dns.Record_SRV(
                record.priority, record.weight, record.port, record.target.encode(), ttl=record.ttl
            )
        case AddressRecord():
            if record.type == "AAAA":
                return dns.Record_AAAA(record.address, ttl=record.ttl)
            return dns.Record_A(record.address, ttl=record.ttl)


class ZoneAuthority(FileAuthority):
    """One `Zone`, held in memory and searched by twisted.names's `FileAuthority` logic
    (answers, NODATA with the SOA, additional A/AAAA for NS targets)."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        super().__init__(zone)  # type: ignore[no-untyped-call]

    def loadFile(self, zone: Zone) -> None:
        """`FileAuthority.__init__` calls this with what it was given: here, the zone."""
        records: dict[bytes, list[Any]] = {}
        for record in zone.records:
            records.setdefault(record.name.encode(), []).append(_payload(record))
        # FileAuthority declares both as None until a file is loaded.
        self.soa = (zone.origin.encode(), _payload(zone.soa))  # type: ignore[assignment]
        self.records = records  # type: ignore[assignment]


class AuthoritativeServerFactory(DNSServerFactory):
    """A `DNSServerFactory` answering only for `zones`, authoritatively (module docstring)."""

    def __init__(self, zones: tuple[Zone, ...]) -> None:
        # Most specific zone first: a parent zone's authority would otherwise answer
        # NXDOMAIN for names in a child zone we also serve.
        ordered = sorted(zones, key=lambda zone: zone.origin.count("."), reverse=True)
        authorities = [ZoneAuthority(zone) for zone in ordered]
        super().__init__(authorities=authorities, verbose=0)  # type: ignore[no-untyped-call]
        self.noisy = False
        self.zones = zones
        self._soa = {zone.origin: zone.soa for zone in zones}
        self._addresses: dict[bytes, list[AddressRecord]] = {}
        for zone in zones:
            for record in zone.records:
                if isinstance(record, AddressRecord):
                    self._addresses.setdefault(record.name.encode(), []).append(record)

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> None:
        if message.queries:
            query = message.queries[0]
            log.debug(
                "query {name} {type} from {peer}",
                name=query.name.name.decode("ascii", "replace"),
                type=dns.QUERY_TYPES.get(query.type, str(query.type)),
                peer=address,
            )
        super().handleQuery(message, protocol, address)  # type: ignore[no-untyped-call]

    def gotResolverResponse(
        self, response: Any, protocol: Any, message: dns.Message, address: Any
    ) -> None:
        """Answer with the AA bit set: every answer, NODATA included, is from our zones; with
        the A/AAAA records of SRV targets in the additional section (RFC 2782), which saves
        the client its next query."""
        answers, authority, additional = response
        additional = list(additional)
        for answer in answers:
            if answer.type == dns.SRV:
                for record in self._addresses.get(answer.payload.target.name.lower(), ()):
                    header = dns.RRHeader(
                        record.name.encode(),
                        dns.AAAA if record.type == "AAAA" else dns.A,
                        dns.IN,
                        record.ttl,
                        _payload(record),
                        auth=True,
                    )
                    if header not in additional:
                        additional.append(header)
        reply = self._responseFromMessage(  # type: ignore[no-untyped-call]
            message=message,
            rCode=dns.OK,
            answers=list(answers),
            authority=list(authority),
            additional=additional,
        )
        reply.auth = True
        self.sendReply(protocol, reply, address)  # type: ignore[no-untyped-call]

    def gotResolverError(
        self, failure: Failure, protocol: Any, message: dns.Message, address: Any
    ) -> None:
        """NXDOMAIN with the SOA inside our zones, REFUSED outside, NOTIMP for query types
        twisted.names cannot look up, SERVFAIL (logged) for anything else."""
        name = message.queries[0].name.name.decode("ascii", "replace").lower().rstrip(".")
        authority = []
        auth = False
        if failure.check(dns.AuthoritativeDomainError):
            rcode = dns.ENAME
            origin = zone_of(name, self._soa)
            if origin is not None:
                soa = self._soa[origin]
                authority.append(
                    dns.RRHeader(
                        origin.encode(),
                        dns.SOA,
                        dns.IN,
                        min(soa.ttl, soa.minimum),
                        _payload(soa),
                        auth=True,
                    )
                )
                auth = True
        elif failure.check(dns.DomainError):
            rcode = dns.EREFUSED
        elif failure.check(NotImplementedError):
            rcode = dns.ENOTIMP
        else:
            rcode = dns.ESERVER
            log.failure("cannot answer a query for {name}", failure, LogLevel.error, name=name)
        reply = self._responseFromMessage(  # type: ignore[no-untyped-call]
            message=message, rCode=rcode, authority=authority
        )
        reply.auth = auth
        self.sendReply(protocol, reply, address)  # type: ignore[no-untyped-call]


class DnsService(Service):
    """Answers DNS for `zones` on `host`:`port`, UDP and TCP on the same port (RFC 1035
    §4.2: clients retry over TCP when a UDP answer is truncated), while running."""

    def __init__(self, zones: tuple[Zone, ...], host: str, port: int, reactor: Any) -> None:
        self.factory = AuthoritativeServerFactory(zones)
        self.host = host
        self.port = port
        self._reactor = reactor
        self._listening: tuple[IListeningPort, IListeningPort] | None = None

    def startService(self) -> None:
        """Bind both sockets, or raise `CannotListenError` with neither left bound."""
        self._listening = self._bind()
        host, port = self.address
        log.info(
            "DNS service answering for {zones} on {host} port {port} (UDP and TCP)",
            zones=", ".join(zone.origin for zone in self.factory.zones),
            host=host,
            port=port,
        )
        super().startService()  # type: ignore[no-untyped-call]

    def _bind(self) -> tuple[IListeningPort, IListeningPort]:
        attempts = _BIND_ATTEMPTS if self.port == 0 else 1
        for attempt in range(1, attempts + 1):
            datagrams = dns.DNSDatagramProtocol(controller=self.factory, reactor=self._reactor)
            datagrams.noisy = False
            udp = self._reactor.listenUDP(self.port, datagrams, interface=self.host)
            port = udp.getHost().port
            try:
                tcp = self._reactor.listenTCP(port, self.factory, interface=self.host)
            except CannotListenError:
                udp.stopListening()
                if attempt == attempts:
                    raise
                continue
            return udp, tcp
        raise AssertionError("unreachable")  # the last attempt returned or raised

    def stopService(self) -> Deferred[object] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        listening, self._listening = self._listening, None
        if listening is None:
            return None
        log.info("DNS service stopped")
        stopping = [maybeDeferred(port.stopListening) for port in listening]
        return DeferredList(stopping, consumeErrors=True).addCallback(lambda _: None)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only while running."""
        assert self._listening is not None, "the DNS service is not running"
        bound = self._listening[0].getHost()
        return bound.host, bound.port  # type: ignore[attr-defined]


def make_dns_service(config: Config, reactor: Any) -> DnsService:
    """The DNS service for `config`'s `[dns]` table (its defaults when there is none).

    The records are built here, so a configuration that cannot be published raises
    `homeredirect.dns.records.CannotPublish` before anything binds.
    """
    dns_config = config.dns or DnsConfig()
    return DnsService(zones_for(config), dns_config.host, dns_config.port, reactor)
