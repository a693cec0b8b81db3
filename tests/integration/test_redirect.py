"""A director on real loopback sockets redirects REGISTER over UDP, TCP and TLS."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.sip.headers import parse_contacts
from homeredirect.sip.message import Response
from tests.integration.support import (
    connect_stream,
    director_config,
    disconnect,
    pki_in,
    register,
    start_director,
    udp_client,
)


class RedirectTests(TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.service = start_director(self.directory, director_config(self.directory))
        self.addCleanup(self.service.stopService)

    def assert_redirect_to_home1(self, response: object) -> None:
        assert isinstance(response, Response)
        self.assertEqual(
            (response.status, response.reason), (301, "Redirect request to Home Server")
        )
        contacts = parse_contacts(response.headers.get_all("Contact"))
        assert contacts != "*"
        self.assertEqual(
            [(str(c.uri), c.param("q")) for c in contacts],
            [
                ("sip:home1.example.com:5061;transport=tls", "0.7"),
                ("sip:home2.example.com:5061;transport=tls", "0.3"),
            ],
        )
        self.assertIsNotNone(response.to_addr.tag)
        self.assertEqual(response.headers.get("Content-Length"), "0")

    @inlineCallbacks
    def test_udp_register_is_redirected_to_home_server(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        request = register("alice@example.com", via_port=client.port, call_id="udp-1")
        client.transport.write(request, ("127.0.0.1", self.service.listener("udp").address[1]))
        response = yield client.next()
        self.assert_redirect_to_home1(response)
        self.assertEqual(response.call_id, "udp-1@test")
        self.assertIn(f"rport={client.port}", response.headers.get("Via"))

    @inlineCallbacks
    def test_tcp_register_is_redirected_to_home_server(self):  # type: ignore[no-untyped-def]
        client = yield connect_stream(self.service.listener("tcp").address[1])
        self.addCleanup(disconnect, client)
        client.transport.write(register("alice@example.com", transport="TCP", via_port=client.port))
        self.assert_redirect_to_home1((yield client.next()))

    @inlineCallbacks
    def test_tls_register_is_redirected_to_home_server(self):  # type: ignore[no-untyped-def]
        pki = pki_in(self.directory)
        client = yield connect_stream(
            self.service.listener("tls").address[1], tls_ca=pki.ca_certificate
        )
        self.addCleanup(disconnect, client)
        client.transport.write(register("alice@example.com", transport="TLS", via_port=client.port))
        self.assert_redirect_to_home1((yield client.next()))

    @inlineCallbacks
    def test_unknown_user_gets_404(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        client.transport.write(
            register("mallory@example.com", via_port=client.port),
            ("127.0.0.1", self.service.listener("udp").address[1]),
        )
        response = yield client.next()
        self.assertEqual(response.status, 404)
        self.assertNotIn("Contact", response.headers)

    @inlineCallbacks
    def test_foreign_domain_gets_404(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        client.transport.write(
            register("alice@elsewhere.example.org", via_port=client.port),
            ("127.0.0.1", self.service.listener("udp").address[1]),
        )
        response = yield client.next()
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_retransmission_is_answered_from_the_transaction(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        request = register("alice@example.com", via_port=client.port)
        address = ("127.0.0.1", self.service.listener("udp").address[1])
        client.transport.write(request, address)
        first = yield client.next()
        # The user moves; a retransmission must still get the first answer, byte for byte.
        (self.directory / "assignments.csv").write_text(
            "user,home_server\nalice@example.com,home9.example.com\n"
        )
        yield self.service.reload()
        client.transport.write(request, address)
        second = yield client.next()
        self.assertEqual(second, first)
        self.assertEqual(second.to_addr.tag, first.to_addr.tag)
        client.transport.write(register("alice@example.com", via_port=client.port), address)
        third = yield client.next()
        self.assertEqual(
            str(parse_contacts(third.headers.get_all("Contact"))[0].uri),
            "sip:home9.example.com:5061;transport=tls",
        )


class Ipv6Tests(TestCase):
    @inlineCallbacks
    def test_udp_over_ipv6_loopback(self):  # type: ignore[no-untyped-def]
        from twisted.internet import reactor

        from tests.integration.support import UdpClient

        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        service = start_director(
            directory, director_config(directory, transports=("udp",), host="::1")
        )
        self.addCleanup(service.stopService)
        client = UdpClient()
        port = reactor.listenUDP(0, client, interface="::1")
        self.addCleanup(port.stopListening)
        client.transport.write(
            register("alice@example.com", via_host="[::1]", via_port=client.port),
            ("::1", service.listener("udp").address[1]),
        )
        response = yield client.next()
        self.assertEqual(response.status, 301)
