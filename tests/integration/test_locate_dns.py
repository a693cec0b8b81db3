"""The locator against the project's authoritative DNS service on a loopback port: NAPTR,
SRV and A records for home1.example.com lead to the ports of two listeners, in order."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase

from homeredirect.config.load import parse_config
from homeredirect.director.targets import HomeServerTargets
from homeredirect.dns.records import AddressRecord, NaptrRecord, SoaRecord, SrvRecord, Zone
from homeredirect.dns.server import DnsService
from homeredirect.locate.rfc3263 import (
    HomeServerNotFound,
    Locator,
    LocatorUnavailable,
    make_resolver,
)
from homeredirect.locate.target import Target

HOME = "home1.example.com"


def zone(main_port: int, backup_port: int) -> Zone:
    records: Any = (
        SoaRecord(
            "example.com",
            60,
            "ns.example.com",
            "hostmaster.example.com",
            1,
            3600,
            600,
            1_209_600,
            60,
        ),
        NaptrRecord(HOME, 60, 50, 50, "s", "SIPS+D2T", "", f"_sips._tcp.{HOME}"),
        NaptrRecord(HOME, 60, 90, 50, "s", "SIP+D2T", "", f"_sip._tcp.{HOME}"),
        SrvRecord(f"_sips._tcp.{HOME}", 60, 20, 0, backup_port, "pool-b.example.com"),
        SrvRecord(f"_sips._tcp.{HOME}", 60, 10, 0, main_port, "pool-a.example.com"),
        SrvRecord(f"_sip._tcp.{HOME}", 60, 10, 0, 5060, "pool-a.example.com"),
        AddressRecord("pool-a.example.com", 60, "127.0.0.1"),
        AddressRecord("pool-b.example.com", 60, "127.0.0.1"),
    )
    return Zone("example.com", records)


class LocateThroughDnsTests(TestCase):
    def setUp(self) -> None:
        # Two listeners the records point at (a home server and its SRV backup).
        self.ports = [
            reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
            for _ in range(2)
        ]
        for port in self.ports:
            self.addCleanup(port.stopListening)
        self.main, self.backup = (port.getHost().port for port in self.ports)
        self.dns = DnsService((zone(self.main, self.backup),), "127.0.0.1", 0, reactor)
        self.dns.startService()
        self.addCleanup(self.dns.stopService)
        self.resolver = make_resolver(reactor, [self.dns.address], timeout=1.0)

    @inlineCallbacks
    def test_naptr_srv_and_a_give_the_ordered_failover_list(self):  # type: ignore[no-untyped-def]
        locator = Locator(self.resolver, reactor, random.Random(1))
        targets = yield locator.locate(HOME)
        self.assertEqual(
            targets,
            [
                Target(HOME, "127.0.0.1", self.main, "tls"),
                Target(HOME, "127.0.0.1", self.backup, "tls"),
            ],
        )

    @inlineCallbacks
    def test_unknown_name_is_not_found(self):  # type: ignore[no-untyped-def]
        locator = Locator(self.resolver, reactor, random.Random(1))
        with self.assertRaises(HomeServerNotFound):
            yield locator.locate("home9.example.com")

    @inlineCallbacks
    def test_dns_home_server_is_followed_by_its_static_backup(self):  # type: ignore[no-untyped-def]
        host, port = self.dns.address
        data = {
            "server": {"role": "home", "fqdn": "home3.example.com", "domains": ["example.com"]},
            "listen": [{"transport": "udp", "port": 0}],
            "locator": {"nameservers": [f"{host}:{port}"], "timeout": 1},
            "home_servers": {
                HOME: {"locate": "dns", "backup": "home2.example.com"},
                "home2.example.com": {"host": "127.0.0.1", "port": 5999, "transport": "tcp"},
            },
        }
        config = parse_config(data, "home3.toml", self.mktemp())  # type: ignore[arg-type]
        targets = yield HomeServerTargets(config, reactor=reactor).locate(HOME)
        self.assertEqual(
            [(t.fqdn, t.port, t.transport) for t in targets],
            [
                (HOME, self.main, "tls"),
                (HOME, self.backup, "tls"),
                ("home2.example.com", 5999, "tcp"),
            ],
        )


class Silent(DatagramProtocol):
    """A name server that never answers."""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        pass


class UnansweredDnsTests(TestCase):
    @inlineCallbacks
    def test_name_server_timeout_is_locator_unavailable(self):  # type: ignore[no-untyped-def]
        port = reactor.listenUDP(0, Silent(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        resolver = make_resolver(reactor, [("127.0.0.1", port.getHost().port)], timeout=0.2)
        locator = Locator(resolver, reactor, random.Random(1))
        with self.assertRaises(LocatorUnavailable):
            yield locator.locate(HOME)
