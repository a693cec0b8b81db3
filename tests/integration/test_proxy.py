"""A REGISTER that came through a proxy (two Vias) is forwarded to the home server in a
client transaction (RFC 3261 §16.6), and the home server's answer comes back (§16.7)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import DefaultOpenSSLContextFactory
from twisted.trial.unittest import TestCase

from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.parser import MessageReceived, StreamParser
from homeredirect.sip.serialize import serialize
from homeredirect.tools.certs import ensure_leaf
from tests.integration.support import (
    UdpClient,
    director_config,
    pki_in,
    register,
    start_director,
    udp_client,
)


class HomeStandIn(UdpClient):
    """A home registrar stand-in: answers every REGISTER with 200 OK (RFC 3261 §10.3),
    copying Via, From, To, Call-ID and CSeq, and keeps what it received."""

    def answer(self, request: Request, addr: tuple[str, int]) -> None:
        self.transport.write(serialize(ok_for(request)), addr)


class ProxyTests(TestCase):
    def setUp(self) -> None:
        self.home = HomeStandIn()
        port = reactor.listenUDP(0, self.home, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        config = director_config(
            directory,
            transports=("udp",),
            home_servers={
                "home1.example.com": {
                    "host": "127.0.0.1",
                    "port": self.home.port,
                    "transport": "udp",
                }
            },
        )
        self.service = start_director(directory, config)
        self.addCleanup(self.service.stopService)
        self.director = ("127.0.0.1", self.service.listener("udp").address[1])

    @inlineCallbacks
    def test_two_via_register_is_proxied_and_the_200_returns(self):  # type: ignore[no-untyped-def]
        edge = udp_client()
        self.addCleanup(edge.transport.stopListening)
        edge.transport.write(
            register("alice@example.com", via_port=edge.port, extra_vias=1, call_id="p1"),
            self.director,
        )
        forwarded = yield self.home.next()
        assert isinstance(forwarded, Request)
        self.assertEqual(forwarded.method, "REGISTER")
        self.assertEqual(len(forwarded.vias), 3)
        ours = forwarded.vias[0]
        self.assertEqual((ours.host, ours.port), self.director)
        self.assertTrue(ours.branch.startswith("z9hG4bK"))
        self.assertEqual(forwarded.max_forwards, 69)
        self.assertEqual(forwarded.call_id, "p1@test")
        self.home.answer(forwarded, self.director)
        response = yield edge.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.vias), 2)
        self.assertEqual(response.vias[0].port, edge.port)
        self.assertEqual(response.call_id, "p1@test")

    @inlineCallbacks
    def test_retransmission_is_absorbed_and_the_proxy_retransmits_with_its_branch(self):  # type: ignore[no-untyped-def]
        """RFC 3261 §17.2.2: the server transaction absorbs the client's retransmission;
        the client transaction retransmits over UDP itself (Timer E), same branch."""
        edge = udp_client()
        self.addCleanup(edge.transport.stopListening)
        request = register("alice@example.com", via_port=edge.port, extra_vias=1)
        edge.transport.write(request, self.director)
        first = yield self.home.next()
        edge.transport.write(request, self.director)
        again = yield self.home.next()
        self.assertEqual(again.vias[0].branch, first.vias[0].branch)
        other = register("carol@example.com", via_port=edge.port, extra_vias=1)
        edge.transport.write(other, self.director)
        second = yield self.home.next()
        self.assertEqual(second.to_addr.uri.user, "carol")
        self.assertNotEqual(first.vias[0].branch, second.vias[0].branch)
        self.home.answer(first, self.director)
        response = yield edge.next()
        self.assertEqual((response.status, response.to_addr.uri.user), (200, "alice"))

    @inlineCallbacks
    def test_max_forwards_zero_gets_483(self):  # type: ignore[no-untyped-def]
        edge = udp_client()
        self.addCleanup(edge.transport.stopListening)
        edge.transport.write(
            register("alice@example.com", via_port=edge.port, extra_vias=1, max_forwards=0),
            self.director,
        )
        response = yield edge.next()
        self.assertEqual(response.status, 483)

    @inlineCallbacks
    def test_response_not_for_us_is_dropped(self):  # type: ignore[no-untyped-def]
        stray = udp_client()
        self.addCleanup(stray.transport.stopListening)
        fields = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{stray.port};branch=z9hG4bKstray"),
            ("From", "<sip:a@example.com>;tag=1"),
            ("To", "<sip:a@example.com>;tag=2"),
            ("Call-ID", "stray"),
            ("CSeq", "1 REGISTER"),
        ]
        stray.transport.write(serialize(Response(200, "OK", Headers(fields))), self.director)
        # The director keeps answering; the stray response was not bounced back to us.
        stray.transport.write(register("alice@example.com", via_port=stray.port), self.director)
        response = yield stray.next()
        self.assertEqual(response.status, 301)


class TlsHomeStandIn(Protocol):
    """A home registrar over TLS: answers each REGISTER with 200 on the same connection."""

    def __init__(self, received: DeferredQueue[Request]) -> None:
        self.parser = StreamParser()
        self.received = received

    def dataReceived(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if isinstance(event, MessageReceived) and isinstance(event.message, Request):
                self.received.put(event.message)
                self.transport.write(serialize(ok_for(event.message)))


def ok_for(request: Request) -> Response:
    """A registrar's 200 OK (RFC 3261 §10.3) with the identifying fields copied."""
    copied = ("Via", "From", "To", "Call-ID", "CSeq")
    fields = [(n, v + ";tag=home" if n == "To" else v) for n, v in request.headers if n in copied]
    return Response(200, "OK", Headers(fields))


