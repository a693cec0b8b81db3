"""[MS-SIPAE] Kerberos against a real MIT KDC on loopback: first the acceptor at GSS-API
level, then REGISTER -> 401 -> REGISTER with an AP-REQ -> signed 301 over UDP on an
in-process director, and the bad input that must get 400 or a fresh 401.

The client side is python-gssapi with alice's ticket cache from `kinit`, requesting what
pidgin-sipe requests (integrity only, a Kerberos principal name for the targetname).
One KDC serves the whole module (`setUpModule`)."""

from __future__ import annotations

import secrets
from base64 import b64encode
from pathlib import Path
from typing import Any

import gssapi
import pytest
from gssapi.raw.misc import GSSError
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.kerberos import (
    BlockingRunner,
    KerberosAcceptor,
    KerberosAssociations,
    KerberosConfigError,
    KerberosRejected,
    KerberosSipAuthenticator,
    PrincipalMapper,
)
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.outcomes import Authenticated, Challenge, Refused
from homeredirect.auth.signature import SignedFields, signature_string
from homeredirect.sip.credentials import AuthValue, parse_auth_value
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from tests.integration.support import director_config, register, start_director, udp_client
from tests.integration.test_auth import with_authorization
from tests.krb5_kdc import MitKdc, kdc_available

pytestmark = pytest.mark.skipif(
    not kdc_available(), reason="MIT krb5 (krb5-kdc, krb5-admin-server, krb5-user): make test"
)

SIPAE_REALM = "SIP Communications Service"
TARGET = "sip/director.example.com"
KDC: MitKdc | None = None


def setUpModule() -> None:
    global KDC
    if not kdc_available():
        return
    directory = Path(__import__("tempfile").mkdtemp(prefix="krb5-kdc-"))
    KDC = MitKdc.start(directory)
    KDC.activate()


def tearDownModule() -> None:
    if KDC is not None:
        KDC.stop()
        __import__("shutil").rmtree(KDC.directory, ignore_errors=True)


def kdc() -> MitKdc:
    assert KDC is not None
    return KDC


def initiator(user: str = "alice", target: str = TARGET, **flags: Any) -> gssapi.SecurityContext:
    """A client context as pidgin-sipe makes one: integrity, optionally mutual."""
    ccache = kdc().kinit(user)
    credentials = gssapi.Credentials(usage="initiate", store={"ccache": ccache})
    wanted = [gssapi.RequirementFlag.integrity]
    if flags.get("mutual"):
        wanted.append(gssapi.RequirementFlag.mutual_authentication)
    return gssapi.SecurityContext(
        name=gssapi.Name(target, gssapi.NameType.kerberos_principal),
        creds=credentials,
        usage="initiate",
        flags=wanted,
    )


class KerberosAcceptorTests(TestCase):
    """The GSS-API level: a token in, an established context out."""

    def setUp(self) -> None:
        self.acceptor = KerberosAcceptor(TARGET, kdc().keytab)

    def test_ap_req_establishes_a_context_for_the_client_principal(self) -> None:
        client = initiator()
        ticket = self.acceptor.accept(client.step())
        self.assertEqual(ticket.client, "alice@SIPTEST.EXAMPLE")
        self.assertTrue(ticket.context.complete)
        self.assertIsNone(ticket.reply)
        assert ticket.lifetime is not None
        # The ticket's hour (max_life), plus the 5 minutes of clock skew MIT allows.
        self.assertTrue(3000 < ticket.lifetime <= 3600 + 300)
        self.assertEqual(self.acceptor.realm, "SIPTEST.EXAMPLE")

    def test_session_mics_verify_both_ways(self) -> None:
        client = initiator()
        ticket = self.acceptor.accept(client.step())
        client.verify_signature(b"<Kerberos><1>", ticket.context.get_signature(b"<Kerberos><1>"))
        ticket.context.verify_signature(b"<from client>", client.get_signature(b"<from client>"))
        with self.assertRaises(GSSError):
            client.verify_signature(b"<tampered>", ticket.context.get_signature(b"<Kerberos>"))

    def test_mutual_authentication_returns_an_ap_rep_that_completes_the_client(self) -> None:
        client = initiator(mutual=True)
        ticket = self.acceptor.accept(client.step())
        assert ticket.reply is not None
        self.assertFalse(client.complete)
        client.step(ticket.reply)
        self.assertTrue(client.complete)

    def test_replayed_ap_req_is_rejected(self) -> None:
        token = initiator().step()
        self.acceptor.accept(token)
        with self.assertRaisesRegex(KerberosRejected, "replay"):
            self.acceptor.accept(token)

    def test_ticket_for_another_service_in_the_same_keytab_is_rejected(self) -> None:
        token = initiator(target=kdc().other_service).step()
        with self.assertRaises(KerberosRejected):
            self.acceptor.accept(token)

    def test_ntlm_token_is_rejected(self) -> None:
        with self.assertRaises(KerberosRejected):
            self.acceptor.accept(b"NTLMSSP\x00\x01\x00\x00\x00" + bytes(28))

    def test_garbage_is_rejected(self) -> None:
        for token in (b"", b"\x60", b"\x60\x03\x06\x01\x00", secrets.token_bytes(300)):
            with self.assertRaises(KerberosRejected):
                self.acceptor.accept(token)

    def test_keytab_without_the_principal_is_a_configuration_error(self) -> None:
        with self.assertRaisesRegex(KerberosConfigError, "sip/nobody.example.com"):
            KerberosAcceptor("sip/nobody.example.com", kdc().keytab)


