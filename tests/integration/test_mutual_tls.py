"""TLS between servers: a listener that requires client certificates accepts only allowed
peers and exposes who they are on the flow; our client verifies the home server's name and
presents its certificate; outgoing connections are reused, and replaced once lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from homeredirect.sip.message import Message
from homeredirect.tools.certs import CertificateFiles, ensure_leaf
from homeredirect.transport.flows import IFlow
from homeredirect.transport.network import SipNetwork
from homeredirect.transport.stream import ConnectionRegistry, SipStreamFactory
from homeredirect.transport.tls import PeerCheck, PeerRefused, client_tls_creator
from tests.integration.support import (
    StreamClient,
    director_config,
    disconnect,
    pki_in,
    register,
    start_director,
)

HOME = "home1.example.com"


class Collect:
    """An IMessageSink keeping (message, flow) pairs."""

    def __init__(self) -> None:
        self.received: DeferredQueue[tuple[Message, IFlow]] = DeferredQueue()

    def message_received(self, message: Message, flow: IFlow) -> None:
        self.received.put((message, flow))

    def message_rejected(self, event: Any, flow: IFlow) -> None:
        pass


class _HomeRequiringCertificates(TestCase):
    """A home server (a homeredirect TLS listener with a certificate for home1.example.com)
    that requires client certificates and allows only director.example.com."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.pki = pki_in(self.directory)  # its server.pem names director.example.com
        home = ensure_leaf(self.pki, HOME, ips=["127.0.0.1"])
        config = director_config(self.directory, transports=("tls",))
        config["listen"][0] |= {
            "certificate": str(home.certificate),
            "private_key": str(home.private_key),
            "require_client_certificate": True,
            "allowed_peers": ["director.example.com"],
        }
        self.home = start_director(self.directory, config)
        self.addCleanup(self.home.stopService)
        self.home_port = self.home.listener("tls").address[1]

    def connect(self, server_name: str, client: CertificateFiles | None) -> Any:
        creator = client_tls_creator(
            self.pki.ca_certificate,
            None if client is None else client.certificate,
            None if client is None else client.private_key,
        )
        endpoint = wrapClientTLS(
            creator(server_name), TCP4ClientEndpoint(reactor, "127.0.0.1", self.home_port)
        )
        return endpoint.connect(Factory.forProtocol(StreamClient))


class MutualTlsTests(_HomeRequiringCertificates):
    @inlineCallbacks
    def test_allowed_peer_is_served_and_its_identity_is_on_the_flow(self):  # type: ignore[no-untyped-def]
        client = yield self.connect(HOME, self.pki.server)
        self.addCleanup(disconnect, client)
        client.transport.write(register("alice@example.com", transport="TLS", via_port=client.port))
        response = yield client.next()
        self.assertEqual(response.status, 301)
        accepted = self.home.connections.get("TLS", ("127.0.0.1", client.port))
        self.assertEqual(accepted.flow.peer_identity, "director.example.com")

    @inlineCallbacks
    def test_peer_not_allowed_is_disconnected_unheard(self):  # type: ignore[no-untyped-def]
        intruder = ensure_leaf(self.pki, "intruder.example.com")
        client = yield self.connect(HOME, intruder)
        client.transport.write(register("alice@example.com", transport="TLS", via_port=client.port))
        yield client.closed.addTimeout(5, reactor)
        self.assertEqual(client.received.pending, [])

    @inlineCallbacks
    def test_client_without_certificate_is_refused(self):  # type: ignore[no-untyped-def]
        client = yield self.connect(HOME, None)
        client.transport.write(register("alice@example.com", transport="TLS", via_port=client.port))
        yield client.closed.addTimeout(5, reactor)
        self.assertEqual(client.received.pending, [])

    @inlineCallbacks
    def test_home_whose_certificate_names_another_server_is_refused(self):  # type: ignore[no-untyped-def]
        client = yield self.connect("home2.example.com", self.pki.server)
        client.transport.write(register("alice@example.com", transport="TLS", via_port=client.port))
        yield client.closed.addTimeout(5, reactor)
        self.assertEqual(client.received.pending, [])


class OutgoingConnectionTests(_HomeRequiringCertificates):
    """SipNetwork, as the proxy uses it, sending to that home server over mutual TLS."""

    def setUp(self) -> None:
        super().setUp()
        self.sink = Collect()
        self.registry = ConnectionRegistry()
        factory = SipStreamFactory(
            sink=self.sink,  # type: ignore[arg-type]
            transport_name="TLS",
            advertised=("127.0.0.1", 5061),
            registry=self.registry,
            max_message_size=65_536,
            max_connections=10,
            idle_timeout=60,
            clock=reactor,
        )
        self.network = SipNetwork(
            reactor,
            self.registry,
            client_tls_creator(
                self.pki.ca_certificate, self.pki.server_certificate, self.pki.server_key
            ),
        )
        self.network.add_stream_factory("TLS", factory)
        self.addCleanup(self.registry.close_all, reactor)

    def send(self, aor: str) -> None:
        self.network.send(
            "TLS", ("127.0.0.1", self.home_port), register(aor, transport="TLS"), HOME
        )

    @inlineCallbacks
    def test_requests_share_one_verified_connection(self):  # type: ignore[no-untyped-def]
        for aor in ("alice@example.com", "bob@example.com", "carol@example.com"):
            self.send(aor)
        flows = []
        for _ in range(3):
            message, flow = yield self.sink.received.get().addTimeout(5, reactor)
            self.assertEqual(message.status, 301)
            flows.append(flow)
        self.assertEqual(len(self.registry), 1)
        self.assertEqual(len(self.home.connections), 1)
        self.assertEqual({flow.peer_identity for flow in flows}, {HOME})

    @inlineCallbacks
    def test_lost_connection_is_replaced(self):  # type: ignore[no-untyped-def]
        self.send("alice@example.com")
        _, first = yield self.sink.received.get().addTimeout(5, reactor)
        (accepted,) = list(self.home.connections._connections.values())
        accepted.transport.abortConnection()
        for _ in range(50):  # until our side has seen the connection go (bounded)
            if len(self.registry) == 0:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.send("alice@example.com")
        message, second = yield self.sink.received.get().addTimeout(5, reactor)
        self.assertEqual(message.status, 301)
        self.assertIsNot(first, second)
        self.assertEqual(len(self.registry), 1)


def test_peer_check_matches_dns_names_exactly(tmp_path: Path) -> None:
    from cryptography import x509

    pki = pki_in(tmp_path)
    wildcard = ensure_leaf(pki, "*.example.com")
    edge = ensure_leaf(pki, "edge.example.com")

    def load(files: CertificateFiles) -> x509.Certificate:
        return x509.load_pem_x509_certificate(files.certificate.read_bytes())

    check = PeerCheck(("Edge.Example.com",))
    assert check.identity(load(edge)) == "edge.example.com"
    for refused in (load(wildcard), None):
        try:
            check.identity(refused)
        except PeerRefused:
            continue
        raise AssertionError(f"{refused} was accepted")
    assert PeerCheck().identity(load(wildcard)) is None
    assert PeerCheck().identity(None) is None
