"""[MS-SIPAE] NTLM as a request authenticator: challenges, bad input, the bounded and
expiring security-association table, and Digest offered alongside."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.ntlm.acceptor import NtlmAcceptor, ServerNames
from homeredirect.auth.ntlm.accounts import AccountNames, NtHashChecker
from homeredirect.auth.ntlm.keys import nt_hash
from homeredirect.auth.outcomes import AuthOutcome, Challenge, Refused
from homeredirect.auth.sipae import NtlmSipAuthenticator, SchemeAuthenticators, SecurityAssociations
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Request
from homeredirect.sip.parser import MessageReceived, parse_datagram

TARGET = "director.example.com"
NTLM = f'NTLM qop="auth", realm="SIP Communications Service", targetname="{TARGET}", version=4'


def request(authorization: str | None = None) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKabc",
        "From: <sip:alice@example.com>;tag=1",
        "To: <sip:alice@example.com>",
        "Call-ID: c1",
        "CSeq: 1 REGISTER",
        *([f"Authorization: {authorization}"] if authorization else []),
        "Content-Length: 0",
    ]
    event = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


def authenticator(clock: Clock, capacity: int = 100) -> NtlmSipAuthenticator:
    checker = NtHashChecker(
        {AddressOfRecord("alice", "example.com"): nt_hash("Secret123")},
        AccountNames("EXAMPLE", "example.com"),
    )
    names = ServerNames("EXAMPLE", "DIRECTOR", TARGET, "example.com")
    return NtlmSipAuthenticator(
        required=True,
        acceptor=NtlmAcceptor(checker, names, clock),
        targetname=TARGET,
        version=4,
        associations=SecurityAssociations(clock, capacity=capacity, lifetime=3600),
        limiter=FailureLimiter(clock, 10, 60),
        clock=clock,
    )


def result(deferred: Deferred[AuthOutcome]) -> AuthOutcome:
    outcomes: list[Any] = []
    deferred.addBoth(outcomes.append)
    assert len(outcomes) == 1
    return outcomes[0]  # type: ignore[no-any-return]


def token_challenge(auth: NtlmSipAuthenticator) -> dict[str, str]:
    outcome = result(auth.authenticate(request(NTLM + ', gssapi-data=""'), "192.0.2.1", False))
    assert isinstance(outcome, Challenge) and outcome.status == 401
    return dict(parse_auth_value(dict(outcome.headers)["WWW-Authenticate"]).params)


def test_authenticator_provides_the_interface() -> None:
    auth = authenticator(Clock())
    assert verifyObject(IRequestAuthenticator, auth)
    assert verifyObject(IRequestAuthenticator, SchemeAuthenticators([("ntlm", auth)], True))


def test_request_without_credentials_gets_the_ms_sipae_challenge() -> None:
    outcome = result(authenticator(Clock()).authenticate(request(), "192.0.2.1", False))
    assert isinstance(outcome, Challenge) and outcome.status == 401
    assert dict(outcome.headers)["WWW-Authenticate"] == (
        f'NTLM realm="SIP Communications Service", targetname="{TARGET}", version=4'
    )
    assert dict(outcome.headers)["Date"] == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_proxy_challenge_is_a_407_with_proxy_authenticate() -> None:
    outcome = result(authenticator(Clock()).authenticate(request(), "192.0.2.1", True))
    assert isinstance(outcome, Challenge) and outcome.status == 407
    assert "Proxy-Authenticate" in dict(outcome.headers)


def test_credentials_for_another_targetname_are_as_good_as_none() -> None:
    other = NTLM.replace(TARGET, "other.example.com") + ', gssapi-data=""'
    outcome = result(authenticator(Clock()).authenticate(request(other), "192.0.2.1", False))
    assert isinstance(outcome, Challenge)
    assert "gssapi-data" not in dict(outcome.headers)["WWW-Authenticate"]


def test_empty_gssapi_data_gets_a_challenge_token_and_an_opaque() -> None:
    params = token_challenge(authenticator(Clock()))
    assert len(params["opaque"]) == 8
    assert base64.b64decode(params["gssapi-data"]).startswith(b"NTLMSSP\0\x02\0\0\0")


def test_malformed_authorization_is_refused_with_400() -> None:
    outcome = result(
        authenticator(Clock()).authenticate(request('NTLM realm="x", ='), "192.0.2.1", False)
    )
    assert outcome == Refused(400, "Malformed Authorization header")


def test_gssapi_data_that_is_not_base64_is_refused_with_400() -> None:
    auth = authenticator(Clock())
    opaque = token_challenge(auth)["opaque"]
    bad = NTLM + f', opaque="{opaque}", gssapi-data="!!not base64!!"'
    outcome = result(auth.authenticate(request(bad), "192.0.2.1", False))
    assert isinstance(outcome, Refused) and outcome.status == 400


def test_a_token_of_the_wrong_type_is_refused_with_400() -> None:
    auth = authenticator(Clock())
    opaque = token_challenge(auth)["opaque"]
    negotiate = base64.b64encode(b"NTLMSSP\0\x01\0\0\0" + b"\0" * 28).decode()
    bad = NTLM + f', opaque="{opaque}", gssapi-data="{negotiate}"'
    outcome = result(auth.authenticate(request(bad), "192.0.2.1", False))
    assert isinstance(outcome, Refused) and outcome.status == 400


def test_an_authenticate_with_fields_outside_the_message_is_refused_with_400() -> None:
    auth = authenticator(Clock())
    opaque = token_challenge(auth)["opaque"]
    header = bytearray(b"NTLMSSP\0\x03\0\0\0" + b"\0" * 52)
    header[20:28] = (200).to_bytes(2, "little") * 2 + (64).to_bytes(4, "little")
    token = base64.b64encode(bytes(header)).decode()
    bad = NTLM + f', opaque="{opaque}", gssapi-data="{token}"'
    outcome = result(auth.authenticate(request(bad), "192.0.2.1", False))
    assert isinstance(outcome, Refused) and outcome.status == 400


def test_an_opaque_never_issued_gets_a_fresh_challenge() -> None:
    bad = NTLM + ', opaque="DEADBEEF", gssapi-data="TlRMTVNTUAADAAAA"'
    outcome = result(authenticator(Clock()).authenticate(request(bad), "192.0.2.1", False))
    assert isinstance(outcome, Challenge)
    assert "gssapi-data" not in dict(outcome.headers)["WWW-Authenticate"]


def test_a_signed_request_naming_no_association_gets_a_fresh_challenge() -> None:
    bad = NTLM + ', opaque="DEADBEEF", crand="1", cnum="1", response="0100"'
    outcome = result(authenticator(Clock()).authenticate(request(bad), "192.0.2.1", False))
    assert isinstance(outcome, Challenge)


def test_a_pending_association_expires() -> None:
    clock = Clock()
    associations = SecurityAssociations(clock, capacity=10, lifetime=3600)
    auth = authenticator(clock)
    auth._associations = associations
    opaque = token_challenge(auth)["opaque"]
    assert associations.pending.get(opaque) is not None
    clock.advance(61)
    assert associations.pending.get(opaque) is None
    assert len(associations.pending) == 0


def test_the_association_table_is_bounded() -> None:
    clock = Clock()
    auth = authenticator(clock, capacity=5)
    opaques = [token_challenge(auth)["opaque"] for _ in range(20)]
    pending = auth._associations.pending
    assert len(pending) == 5
    assert pending.get(opaques[0]) is None
    assert pending.get(opaques[-1]) is not None


def test_without_credentials_both_schemes_are_challenged_in_order() -> None:
    @implementer(IRequestAuthenticator)
    class Fixed:
        required = True

        def authenticate(self, request: Request, source: str, proxy: bool) -> Deferred[Any]:
            return Deferred.fromCoroutine(self._challenge())

        async def _challenge(self) -> AuthOutcome:
            return Challenge(401, (("WWW-Authenticate", 'Digest realm="example.com"'),))

    combined = SchemeAuthenticators([("ntlm", authenticator(Clock())), ("digest", Fixed())], True)
    outcome = result(combined.authenticate(request(), "192.0.2.1", False))
    assert isinstance(outcome, Challenge)
    values = [v for n, v in outcome.headers if n == "WWW-Authenticate"]
    assert [v.split(" ", 1)[0] for v in values] == ["NTLM", "Digest"]
    assert [n for n, _ in outcome.headers].count("Date") == 1


def test_ntlm_credentials_go_to_the_ntlm_authenticator_only() -> None:
    combined = SchemeAuthenticators([("ntlm", authenticator(Clock()))], True)
    outcome = result(combined.authenticate(request(NTLM + ', gssapi-data=""'), "192.0.2.1", False))
    assert isinstance(outcome, Challenge)
    assert "gssapi-data" in dict(outcome.headers)["WWW-Authenticate"]
