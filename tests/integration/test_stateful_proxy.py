"""The stateful proxy on loopback sockets: a director proxies a REGISTER that came
through an edge (two Vias) to an in-process home server, which records our Path
(RFC 3327); home servers that hang, reset connections or answer garbage cost the
client a 408 or 503 with Retry-After, and leave no transaction behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from homeredirect.config.load import parse_config
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.service import HomeRedirectService, makeService
from homeredirect.sip.message import Response
from tests.integration.support import director_config, register, start_director, udp_client

T1 = 0.02  # Timer F = 64*T1 = 1.28 s


def _with_supported_path(data: bytes) -> bytes:
    return data.replace(b"Content-Length: 0", b"Supported: path\r\nContent-Length: 0")


class HomeServerTests(TestCase):
    """Director -> in-process home server (role = "home", memory store), over UDP."""

    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        home_config = {
            "server": {"role": "home", "fqdn": "home1.example.com", "domains": ["example.com"]},
            "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 0}],
            "location": {"backend": "memory"},
        }
        self.home = makeService(
            parse_config(home_config, str(directory / "home.toml"), directory), reactor
        )
        self.home.startService()
        self.addCleanup(self.home.stopService)
        home_port = self.home.listener("udp").address[1]
        config = director_config(
            directory,
            transports=("udp",),
            home_servers={
                "home1.example.com": {"host": "127.0.0.1", "port": home_port, "transport": "udp"}
            },
        )
        self.director = start_director(directory, config)
        self.addCleanup(self.director.stopService)
        self.address = ("127.0.0.1", self.director.listener("udp").address[1])

    @inlineCallbacks
    def test_proxied_register_gets_the_homes_200_with_our_path_recorded(self):  # type: ignore[no-untyped-def]
        edge = udp_client()
        self.addCleanup(edge.transport.stopListening)
        request = register("alice@example.com", via_port=edge.port, extra_vias=1)
        edge.transport.write(_with_supported_path(request), self.address)
        response = yield edge.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.vias), 2)
        ours = f"<sip:127.0.0.1:{self.address[1]};transport=udp;lr>"
        self.assertEqual(response.headers.get_all("Path"), [ours])
        store: Any = self.home.core._local_handler.registrar.store  # type: ignore[union-attr]
        bindings = yield store.lookup(AddressOfRecord("alice", "example.com"), reactor.seconds())
        self.assertEqual([b.path for b in bindings], [(ours,)])


class SilentHome(DatagramProtocol):
    """Receives and never answers."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)


class GarbageHome(SilentHome):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        super().datagramReceived(datagram, addr)
        self.transport.write(b"SIP/2.0 200 OK\r\nVia: \x00\x01garbage\r\n\r\n", addr)


class ResettingHome(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.abortConnection()


class FaultyHomeTests(TestCase):
    """One director, three broken home servers: silent (UDP), garbage (UDP), reset (TCP)."""

    def start(self, home: dict[str, Any], **home_servers: Any) -> HomeRedirectService:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        config = director_config(
            directory,
            transports=("udp", "tcp"),
            home_servers={"home1.example.com": home},
            assignments="user,home_server\nalice@example.com,home1.example.com\n",
        )
        config["proxy"] = {"t1": T1, "t2": 0.1, "t4": 0.1}
        service = start_director(directory, config)
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def assert_answered(self, service: HomeRedirectService, status: int, count: int = 1):  # type: ignore[no-untyped-def]
        address = ("127.0.0.1", service.listener("udp").address[1])
        edge = udp_client()
        self.addCleanup(edge.transport.stopListening)
        for _ in range(count):
            edge.transport.write(
                register("alice@example.com", via_port=edge.port, extra_vias=1), address
            )
        for _ in range(count):
            response = yield edge.next(timeout=64 * T1 + 3)
            assert isinstance(response, Response)
            self.assertEqual((response.status, response.headers.get("Retry-After")), (status, "30"))
        yield self.wait_until_idle(service)

    @inlineCallbacks
    def wait_until_idle(self, service: HomeRedirectService):  # type: ignore[no-untyped-def]
        assert service.transactions is not None and service.proxy is not None
        for _ in range(100):
            if len(service.transactions) == len(service.proxy.clients) == 0:
                return
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{len(service.transactions)} server, {len(service.proxy.clients)} client left")

    def udp_home(self, protocol: SilentHome) -> dict[str, Any]:
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return {"host": "127.0.0.1", "port": port.getHost().port, "transport": "udp"}

    @inlineCallbacks
    def test_a_home_that_never_answers_costs_408(self):  # type: ignore[no-untyped-def]
        home = SilentHome()
        yield self.assert_answered(self.start(self.udp_home(home)), 408)
        self.assertGreater(len(home.received), 1)  # Timer E retransmissions

    @inlineCallbacks
    def test_a_home_that_answers_garbage_costs_408(self):  # type: ignore[no-untyped-def]
        home = GarbageHome()
        yield self.assert_answered(self.start(self.udp_home(home)), 408)

    @inlineCallbacks
    def test_a_home_that_resets_connections_costs_503_every_time(self):  # type: ignore[no-untyped-def]
        port = reactor.listenTCP(0, Factory.forProtocol(ResettingHome), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        home = {"host": "127.0.0.1", "port": port.getHost().port, "transport": "tcp"}
        service = self.start(home)
        # A bounded loop on real sockets: every request gets its 503, nothing is left.
        yield self.assert_answered(service, 503, count=100)

    @inlineCallbacks
    def test_a_route_to_another_host_is_not_followed(self):  # type: ignore[no-untyped-def]
        home = SilentHome()
        elsewhere = SilentHome()
        port = reactor.listenUDP(0, elsewhere, interface="127.0.0.99")
        self.addCleanup(port.stopListening)
        service = self.start(self.udp_home(home))
        address = ("127.0.0.1", service.listener("udp").address[1])
        edge = udp_client()
        self.addCleanup(edge.transport.stopListening)
        route = f"Route: <sip:127.0.0.99:{port.getHost().port};lr>\r\n".encode()
        request = register("alice@example.com", via_port=edge.port, extra_vias=1)
        edge.transport.write(request.replace(b"Max-Forwards", route + b"Max-Forwards"), address)
        response = yield edge.next(timeout=64 * T1 + 3)
        self.assertEqual(response.status, 408)
        self.assertGreater(len(home.received), 0)
        self.assertEqual(elsewhere.received, [])
        self.assertNotIn(b"127.0.0.99", home.received[0])
