"""P-Asserted-Identity between our servers (RFC 3325): believed only from trusted peers over
mutual TLS, removed from everything else, sent only over mutual TLS (issue "Authentication
before redirect": "A proxied REGISTER carries the fact of authentication to the home server
only over a mutually authenticated server link")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.auth.asserted_identity import (
    AssertedIdentityGate,
    asserted_identity,
    identity_uri,
    with_asserted_identity,
)
from homeredirect.auth.authenticator import DigestAuthenticator
from homeredirect.auth.cred import DigestChecker, SipIdentityRealm
from homeredirect.auth.credentials_file import read_credentials
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.digest_client import answer_challenge
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceIssuer
from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config
from homeredirect.director.core import DirectorCore, DirectorSettings
from homeredirect.director.interfaces import PolicyContext
from homeredirect.director.policy import ViaCountPolicy
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import Target
from homeredirect.proxy.stateful import ProxySettings
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.service import _identity_asserters
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Message, Request, Response
from homeredirect.sip.parser import MessageReceived, MessageRejected, parse_datagram
from homeredirect.transaction.server import ServerTransactionTable
from homeredirect.transport.flows import Address
from homeredirect.transport.sink import IMessageSink
from tests.unit.fakes import RecordingFlow, RecordingNetwork, TableResolver, stateful_proxy

DIRECTOR = "director.example.com"
HOME = ("192.0.2.50", 5061)
TABLE = {"alice@example.com": "home1.example.com", "bob@example.com": "home1.example.com"}


def parse(data: str) -> Request:
    event = parse_datagram(data.encode())
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


def request(
    to: str = "alice",
    *,
    extra: str = "",
    vias: int = 1,
    cseq: int = 1,
    auth: str | None = None,
) -> Request:
    via_lines = "".join(
        f"Via: SIP/2.0/UDP 192.0.2.{10 + n}:5099;branch=z9hG4bK{cseq}v{n}\r\n" for n in range(vias)
    )
    header = f"Authorization: {auth}\r\n" if auth else ""
    return parse(
        f"REGISTER sip:example.com SIP/2.0\r\n{via_lines}Max-Forwards: 70\r\n"
        f"From: <sip:{to}@example.com>;tag=f\r\nTo: <sip:{to}@example.com>\r\n"
        f"Call-ID: c@x\r\nCSeq: {cseq} REGISTER\r\n{extra}{header}Content-Length: 0\r\n\r\n"
    )


def flow(peer_identity: str | None, transport: str = "TLS") -> RecordingFlow:
    recording = RecordingFlow(transport, ("192.0.2.30", 40000))
    recording.peer_identity = peer_identity
    return recording


@implementer(IMessageSink)
class Collect:
    def __init__(self) -> None:
        self.received: list[Message] = []
        self.rejected: list[MessageRejected] = []

    def message_received(self, message: Message, flow: Any) -> None:
        self.received.append(message)

    def message_rejected(self, event: MessageRejected, flow: Any) -> None:
        self.rejected.append(event)


IDENTITY_HEADERS = (
    "P-Asserted-Identity: <sip:bob@example.com>\r\nP-Preferred-Identity: <sip:bob@example.com>\r\n"
)


# -- the gate ---------------------------------------------------------------------------


def test_gate_is_a_message_sink() -> None:
    assert verifyObject(IMessageSink, AssertedIdentityGate(Collect(), frozenset()))


@pytest.mark.parametrize(
    "peer", [None, "intruder.example.com"], ids=["no verified identity", "untrusted peer"]
)
def test_gate_removes_identities_from_requests_of_untrusted_flows(peer: str | None) -> None:
    sink = Collect()
    gate = AssertedIdentityGate(sink, frozenset({DIRECTOR}))
    gate.message_received(request(extra=IDENTITY_HEADERS), flow(peer))
    (passed,) = sink.received
    assert "P-Asserted-Identity" not in passed.headers
    assert "P-Preferred-Identity" not in passed.headers
    assert passed.headers.get("From") == "<sip:alice@example.com>;tag=f"


def test_gate_keeps_identities_from_a_trusted_peer() -> None:
    sink = Collect()
    original = request(extra=IDENTITY_HEADERS)
    AssertedIdentityGate(sink, frozenset({"Director.Example.com"})).message_received(
        original, flow(DIRECTOR)
    )
    assert sink.received == [original]


def test_gate_trusts_no_one_without_trusted_peers() -> None:
    sink = Collect()
    AssertedIdentityGate(sink, frozenset()).message_received(
        request(extra=IDENTITY_HEADERS), flow(DIRECTOR)
    )
    assert "P-Asserted-Identity" not in sink.received[0].headers


def test_gate_passes_responses_and_requests_without_identities_untouched() -> None:
    sink = Collect()
    gate = AssertedIdentityGate(sink, frozenset())
    plain = request()
    event = parse_datagram(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        b"P-Asserted-Identity: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\n"
        b"To: <sip:a@example.com>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(event, MessageReceived) and isinstance(event.message, Response)
    gate.message_received(plain, flow(None))
    gate.message_received(event.message, flow(None))
    assert sink.received[0] is plain and sink.received[1] is event.message


# -- reading and writing the header -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<sip:alice@example.com>", "alice@example.com"),
        ('"Alice" <sips:alice@Example.COM>', "alice@example.com"),
        ("<tel:+15551234>, <sip:alice@example.com>", "alice@example.com"),
        ("sip:alice@example.com", "alice@example.com"),
    ],
)
def test_asserted_identity_is_the_sip_uri(value: str, expected: str) -> None:
    identity = asserted_identity(request(extra=f"P-Asserted-Identity: {value}\r\n"))
    assert str(identity) == expected


@pytest.mark.parametrize(
    "value",
    [
        "<sip:alice@example.com>, <sip:bob@example.com>",
        "<tel:+15551234>",
        "<sip:example.com>",
        "<sip:alice@example.com",
    ],
    ids=["two SIP URIs", "tel only", "no user", "malformed"],
)
def test_unusable_assertions_count_as_none(value: str) -> None:
    assert asserted_identity(request(extra=f"P-Asserted-Identity: {value}\r\n")) is None


def test_with_asserted_identity_replaces_whatever_the_request_carried() -> None:
    copy = with_asserted_identity(
        request(extra=IDENTITY_HEADERS), AddressOfRecord("alice", "example.com")
    )
    assert copy.headers.get_all("P-Asserted-Identity") == ["<sip:alice@example.com>"]
    assert "P-Preferred-Identity" not in copy.headers
    stripped = with_asserted_identity(request(extra=IDENTITY_HEADERS), None)
    assert "P-Asserted-Identity" not in stripped.headers
    plain = request()
    assert with_asserted_identity(plain, None) is plain


def test_identity_uri_escapes_what_a_user_part_cannot_hold() -> None:
    assert identity_uri(AddressOfRecord("a%b>c", "example.com")) == "<sip:a%25b%3Ec@example.com>"
    assert identity_uri(AddressOfRecord("+1;x=y", "example.com")) == "<sip:+1;x=y@example.com>"
    odd = AddressOfRecord("a%b>c", "example.com")
    header = f"P-Asserted-Identity: {identity_uri(odd)}\r\n"
    assert asserted_identity(request(extra=header)) == odd


# -- the pipeline: a home that believes a trusted director, a director that asserts ------


class TlsNetwork(RecordingNetwork):
    """A network with a TLS listener as well."""

    def local_via(self, transport: str) -> Address:
        return ("192.0.2.1", 5061 if transport == "TLS" else 5060)


class Server:
    """A core behind the gate, with Digest required, on a Clock; users alice and bob."""

    def __init__(
        self, tmp_path: Path, *, transport: str = "tls", assert_identity: bool = True
    ) -> None:
        self.clock = Clock()
        users = tmp_path / "users.csv"
        users.write_text("user,password\nalice@example.com,wonderland\nbob@example.com,b\n")
        accounts = read_credentials(users)
        self.network = TlsNetwork()
        self.resolver = TableResolver(TABLE)
        self.core = DirectorCore(
            settings=DirectorSettings(domains=frozenset({"example.com"})),
            resolver=self.resolver,
            policy=ViaCountPolicy(PolicyContext(fqdn=DIRECTOR)),
            transactions=ServerTransactionTable(self.clock),
            responses=ResponseFactory("test", iter(f"tag{n}" for n in range(999)).__next__),
            proxy=stateful_proxy(
                self.network, self.clock, ProxySettings(assert_identity=assert_identity)
            ),
            targets=lambda fqdn: (Target(fqdn, HOME[0], HOME[1], transport), None),
            clock=self.clock,
            authenticator=DigestAuthenticator(
                required=True,
                portal=Portal(SipIdentityRealm(), [DigestChecker(lambda: accounts)]),
                realm="example.com",
                algorithms=[DigestAlgorithm.SHA_256],
                nonces=NonceIssuer(b"s" * 32, "example.com", self.clock),
                limiter=FailureLimiter(self.clock, 10, 60),
                clock=self.clock,
            ),
        )
        self.gate = AssertedIdentityGate(self.core, frozenset({DIRECTOR}))

    def forwarded(self) -> list[Request]:
        parsed = [parse(data.decode()) for _, _, data, _ in self.network.sent]
        return parsed

    def authenticate(self, via: RecordingFlow, vias: int = 2, extra: str = "") -> None:
        """REGISTER, 401, REGISTER with alice's credentials."""
        self.gate.message_received(request(vias=vias, extra=extra), via)
        challenge = last(via)
        assert challenge.status == 401
        answer = answer_challenge(
            parse_auth_value(challenge.headers.get("WWW-Authenticate") or "", "WWW-Authenticate"),
            method="REGISTER",
            uri="sip:example.com",
            username="alice",
            password="wonderland",
        )
        self.gate.message_received(request(vias=vias, cseq=2, auth=answer, extra=extra), via)


