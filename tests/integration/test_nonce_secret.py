"""`[auth] nonce_secret_file` on live directors over loopback (RFC 7616 §3.3, §5.4).

Nonces are stateless: an HMAC under the shared secret vouches for them, so a director
with the same secret file accepts credentials answering another director's challenge,
and so does a director restarted with the file. One with another secret does not know
the nonce and answers with a fresh challenge. Each director here is the service
`twistd homeredirect` runs, built by the config loader and `makeService`.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.service import HomeRedirectService
from homeredirect.sip.message import Message, Response
from tests.integration.support import register, start_director, udp_client
from tests.integration.test_auth import USERS, answered, auth_config, sha256_challenge


def nonce_of(challenge: Response) -> str:
    """The nonce of the SHA-256 challenge (every header of a challenge shares it)."""
    match = re.search(r'nonce="([^"]+)"', sha256_challenge(challenge))
    assert match is not None, challenge
    return match[1]


def assert_fresh_challenge(response: Message | bytes, old_nonce: str) -> Response:
    """A 401 with a new nonce and no `stale=true`: the director did not know the old one."""
    assert isinstance(response, Response), response
    assert response.status == 401, response
    values = response.headers.get_all("WWW-Authenticate")
    assert len(values) == 3, values
    assert nonce_of(response) != old_nonce
    assert not any("stale" in value for value in values), values
    return response


class SharedNonceSecretTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).resolve()
        self.root.mkdir()
        self.secret = self.root / "nonce.secret"
        self.secret.write_text(secrets.token_hex(32) + "\n")
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    def start(self, name: str, secret: Path, port: int = 0) -> HomeRedirectService:
        """A director of its own (own directory, listener, limiter, nonce counts) whose
        nonces are keyed by the file `secret`; stopped at the end unless already."""
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        config: dict[str, Any] = auth_config(directory)
        config["auth"]["nonce_secret_file"] = str(secret)
        config["listen"][0]["port"] = port
        service = start_director(directory, config)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    def port_of(self, service: HomeRedirectService) -> int:
        return int(service.listener("udp").address[1])

    def send(self, data: bytes, service: HomeRedirectService) -> None:
        self.client.transport.write(data, ("127.0.0.1", self.port_of(service)))

    @inlineCallbacks
    def challenged_by(self, service: HomeRedirectService):  # type: ignore[no-untyped-def]
        """A REGISTER for alice sent to `service`, its 401, and alice's answer to it."""
        message = register("alice@example.com", via_port=self.client.port)
        self.send(message, service)
        challenge = yield self.client.next()
        assert isinstance(challenge, Response) and challenge.status == 401, challenge
        return challenge, answered(message, challenge, "alice", USERS["alice"])

    def assert_redirected(self, response: Message | bytes) -> None:
        assert isinstance(response, Response), response
        self.assertEqual(response.status, 301, response)
        self.assertIn("home1.example.com", response.headers.get("Contact") or "")

    @inlineCallbacks
    def test_credentials_for_a_nonce_of_one_director_are_accepted_by_another(self):  # type: ignore[no-untyped-def]
        a = self.start("a", self.secret)
        b = self.start("b", self.secret)
        self.assertNotEqual(self.port_of(a), self.port_of(b))
        _, retry = yield self.challenged_by(a)
        self.send(retry, b)
        self.assert_redirected((yield self.client.next()))

    @inlineCallbacks
    def test_a_restarted_director_accepts_a_nonce_it_issued_before_the_restart(self):  # type: ignore[no-untyped-def]
        a = self.start("a", self.secret)
        port = self.port_of(a)
        _, retry = yield self.challenged_by(a)
        yield a.stopService()
        restarted = self.start("a", self.secret, port=port)
        self.assertIsNot(restarted, a)
        self.send(retry, restarted)
        self.assert_redirected((yield self.client.next()))

    @inlineCallbacks
    def test_a_director_with_another_secret_answers_a_fresh_challenge(self):  # type: ignore[no-untyped-def]
        other_secret = self.root / "other.secret"
        other_secret.write_text(secrets.token_hex(32) + "\n")
        a = self.start("a", self.secret)
        other = self.start("other", other_secret)
        challenge, retry = yield self.challenged_by(a)
        self.send(retry, other)
        assert_fresh_challenge((yield self.client.next()), nonce_of(challenge))
        # The refusal is the secret's doing: the same client answering that director's
        # own challenge is let in.
        _, own_retry = yield self.challenged_by(other)
        self.send(own_retry, other)
        self.assert_redirected((yield self.client.next()))
