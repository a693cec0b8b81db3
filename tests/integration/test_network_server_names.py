"""SipNetwork never lets a TLS connection verified for one server name carry a request
meant for another name at the same address (RFC 5922 §7.2), and says so at once: `send`
returns False, which the client transaction reports as a transport error (RFC 3261
§17.1.4), so the proxy tries its next target instead of waiting for Timer B or F."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from homeredirect.transport.network import SipNetwork
from homeredirect.transport.stream import ConnectionRegistry, SipStreamFactory
from homeredirect.transport.tls import client_tls_creator
from tests.integration.support import register
from tests.integration.test_mutual_tls import HOME, Collect, _HomeRequiringCertificates

OTHER = "home2.example.com"  # at the same address; the home's certificate does not name it


class ServerNameTests(_HomeRequiringCertificates):
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
        self.address = ("127.0.0.1", self.home_port)

    def send(self, aor: str, server_name: str) -> bool:
        return self.network.send("TLS", self.address, register(aor, transport="TLS"), server_name)

    @inlineCallbacks
    def test_another_name_over_a_verified_connection_is_refused_at_once(self):  # type: ignore[no-untyped-def]
        self.assertTrue(self.send("alice@example.com", HOME))
        message, _ = yield self.sink.received.get().addTimeout(5, reactor)
        self.assertEqual(message.status, 301)
        self.assertFalse(self.send("bob@example.com", OTHER))
        # The connection stays, for the name it proved.
        self.assertTrue(self.send("carol@example.com", HOME))
        message, _ = yield self.sink.received.get().addTimeout(5, reactor)
        self.assertEqual(message.status, 301)
        self.assertEqual(self.sink.received.pending, [])
        self.assertEqual(len(self.registry), 1)

    @inlineCallbacks
    def test_another_name_while_the_connection_is_being_opened_is_refused(self):  # type: ignore[no-untyped-def]
        self.assertTrue(self.send("alice@example.com", HOME))
        # Not connected yet: the message waits, but not over a connection verified for HOME.
        self.assertFalse(self.send("bob@example.com", OTHER))
        self.assertTrue(self.send("carol@example.com", HOME))
        for _ in range(2):
            message, _ = yield self.sink.received.get().addTimeout(5, reactor)
            self.assertEqual(message.status, 301)
        self.assertEqual(self.sink.received.pending, [])