def last(recording: RecordingFlow) -> Response:
    message = recording.messages()[-1]
    assert isinstance(message, Response)
    return message


def test_trusted_assertion_is_authenticated_without_a_challenge(tmp_path: Path) -> None:
    server = Server(tmp_path)
    director = flow(DIRECTOR)
    server.gate.message_received(
        request(extra="P-Asserted-Identity: <sip:alice@example.com>\r\n"), director
    )
    assert last(director).status == 301
    assert [str(aor) for aor in server.resolver.lookups] == ["alice@example.com"]


def test_asserted_identity_must_own_the_aor(tmp_path: Path) -> None:
    server = Server(tmp_path)
    director = flow(DIRECTOR)
    server.gate.message_received(
        request(extra="P-Asserted-Identity: <sip:bob@example.com>\r\n"), director
    )
    assert last(director).status == 403
    assert server.resolver.lookups == []


@pytest.mark.parametrize("peer", [None, "intruder.example.com"], ids=["client", "untrusted server"])
def test_forged_assertion_is_challenged(tmp_path: Path, peer: str | None) -> None:
    server = Server(tmp_path)
    client = flow(peer)
    server.gate.message_received(
        request(extra="P-Asserted-Identity: <sip:alice@example.com>\r\n"), client
    )
    assert last(client).status == 401
    assert server.resolver.lookups == []


