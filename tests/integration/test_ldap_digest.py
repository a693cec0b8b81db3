"""Digest with H(A1) values from a real slapd (`[auth] digest_source = "ldap"`), through a
director on loopback: REGISTER -> 401 -> REGISTER with credentials -> 301, a wrong
password -> 401, and a stopped directory -> 503 with Retry-After.

The fixture's test schema has no attribute for H(A1) values, so this module adds its own:
`sipHA1` and `sipHA1Sha256` (IA5 strings) on an auxiliary class `sipDigestAccount`, appended
to the fixture's schema file after set-up and before slapd starts; the users carrying them
are added with ldapmodify once slapd runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.auth.digest import DigestAlgorithm, ha1_for
from homeredirect.auth.digest_client import answer_challenge
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.headers import parse_contacts
from homeredirect.sip.message import Response
from tests.integration.support import director_config, register, start_director, udp_client
from tests.integration.test_auth import with_authorization
from tests.ldap_server import BASE_DN, READER_DN, SECRET, SlapdServer, base_entries, user_ldif

REALM = "example.com"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
HOMES = {"alice": "pool1.example.com", "bob": "pool2.example.com", "carol": "pool3.example.com"}

_OID = "1.3.6.1.4.1.4203.666.778"
HA1_SCHEMA = f"""
attributetype ( {_OID}.1.1 NAME 'sipHA1'
    EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( {_OID}.1.2 NAME 'sipHA1Sha256'
    EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
objectclass ( {_OID}.2.1 NAME 'sipDigestAccount' SUP top AUXILIARY
    MAY ( sipHA1 $ sipHA1Sha256 ) )
"""


def digest_users() -> str:
    """alice and bob with H(A1) values for MD5 and SHA-256; carol with only a clear-text
    `userPassword`, which must never be used."""
    entries = []
    for name, password in PASSWORDS.items():
        hashes = [
            ("objectClass", "sipDigestAccount"),
            ("sipHA1", ha1_for(DigestAlgorithm.MD5, name, REALM, password)),
            ("sipHA1Sha256", ha1_for(DigestAlgorithm.SHA_256, name, REALM, password)),
        ]
        entries.append(user_ldif(name, home=HOMES[name], extra=hashes))
    entries.append(
        user_ldif("carol", home=HOMES["carol"], extra=[("userPassword", "carol-secret")])
    )
    return "".join(entries)


def first_contact_host(response: Any) -> str:
    assert isinstance(response, Response), response
    contacts = parse_contacts(response.headers.get_all("Contact"))
    assert contacts != "*"
    return contacts[0].uri.host  # type: ignore[no-any-return]


class LdapDigestTests(TestCase):
    """One slapd for the class; a director per test, so each starts with an empty cache."""

    server: ClassVar[SlapdServer]

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory(prefix="slapd-digest-")
        server = SlapdServer(Path(cls._tmp.name))
        server.setup(base_entries())
        with (server.directory / "homeredirect-test.schema").open("a") as schema:
            schema.write(HA1_SCHEMA)
        server.start()
        cls.server = server
        try:
            server.ldapmodify(digest_users(), add=True)
        except BaseException:
            server.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        cls._tmp.cleanup()

    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        config = director_config(directory, transports=("udp",))
        config["assignments"] = {
            "backend": "ldap",
            "uris": [self.server.uri],
            "base_dn": BASE_DN,
            "bind_dn": READER_DN,
            "bind_password": SECRET,
            "timeout": 2,
            "pool_size": 2,
        }
        config["auth"] = {
            "required": True,
            "realm": REALM,
            "digest_source": "ldap",
            "ha1_attributes": {"MD5": "sipHA1", "SHA-256": "sipHA1Sha256"},
            "algorithms": ["SHA-256", "MD5"],
        }
        self.service = start_director(directory, config)
        self.addCleanup(self.service.stopService)
        self.port = self.service.listener("udp").address[1]
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    @inlineCallbacks
    def challenge_then_answer(
        self, user: str, password: str, algorithm: str = "SHA-256"
    ) -> Generator[Any, Any, Any]:
        """REGISTER, expect a 401, answer its `algorithm` challenge; the final response."""
        message = register(f"{user}@{REALM}", via_port=self.client.port)
        self.client.transport.write(message, ("127.0.0.1", self.port))
        challenge = yield self.client.next()
        assert isinstance(challenge, Response)
        self.assertEqual(challenge.status, 401)
        (value,) = [
            v
            for v in challenge.headers.get_all("WWW-Authenticate")
            if f"algorithm={algorithm}" in v
        ]
        answer = answer_challenge(
            parse_auth_value(value, "WWW-Authenticate"),
            method="REGISTER",
            uri=f"sip:{REALM}",
            username=user,
            password=password,
        )
        self.client.transport.write(with_authorization(message, answer), ("127.0.0.1", self.port))
        return (yield self.client.next())

    @inlineCallbacks
    def test_password_whose_sha256_ha1_is_in_the_directory_gets_301(
        self,
    ) -> Generator[Any, Any, None]:
        response = yield self.challenge_then_answer("alice", "wonderland")
        self.assertEqual(response.status, 301)
        self.assertEqual(first_contact_host(response), HOMES["alice"])

    @inlineCallbacks
    def test_password_whose_md5_ha1_is_in_the_directory_gets_301(
        self,
    ) -> Generator[Any, Any, None]:
        response = yield self.challenge_then_answer("bob", "builder", algorithm="MD5")
        self.assertEqual(response.status, 301)
        self.assertEqual(first_contact_host(response), HOMES["bob"])

    @inlineCallbacks
    def test_wrong_password_gets_401(self) -> Generator[Any, Any, None]:
        response = yield self.challenge_then_answer("alice", "builder")
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_clear_text_password_in_the_directory_is_never_used(
        self,
    ) -> Generator[Any, Any, None]:
        response = yield self.challenge_then_answer("carol", "carol-secret")
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_unknown_user_gets_401(self) -> Generator[Any, Any, None]:
        response = yield self.challenge_then_answer("mallory", "wonderland")
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_stopped_directory_gets_503_with_retry_after(self) -> Generator[Any, Any, None]:
        self.server.stop()
        self.addCleanup(self.server.start)
        response = yield self.challenge_then_answer("alice", "wonderland")
        self.assertEqual((response.status, response.headers.get("Retry-After")), (503, "30"))
        self.assertEqual(response.reason, "Authentication service unavailable")