class TlsForwardingTests(TestCase):
    """The default home-server transport is TLS: the director opens a connection,
    verifies the home server's certificate against its FQDN and relays the answer."""

    def start(self, certificate_name: str) -> DeferredQueue[Request]:
        """A TLS home stand-in with a certificate for *certificate_name*, configured as
        home1.example.com, and a director with UDP and TLS listeners."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        files = ensure_leaf(pki_in(directory), certificate_name, ips=["127.0.0.1"])
        received: DeferredQueue[Request] = DeferredQueue()
        home_port = reactor.listenSSL(
            0,
            Factory.forProtocol(lambda: TlsHomeStandIn(received)),
            DefaultOpenSSLContextFactory(str(files.private_key), str(files.certificate)),
            interface="127.0.0.1",
        )
        self.addCleanup(home_port.stopListening)
        home = {"host": "127.0.0.1", "port": home_port.getHost().port}
        config = director_config(
            directory, transports=("udp", "tls"), home_servers={"home1.example.com": home}
        )
        self.service = start_director(directory, config)
        self.addCleanup(self.service.stopService)
        self.director = ("127.0.0.1", self.service.listener("udp").address[1])
        self.edge = udp_client()
        self.addCleanup(self.edge.transport.stopListening)
        return received

    def send_through_edge(self, aor: str) -> None:
        request = register(aor, via_port=self.edge.port, extra_vias=1)
        self.edge.transport.write(request, self.director)

    @inlineCallbacks
    def test_register_is_forwarded_over_verified_tls_and_the_200_returns(self):  # type: ignore[no-untyped-def]
        received = self.start("home1.example.com")
        self.send_through_edge("alice@example.com")
        forwarded = yield received.get().addTimeout(5, reactor)
        self.assertEqual(forwarded.vias[0].transport, "TLS")
        self.assertEqual(len(forwarded.vias), 3)
        response = yield self.edge.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.vias), 2)
        # A second request reuses the connection.
        self.send_through_edge("carol@example.com")
        yield received.get().addTimeout(5, reactor)
        self.assertEqual((yield self.edge.next()).status, 200)
        self.assertEqual(len(self.service.connections), 1)

    @inlineCallbacks
    def test_home_with_a_certificate_for_another_name_is_refused(self):  # type: ignore[no-untyped-def]
        received = self.start("impostor.example.com")
        self.send_through_edge("alice@example.com")
        # The failed handshake is a transport error (RFC 3261 §17.1.4): 503 at once.
        response = yield self.edge.next()
        self.assertEqual(response.status, 503)
        self.assertEqual(response.headers.get("Retry-After"), "30")
        self.assertEqual(received.pending, [])
