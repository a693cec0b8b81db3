"""Failover to a home server's SRV backup (RFC 3263 §4.3, RFC 2782), on loopback sockets.

The director locates `home9.example.com` through the project's DNS service on a loopback
port: its NAPTR record leads to `_sip._tcp.home9.example.com`, whose SRV records give two
targets, priority 10 first and priority 20 second. The first is down (a port that resets
every connection, or one where nothing listens); the second is an in-process home server.
A REGISTER that came through another proxy (two Vias) must be proxied there after the
first target fails, and the client must get that home's 200 with its binding stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase

from homeredirect.config.load import parse_config
from homeredirect.dns.records import AddressRecord, NaptrRecord, SoaRecord, SrvRecord, Zone
from homeredirect.dns.server import DnsService
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.service import HomeRedirectService, makeService
from homeredirect.sip.message import Response
from tests.integration.support import director_config, register, start_director, udp_client

HOME = "home9.example.com"
USER_AGENT = "home9-backup"


def zone(first_port: int, second_port: int) -> Zone:
    """example.com with home9's NAPTR -> SRV (priorities 10 and 20) -> A records."""
    records: Any = (
        SoaRecord(
            "example.com", 60, "ns.example.com", "hostmaster.example.com", 1, 3600, 600, 86400, 60
        ),
        NaptrRecord(HOME, 60, 50, 50, "s", "SIP+D2T", "", f"_sip._tcp.{HOME}"),
        SrvRecord(f"_sip._tcp.{HOME}", 60, 20, 0, second_port, "backup.example.com"),
        SrvRecord(f"_sip._tcp.{HOME}", 60, 10, 0, first_port, "primary.example.com"),
        AddressRecord("primary.example.com", 60, "127.0.0.1"),
        AddressRecord("backup.example.com", 60, "127.0.0.1"),
    )
    return Zone("example.com", records)


class Resetting(Protocol):
    """A target that is down in the loudest way: every connection is reset at once."""

    accepted = 0

    def connectionMade(self) -> None:
        Resetting.accepted += 1
        self.transport.abortConnection()


class SrvBackupFailoverTests(TestCase):
    """DNS service, a home server (the SRV backup, TCP) and a director, per test."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        home_config = {
            "server": {
                "role": "home",
                "fqdn": HOME,
                "domains": ["example.com"],
                "user_agent": USER_AGENT,
            },
            "listen": [{"transport": "tcp", "host": "127.0.0.1", "port": 0}],
            "location": {"backend": "memory"},
        }
        self.home = makeService(
            parse_config(home_config, str(self.directory / "home.toml"), self.directory), reactor
        )
        self.home.startService()
        self.addCleanup(self.home.stopService)
        self.home_port = self.home.listener("tcp").address[1]

    def start(self, first_port: int) -> HomeRedirectService:
        """The DNS service with home9's records, and a director that locates home9 by DNS."""
        dns = DnsService((zone(first_port, self.home_port),), "127.0.0.1", 0, reactor)
        dns.startService()
        self.addCleanup(dns.stopService)
        host, port = dns.address
        config = director_config(
            self.directory,
            transports=("udp", "tcp"),
            assignments=f"user,home_server\nalice@example.com,{HOME}\n",
            home_servers={HOME: {"locate": "dns"}},
        )
        config["locator"] = {"nameservers": [f"{host}:{port}"], "timeout": 1}
        director = start_director(self.directory, config)
        self.addCleanup(director.stopService)
        return director

    @inlineCallbacks
    def assert_registered_at_the_backup(self, director: HomeRedirectService):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        address = ("127.0.0.1", director.listener("udp").address[1])
        client.transport.write(
            register("alice@example.com", via_port=client.port, extra_vias=1), address
        )
        response = yield client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.get("Server"), USER_AGENT)
        self.assertEqual(len(response.vias), 2)  # the director's Via was taken off
        store: Any = self.home.core._local_handler.registrar.store  # type: ignore[union-attr]
        bindings = yield store.lookup(AddressOfRecord("alice", "example.com"), reactor.seconds())
        self.assertEqual([b.contact for b in bindings], [f"sip:alice@127.0.0.1:{client.port}"])

    @inlineCallbacks
    def test_a_target_that_resets_is_followed_by_the_srv_backup(self):  # type: ignore[no-untyped-def]
        down = reactor.listenTCP(0, Factory.forProtocol(Resetting), interface="127.0.0.1")
        self.addCleanup(down.stopListening)
        before = Resetting.accepted
        director = self.start(down.getHost().port)
        yield self.assert_registered_at_the_backup(director)
        self.assertEqual(Resetting.accepted - before, 1)  # the priority-10 target was tried

    @inlineCallbacks
    def test_a_target_where_nothing_listens_is_followed_by_the_srv_backup(self):  # type: ignore[no-untyped-def]
        # A port that was just free: connecting to it is refused.
        closed = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        port = closed.getHost().port
        yield closed.stopListening()
        director = self.start(port)
        yield self.assert_registered_at_the_backup(director)


class Silent(DatagramProtocol):
    """A UDP target that takes every request and never answers."""

    def __init__(self) -> None:
        self.received = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received += 1


class SilentUdpTargetTests(TestCase):
    """A home server that swallows UDP is given up after `[proxy] failover_timeout`, not
    after its Timer F (32 s, the client's own), and its backup answers the client."""

    @inlineCallbacks
    def test_the_backup_answers_long_before_timer_f(self):  # type: ignore[no-untyped-def]
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        backup_config = {
            "server": {"role": "home", "fqdn": "home2.example.com", "domains": ["example.com"]},
            "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 0}],
            "location": {"backend": "memory"},
        }
        backup = makeService(
            parse_config(backup_config, str(directory / "home2.toml"), directory), reactor
        )
        backup.startService()
        self.addCleanup(backup.stopService)
        silent = Silent()
        port = reactor.listenUDP(0, silent, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        config = director_config(
            directory,
            transports=("udp",),
            home_servers={
                "home1.example.com": {
                    "host": "127.0.0.1",
                    "port": port.getHost().port,
                    "transport": "udp",
                    "backup": "home2.example.com",
                },
                "home2.example.com": {
                    "host": "127.0.0.1",
                    "port": backup.listener("udp").address[1],
                    "transport": "udp",
                },
            },
        )
        config["proxy"] = {"failover_timeout": 0.3}  # T1 stays 0.5: Timer F is 32 s
        director = start_director(directory, config)
        self.addCleanup(director.stopService)
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        started = reactor.seconds()
        client.transport.write(
            register("alice@example.com", via_port=client.port, extra_vias=1),
            ("127.0.0.1", director.listener("udp").address[1]),
        )
        response = yield client.next(timeout=5)
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual(silent.received, 1)  # given up before Timer E's first copy
        assert director.proxy is not None
        # Only the backup's transaction is left, in Completed for Timer K (T4 over UDP):
        # the silent branch's was ended when it was given up.
        self.assertEqual(len(director.proxy.clients), 1)
