"""Every refused or failed authentication is logged with where it came from (issue 7:
failed attempts "answered with 403 and logged"; bad input "gets 400 or a fresh 401 and is
logged").

The authenticators log through `homeredirect.logs.FilteredLogger`, which hands an event
to twisted.logger's global publisher only at an enabled level (info and above unless
`[log] level` says otherwise); the `events` fixture enables info and captures what the
publisher receives, so each test sees exactly the events an operator's observer would.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent

from homeredirect import logs
from homeredirect.auth.kerberos import (
    AcceptedTicket,
    BlockingRunner,
    KerberosAcceptor,
    KerberosAssociations,
    KerberosRejected,
    KerberosSipAuthenticator,
    PrincipalMapper,
)
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.outcomes import Challenge, Refused
from homeredirect.auth.request_credentials import TOO_MANY_FAILURES
from homeredirect.auth.sipae import SIPAE_REALM
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Response
from tests.ntlm_initiator import UNAVAILABLE
from tests.unit import test_sipae as sipae
from tests.unit.fakes import RecordingFlow
from tests.unit.test_core_auth import credentials, last, make, request

DIGEST_SOURCE = RecordingFlow().remote[0]  # where test_core_auth's requests come from
NTLM_SOURCE = "192.0.2.1"  # what test_sipae's tests pass as the source
ALICE = "alice@example.com"
KERBEROS_TARGET = "sip/director.example.com"

_T = TypeVar("_T")


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sequence[LogEvent]]:
    """The events published while the test runs, with info enabled (the default level;
    another test may have changed it) and the previous level restored afterwards."""
    monkeypatch.setattr(logs, "_enabled", logs._enabled)
    logs.set_level("info")
    with capturedLogs() as captured:
        yield captured


def logged(events: Sequence[LogEvent], text: str) -> list[LogEvent]:
    """The captured events whose format contains `text`."""
    return [e for e in events if text in (e.get("log_format") or "")]


def one(events: Sequence[LogEvent], text: str, namespace: str, level: Any) -> LogEvent:
    """The one event whose format contains `text`, checked to come from `namespace`'s
    logger at `level`."""
    found = logged(events, text)
    assert len(found) == 1, [e.get("log_format") for e in events]
    event = found[0]
    assert event["log_namespace"] == namespace
    assert event["log_level"] == level
    return event


def assert_names(event: LogEvent, **fields: str) -> None:
    """`event` carries `fields` and its text, as an observer writes it, shows each value."""
    text = formatEvent(event)
    for name, value in fields.items():
        assert event[name] == value
        assert value in text, text


def digest_event(events: Sequence[LogEvent], text: str, level: Any = LogLevel.info) -> LogEvent:
    return one(events, text, "homeredirect.auth.authenticator", level)


def ntlm_event(events: Sequence[LogEvent], text: str, level: Any = LogLevel.info) -> LogEvent:
    return one(events, text, "homeredirect.auth.sipae", level)


# -- Digest, through the director's pipeline -----------------------------------


def refused_digest(tmp_path: Path, authorization: str) -> Response:
    core, _, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(auth=authorization), flow)
    return last(flow)


def test_malformed_digest_authorization_is_logged_with_the_source(
    tmp_path: Path, events: Sequence[LogEvent]
) -> None:
    response = refused_digest(tmp_path, 'Digest realm="example.com", username=')
    assert response.status == 400
    event = digest_event(events, "malformed {header}")
    assert_names(event, source=DIGEST_SOURCE, header="Authorization")


def test_digest_credentials_missing_a_parameter_are_logged_with_the_source(
    tmp_path: Path, events: Sequence[LogEvent]
) -> None:
    without_cnonce = (
        'Digest realm="example.com", username="alice", nonce="x", uri="sip:example.com", '
        'response="0", qop=auth, nc=00000001'
    )
    response = refused_digest(tmp_path, without_cnonce)
    assert response.status == 400
    event = digest_event(events, "bad Digest credentials")
    assert_names(event, source=DIGEST_SOURCE, problem="no cnonce")


def test_digest_nonce_never_issued_gets_a_fresh_401_and_is_logged(
    tmp_path: Path, events: Sequence[LogEvent]
) -> None:
    forged = (
        'Digest realm="example.com", username="alice", nonce="x", uri="sip:example.com", '
        'response="0", qop=auth, nc=00000001, cnonce="c", algorithm=SHA-256'
    )
    response = refused_digest(tmp_path, forged)
    assert response.status == 401
    event = digest_event(events, "nonce or opaque never issued")
    assert_names(event, source=DIGEST_SOURCE)


def test_digest_opaque_never_issued_gets_a_fresh_401_and_is_logged(
    tmp_path: Path, events: Sequence[LogEvent]
) -> None:
    core, _, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    answer = credentials(last(flow))
    forged = answer.replace('opaque="', 'opaque="X', 1)
    assert forged != answer
    core.message_received(request(auth=forged, cseq=2), flow)
    assert last(flow).status == 401
    event = digest_event(events, "nonce or opaque never issued")
    assert_names(event, source=DIGEST_SOURCE)


def test_failed_digest_attempts_are_logged_and_end_in_a_logged_403(
    tmp_path: Path, events: Sequence[LogEvent]
) -> None:
    """Each wrong password is logged with the user and the source; the attempt that
    reaches the limit (10 in `make`) and every one after it get 403, the latter logged as
    refused before any check."""
    core, _, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    statuses: list[int] = []
    for cseq in range(2, 13):
        core.message_received(
            request(auth=credentials(last(flow), password="wrong"), cseq=cseq), flow
        )
        statuses.append(last(flow).status)
        if statuses[-1] == 403:
            # A 403 carries no challenge; a request without credentials still gets one,
            # which the next attempt answers (and is refused without a check).
            core.message_received(request(), flow)
    assert statuses == [401] * 9 + [403, 403]
    failures = logged(events, "authentication failed for {user}")
    assert len(failures) == 10
    for event in failures:
        assert event["log_level"] == LogLevel.info
        assert_names(event, source=DIGEST_SOURCE, user=ALICE)
    event = digest_event(events, "too many failed attempts", LogLevel.warn)
    assert_names(event, source=DIGEST_SOURCE, user=ALICE)


def test_identity_not_owning_the_aor_is_logged_with_both_and_the_source(
    tmp_path: Path, events: Sequence[LogEvent]
) -> None:
    """The 403 for an AOR the authenticated user does not own: the refusal names the
    identity and the AOR, and the request's decision (logged with the remote address)
    says refused."""
    core, _, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(to="bob"), flow)
    core.message_received(request(to="bob", auth=credentials(last(flow)), cseq=2), flow)
    assert last(flow).status == 403
    core_namespace = "homeredirect.director.core"
    event = one(events, "may not act for", core_namespace, LogLevel.info)
    assert_names(event, identity=ALICE, owner="bob@example.com")
    decisions = [e for e in logged(events, "{decision}") if e["decision"] == "refused"]
    assert len(decisions) == 1
    assert decisions[0]["remote"] == flow.remote
    assert decisions[0]["aor"] == "bob@example.com"


# -- NTLM ([MS-SIPAE]), at the authenticator ------------------------------------


def ntlm_outcome(header: str, auth: Any = None, source: str = NTLM_SOURCE) -> Any:
    auth = auth or sipae.authenticator(Clock())
    return sipae.result(auth.authenticate(sipae.request(header), source, False))


def test_malformed_ntlm_authorization_is_logged_with_the_source(
    events: Sequence[LogEvent],
) -> None:
    assert ntlm_outcome('NTLM realm="x", =') == Refused(400, "Malformed Authorization header")
    event = ntlm_event(events, "malformed {header}")
    assert_names(event, source=NTLM_SOURCE, header="Authorization")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("!!not base64!!", id="not-base64"),
        pytest.param(b"NTLMSSP\0\x01\0\0\0" + bytes(28), id="negotiate-not-authenticate"),
        # A Kerberos AP-REQ's GSS framing (RFC 2743 §3.1) in an NTLM header.
        pytest.param(b"\x60\x20\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x02", id="kerberos-token"),
    ],
)
def test_a_bad_ntlm_token_gets_400_and_is_logged_with_the_source(
    events: Sequence[LogEvent], data: str | bytes
) -> None:
    auth = sipae.authenticator(Clock())
    opaque = sipae.token_challenge(auth)["opaque"]
    text = data if isinstance(data, str) else base64.b64encode(data).decode()
    outcome = ntlm_outcome(sipae.NTLM + f', opaque="{opaque}", gssapi-data="{text}"', auth)
    assert outcome == Refused(400, "Malformed NTLM gssapi-data")
    event = ntlm_event(events, "bad NTLM token")
    assert_names(event, source=NTLM_SOURCE)
    assert event["reason"]


def test_an_ntlm_opaque_never_issued_gets_a_fresh_401_and_is_logged(
    events: Sequence[LogEvent],
) -> None:
    outcome = ntlm_outcome(sipae.NTLM + ', opaque="DEADBEEF", gssapi-data="TlRMTVNTUAADAAAA"')
    assert isinstance(outcome, Challenge) and outcome.status == 401
    event = ntlm_event(events, "was never issued or has expired")
    assert_names(event, source=NTLM_SOURCE, opaque="DEADBEEF")


def test_an_ntlm_signature_naming_no_association_is_logged(
    events: Sequence[LogEvent],
) -> None:
    outcome = ntlm_outcome(sipae.NTLM + ', opaque="DEADBEEF", crand="1", cnum="1", response="00"')
    assert isinstance(outcome, Challenge) and outcome.status == 401
    event = ntlm_event(events, "names no security association")
    assert_names(event, source=NTLM_SOURCE, opaque="DEADBEEF")


def wrong_password_handshake(auth: Any, source: str = NTLM_SOURCE) -> Any:
    """One handshake of alice from `source` with a wrong password, answered by a real NTLM
    initiator: the outcome of its AUTHENTICATE."""
    from tests.ntlm_initiator import DatagramInitiator

    challenge = ntlm_outcome(sipae.NTLM + ', gssapi-data=""', auth, source)
    assert isinstance(challenge, Challenge), challenge
    params = parse_auth_value(dict(challenge.headers)["WWW-Authenticate"]).params
    initiator = DatagramInitiator("alice", "EXAMPLE", "wrong", sipae.TARGET)
    assert initiator.first_token() == b""
    token = base64.b64encode(initiator.answer(base64.b64decode(params["gssapi-data"])))
    header = sipae.NTLM + f', opaque="{params["opaque"]}", gssapi-data="{token.decode()}"'
    return ntlm_outcome(header, auth, source)


@pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))
def test_failed_ntlm_attempts_are_logged_and_end_in_a_logged_403(
    events: Sequence[LogEvent],
) -> None:
    """Each wrong password is logged with the user and the source; the attempt that
    reaches the limit (10 in test_sipae's authenticator) gets 403, and so does every later
    request from that address (logged with it) and every later handshake as that user from
    elsewhere (logged with both)."""
    clock = Clock()
    clock.advance(time.time())  # the initiator's NTLMv2 timestamp is the real time
    auth = sipae.authenticator(clock)
    outcomes = [wrong_password_handshake(auth) for _ in range(10)]
    assert [type(o) for o in outcomes[:9]] == [Challenge] * 9
    assert outcomes[9] == TOO_MANY_FAILURES
    failures = logged(events, "NTLM authentication failed for {user}")
    assert len(failures) == 10
    for event in failures:
        assert event["log_level"] == LogLevel.info
        assert_names(event, source=NTLM_SOURCE, user="example\\alice")

    assert ntlm_outcome(sipae.NTLM + ', gssapi-data=""', auth) == TOO_MANY_FAILURES
    event = ntlm_event(events, "too many failed NTLM attempts", LogLevel.warn)
    assert_names(event, source=NTLM_SOURCE)

    elsewhere = "192.0.2.99"
    assert wrong_password_handshake(auth, elsewhere) == TOO_MANY_FAILURES
    event = ntlm_event(events, "refused {source} for {user}", LogLevel.warn)
    assert_names(event, source=elsewhere, user="example\\alice")
    assert len(logged(events, "NTLM authentication failed for {user}")) == 10  # not checked


# -- Kerberos ([MS-SIPAE]), at the authenticator ----------------------------------


class RejectingAcceptor:
    """Stands in for `KerberosAcceptor` (which needs a keytab): refuses every token the
    way it refuses one of another mechanism."""

    def accept(self, token: bytes) -> AcceptedTicket:
        raise KerberosRejected("An unsupported mechanism was requested")


class InlineRunner(BlockingRunner):
    """Runs the acceptor's call at once instead of in a thread pool."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None), cast(Any, None), 8)

    def run(self, call: Callable[[], _T]) -> Deferred[_T] | None:
        return maybeDeferred(call)


def kerberos_outcome(gssapi: str = "", opaque: str | None = None) -> Any:
    clock = Clock()
    auth = KerberosSipAuthenticator(
        required=True,
        acceptor=cast(KerberosAcceptor, RejectingAcceptor()),
        targetname=KERBEROS_TARGET,
        version=4,
        associations=KerberosAssociations(clock, 100, 3600),
        mapper=PrincipalMapper("SIPTEST.EXAMPLE", "example.com"),
        limiter=FailureLimiter(clock, 10, 60),
        clock=clock,
        runner=InlineRunner(),
    )
    header = f'Kerberos qop="auth", realm="{SIPAE_REALM}", targetname="{KERBEROS_TARGET}"'
    header += f', gssapi-data="{gssapi}"' if gssapi else ""
    header += f', opaque="{opaque}"' if opaque else ""
    return sipae.result(auth.authenticate(sipae.request(header), NTLM_SOURCE, False))


def kerberos_event(events: Sequence[LogEvent], text: str) -> LogEvent:
    return one(events, text, "homeredirect.auth.kerberos", LogLevel.info)


def test_kerberos_gssapi_data_that_is_not_base64_gets_400_and_is_logged(
    events: Sequence[LogEvent],
) -> None:
    assert kerberos_outcome("!!not base64!!") == Refused(400, "Malformed Kerberos gssapi-data")
    assert_names(kerberos_event(events, "bad Kerberos gssapi-data"), source=NTLM_SOURCE)


def test_a_token_the_kerberos_acceptor_refuses_gets_a_fresh_401_and_is_logged(
    events: Sequence[LogEvent],
) -> None:
    ntlm = base64.b64encode(b"NTLMSSP\0\x03\0\0\0" + bytes(64)).decode()
    outcome = kerberos_outcome(ntlm)
    assert isinstance(outcome, Challenge) and outcome.status == 401
    event = kerberos_event(events, "Kerberos token from {source} refused")
    assert_names(event, source=NTLM_SOURCE, reason="An unsupported mechanism was requested")


def test_a_kerberos_opaque_never_issued_gets_a_fresh_401_and_is_logged(
    events: Sequence[LogEvent],
) -> None:
    outcome = kerberos_outcome(opaque="DEADBEEF")
    assert isinstance(outcome, Challenge) and outcome.status == 401
    event = kerberos_event(events, "names no security association")
    assert_names(event, source=NTLM_SOURCE, opaque="DEADBEEF")