class KerberosAuthenticatorTests(TestCase):
    """The authenticator with a real acceptor in a real thread pool, without SIP sockets."""

    def setUp(self) -> None:
        self.pool = ThreadPool(minthreads=0, maxthreads=2, name="test-kerberos")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.clock = Clock()
        self.authenticator = self.make()

    def make(self, max_pending: int = 8) -> KerberosSipAuthenticator:
        acceptor = KerberosAcceptor(TARGET, kdc().keytab)
        return KerberosSipAuthenticator(
            required=True,
            acceptor=acceptor,
            targetname=TARGET,
            version=4,
            associations=KerberosAssociations(self.clock, 100, 3600),
            mapper=PrincipalMapper(acceptor.realm, "example.com"),
            limiter=FailureLimiter(self.clock, 5, 60),
            clock=self.clock,
            runner=BlockingRunner(reactor, self.pool, max_pending),
        )

    def request(self, authorization: str | None) -> Request:
        message = register()
        if authorization is not None:
            message = message.replace(
                b"Content-Length: 0",
                f"Authorization: {authorization}\r\nContent-Length: 0".encode(),
            )
        event = parse_datagram(message)
        assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
        return event.message

    def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IRequestAuthenticator, self.authenticator))

    def test_no_credentials_get_the_ms_sipae_challenge(self) -> None:
        outcome = self.successResultOf(
            self.authenticator.authenticate(self.request(None), "x", False)
        )
        assert isinstance(outcome, Challenge)
        self.assertEqual(outcome.status, 401)
        self.assertIn(
            (
                "WWW-Authenticate",
                'Kerberos realm="SIP Communications Service", '
                'targetname="sip/director.example.com", version=4',
            ),
            outcome.headers,
        )

    def test_credentials_for_another_targetname_get_the_challenge(self) -> None:
        header = (
            f'Kerberos qop="auth", realm="{SIPAE_REALM}", targetname="sip/x", gssapi-data="AA=="'
        )
        outcome = self.successResultOf(
            self.authenticator.authenticate(self.request(header), "x", False)
        )
        self.assertIsInstance(outcome, Challenge)

    def test_busy_acceptor_answers_503_at_once(self) -> None:
        authenticator = self.make(max_pending=0)
        token = b64encode(initiator().step()).decode()
        header = f'Kerberos realm="{SIPAE_REALM}", targetname="{TARGET}", gssapi-data="{token}"'
        outcome = self.successResultOf(authenticator.authenticate(self.request(header), "x", False))
        self.assertEqual(outcome, Refused(503, "Authentication service busy"))

    @inlineCallbacks
    def test_failures_are_limited_per_source(self):  # type: ignore[no-untyped-def]
        header = f'Kerberos realm="{SIPAE_REALM}", targetname="{TARGET}", gssapi-data="YWJj"'
        outcomes = []
        for _ in range(7):
            outcomes.append(
                (yield self.authenticator.authenticate(self.request(header), "s", False))
            )
        self.assertEqual([type(o) for o in outcomes[:4]], [Challenge] * 4)
        self.assertEqual(outcomes[4:], [Refused(403, "Too many failed attempts")] * 3)

    @inlineCallbacks
    def test_ap_req_authenticates_alice_with_a_signer(self):  # type: ignore[no-untyped-def]
        token = b64encode(initiator().step()).decode()
        header = f'Kerberos realm="{SIPAE_REALM}", targetname="{TARGET}", gssapi-data="{token}"'
        outcome = yield self.authenticator.authenticate(self.request(header), "s", False)
        assert isinstance(outcome, Authenticated)
        self.assertEqual(str(outcome.aor), "alice@example.com")
        self.assertIsNotNone(outcome.sign)


