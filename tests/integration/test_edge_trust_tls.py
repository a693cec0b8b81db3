"""The `edge-trust` policy over real mutual TLS ([MS-SIPRE] §2.2.15, RFC 5922 §7, RFC 5923).

An edge (`role = "edge"`) forwards every REGISTER to `[edge] next_hop`, a director, over
TLS, presenting a client certificate for edge.example.com (`[tls_client]`), and marks the
clients' requests with `ms-edge-proxy-message-trust`. The director's TLS listener requires
a client certificate and allows only edge.example.com, and its policy is `edge-trust` with
`trusted_edges = ["edge.example.com"]`: the mark is believed only on a flow whose verified
peer identity is a trusted edge.

- A client's REGISTER through the edge is proxied by the director to the home server, and
  the client gets the home's 200; the home sees the edge's mark.
- The same REGISTER sent by a client directly to the director over UDP, with a forged mark
  and two Vias (as if it came through a proxy), is redirected (301): UDP carries no
  verified identity, so the mark is stripped, and nothing reaches the home.

tests/integration/test_edge.py tests the same policy with a UDP edge (no identity); this
module is the one where trust is actually established by a certificate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.director.edge import EDGE_TRUST_HEADER, edge_mark
from homeredirect.service import HomeRedirectService
from homeredirect.sip.message import Request, Response
from homeredirect.tools.certs import ensure_leaf
from tests.integration.support import director_config, pki_in, register, start_director, udp_client
from tests.integration.test_edge import FORGED, with_headers
from tests.integration.test_proxy import HomeStandIn

EDGE = "edge.example.com"


def udp_port(service: HomeRedirectService) -> int:
    return service.listener("udp").address[1]


class EdgeTrustOverMutualTlsTests(TestCase):
    """Client -UDP-> edge -mutual TLS-> director (`edge-trust`) -UDP-> home stand-in."""

    timeout = 30

    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        pki = pki_in(directory)  # one CA; server.pem names director.example.com
        edge_files = ensure_leaf(pki, EDGE, ips=["127.0.0.1"])

        # The home: records what reaches it; the test answers 200 (To tag "home").
        self.home = HomeStandIn()
        home_port = reactor.listenUDP(0, self.home, interface="127.0.0.1")
        self.addCleanup(home_port.stopListening)

        config = director_config(
            directory,
            transports=("udp", "tls"),
            home_servers={
                "home1.example.com": {
                    "host": "127.0.0.1",
                    "port": self.home.port,
                    "transport": "udp",
                }
            },
            policy={"name": "edge-trust", "trusted_edges": [EDGE]},
        )
        config["listen"][1] |= {
            "require_client_certificate": True,
            "allowed_peers": [EDGE],
        }
        self.director = start_director(directory, config)
        self.addCleanup(self.director.stopService)
        director_tls = self.director.listener("tls").address[1]

        edge_directory = directory / "edge"
        edge_directory.mkdir()
        edge_config: dict[str, Any] = {
            "server": {"role": "edge", "fqdn": EDGE, "domains": ["example.com"]},
            "listen": [
                {"transport": "udp", "host": "127.0.0.1", "port": 0},
                # Gives the edge its TLS transport (and a listener for the director's side).
                {
                    "transport": "tls",
                    "host": "127.0.0.1",
                    "port": 0,
                    "certificate": str(edge_files.certificate),
                    "private_key": str(edge_files.private_key),
                    "ca": str(pki.ca_certificate),
                },
            ],
            "tls_client": {
                "ca": str(pki.ca_certificate),
                "certificate": str(edge_files.certificate),
                "private_key": str(edge_files.private_key),
            },
            "edge": {"next_hop": f"sip:director.example.com:{director_tls};transport=tls"},
            "home_servers": {"director.example.com": {"host": "127.0.0.1"}},
        }
        # Stopped before the director (cleanups run last-in first-out).
        self.edge = start_director(edge_directory, edge_config)
        self.addCleanup(self.edge.stopService)

        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    @inlineCallbacks
    def test_a_register_through_the_edge_is_proxied_and_gets_the_homes_200(self):  # type: ignore[no-untyped-def]
        self.client.transport.write(
            register("alice@example.com", via_port=self.client.port),
            ("127.0.0.1", udp_port(self.edge)),
        )
        forwarded = yield self.home.next()
        assert isinstance(forwarded, Request)
        # Proxied, not redirected: the client's, the edge's and the director's Vias, and
        # the edge's mark believed by the director (it came over the verified TLS flow).
        self.assertEqual(len(forwarded.vias), 3)
        self.assertEqual(forwarded.headers.get_all(EDGE_TRUST_HEADER), [edge_mark(EDGE)])
        # The flow the edge's request arrived on at the director: verified as the edge.
        flows = [c.flow for c in self.director.connections._connections.values()]
        self.assertEqual([flow.peer_identity for flow in flows], [EDGE])

        self.home.answer(forwarded, ("127.0.0.1", forwarded.vias[0].port))
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertIn("tag=home", response.headers.get("To") or "")  # the home's answer
        self.assertEqual(len(response.vias), 1)

    @inlineCallbacks
    def test_a_forged_mark_sent_directly_over_udp_is_redirected(self):  # type: ignore[no-untyped-def]
        request = with_headers(
            register("alice@example.com", via_port=self.client.port, extra_vias=1), FORGED
        )
        self.client.transport.write(request, ("127.0.0.1", udp_port(self.director)))
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 301)
        self.assertIn("home1.example.com", response.headers.get("Contact") or "")
        # Redirected at once: neither the request nor its forged header reached the home.
        self.assertEqual(self.home.received.pending, [])
