"""The edge role's policies and the ms-edge-proxy-message-trust gate ([MS-SIPRE] §2.2.15)."""

from __future__ import annotations

import pytest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.config.edge import NextHop
from homeredirect.config.schema import HomeServer, Transport
from homeredirect.director.decision import Local, Proxy, Redirect
from homeredirect.director.edge import (
    EDGE_TRUST_HEADER,
    EdgeTrustGate,
    EdgeTrustPolicy,
    edge_mark,
    next_hop_home_servers,
)
from homeredirect.director.interfaces import IRoutingPolicy, PolicyContext
from homeredirect.director.policy import AlwaysProxyPolicy, load_policy
from homeredirect.resolve.interfaces import Assignment
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.message import Message, Request, Response
from homeredirect.sip.parser import MessageReceived, MessageRejected, parse_datagram
from homeredirect.transport.flows import IFlow
from homeredirect.transport.sink import IMessageSink
from tests.unit.fakes import RecordingFlow

CONTEXT = PolicyContext(fqdn="director.example.com", role="director")
EDGE_CONTEXT = PolicyContext(fqdn="edge.example.com", role="edge")
HOME = Assignment("home1.example.com")
MARK = "ms-source-type=InternetUser;ms-ep-fqdn=edge.example.com"


def register(vias: int, *extra: str) -> Request:
    lines = "".join(
        f"Via: SIP/2.0/TLS 192.0.2.{n + 1}:5061;branch=z9hG4bK{n}\r\n" for n in range(vias)
    )
    headers = "".join(f"{line}\r\n" for line in extra)
    data = (
        f"REGISTER sip:example.com SIP/2.0\r\n{lines}From: <sip:alice@example.com>;tag=1\r\n"
        f"To: <sip:alice@example.com>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n{headers}\r\n"
    ).encode()
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


def marked(vias: int) -> Request:
    return register(vias, f"{EDGE_TRUST_HEADER}: {MARK}")


@implementer(IMessageSink)
class RecordingSink:
    def __init__(self) -> None:
        self.received: list[tuple[Message, IFlow]] = []
        self.rejected: list[MessageRejected] = []

    def message_received(self, message: Message, flow: IFlow) -> None:
        self.received.append((message, flow))

    def message_rejected(self, event: MessageRejected, flow: IFlow) -> None:
        self.rejected.append(event)


def tls_flow(identity: str | None) -> RecordingFlow:
    flow = RecordingFlow("TLS", ("192.0.2.50", 40000))
    flow.peer_identity = identity
    return flow


# -- the edge role's default policy ---------------------------------------------------


@pytest.mark.parametrize("vias", [1, 2, 3])
def test_always_proxy_proxies_whatever_the_via_count(vias: int) -> None:
    policy = load_policy("always-proxy", EDGE_CONTEXT)
    assert isinstance(policy, AlwaysProxyPolicy)
    assert policy.decide(register(vias), HOME) == Proxy("home1.example.com")


def test_edge_policy_proxies_to_a_next_hop_assigned_to_everyone() -> None:
    # With [edge] next_hop every user is "assigned" to the next hop.
    policy = load_policy("always-proxy", EDGE_CONTEXT)
    hop = Assignment("director.example.com")
    assert policy.decide(register(1), hop) == Proxy("director.example.com")


# -- edge-trust --------------------------------------------------------------------------


def test_edge_trust_loads_by_name_and_provides_the_interface() -> None:
    policy = load_policy("edge-trust", CONTEXT)
    assert isinstance(policy, EdgeTrustPolicy)
    verifyObject(IRoutingPolicy, policy)


def test_edge_trust_proxies_a_marked_request() -> None:
    policy = EdgeTrustPolicy(CONTEXT)
    assert policy.decide(marked(2), HOME) == Proxy("home1.example.com")


@pytest.mark.parametrize("vias", [1, 2, 4])
def test_edge_trust_redirects_unmarked_requests_whatever_the_via_count(vias: int) -> None:
    policy = EdgeTrustPolicy(CONTEXT)
    assert policy.decide(register(vias), HOME) == Redirect("home1.example.com")


def test_edge_trust_keeps_local_users_local() -> None:
    policy = EdgeTrustPolicy(CONTEXT)
    assert policy.decide(marked(2), Assignment("director.example.com")) == Local()


