"""A complete published exchange: Office Communicator 2007 R2 registering at Office
Communications Server 2007 R2 with NTLMv2, as recorded in pidgin-sipe's
`src/core/sip-sec-ntlm-tests.c` (user COSMO\\User, password "Pa$$word").

Our acceptor completes the server's side of it from the CHALLENGE's ServerChallenge and
the client's AUTHENTICATE, verifies the client's `response=` on the REGISTER, and
reproduces the server's `rspauth` on the 200 byte for byte.
"""

from __future__ import annotations

import base64
import struct

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock

from homeredirect.auth.ntlm.acceptor import (
    CHALLENGE_FLAGS,
    EstablishedContext,
    NtlmAcceptor,
    PendingContext,
    ServerNames,
)
from homeredirect.auth.ntlm.accounts import AccountNames, NtHashChecker
from homeredirect.auth.ntlm.keys import nt_hash
from homeredirect.auth.ntlm.messages import ChallengeMessage, parse_authenticate
from homeredirect.auth.signature import SignedFields, signature_string
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram

SERVER_CHALLENGE = bytes.fromhex("DD1BAAF4E7E218D1")
AUTHENTICATE_B64 = (
    "TlRMTVNTUAADAAAAGAAYAHIAAADGAMYAigAAAAoACgBIAAAACAAIAFIAAAAYABgAWgAAABAAEABQAQAAVYKYYgUC"
    "zg4AAAAPQwBPAFMATQBPAFUAcwBlAHIAQwBPAFMATQBPAC0ATwBDAFMALQBSADIAoeku/k4Hi/fFwASazGFmwtau"
    "h1yw/apBjcDIAK527KYG0rn769BHMQEBAAAAAAAAWVGaFye5ygHWrodcsP2qQQAAAAACAAoAQwBPAFMATQBPAAEA"
    "GABDAE8AUwBNAE8ALQBPAEMAUwAtAFIAMgAEABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAMAMABjAG8AcwBtAG8A"
    "LQBvAGMAcwAtAHIAMgAuAGMAbwBzAG0AbwAuAGwAbwBjAGEAbAAFABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAAA"
    "AAAAAAAAMctznhyoCkmFkeiueXEV5A=="
)
# The client's NTLMv2 timestamp, 2010-03-01: the clock must be near it.
CLIENT_TIME = (struct.unpack("<Q", bytes.fromhex("59519A1727B9CA01"))[0] / 1e7) - 11_644_473_600

REQUEST = (
    b"REGISTER sip:cosmo.local SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.168.172.6:12723\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15\r\n"
    b"To: <sip:user@cosmo.local>\r\n"
    b"Call-ID: 4037df9284354df39065195bd57a4b14\r\n"
    b"CSeq: 3 REGISTER\r\n"
    b'Proxy-Authorization: NTLM qop="auth", realm="SIP Communications Service", '
    b'opaque="2BDBAC9D", targetname="cosmo-ocs-r2.cosmo.local", version=4, '
    b'gssapi-data="' + AUTHENTICATE_B64.encode() + b'", crand="13317733", cnum="1", '
    b'response="0100000029618e9651b65a7764000000"\r\n'
    b"Content-Length: 0\r\n\r\n"
)
REQUEST_SIGNED = (
    b"<NTLM><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local>"
    b"<4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52>"
    b"<sip:user@cosmo.local><><><><>"
)
RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b'Authentication-Info: NTLM rspauth="01000000E615438A917661BE64000000", srand="9616454F", '
    b'snum="1", opaque="2BDBAC9D", qop="auth", targetname="cosmo-ocs-r2.cosmo.local", '
    b'realm="SIP Communications Service"\r\n'
    b'From: "User"<sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15\r\n'
    b"To: <sip:user@cosmo.local>;tag=5E61CCD925D17E043D9A74835A88F664\r\n"
    b"Call-ID: 4037df9284354df39065195bd57a4b14\r\n"
    b"CSeq: 3 REGISTER\r\n"
    b"Via: SIP/2.0/TLS 192.168.172.6:12723;ms-received-port=12723;ms-received-cid=2600\r\n"
    b"Expires: 7200\r\n"
    b"Content-Length: 0\r\n\r\n"
)
RESPONSE_SIGNED = (
    b"<NTLM><9616454F><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local>"
    b"<4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52>"
    b"<sip:user@cosmo.local><5E61CCD925D17E043D9A74835A88F664><><><7200><200>"
)
# pidgin-sipe's v4 string test: a Symbian client's 180 with P-Asserted-Identity.
RINGING = (
    b"SIP/2.0 180 Ringing\r\n"
    b'Authentication-Info: NTLM rspauth="010000003EA8D688BA51D5CD64000000", srand="1B6D47A1", '
    b'snum="11", opaque="357E6F72", qop="auth", targetname="LOC-COMPANYT-FE03.COMPANY.COM", '
    b'realm="SIP Communications Service"\r\n'
    b"Via: SIP/2.0/tls 192.168.44.10:50230;received=10.117.245.254\r\n"
    b'FROM: "Sender"<sip:sender@company.com>;tag=2420628112;epid=54392f1bbf01\r\n'
    b'TO: "recipient"<sip:recipient@company.com>;tag=7aee15546a;epid=3102EB8BD1\r\n'
    b"CSEQ: 1 INVITE\r\n"
    b"CALL-ID: 41CEg82ECa0AC8i3DD7mE673t9CF4b19DAxF780x\r\n"
    b"CONTENT-LENGTH: 0\r\n"
    b'P-ASSERTED-IDENTITY: "recipient"<SIP:recipient@company.com>\r\n\r\n'
)
RINGING_SIGNED = (
    b"<NTLM><1B6D47A1><11><SIP Communications Service><LOC-COMPANYT-FE03.COMPANY.COM>"
    b"<41CEg82ECa0AC8i3DD7mE673t9CF4b19DAxF780x><1><INVITE><sip:sender@company.com>"
    b"<2420628112><sip:recipient@company.com><7aee15546a><SIP:recipient@company.com><><><180>"
)