def test_unusable_trusted_assertion_falls_back_to_a_challenge(tmp_path: Path) -> None:
    server = Server(tmp_path)
    director = flow(DIRECTOR)
    server.gate.message_received(request(extra="P-Asserted-Identity: <tel:+1555>\r\n"), director)
    assert last(director).status == 401


def test_authenticated_request_proxied_over_mutual_tls_asserts_the_identity(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)
    server.authenticate(flow(None, "UDP"))
    (copy,) = server.forwarded()
    assert server.network.sent[0][0] == "TLS"
    assert copy.headers.get_all("P-Asserted-Identity") == ["<sip:alice@example.com>"]


def test_a_clients_own_assertion_is_replaced_by_ours(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.authenticate(flow(None, "UDP"), extra=IDENTITY_HEADERS)
    (copy,) = server.forwarded()
    assert copy.headers.get_all("P-Asserted-Identity") == ["<sip:alice@example.com>"]
    assert "P-Preferred-Identity" not in copy.headers


@pytest.mark.parametrize(
    ("transport", "assert_identity"),
    [("udp", True), ("tcp", True), ("tls", False)],
    ids=["over UDP", "over TCP", "TLS without a client certificate"],
)
def test_no_assertion_without_mutual_tls(
    tmp_path: Path, transport: str, assert_identity: bool
) -> None:
    server = Server(tmp_path, transport=transport, assert_identity=assert_identity)
    server.authenticate(flow(None, "UDP"), extra=IDENTITY_HEADERS)
    (copy,) = server.forwarded()
    assert "P-Asserted-Identity" not in copy.headers
    assert "P-Preferred-Identity" not in copy.headers


def test_an_identity_a_trusted_edge_asserted_is_asserted_onwards(tmp_path: Path) -> None:
    server = Server(tmp_path)
    director = flow(DIRECTOR)
    # Authenticated by a trusted edge's assertion: proxied on with our own assertion.
    server.gate.message_received(
        request(vias=2, extra="P-Asserted-Identity: <sip:alice@example.com>\r\n"), director
    )
    (copy,) = server.forwarded()
    assert copy.headers.get_all("P-Asserted-Identity") == ["<sip:alice@example.com>"]


# -- configuration ----------------------------------------------------------------------


def config(tmp_path: Path, listen: dict[str, Any] | None = None, **auth: Any) -> Any:
    (tmp_path / "assignments.csv").write_text("")
    (tmp_path / "users.csv").write_text("user,password\nalice@example.com,wonderland\n")
    data = {
        "server": {"fqdn": DIRECTOR, "domains": ["example.com"]},
        "listen": [listen or {"transport": "udp"}],
        "assignments": {"path": "assignments.csv"},
        "auth": {"realm": "example.com", "credentials": "users.csv", **auth},
    }
    return parse_config(data, "director.toml", tmp_path)


def test_trusted_peers_are_lowercased_and_believed(tmp_path: Path) -> None:
    loaded = config(tmp_path, trusted_peers=["Director.Example.com", "edge.example.com"])
    assert loaded.auth.trusted_peers == ("director.example.com", "edge.example.com")
    assert _identity_asserters(loaded) == {"director.example.com", "edge.example.com"}


def test_trusted_peers_default_to_the_tls_listeners_allowed_peers(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("")
    tls = {
        "transport": "tls",
        "certificate": "x.pem",
        "private_key": "x.pem",
        "ca": "x.pem",
        "require_client_certificate": True,
        "allowed_peers": ["director.example.com"],
    }
    assert _identity_asserters(config(tmp_path, tls)) == {"director.example.com"}
    assert _identity_asserters(config(tmp_path, tls, trusted_peers=[])) == frozenset()


def test_no_one_is_trusted_without_auth(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    assert loaded.auth.trusted_peers is None
    assert (
        _identity_asserters(
            parse_config(
                {
                    "server": {"fqdn": DIRECTOR, "domains": ["example.com"]},
                    "listen": [{"transport": "udp"}],
                    "assignments": {"path": "assignments.csv"},
                },
                "director.toml",
                tmp_path,
            )
        )
        == frozenset()
    )


def test_trusted_peers_must_be_hostnames(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trusted_peers"):
        config(tmp_path, trusted_peers=["not a host"])
    with pytest.raises(ConfigError, match="trusted_peers"):
        config(tmp_path, trusted_peers="director.example.com")
