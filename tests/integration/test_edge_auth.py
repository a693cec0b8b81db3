"""An edge with `[auth] required = true` (Digest) on loopback UDP, forwarding to a stand-in
for its next hop: a REGISTER is challenged with 401 and `WWW-Authenticate`, a request it
would proxy to a user with 407 and `Proxy-Authenticate` (RFC 3261 §22.3); answered with
the right credentials, either goes on to the next hop. Known and unknown users get the
same challenge but for the nonce, and nothing reaches the next hop before the client has
authenticated as the owner of the AOR (issue 7)."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from homeredirect.auth.digest_client import answer_challenge
from homeredirect.service import HomeRedirectService
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Request, Response
from tests.integration.support import register, start_director, udp_client
from tests.integration.test_auth import USERS, auth_table, with_authorization, write_users
from tests.integration.test_edge import _Deployment, udp_port
from tests.integration.test_proxy import HomeStandIn


def message(sender: str, to: str, via_port: int) -> bytes:
    """A MESSAGE from `sender` to `to` (users of example.com), which an edge proxies."""
    text = register(f"{sender}@example.com", via_port=via_port, method="MESSAGE").decode()
    text = text.replace("MESSAGE sip:example.com", f"MESSAGE sip:{to}@example.com", 1)
    return text.replace(f"To: <sip:{sender}@", f"To: <sip:{to}@", 1).encode()


def without_nonce(values: list[str]) -> list[str]:
    return [re.sub(r'nonce="[^"]*"', "", value) for value in values]


class EdgeDigestTests(_Deployment):
    def setUp(self) -> None:
        self.next_hop = HomeStandIn()
        port = reactor.listenUDP(0, self.next_hop, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.edge = self.start_edge(self.next_hop.port)
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    def start(self, config: dict[str, Any]) -> HomeRedirectService:
        """`_Deployment.start` with `[auth]` and its credentials file."""
        directory = self.directory()
        write_users(directory)
        service = start_director(directory, {**config, "auth": auth_table()})
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def exchange(self, data: bytes):  # type: ignore[no-untyped-def]
        self.client.transport.write(data, ("127.0.0.1", udp_port(self.edge)))
        response = yield self.client.next()
        assert isinstance(response, Response)
        return response

    @inlineCallbacks
    def retry(self, data: bytes, user: str, password: str | None = None):  # type: ignore[no-untyped-def]
        """The challenge to `data`, and the retry of `data` with `user`'s answer to it: in
        Authorization after a 401, in Proxy-Authorization after a 407."""
        challenge = yield self.exchange(data)
        method, uri, _ = data.split(b" ", 2)
        name = "Proxy-Authenticate" if challenge.status == 407 else "WWW-Authenticate"
        answer = answer_challenge(
            parse_auth_value(challenge.headers.get(name) or "", name),
            method=method.decode(),
            uri=uri.decode(),
            username=user,
            password=password or USERS.get(user, "whatever"),
        )
        header = "Proxy-Authorization" if challenge.status == 407 else "Authorization"
        return challenge, with_authorization(data, answer, header=header)

    @inlineCallbacks
    def authenticated(  # type: ignore[no-untyped-def]
        self, data: bytes, user: str, password: str | None = None
    ):
        """The challenge to `data` and the answer to the retry, for requests that go no
        further than the edge."""
        challenge, retry = yield self.retry(data, user, password)
        response = yield self.exchange(retry)
        return challenge, response

    @inlineCallbacks
    def forwarded(self, data: bytes, user: str):  # type: ignore[no-untyped-def]
        """The challenge to `data`, the retry as the next hop received it after the edge
        accepted `user`'s credentials, and the next hop's 200 to it back at the client."""
        challenge, retry = yield self.retry(data, user)
        self.client.transport.write(retry, ("127.0.0.1", udp_port(self.edge)))
        forwarded = yield self.next_hop.next()
        assert isinstance(forwarded, Request)
        self.assertEqual(len(forwarded.vias), 2)  # the client's and the edge's
        self.assertEqual(forwarded.vias[0].port, udp_port(self.edge))
        self.next_hop.answer(forwarded, ("127.0.0.1", forwarded.vias[0].port))
        response = yield self.client.next()
        assert isinstance(response, Response)
        return challenge, forwarded, response

    def assert_nothing_forwarded(self) -> None:
        self.assertEqual(self.next_hop.received.pending, [])

    @inlineCallbacks
    def test_register_without_credentials_gets_401_with_www_authenticate(self):  # type: ignore[no-untyped-def]
        response = yield self.exchange(register(via_port=self.client.port))
        self.assertEqual(response.status, 401)
        value = response.headers.get("WWW-Authenticate") or ""
        challenge = parse_auth_value(value, "WWW-Authenticate")
        self.assertEqual((challenge.scheme, challenge.get("realm")), ("Digest", "example.com"))
        self.assertTrue(challenge.get("nonce"))
        self.assertIsNone(response.headers.get("Proxy-Authenticate"))
        self.assert_nothing_forwarded()

    @inlineCallbacks
    def test_message_to_a_user_without_credentials_gets_407_with_proxy_authenticate(self):  # type: ignore[no-untyped-def]
        response = yield self.exchange(message("alice", "bob", self.client.port))
        self.assertEqual(response.status, 407)
        value = response.headers.get("Proxy-Authenticate") or ""
        challenge = parse_auth_value(value, "Proxy-Authenticate")
        self.assertEqual((challenge.scheme, challenge.get("realm")), ("Digest", "example.com"))
        self.assertIsNone(response.headers.get("WWW-Authenticate"))
        self.assert_nothing_forwarded()

    @inlineCallbacks
    def test_register_answering_the_401_is_forwarded_to_the_next_hop(self):  # type: ignore[no-untyped-def]
        data = register(via_port=self.client.port)
        challenge, forwarded, response = yield self.forwarded(data, "alice")
        self.assertEqual(challenge.status, 401)
        self.assertEqual(forwarded.method, "REGISTER")
        self.assertEqual(str(forwarded.to_addr.uri), "sip:alice@example.com")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.get("CSeq"), "2 REGISTER")

    @inlineCallbacks
    def test_message_answering_the_407_with_proxy_authorization_is_forwarded(self):  # type: ignore[no-untyped-def]
        data = message("alice", "bob", self.client.port)
        challenge, forwarded, response = yield self.forwarded(data, "alice")
        self.assertEqual(challenge.status, 407)
        self.assertEqual(forwarded.method, "MESSAGE")
        self.assertEqual(str(forwarded.uri), "sip:bob@example.com")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.get("CSeq"), "2 MESSAGE")

    @inlineCallbacks
    def test_known_and_unknown_users_get_the_same_challenges_but_for_the_nonce(self):  # type: ignore[no-untyped-def]
        port = self.client.port
        shapes: dict[str, list[list[str]]] = {}
        for user in ("alice", "mallory"):
            for data in (
                register(f"{user}@example.com", via_port=port),
                message(user, "bob", port),
            ):
                # Without credentials, and again after a wrong answer.
                challenge, retried = yield self.authenticated(data, user, password="wrong")
                self.assertEqual(retried.status, challenge.status)
                for response in (challenge, retried):
                    values = response.headers.get_all(
                        "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
                    )
                    self.assertTrue(values)
                    shapes.setdefault(user, []).append(
                        [str(response.status), *without_nonce(values)]
                    )
        self.assertEqual(shapes["alice"], shapes["mallory"])
        self.assertEqual([shape[0] for shape in shapes["alice"]], ["401", "401", "407", "407"])
        self.assert_nothing_forwarded()

    @inlineCallbacks
    def test_message_sent_as_another_user_gets_403_and_is_not_forwarded(self):  # type: ignore[no-untyped-def]
        data = message("bob", "alice", self.client.port)
        challenge, response = yield self.authenticated(data, "alice")
        self.assertEqual(challenge.status, 407)
        self.assertEqual(response.status, 403)
        self.assert_nothing_forwarded()