def kerberos_authorization(token: bytes | str, **extra: str) -> str:
    data = token if isinstance(token, str) else b64encode(token).decode()
    params = [
        'qop="auth"',
        f'realm="{SIPAE_REALM}"',
        f'targetname="{TARGET}"',
        f'gssapi-data="{data}"',
        "version=4",
    ]
    params += [f'{name}="{value}"' for name, value in extra.items()]
    return "Kerberos " + ", ".join(params)


def authentication_info(response: Response) -> AuthValue:
    value = response.headers.get("Authentication-Info")
    assert value is not None, "the response is not signed"
    return parse_auth_value(value, "Authentication-Info")


class KerberosRegisterTests(TestCase):
    """The SIP exchange over UDP against a director with `[auth] schemes = ["kerberos"]`."""

    schemes = ["kerberos"]

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        config = director_config(self.directory, transports=("udp",))
        (self.directory / "users.csv").write_text("user,password\nalice@example.com,wonderland\n")
        config["auth"] = {
            "required": True,
            "realm": "example.com",
            "schemes": self.schemes,
            "credentials": "users.csv",
            "keytab": str(kdc().keytab),
            "service_principal": TARGET,
            "max_failures": 50,
        }
        self.service = start_director(self.directory, config)
        self.addCleanup(self.service.stopService)
        self.port = self.service.listener("udp").address[1]
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    def send(self, data: bytes) -> None:
        self.client.transport.write(data, ("127.0.0.1", self.port))

    @inlineCallbacks
    def exchange(self, message: bytes):  # type: ignore[no-untyped-def]
        self.send(message)
        response = yield self.client.next()
        assert isinstance(response, Response)
        return response

    @inlineCallbacks
    def test_register_is_challenged_then_redirected_and_signed(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        challenge = yield self.exchange(message)
        self.assertEqual(challenge.status, 401)
        self.assertIn(
            'Kerberos realm="SIP Communications Service", '
            'targetname="sip/director.example.com", version=4',
            challenge.headers.get_all("WWW-Authenticate"),
        )
        client = initiator()
        response = yield self.exchange(
            with_authorization(message, kerberos_authorization(client.step()))
        )
        self.assertEqual(response.status, 301)
        self.assertIn("home1.example.com", response.headers.get("Contact") or "")
        info = authentication_info(response)
        self.assertTrue(info.scheme_is("Kerberos"))
        self.assertEqual(
            (info.get("qop"), info.get("snum"), info.get("realm"), info.get("targetname")),
            ("auth", "1", SIPAE_REALM, TARGET),
        )
        self.assertRegex(info.get("opaque") or "", r"^[0-9A-F]{8}$")
        fields = SignedFields("Kerberos", info.params["srand"], "1", SIPAE_REALM, TARGET)
        client.verify_signature(
            signature_string(response, fields, 4), bytes.fromhex(info.params["rspauth"])
        )

    @inlineCallbacks
    def test_signed_request_in_the_association_is_verified_and_answered_signed(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        client = initiator()
        first = yield self.exchange(
            with_authorization(message, kerberos_authorization(client.step()))
        )
        opaque = authentication_info(first).params["opaque"]
        again = with_authorization(message, "PLACEHOLDER", cseq=3)
        request = parse_datagram(again)
        assert isinstance(request, MessageReceived)
        fields = SignedFields("Kerberos", "1A2B3C4D", "1", SIPAE_REALM, TARGET)
        mic = client.get_signature(signature_string(request.message, fields, 4)).hex()
        signed = (
            f'Kerberos qop="auth", opaque="{opaque}", realm="{SIPAE_REALM}", '
            f'targetname="{TARGET}", version=4, crand="1A2B3C4D", cnum="1", response="{mic}"'
        )
        response = yield self.exchange(again.replace(b"PLACEHOLDER", signed.encode()))
        self.assertEqual(response.status, 301)
        info = authentication_info(response)
        self.assertEqual((info.get("opaque"), info.get("snum")), (opaque, "2"))
        fields = SignedFields("Kerberos", info.params["srand"], "2", SIPAE_REALM, TARGET)
        client.verify_signature(
            signature_string(response, fields, 4), bytes.fromhex(info.params["rspauth"])
        )
        # The same signed request again: cnum does not grow, so it is a replay.
        replayed = yield self.exchange(
            with_authorization(message, signed, cseq=4).replace(b"CSeq: 4", b"CSeq: 3")
        )
        self.assertEqual(replayed.status, 401)

    @inlineCallbacks
    def test_mutual_authentication_gets_the_ap_rep_in_authentication_info(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        client = initiator(mutual=True)
        response = yield self.exchange(
            with_authorization(message, kerberos_authorization(client.step()))
        )
        self.assertEqual(response.status, 301)
        reply = authentication_info(response).params["gssapi-data"]
        client.step(__import__("base64").b64decode(reply))
        self.assertTrue(client.complete)

    @inlineCallbacks
    def test_alice_may_not_register_bob(self):  # type: ignore[no-untyped-def]
        message = register("bob@example.com", via_port=self.client.port)
        response = yield self.exchange(
            with_authorization(message, kerberos_authorization(initiator().step()))
        )
        self.assertEqual(response.status, 403)

    @inlineCallbacks
    def test_gssapi_data_that_is_not_base64_gets_400(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        response = yield self.exchange(
            with_authorization(message, kerberos_authorization("not base64!"))
        )
        self.assertEqual(response.status, 400)

    @inlineCallbacks
    def test_ntlm_token_in_kerberos_gets_a_fresh_challenge(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        ntlm = b"NTLMSSP\x00\x03\x00\x00\x00" + bytes(64)
        response = yield self.exchange(with_authorization(message, kerberos_authorization(ntlm)))
        self.assertEqual(response.status, 401)
        self.assertIn("Kerberos", " ".join(response.headers.get_all("WWW-Authenticate")))
        self.assertIsNone(response.headers.get("Authentication-Info"))

    @inlineCallbacks
    def test_replayed_ap_req_gets_a_fresh_challenge(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        authorization = kerberos_authorization(initiator().step())
        first = yield self.exchange(with_authorization(message, authorization))
        self.assertEqual(first.status, 301)
        second = yield self.exchange(with_authorization(message, authorization, cseq=3))
        self.assertEqual(second.status, 401)

    @inlineCallbacks
    def test_ticket_for_another_service_gets_a_fresh_challenge(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        token = initiator(target=kdc().other_service).step()
        response = yield self.exchange(with_authorization(message, kerberos_authorization(token)))
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_unknown_opaque_without_token_gets_a_fresh_challenge(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        authorization = (
            f'Kerberos qop="auth", opaque="DEADBEEF", realm="{SIPAE_REALM}", '
            f'targetname="{TARGET}", crand="1", cnum="1", response="00"'
        )
        response = yield self.exchange(with_authorization(message, authorization))
        self.assertEqual(response.status, 401)


class KerberosWithDigestTests(KerberosRegisterTests):
    """Both schemes offered: the challenge carries both, and Kerberos still works."""

    schemes = ["digest", "kerberos"]

    @inlineCallbacks
    def test_challenge_offers_digest_and_kerberos(self):  # type: ignore[no-untyped-def]
        response = yield self.exchange(register("alice@example.com", via_port=self.client.port))
        schemes = [v.split(" ", 1)[0] for v in response.headers.get_all("WWW-Authenticate")]
        self.assertIn("Digest", schemes)
        self.assertIn("Kerberos", schemes)