def parse(data: bytes) -> Request | Response:
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived)
    return event.message


def fields_of(value: str) -> SignedFields:
    auth = parse_auth_value(value)
    rand = auth.get("crand") or auth.get("srand") or ""
    num = auth.get("cnum") or auth.get("snum") or ""
    return SignedFields(auth.scheme, rand, num, auth.params["realm"], auth.params["targetname"])


def establish(password: str = "Pa$$word") -> EstablishedContext | Exception:
    clock = Clock()
    clock.advance(CLIENT_TIME + 60)
    checker = NtHashChecker(
        {AddressOfRecord("user", "cosmo.local"): nt_hash(password)},
        AccountNames(netbios_domain="COSMO", sip_domain="cosmo.local"),
    )
    names = ServerNames("COSMO", "COSMO-OCS-R2", "cosmo-ocs-r2.cosmo.local", "cosmo.local")
    acceptor = NtlmAcceptor(checker, names, clock)
    challenge = ChallengeMessage(CHALLENGE_FLAGS, SERVER_CHALLENGE, "", b"\0\0\0\0")
    pending = PendingContext(challenge, challenge.encode(), clock.seconds())
    message = parse_authenticate(base64.b64decode(AUTHENTICATE_B64))
    outcome: list[EstablishedContext | Exception] = []
    acceptor.accept(pending, message).addCallbacks(
        outcome.append, lambda f: outcome.append(f.value)
    )
    return outcome[0]


def test_request_signature_string_matches_pidgin_sipe() -> None:
    request = parse(REQUEST)
    assert isinstance(request, Request)
    fields = fields_of(request.headers.get("Proxy-Authorization") or "")
    assert signature_string(request, fields, 4) == REQUEST_SIGNED


def test_response_signature_string_matches_pidgin_sipe() -> None:
    response = parse(RESPONSE)
    assert isinstance(response, Response)
    fields = fields_of(response.headers.get("Authentication-Info") or "")
    assert signature_string(response, fields, 4) == RESPONSE_SIGNED


def test_version_4_string_has_to_uri_and_asserted_identity() -> None:
    response = parse(RINGING)
    assert isinstance(response, Response)
    fields = fields_of(response.headers.get("Authentication-Info") or "")
    assert signature_string(response, fields, 4) == RINGING_SIGNED


def test_version_2_string_leaves_out_to_uri_and_asserted_identity() -> None:
    response = parse(RINGING)
    assert isinstance(response, Response)
    fields = fields_of(response.headers.get("Authentication-Info") or "")
    assert signature_string(response, fields, 2) == (
        b"<NTLM><1B6D47A1><11><SIP Communications Service><LOC-COMPANYT-FE03.COMPANY.COM>"
        b"<41CEg82ECa0AC8i3DD7mE673t9CF4b19DAxF780x><1><INVITE><sip:sender@company.com>"
        b"<2420628112><7aee15546a><><180>"
    )


def test_acceptor_completes_the_recorded_authenticate() -> None:
    context = establish()
    assert isinstance(context, EstablishedContext)
    assert context.account == AddressOfRecord("user", "cosmo.local")
    assert (context.domain, context.user) == ("COSMO", "User")


def test_acceptor_verifies_the_clients_recorded_signature() -> None:
    context = establish()
    assert isinstance(context, EstablishedContext)
    signature = bytes.fromhex("0100000029618e9651b65a7764000000")
    assert context.verify(REQUEST_SIGNED, 100, signature)
    assert not context.verify(REQUEST_SIGNED.replace(b"<1>", b"<2>", 1), 100, signature)


def test_acceptor_reproduces_the_servers_recorded_rspauth() -> None:
    context = establish()
    assert isinstance(context, EstablishedContext)
    assert context.sign(RESPONSE_SIGNED, 100).hex().upper() == "01000000E615438A917661BE64000000"


def test_acceptor_refuses_the_recorded_authenticate_with_another_password() -> None:
    assert isinstance(establish("Password"), UnauthorizedLogin)
