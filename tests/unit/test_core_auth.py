"""Authentication in the request pipeline: nothing is looked up before the client has
authenticated, and the identity must own the AOR (issue "Authentication before redirect")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from homeredirect.auth.authenticator import DigestAuthenticator
from homeredirect.auth.cred import DigestChecker, SipIdentityRealm
from homeredirect.auth.credentials_file import read_credentials
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.digest_client import answer_challenge
from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceIssuer
from homeredirect.director.core import DirectorCore, DirectorSettings
from homeredirect.director.interfaces import PolicyContext
from homeredirect.director.policy import ViaCountPolicy
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import Target
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.transaction.server import ServerTransactionTable
from tests.unit.fakes import RecordingFlow, RecordingNetwork, TableResolver, stateful_proxy

TABLE = {"alice@example.com": "home1.example.com", "bob@example.com": "home2.example.com"}
# The server transaction table of each core `make` builds, by the core's clock.
TABLES: dict[Clock, ServerTransactionTable] = {}


def make(
    tmp_path: Path, required: bool = True, clock: Clock | None = None
) -> tuple[DirectorCore, TableResolver, Any]:
    clock = clock or Clock()
    users = tmp_path / "users.csv"
    users.write_text("user,password\nalice@example.com,wonderland\n")
    accounts = read_credentials(users)
    authenticator = DigestAuthenticator(
        required=required,
        portal=Portal(SipIdentityRealm(), [DigestChecker(lambda: accounts)]),
        realm="example.com",
        algorithms=[DigestAlgorithm.SHA_256],
        nonces=NonceIssuer(b"s" * 32, "example.com", clock),
        limiter=FailureLimiter(clock, 10, 60),
        clock=clock,
    )
    assert verifyObject(IRequestAuthenticator, authenticator)
    resolver = TableResolver(TABLE)
    core = DirectorCore(
        settings=DirectorSettings(domains=frozenset({"example.com"})),
        resolver=resolver,
        policy=ViaCountPolicy(PolicyContext(fqdn="director.example.com")),
        transactions=TABLES.setdefault(clock, ServerTransactionTable(clock)),
        responses=ResponseFactory("test", iter(f"tag{n}" for n in range(99)).__next__),
        proxy=stateful_proxy(RecordingNetwork(), clock),
        targets=lambda fqdn: (Target(fqdn, fqdn, 5061, "tls"), None),
        clock=clock,
        authenticator=authenticator,
    )
    return core, resolver, clock


def request(
    to: str = "alice", auth: str | None = None, cseq: int = 1, method: str = "REGISTER"
) -> Request:
    header = f"Authorization: {auth}\r\n" if auth else ""
    data = (
        f"{method} sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bK{cseq}x\r\nMax-Forwards: 70\r\n"
        f"From: <sip:{to}@example.com>;tag=f\r\nTo: <sip:{to}@example.com>\r\n"
        f"Call-ID: c@x\r\nCSeq: {cseq} {method}\r\n{header}Content-Length: 0\r\n\r\n"
    ).encode()
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


def last(flow: RecordingFlow) -> Response:
    message = flow.messages()[-1]
    assert isinstance(message, Response)
    return message


def credentials(challenge: Response, user: str = "alice", password: str = "wonderland") -> str:
    return answer_challenge(
        parse_auth_value(challenge.headers.get("WWW-Authenticate") or "", "WWW-Authenticate"),
        method="REGISTER",
        uri="sip:example.com",
        username=user,
        password=password,
    )


def test_unauthenticated_register_is_challenged_before_any_lookup(tmp_path: Path) -> None:
    core, resolver, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert (last(flow).status, last(flow).reason) == (401, "Unauthorized")
    assert resolver.lookups == []


def test_authenticated_register_is_looked_up_and_redirected(tmp_path: Path) -> None:
    core, resolver, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    core.message_received(request(auth=credentials(last(flow)), cseq=2), flow)
    assert last(flow).status == 301
    assert [str(aor) for aor in resolver.lookups] == ["alice@example.com"]


def test_authenticated_identity_must_own_the_to_aor(tmp_path: Path) -> None:
    core, resolver, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(to="bob"), flow)
    core.message_received(request(to="bob", auth=credentials(last(flow)), cseq=2), flow)
    assert last(flow).status == 403
    assert resolver.lookups == []


def test_optional_auth_lets_requests_without_credentials_through(tmp_path: Path) -> None:
    core, _, _ = make(tmp_path, required=False)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert last(flow).status == 301
    bad = (
        'Digest realm="example.com", username="alice", nonce="x", uri="sip:example.com", '
        'response="0", qop=auth, nc=00000001, cnonce="c"'
    )
    core.message_received(request(auth=bad, cseq=2), flow)
    assert last(flow).status == 401


def test_cancel_is_never_challenged(tmp_path: Path) -> None:
    core, _, _ = make(tmp_path)
    flow = RecordingFlow()
    core.message_received(request(method="CANCEL"), flow)
    assert last(flow).status == 481


def test_challenge_without_credentials_keeps_no_transaction(tmp_path: Path) -> None:
    """RFC 3261 §8.2.7: the first challenge is sent statelessly; a retransmission of the
    request is a new request and gets a fresh challenge (another nonce)."""
    clock = Clock()
    core, _, _ = make(tmp_path, clock=clock)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert len(TABLES[clock]) == 0
    core.message_received(request(), flow)
    first, second = flow.messages()
    assert isinstance(first, Response) and isinstance(second, Response)
    assert (first.status, second.status) == (401, 401)
    assert first.headers.get("WWW-Authenticate") != second.headers.get("WWW-Authenticate")


def test_challenge_without_credentials_never_starts_a_transaction(tmp_path: Path) -> None:
    """Nothing is made for a stateless answer, not even a transaction ended at once."""
    clock = Clock()
    core, _, _ = make(tmp_path, clock=clock)
    table = TABLES[clock]
    started: list[Request] = []
    create = table.create

    def counting_create(request: Request, flow: Any, destination: Any) -> Any:
        started.append(request)
        return create(request, flow, destination)

    table.create = counting_create  # type: ignore[method-assign]
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert last(flow).status == 401
    assert started == []
    core.message_received(request(method="OPTIONS", to="alice"), flow)  # answered statefully
    assert len(started) == 1


def test_challenge_to_refused_credentials_stays_in_its_transaction(tmp_path: Path) -> None:
    """A challenge that answers credentials (here a nonce we never issued) is kept for
    Timer J, so that a retransmission gets the same 401 back."""
    clock = Clock()
    core, _, _ = make(tmp_path, clock=clock)
    flow = RecordingFlow()
    forged = (
        'Digest realm="example.com", username="alice", nonce="x", uri="sip:example.com", '
        'response="0", qop=auth, nc=00000001, cnonce="c", algorithm=SHA-256'
    )
    core.message_received(request(auth=forged), flow)
    assert last(flow).status == 401
    assert len(TABLES[clock]) == 1
    core.message_received(request(auth=forged), flow)
    first, second = flow.messages()
    assert isinstance(first, Response) and isinstance(second, Response)
    assert first.headers.get("WWW-Authenticate") == second.headers.get("WWW-Authenticate")
