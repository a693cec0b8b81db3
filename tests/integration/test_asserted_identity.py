"""A director authenticates a client with Digest and proxies its REGISTER to an in-process
home server over mutual TLS, asserting the identity (RFC 3325): the home, which requires
authentication, registers it without a second challenge. A client that forges the header,
and a director that cannot present a client certificate, are challenged by the home."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.auth.digest_client import answer_challenge
from homeredirect.config.load import parse_config
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.service import HomeRedirectService, makeService
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Response
from homeredirect.tools.certs import ensure_leaf
from tests.integration.support import director_config, pki_in, register, start_director, udp_client

HOME = "home1.example.com"
USERS = "user,password\nalice@example.com,wonderland\n"
AUTH = {"required": True, "realm": "example.com", "credentials": "users.csv"}


def with_authorization(message: bytes, authorization: str) -> bytes:
    """The retry of *message* with credentials: new branch, next CSeq (RFC 3261 §22.2)."""
    retry = re.sub(rb"branch=[^;\r]+", b"branch=z9hG4bK" + secrets.token_hex(6).encode(), message)
    return retry.replace(b"CSeq: 1 ", b"CSeq: 2 ").replace(
        b"Content-Length: 0", f"Authorization: {authorization}\r\nContent-Length: 0".encode()
    )


def answer(challenge: Response) -> str:
    return answer_challenge(
        parse_auth_value(challenge.headers.get("WWW-Authenticate") or "", "WWW-Authenticate"),
        method="REGISTER",
        uri="sip:example.com",
        username="alice",
        password="wonderland",
    )


class AssertedIdentityTests(TestCase):
    """One home server with two TLS listeners, one requiring the director's client
    certificate (its `allowed_peers`, hence the trusted peers) and one asking for none, and
    a UDP listener for clients; and two directors proxying to it with Digest required: one
    with a `[tls_client]` certificate, one without."""

    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        (directory / "users.csv").write_text(USERS)
        pki = pki_in(directory)  # its server certificate names director.example.com
        home_files = ensure_leaf(pki, HOME, ips=["127.0.0.1"])
        tls = {
            "transport": "tls",
            "host": "127.0.0.1",
            "port": 0,
            "certificate": str(home_files.certificate),
            "private_key": str(home_files.private_key),
            "ca": str(pki.ca_certificate),
        }
        home_config = {
            "server": {"role": "home", "fqdn": HOME, "domains": ["example.com"]},
            "listen": [
                tls
                | {"require_client_certificate": True, "allowed_peers": ["director.example.com"]},
                tls,
                {"transport": "udp", "host": "127.0.0.1", "port": 0},
            ],
            "location": {"backend": "memory"},
            "auth": AUTH,
        }
        self.home = makeService(
            parse_config(home_config, str(directory / "home.toml"), directory), reactor
        )
        self.home.startService()
        self.addCleanup(self.home.stopService)
        self.directors = {}
        for name, index, tls_client in (
            (
                "mutual",
                0,
                {
                    "ca": str(pki.ca_certificate),
                    "certificate": str(pki.server_certificate),
                    "private_key": str(pki.server_key),
                },
            ),
            ("anonymous", 1, {"ca": str(pki.ca_certificate)}),
        ):
            port = self.home.listener("tls", index).address[1]
            config = director_config(
                directory,
                transports=("udp", "tls"),  # TLS to send from, too
                home_servers={HOME: {"host": "127.0.0.1", "port": port, "transport": "tls"}},
            )
            config["auth"] = AUTH
            config["tls_client"] = tls_client
            director = start_director(directory, config)
            self.addCleanup(director.stopService)
            self.directors[name] = director
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    def address(self, service: HomeRedirectService) -> tuple[str, int]:
        return ("127.0.0.1", service.listener("udp").address[1])

    @inlineCallbacks
    def exchange(self, service: HomeRedirectService, message: bytes):  # type: ignore[no-untyped-def]
        """Send *message*, answer its 401 with alice's credentials; fire with the final
        response to the retry."""
        self.client.transport.write(message, self.address(service))
        challenge = yield self.client.next()
        assert isinstance(challenge, Response)
        self.assertEqual(challenge.status, 401)
        self.client.transport.write(
            with_authorization(message, answer(challenge)), self.address(service)
        )
        response = yield self.client.next()
        assert isinstance(response, Response)
        return response

    @inlineCallbacks
    def bindings(self):  # type: ignore[no-untyped-def]
        store: Any = self.home.core._local_handler.registrar.store  # type: ignore[union-attr]
        found = yield store.lookup(AddressOfRecord("alice", "example.com"), reactor.seconds())
        return found

    @inlineCallbacks
    def test_register_authenticated_at_the_director_is_registered_without_a_challenge(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port, extra_vias=1)
        response = yield self.exchange(self.directors["mutual"], message)
        # The home's 200, relayed: the home asked for nothing more.
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.vias), 2)
        bindings = yield self.bindings()
        self.assertEqual(len(bindings), 1)

    @inlineCallbacks
    def test_a_forged_assertion_sent_to_the_home_is_challenged(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port, extra_vias=1)
        forged = message.replace(
            b"Content-Length: 0",
            b"P-Asserted-Identity: <sip:alice@example.com>\r\nContent-Length: 0",
        )
        self.client.transport.write(forged, self.address(self.home))
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 401)
        bindings = yield self.bindings()
        self.assertEqual(list(bindings), [])

    @inlineCallbacks
    def test_over_a_link_without_client_certificates_the_home_challenges(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port, extra_vias=1)
        response = yield self.exchange(self.directors["anonymous"], message)
        # The director authenticated alice but could not prove itself: the home's own
        # challenge comes back through it.
        self.assertEqual(response.status, 401)
        self.assertIsNotNone(response.headers.get("WWW-Authenticate"))
        bindings = yield self.bindings()
        self.assertEqual(list(bindings), [])