# -- the gate ----------------------------------------------------------------------------


def gate(mark: str | None = None) -> tuple[EdgeTrustGate, RecordingSink]:
    sink = RecordingSink()
    return EdgeTrustGate(sink, frozenset({"edge.example.com"}), mark=mark), sink


def test_gate_provides_the_sink_interface() -> None:
    verifyObject(IMessageSink, gate()[0])


def test_gate_keeps_the_header_from_a_verified_trusted_edge() -> None:
    gated, sink = gate()
    request = marked(2)
    gated.message_received(request, tls_flow("edge.example.com"))
    ((passed, _),) = sink.received
    assert passed is request
    assert passed.headers.get(EDGE_TRUST_HEADER) == MARK


@pytest.mark.parametrize(
    "flow",
    [
        RecordingFlow("UDP"),  # no identity at all
        RecordingFlow("TCP"),
        tls_flow(None),  # TLS without a client certificate
        tls_flow("home1.example.com"),  # verified, but not an edge we trust
    ],
    ids=["udp", "tcp", "tls-anonymous", "tls-untrusted"],
)
def test_gate_strips_the_header_from_anyone_else(flow: RecordingFlow) -> None:
    gated, sink = gate()
    gated.message_received(marked(1), flow)
    ((passed, passed_flow),) = sink.received
    assert isinstance(passed, Request)
    assert EDGE_TRUST_HEADER not in passed.headers
    assert passed_flow is flow
    # Everything else is the request as it came.
    assert passed.headers == marked(1).headers.without(EDGE_TRUST_HEADER)
    # ...so that a policy behind the gate cannot be fooled.
    assert EdgeTrustPolicy(CONTEXT).decide(passed, HOME) == Redirect("home1.example.com")


def test_gate_passes_unmarked_requests_and_responses_unchanged() -> None:
    gated, sink = gate()
    request = register(1)
    event = parse_datagram(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: x\r\n"
        b"CSeq: 1 REGISTER\r\n" + EDGE_TRUST_HEADER.encode() + b": x\r\n\r\n"
    )
    assert isinstance(event, MessageReceived) and isinstance(event.message, Response)
    gated.message_received(request, RecordingFlow())
    gated.message_received(event.message, RecordingFlow())
    assert [message for message, _ in sink.received] == [request, event.message]
    assert sink.received[0][0] is request


def test_gate_passes_rejections_through() -> None:
    gated, sink = gate()
    event = MessageRejected(SipParseError("bad"), register(1).headers, True, "REGISTER")
    gated.message_rejected(event, RecordingFlow())
    assert sink.rejected == [event]


def test_edge_gate_marks_a_clients_request_replacing_a_forged_mark() -> None:
    gated, sink = gate(mark="edge.example.com")
    gated.message_received(register(1, f"{EDGE_TRUST_HEADER}: ms-source-type=AuthorizedServer"),
                           RecordingFlow())  # fmt: skip
    ((passed, _),) = sink.received
    assert isinstance(passed, Request)
    assert passed.headers.get_all(EDGE_TRUST_HEADER) == [edge_mark("edge.example.com")]


def test_edge_gate_does_not_mark_requests_from_verified_servers() -> None:
    gated, sink = gate(mark="edge.example.com")
    request = register(2)
    gated.message_received(request, tls_flow("director.example.com"))
    assert sink.received[0][0] is request


# -- the next hop as everyone's home server ------------------------------------------------


def test_next_hop_becomes_a_home_server_entry() -> None:
    entries = next_hop_home_servers({}, NextHop("director.example.com", "tls", 5071))
    entry = entries["director.example.com"]
    assert (entry.host, entry.port, entry.transport) == ("director.example.com", 5071, "tls")


def test_next_hop_keeps_the_address_and_backup_of_its_home_servers_table() -> None:
    configured = HomeServer(
        fqdn="director.example.com", host="127.0.0.1", port=9999, backup="director2.example.com"
    )
    entries = next_hop_home_servers(
        {"director.example.com": configured}, NextHop("director.example.com", "udp", 5070)
    )
    entry = entries["director.example.com"]
    assert (entry.host, entry.port, entry.transport) == ("127.0.0.1", 5070, Transport.UDP)
    assert entry.backup == "director2.example.com"
