"""Garbage, truncated, malformed and oversized input gets 400/513 or is dropped
(RFC 3261 §18.3, §21.4.1, §21.5.14), and the server keeps answering."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.support import (
    connect_stream,
    director_config,
    disconnect,
    register,
    start_director,
    udp_client,
)

GARBAGE = [
    b"\x00\x01\x02\x03",
    b"hello world",
    b"\xff" * 100,
    b"SIP/2.0 200 OK\r\n\r\n",
    b"REGISTER sip:example.com SIP/2.0\r\n",  # no header end
    b"REGISTER\r\n\r\n",
    b"\r\n\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nVia: \r\n\r\n",
]


def settle() -> Deferred[None]:
    return deferLater(reactor, 0.05, lambda: None)


class BadInputTests(TestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        config = director_config(
            directory, transports=("udp", "tcp"), limits={"max_message_size": 4096}
        )
        self.service = start_director(directory, config)
        self.addCleanup(self.service.stopService)
        self.udp = ("127.0.0.1", self.service.listener("udp").address[1])
        self.tcp_port = self.service.listener("tcp").address[1]

    @inlineCallbacks
    def assert_still_answers(self, client):  # type: ignore[no-untyped-def]
        client.transport.write(register("alice@example.com", via_port=client.port), self.udp)
        response = yield client.next()
        self.assertEqual(response.status, 301)

    @inlineCallbacks
    def test_garbage_datagrams_are_dropped_and_the_server_keeps_answering(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        for datagram in GARBAGE:
            client.transport.write(datagram, self.udp)
        yield settle()
        self.assertEqual(client.received.pending, [], GARBAGE)
        yield self.assert_still_answers(client)

    @inlineCallbacks
    def test_malformed_header_gets_400_naming_it(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        request = register("alice@example.com", via_port=client.port).replace(
            b"CSeq: 1 REGISTER", b"CSeq: one REGISTER"
        )
        client.transport.write(request, self.udp)
        # The 400 echoes the request's (bad) CSeq verbatim (RFC 3261 §8.2.6.2),
        # so it is checked as bytes.
        response = yield client.next()
        assert isinstance(response, bytes)
        status_line = response.split(b"\r\n", 1)[0]
        self.assertTrue(status_line.startswith(b"SIP/2.0 400 "), status_line)
        self.assertIn(b"CSeq", status_line)
        self.assertIn(b"\r\nCSeq: one REGISTER\r\n", response)
        yield self.assert_still_answers(client)

    @inlineCallbacks
    def test_bad_version_gets_505(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        request = register("alice@example.com", via_port=client.port).replace(
            b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1
        )
        client.transport.write(request, self.udp)
        response = yield client.next()
        self.assertEqual(response.status, 505)

    @inlineCallbacks
    def test_truncated_body_gets_400(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        request = register("alice@example.com", via_port=client.port).replace(
            b"Content-Length: 0", b"Content-Length: 50"
        )
        client.transport.write(request, self.udp)
        response = yield client.next()
        self.assertEqual(response.status, 400)
        self.assertIn("Content-Length", response.reason)

    @inlineCallbacks
    def test_oversized_datagram_gets_513(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        request = register("alice@example.com", via_port=client.port).replace(
            b"Content-Length: 0\r\n", b"Subject: " + b"x" * 5000 + b"\r\nContent-Length: 0\r\n"
        )
        client.transport.write(request, self.udp)
        response = yield client.next()
        self.assertEqual(response.status, 513)
        yield self.assert_still_answers(client)

    @inlineCallbacks
    def test_oversized_stream_message_gets_513_and_the_connection_closes(self):  # type: ignore[no-untyped-def]
        client = yield connect_stream(self.tcp_port)
        client.transport.write(
            register("alice@example.com", transport="TCP", via_port=client.port).replace(
                b"Content-Length: 0", b"Content-Length: 100000"
            )
        )
        response = yield client.next()
        self.assertEqual(response.status, 513)
        yield client.closed
        udp = udp_client()
        self.addCleanup(udp.transport.stopListening)
        yield self.assert_still_answers(udp)

    @inlineCallbacks
    def test_endless_header_on_a_stream_is_cut_off(self):  # type: ignore[no-untyped-def]
        client = yield connect_stream(self.tcp_port)
        client.transport.write(b"REGISTER sip:example.com SIP/2.0\r\nSubject: " + b"y" * 6000)
        yield client.closed

    @inlineCallbacks
    def test_keepalive_ping_gets_pong(self):  # type: ignore[no-untyped-def]
        client = yield connect_stream(self.tcp_port)
        self.addCleanup(disconnect, client)
        client.transport.write(b"\r\n\r\n")
        pong = yield client.next()
        self.assertEqual(pong, b"\r\n")
        client.transport.write(register("alice@example.com", transport="TCP", via_port=client.port))
        response = yield client.next()
        self.assertEqual(response.status, 301)

    @inlineCallbacks
    def test_truncated_stream_then_close_costs_nothing(self):  # type: ignore[no-untyped-def]
        client = yield connect_stream(self.tcp_port)
        client.transport.write(
            register("alice@example.com", transport="TCP", via_port=client.port)[:60]
        )
        yield disconnect(client)
        udp = udp_client()
        self.addCleanup(udp.transport.stopListening)
        yield self.assert_still_answers(udp)

    @inlineCallbacks
    def test_malformed_response_is_dropped(self):  # type: ignore[no-untyped-def]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        client.transport.write(
            b"SIP/2.0 2000 Nope\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n", self.udp
        )
        yield settle()
        self.assertEqual(client.received.pending, [])
        yield self.assert_still_answers(client)
