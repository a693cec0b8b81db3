"""The edge role end to end on loopback: an edge forwards every REGISTER to a director
(`[edge] next_hop`), which proxies it (two Vias) to the home server, whose 200 comes back
with the Path of both; and `ms-edge-proxy-message-trust` ([MS-SIPRE] §2.2.15) is believed
only from a trusted edge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.director.edge import EDGE_TRUST_HEADER, edge_mark
from homeredirect.service import HomeRedirectService
from homeredirect.sip.message import Request, Response
from tests.integration.support import director_config, register, start_director, udp_client
from tests.integration.test_proxy import HomeStandIn

FORGED = f"{EDGE_TRUST_HEADER}: ms-source-type=AuthorizedServer;ms-ep-fqdn=edge.example.com"


def with_headers(data: bytes, *lines: str) -> bytes:
    """*data* (a request from `register`) with header *lines* added before Content-Length."""
    extra = "".join(f"{line}\r\n" for line in lines).encode()
    return data.replace(b"Content-Length:", extra + b"Content-Length:", 1)


def udp_port(service: HomeRedirectService) -> int:
    return service.listener("udp").address[1]


class _Deployment(TestCase):
    timeout = 30

    def directory(self) -> Path:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        return directory

    def start(self, config: dict[str, Any]) -> HomeRedirectService:
        service = start_director(self.directory(), config)
        self.addCleanup(service.stopService)
        return service

    def start_home(self) -> HomeRedirectService:
        return self.start(
            {
                "server": {"role": "home", "fqdn": "home1.example.com", "domains": ["example.com"]},
                "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 0}],
                "location": {"backend": "memory"},
            }
        )

    def start_director_for(self, home_port: int, **policy: Any) -> HomeRedirectService:
        directory = self.directory()
        config = director_config(
            directory,
            transports=("udp",),
            home_servers={
                "home1.example.com": {"host": "127.0.0.1", "port": home_port, "transport": "udp"}
            },
            policy=policy or None,
        )
        service = start_director(directory, config)
        self.addCleanup(service.stopService)
        return service

    def start_edge(self, director_port: int, **edge: Any) -> HomeRedirectService:
        return self.start(
            {
                "server": {"role": "edge", "fqdn": "edge.example.com", "domains": ["example.com"]},
                "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 0}],
                "edge": {
                    "next_hop": f"sip:director.example.com:{director_port};transport=udp",
                    **edge,
                },
                "home_servers": {"director.example.com": {"host": "127.0.0.1"}},
            }
        )


class EdgeToDirectorToHomeTests(_Deployment):
    def setUp(self) -> None:
        self.home = self.start_home()
        self.director = self.start_director_for(udp_port(self.home))
        self.edge = self.start_edge(udp_port(self.director))
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    @inlineCallbacks
    def test_a_register_sent_directly_to_the_director_is_redirected(self):  # type: ignore[no-untyped-def]
        self.client.transport.write(
            register(via_port=self.client.port), ("127.0.0.1", udp_port(self.director))
        )
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 301)

    @inlineCallbacks
    def test_the_same_register_through_the_edge_gets_the_homes_200_with_the_path(self):  # type: ignore[no-untyped-def]
        request = with_headers(register(via_port=self.client.port), "Supported: path")
        self.client.transport.write(request, ("127.0.0.1", udp_port(self.edge)))
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.vias), 1)  # the edge and the director popped theirs
        paths = response.headers.get_list("Path")
        # The home server echoes the Path it recorded, each proxy's on top of the ones
        # before it (RFC 3327 §5.2): the director's, then the edge's.
        self.assertEqual(len(paths), 2, paths)
        self.assertIn(f":{udp_port(self.director)};", paths[0])
        self.assertIn(f":{udp_port(self.edge)};", paths[1])
        self.assertIn("alice@", response.headers.get("Contact") or "")


class EdgeForwardingTests(_Deployment):
    """What an edge forwards, seen by a stand-in for the director it is configured with."""

    def setUp(self) -> None:
        self.next_hop = HomeStandIn()
        port = reactor.listenUDP(0, self.next_hop, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    @inlineCallbacks
    def forwarded_through_edge(self, request: bytes | None = None, **edge: Any):  # type: ignore[no-untyped-def]
        service = self.start_edge(self.next_hop.port, **edge)
        if request is None:
            request = with_headers(register(via_port=self.client.port), FORGED)
        self.client.transport.write(request, ("127.0.0.1", udp_port(service)))
        forwarded = yield self.next_hop.next()
        assert isinstance(forwarded, Request)
        self.assertEqual(len(forwarded.vias), 2)  # the client's and the edge's
        self.assertEqual(forwarded.vias[0].port, udp_port(service))
        return forwarded

    @inlineCallbacks
    def test_every_register_goes_to_the_next_hop_without_assignments(self):  # type: ignore[no-untyped-def]
        # mallory is in no assignment table: the edge does not ask.
        request = register("mallory@example.com", via_port=self.client.port)
        forwarded = yield self.forwarded_through_edge(request)
        self.assertEqual(forwarded.to_addr.uri.user, "mallory")
        self.next_hop.answer(forwarded, ("127.0.0.1", forwarded.vias[0].port))
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_an_invite_to_a_user_goes_to_the_next_hop(self):  # type: ignore[no-untyped-def]
        invite = register(via_port=self.client.port, method="INVITE").replace(
            b"INVITE sip:example.com", b"INVITE sip:alice@example.com", 1
        )
        forwarded = yield self.forwarded_through_edge(invite)
        self.assertEqual(forwarded.method, "INVITE")
        self.assertEqual(str(forwarded.uri), "sip:alice@example.com")

    @inlineCallbacks
    def test_the_edge_replaces_a_clients_forged_mark_with_its_own(self):  # type: ignore[no-untyped-def]
        forwarded = yield self.forwarded_through_edge()
        self.assertEqual(
            forwarded.headers.get_all(EDGE_TRUST_HEADER), [edge_mark("edge.example.com")]
        )

    @inlineCallbacks
    def test_an_edge_told_not_to_mark_only_strips(self):  # type: ignore[no-untyped-def]
        forwarded = yield self.forwarded_through_edge(mark=False)
        self.assertNotIn(EDGE_TRUST_HEADER, forwarded.headers)


class EdgeTrustPolicyTests(_Deployment):
    """A director with `edge-trust`: a mark that does not come from a verified trusted
    edge is removed, so the request is redirected whatever its Via count."""

    def setUp(self) -> None:
        self.home = HomeStandIn()
        port = reactor.listenUDP(0, self.home, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.director = self.start_director_for(
            self.home.port, name="edge-trust", trusted_edges=["edge.example.com"]
        )
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    @inlineCallbacks
    def test_a_forged_mark_over_udp_gets_a_redirect_not_a_proxy(self):  # type: ignore[no-untyped-def]
        request = with_headers(register(via_port=self.client.port, extra_vias=1), FORGED)
        self.client.transport.write(request, ("127.0.0.1", udp_port(self.director)))
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 301)
        self.assertEqual(self.home.received.pending, [])

    @inlineCallbacks
    def test_requests_from_an_untrusted_edge_are_redirected(self):  # type: ignore[no-untyped-def]
        # Our own edge over UDP: it marks, but UDP carries no verified identity.
        edge = self.start_edge(udp_port(self.director))
        self.client.transport.write(
            register(via_port=self.client.port), ("127.0.0.1", udp_port(edge))
        )
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 301)
