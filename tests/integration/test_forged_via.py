"""A forged Via cannot send our responses to another host (RFC 3261 §18.2.2, RFC 3581).

A client on 127.0.0.1 sends a REGISTER whose top Via names 127.0.0.99 and has no
`rport`. We add `received=127.0.0.1` (§18.2.1: the sent-by host is not the source
address) and send the response to that address, at the port the Via gives (§18.2.2):
the client hears it, and a socket bound to 127.0.0.99 at that same port hears nothing,
whether the director answers itself (one Via, 301) or relays the home server's 200 to a
REGISTER that came through another proxy (two Vias).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from homeredirect.config.load import parse_config
from homeredirect.service import makeService
from homeredirect.sip.message import Response
from tests.integration.support import director_config, register, start_director, udp_client

FORGED = "127.0.0.99"


MARKER = b"marker"


class Trap(DatagramProtocol):
    """Bound to the forged host: must receive nothing but the test's own marker."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.marked: Deferred[None] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)
        if datagram == MARKER:
            self.marked.callback(None)


class ForgedViaTests(TestCase):
    """A director proxying over UDP to an in-process home server, per test."""

    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        home_config = {
            "server": {"role": "home", "fqdn": "home1.example.com", "domains": ["example.com"]},
            "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 0}],
            "location": {"backend": "memory"},
        }
        home = makeService(
            parse_config(home_config, str(directory / "home.toml"), directory), reactor
        )
        home.startService()
        self.addCleanup(home.stopService)
        config = director_config(
            directory,
            transports=("udp",),
            home_servers={
                "home1.example.com": {
                    "host": "127.0.0.1",
                    "port": home.listener("udp").address[1],
                    "transport": "udp",
                }
            },
        )
        director = start_director(directory, config)
        self.addCleanup(director.stopService)
        self.director = ("127.0.0.1", director.listener("udp").address[1])
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)
        # The forged host, at the client's own port: where the Via alone would send.
        self.trap = Trap()
        port = reactor.listenUDP(self.client.port, self.trap, interface=FORGED)
        self.addCleanup(port.stopListening)

    def forged_register(self, extra_vias: int, params: str = "") -> bytes:
        branch = "z9hG4bK" + secrets.token_hex(6)
        request = register(
            "alice@example.com", via_port=self.client.port, extra_vias=extra_vias, branch=branch
        )
        honest = f"Via: SIP/2.0/UDP 127.0.0.1:{self.client.port};branch={branch};rport"
        forged = f"Via: SIP/2.0/UDP {FORGED}:{self.client.port}{params};branch={branch}"
        assert honest.encode() in request
        return request.replace(honest.encode(), forged.encode())

    @inlineCallbacks
    def assert_answered_at_the_source(self, extra_vias: int, status: int, params: str = ""):  # type: ignore[no-untyped-def]
        self.client.transport.write(self.forged_register(extra_vias, params), self.director)
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, status)
        top = response.vias[0]
        self.assertEqual((top.host, top.received, top.rport), (FORGED, "127.0.0.1", None))
        self.assertEqual(len(response.vias), 1 + extra_vias)
        # Whatever was sent to the forged address went before the response we hold, so
        # it is queued on the trap's socket ahead of a marker we send now.
        self.client.transport.write(MARKER, (FORGED, self.client.port))
        yield self.trap.marked.addTimeout(5, reactor)
        self.assertEqual(self.trap.received, [MARKER])

    def test_proxied_register_response_goes_to_the_source(self) -> Any:
        return self.assert_answered_at_the_source(extra_vias=1, status=200)

    def test_local_response_goes_to_the_source(self) -> Any:
        return self.assert_answered_at_the_source(extra_vias=0, status=301)

    def test_maddr_does_not_aim_the_proxied_response_elsewhere(self) -> Any:
        return self.assert_answered_at_the_source(1, 200, params=f";maddr={FORGED}")

    def test_maddr_does_not_aim_the_local_response_elsewhere(self) -> Any:
        return self.assert_answered_at_the_source(0, 301, params=f";maddr={FORGED}")
