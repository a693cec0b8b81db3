"""A REGISTER that came through a proxy (two Vias) is forwarded statelessly to
the home server (RFC 3261 §16.11), and the home server's answer comes back."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.serialize import serialize
from tests.integration.support import (
    UdpClient,
    director_config,
    register,
    start_director,
    udp_client,
)


class HomeStandIn(UdpClient):
    """A home registrar stand-in: answers every REGISTER with 200 OK (RFC 3261 §10.3),
    copying Via, From, To, Call-ID and CSeq, and keeps what it received."""

    def answer(self, request: Request, addr: tuple[str, int]) -> None:
        fields = [
            (n, v) for n, v in request.headers if n in ("Via", "From", "To", "Call-ID", "CSeq")
        ]
        fields = [(n, v + ";tag=home" if n == "To" else v) for n, v in fields]
        ok = Response(200, "OK", Headers(fields))
        self.transport.write(serialize(ok), addr)


class StatelessProxyTests(TestCase):
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
    def test_retransmitted_request_is_forwarded_with_the_same_branch(self):  # type: ignore[no-untyped-def]
        edge = udp_client()
        self.addCleanup(edge.transport.stopListening)
        request = register("alice@example.com", via_port=edge.port, extra_vias=1)
        edge.transport.write(request, self.director)
        first = yield self.home.next()
        # The server transaction absorbs the retransmission: nothing more reaches home.
        edge.transport.write(request, self.director)
        second_request = register("carol@example.com", via_port=edge.port, extra_vias=1)
        edge.transport.write(second_request, self.director)
        second = yield self.home.next()
        self.assertEqual(second.to_addr.uri.user, "carol")
        self.assertNotEqual(first.vias[0].branch, second.vias[0].branch)

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
