"""[MS-SIPAE] NTLM on a live director over UDP, driven by a real NTLM initiator
(gss-ntlmssp in datagram mode, as Microsoft clients and pidgin-sipe run NTLM):
REGISTER -> 401 -> REGISTER gssapi-data="" -> 401 CHALLENGE -> REGISTER AUTHENTICATE ->
301 signed with an `rspauth` the initiator verifies with its session key."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.auth.signature import SignedFields, signature_string
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Response
from tests.integration.support import director_config, start_director, udp_client
from tests.ntlm_initiator import UNAVAILABLE

if UNAVAILABLE is None:
    from tests.ntlm_initiator import DatagramInitiator

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

TARGET = "director.example.com"
REALM = "SIP Communications Service"


def ntlm_config(directory: Path) -> dict[str, Any]:
    (directory / "ntlm-users.csv").write_text("user,password\nalice@example.com,Secret123\n")
    config = director_config(directory, transports=("udp",))
    config["auth"] = {
        "required": True,
        "realm": "example.com",
        "schemes": ["ntlm"],
        "ntlm_credentials": "ntlm-users.csv",
        "targetname": TARGET,
    }
    return config


class Dialog:
    """The REGISTERs of one client: same Call-ID and From tag, rising CSeq."""

    def __init__(self, port: int, aor: str = "alice@example.com") -> None:
        self.port = port
        self.aor = aor
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)
        self.cseq = 0

    def register(self, authorization: str | None = None) -> bytes:
        self.cseq += 1
        lines = [
            "REGISTER sip:example.com SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.aor}>;tag={self.tag};epid=01010101",
            f"To: <sip:{self.aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:127.0.0.1:{self.port};transport=udp>;proxy=replace",
            *([f"Authorization: {authorization}"] if authorization else []),
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ntlm(**params: str) -> str:
    head = f'NTLM qop="auth", realm="{REALM}", targetname="{TARGET}", version=4'
    return head + "".join(f', {name.replace("_", "-")}="{value}"' for name, value in params.items())


class NtlmOnTheWireTests(TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.service = start_director(self.directory, ntlm_config(self.directory))
        self.addCleanup(self.service.stopService)
        self.port = self.service.listener("udp").address[1]
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    @inlineCallbacks
    def exchange(self, data: bytes):  # type: ignore[no-untyped-def]
        self.client.transport.write(data, ("127.0.0.1", self.port))
        response = yield self.client.next()
        assert isinstance(response, Response)
        return response

    @inlineCallbacks
    def handshake(self, password: str = "Secret123", aor: str = "alice@example.com"):  # type: ignore[no-untyped-def]
        dialog = Dialog(self.client.port, aor)
        first = yield self.exchange(dialog.register())
        initiator = DatagramInitiator("alice", "EXAMPLE", password, TARGET)
        self.assertEqual(initiator.first_token(), b"")
        second = yield self.exchange(dialog.register(ntlm(gssapi_data="")))
        challenge = parse_auth_value(second.headers.get("WWW-Authenticate") or "")
        token = initiator.answer(base64.b64decode(challenge.params["gssapi-data"]))
        opaque = challenge.params["opaque"]
        auth = base64.b64encode(token).decode()
        final = yield self.exchange(dialog.register(ntlm(opaque=opaque, gssapi_data=auth)))
        return dialog, initiator, opaque, (first, second, final)

    def assert_signed(self, response: Response, initiator: Any, snum: str) -> None:
        info = parse_auth_value(response.headers.get("Authentication-Info") or "")
        self.assertEqual(
            (info.scheme, info.params["snum"], info.params["qop"]), ("NTLM", snum, "auth")
        )
        fields = SignedFields("NTLM", info.params["srand"], snum, REALM, TARGET)
        text = signature_string(response, fields, 4)
        rspauth = bytes.fromhex(info.params["rspauth"])
        self.assertTrue(initiator.verify(text, rspauth, 100))
        self.assertFalse(initiator.verify(text + b"x", rspauth, 100))

    @inlineCallbacks
    def test_register_completes_the_handshake_and_gets_a_signed_301(self):  # type: ignore[no-untyped-def]
        _, initiator, opaque, (first, second, final) = yield self.handshake()
        self.assertEqual(first.status, 401)
        self.assertEqual(
            first.headers.get("WWW-Authenticate"),
            f'NTLM realm="{REALM}", targetname="{TARGET}", version=4',
        )
        self.assertIsNotNone(first.headers.get("Date"))
        self.assertEqual(second.status, 401)
        self.assertEqual(len(opaque), 8)
        self.assertEqual(final.status, 301)
        self.assertIn("home1.example.com", final.headers.get("Contact") or "")
        self.assertEqual(
            parse_auth_value(final.headers.get("Authentication-Info") or "").params["opaque"],
            opaque,
        )
        self.assert_signed(final, initiator, "1")

    @inlineCallbacks
    def test_signed_request_in_the_association_is_accepted_and_answered_signed(self):  # type: ignore[no-untyped-def]
        dialog, initiator, opaque, _ = yield self.handshake()
        crand = secrets.token_hex(4).upper()
        unsigned = dialog.register(ntlm(opaque=opaque, crand=crand, cnum="1", response="00"))
        from homeredirect.sip.parser import MessageReceived, parse_datagram

        event = parse_datagram(unsigned)
        assert isinstance(event, MessageReceived)
        text = signature_string(event.message, SignedFields("NTLM", crand, "1", REALM, TARGET), 4)
        signature = initiator.sign(text, 100).hex()
        signed = unsigned.replace(b'response="00"', f'response="{signature}"'.encode())
        response = yield self.exchange(signed)
        self.assertEqual(response.status, 301)
        self.assert_signed(response, initiator, "2")
        replayed = yield self.exchange(signed.replace(b"branch=z9hG4bK", b"branch=z9hG4bKr"))
        self.assertEqual(replayed.status, 401)

    @inlineCallbacks
    def test_wrong_password_gets_a_fresh_challenge(self):  # type: ignore[no-untyped-def]
        _, _, _, (_, _, final) = yield self.handshake(password="wrong")
        self.assertEqual(final.status, 401)
        self.assertIsNone(final.headers.get("Authentication-Info"))
        self.assertNotIn("gssapi-data", final.headers.get("WWW-Authenticate") or "")

    @inlineCallbacks
    def test_authenticated_user_may_not_register_someone_else(self):  # type: ignore[no-untyped-def]
        _, _, _, (_, _, final) = yield self.handshake(aor="bob@example.com")
        self.assertEqual(final.status, 403)

    @inlineCallbacks
    def test_opaque_never_issued_gets_a_fresh_challenge(self):  # type: ignore[no-untyped-def]
        dialog = Dialog(self.client.port)
        response = yield self.exchange(
            dialog.register(ntlm(opaque="DEADBEEF", gssapi_data="TlRMTVNTUAADAAAA"))
        )
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_a_403_completing_the_handshake_is_signed(self):  # type: ignore[no-untyped-def]
        """alice's AUTHENTICATE, in a REGISTER for bob, establishes the SA: the 403 for the
        AOR she does not own is its first signed response ([MS-SIPAE] §3.3.5.3)."""
        _, initiator, opaque, (_, _, final) = yield self.handshake(aor="bob@example.com")
        self.assertEqual(final.status, 403)
        info = parse_auth_value(final.headers.get("Authentication-Info") or "NTLM x=y")
        self.assertEqual(info.params.get("opaque"), opaque)
        self.assert_signed(final, initiator, "1")

    @inlineCallbacks
    def test_a_403_to_a_signed_request_in_the_association_is_signed(self):  # type: ignore[no-untyped-def]
        """A correctly signed REGISTER for bob in alice's established SA: 403, signed with
        the SA's next server number."""
        _, initiator, opaque, (_, _, final) = yield self.handshake()
        self.assertEqual(final.status, 301)
        from homeredirect.sip.parser import MessageReceived, parse_datagram

        crand = secrets.token_hex(4).upper()
        bob = Dialog(self.client.port, "bob@example.com")
        unsigned = bob.register(ntlm(opaque=opaque, crand=crand, cnum="1", response="00"))
        event = parse_datagram(unsigned)
        assert isinstance(event, MessageReceived)
        text = signature_string(event.message, SignedFields("NTLM", crand, "1", REALM, TARGET), 4)
        signature = initiator.sign(text, 100).hex()
        response = yield self.exchange(
            unsigned.replace(b'response="00"', f'response="{signature}"'.encode())
        )
        self.assertEqual(response.status, 403)
        self.assert_signed(response, initiator, "2")
