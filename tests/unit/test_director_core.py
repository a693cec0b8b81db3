"""The request pipeline, driven with a Clock and recording flows: decisions,
error mapping and response construction (RFC 3261 §8.2.6, §16.11, §17.2)."""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from homeredirect.config.load import parse_config
from homeredirect.director.core import DirectorCore, DirectorSettings
from homeredirect.director.decision import Reject
from homeredirect.director.interfaces import IRoutingPolicy, PolicyContext
from homeredirect.director.policy import ViaCountPolicy
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import HomeServerTargets, Target
from homeredirect.logs import set_level
from homeredirect.resolve.interfaces import Assignment, IAssignmentResolver
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, MessageRejected, parse_datagram
from homeredirect.sip.serialize import serialize
from homeredirect.transaction.server import ServerTransactionTable
from homeredirect.transport.flows import IFlow
from homeredirect.transport.interfaces import ISipNetwork
from tests.unit.fakes import RecordingFlow, RecordingNetwork, TableResolver, stateful_proxy

TABLE = {"alice@example.com": "home1.example.com", "dir@example.com": "director.example.com"}


def make_core(  # type: ignore[no-untyped-def]
    resolver: Any = None, policy: Any = None, network: Any = None, tmp: Any = None, **settings: Any
):
    clock = Clock()
    config = (
        parse_config(
            {
                "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
                "listen": [{"transport": "udp", "port": 0}],
                "home_servers": {
                    "home1.example.com": {"backup": "home2.example.com", "port": 5071}
                },
                "assignments": {"backend": "file", "path": "a.csv"},
            },
            "unit.toml",
            tmp,
        )
        if tmp is not None
        else None
    )
    core = DirectorCore(
        settings=DirectorSettings(domains=frozenset({"example.com"}), **settings),
        resolver=resolver or TableResolver(TABLE),
        policy=policy or ViaCountPolicy(PolicyContext(fqdn="director.example.com")),
        transactions=ServerTransactionTable(clock),
        responses=ResponseFactory("test", iter(f"tag{n}" for n in range(1000)).__next__),
        proxy=stateful_proxy(network or RecordingNetwork(), clock),
        targets=HomeServerTargets(config) if config else _default_targets,
        clock=clock,
    )
    return core, clock


def _default_targets(fqdn: str):  # type: ignore[no-untyped-def]
    backup = (
        Target("home2.example.com", "home2.example.com", 5061, "tls")
        if fqdn == "home1.example.com"
        else None
    )
    return Target(fqdn, fqdn, 5061, "tls"), backup


def request(
    aor: str = "alice@example.com",
    vias: int = 1,
    method: str = "REGISTER",
    extra: str = "",
    mf: int = 70,
) -> Request:
    via_lines = "".join(
        f"Via: SIP/2.0/UDP 192.0.2.{10 + n}:5099;branch=z9hG4bK{n}abc;rport\r\n"
        for n in range(vias)
    )
    data = (
        f"{method} sip:example.com SIP/2.0\r\n{via_lines}Max-Forwards: {mf}\r\n"
        f"From: <sip:{aor}>;tag=f1\r\nTo: <sip:{aor}>\r\nCall-ID: c1@x\r\n"
        f"CSeq: 7 {method}\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived)
    assert isinstance(event.message, Request)
    return event.message


def only_response(flow: RecordingFlow) -> Response:
    (message,) = flow.messages()
    assert isinstance(message, Response)
    return message


def test_interfaces_are_provided() -> None:
    verifyObject(IAssignmentResolver, TableResolver({}))
    verifyObject(IRoutingPolicy, ViaCountPolicy(PolicyContext(fqdn="d.example.com")))
    verifyObject(IFlow, RecordingFlow())
    verifyObject(ISipNetwork, RecordingNetwork())


def _redirect(core: DirectorCore, flow: RecordingFlow, first: int, count: int) -> None:
    for n in range(first, first + count):
        req = request(extra=f"X-N: {n}\r\n")
        data = serialize(req).replace(b"branch=z9hG4bK0abc", b"branch=z9hG4bK%dabc" % n)
        event = parse_datagram(data)
        assert isinstance(event, MessageReceived)
        core.message_received(event.message, flow)


def test_a_completed_redirect_keeps_no_callable_of_its_own() -> None:
    """A completed transaction lives for Timer J (32 s over UDP, RFC 3261 §17.2.2), 64,000
    of them at 2,000 REGISTER/s, every object of which the full cyclic collection walks
    (homeredirect.collector): each is its transaction and Timer J entry, with the flow
    it answers on (one per connection, as here; one per datagram over UDP), and no
    closure made to send on it."""
    resolver = TableResolver(TABLE)
    core, clock = make_core(resolver)
    flow = RecordingFlow("TCP")
    _redirect(core, flow, 0, 50)  # warms up what the pipeline caches
    clock.advance(1)  # Timer J is zero over TCP
    count = 400
    set_level("error")  # the logging system keeps recent events
    try:
        gc.collect()
        before = len(gc.get_objects())
        _redirect(core, flow, 50, count)
    finally:
        set_level("info")
    flow.sent.clear()
    resolver.lookups.clear()
    gc.collect()
    added = len(gc.get_objects()) - before
    assert added <= 2 * count + 10


def test_redirect_copies_identifying_headers_and_adds_contacts() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    core.message_received(request(), flow)
    response = only_response(flow)
    assert (response.status, response.reason) == (301, "Redirect request to Home Server")
    assert response.headers.get("Call-ID") == "c1@x"
    assert response.headers.get("CSeq") == "7 REGISTER"
    assert response.headers.get("From") == "<sip:alice@example.com>;tag=f1"
    assert response.headers.get("To") == "<sip:alice@example.com>;tag=tag0"
    assert response.headers.get_all("Contact") == [
        "<sip:home1.example.com:5061;transport=tls>;q=0.7",
        "<sip:home2.example.com:5061;transport=tls>;q=0.3",
    ]
    # RFC 3581 §4: with rport, received is added even when it equals sent-by, and the
    # reply goes to the source port.
    assert response.headers.get("Via") == (
        "SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bK0abc;rport=5099;received=192.0.2.10"
    )
    assert flow.sent[0][1] == ("192.0.2.10", 5099)
    assert flow.sent[0][0].endswith(b"Content-Length: 0\r\n\r\n")


def test_redirect_status_and_reason_are_configurable() -> None:
    core, _ = make_core(redirect_status=302, redirect_reason="Moved Temporarily")
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert (only_response(flow).status, only_response(flow).reason) == (302, "Moved Temporarily")


def test_contacts_come_from_home_server_config(tmp_path: Any) -> None:
    (tmp_path / "a.csv").write_text("user,home_server\n")
    core, _ = make_core(tmp=tmp_path)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert only_response(flow).headers.get_all("Contact") == [
        "<sip:home1.example.com:5071;transport=tls>;q=0.7",
        "<sip:home2.example.com:5061;transport=tls>;q=0.3",
    ]


def test_received_is_added_when_source_differs_from_sent_by() -> None:
    core, _ = make_core()
    flow = RecordingFlow(remote=("198.51.100.7", 40000))
    core.message_received(request(), flow)
    assert only_response(flow).headers.get("Via") == (
        "SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bK0abc;rport=40000;received=198.51.100.7"
    )
    assert flow.sent[0][1] == ("198.51.100.7", 40000)


def test_unknown_user_gets_404_without_contact() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    core.message_received(request("nobody@example.com"), flow)
    response = only_response(flow)
    assert response.status == 404
    assert "Contact" not in response.headers


def test_foreign_domain_gets_configured_status_without_lookup() -> None:
    resolver = TableResolver(TABLE)
    core, _ = make_core(resolver=resolver, unknown_domain_status=403)
    flow = RecordingFlow()
    core.message_received(request("alice@other.example.org"), flow)
    assert only_response(flow).status == 403
    assert resolver.lookups == []


def test_directory_outage_gets_503_with_retry_after() -> None:
    core, _ = make_core(resolver=TableResolver(TABLE, down=True), retry_after=42)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    response = only_response(flow)
    assert response.status == 503
    assert response.headers.get("Retry-After") == "42"


def test_resolver_that_raises_gets_503_not_a_traceback() -> None:
    class Broken(TableResolver):
        def resolve(self, aor: Any) -> Any:
            raise RuntimeError("bug")

    core, _ = make_core(resolver=Broken({}))
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert only_response(flow).status == 503


def test_retransmission_is_answered_from_the_transaction_without_a_second_lookup() -> None:
    resolver = TableResolver(TABLE)
    core, _ = make_core(resolver=resolver)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    core.message_received(request(), flow)
    assert len(resolver.lookups) == 1
    assert len(flow.sent) == 2
    assert flow.sent[0][0] == flow.sent[1][0]


def test_retransmission_while_lookup_pending_is_absorbed() -> None:
    resolver = TableResolver(TABLE, hold=True)
    core, _ = make_core(resolver=resolver)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    core.message_received(request(), flow)
    assert flow.sent == [] and len(resolver.lookups) == 1
    resolver.pending[0].callback(Assignment("home1.example.com"))
    assert only_response(flow).status == 301


def test_transaction_is_forgotten_after_timer_j() -> None:
    resolver = TableResolver(TABLE)
    core, clock = make_core(resolver=resolver)
    flow = RecordingFlow()
    core.message_received(request(), flow)
    clock.advance(64 * 0.5 + 1)
    core.message_received(request(), flow)
    assert len(resolver.lookups) == 2


def test_two_vias_are_proxied_with_our_via_and_decremented_max_forwards() -> None:
    network = RecordingNetwork()
    core, _ = make_core(
        network=network, policy=ViaCountPolicy(PolicyContext(fqdn="director.example.com"))
    )
    flow = RecordingFlow()
    # home1 is reached over TLS by default and the fake network has no TLS: use an UDP home.
    core._targets = lambda fqdn: (Target(fqdn, "192.0.2.50", 5060, "udp"), None)  # type: ignore[method-assign]
    core.message_received(request(vias=2), flow)
    assert flow.sent == []
    ((transport, destination, data, server_name),) = network.sent
    assert (transport, destination, server_name) == (
        "UDP",
        ("192.0.2.50", 5060),
        "home1.example.com",
    )
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived)
    forwarded = event.message
    assert isinstance(forwarded, Request)
    assert [v.host for v in forwarded.vias] == ["192.0.2.1", "192.0.2.10", "192.0.2.11"]
    assert forwarded.vias[0].branch.startswith("z9hG4bK")
    assert forwarded.vias[1].rport == "5099"
    assert forwarded.max_forwards == 69


def test_proxy_without_transport_to_home_gets_502() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    core.message_received(request(vias=2), flow)
    assert only_response(flow).status == 502


def test_max_forwards_zero_gets_483_when_proxying() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    core.message_received(request(vias=2, mf=0), flow)
    assert only_response(flow).status == 483


def test_loop_is_detected_by_our_own_branch() -> None:
    network = RecordingNetwork()
    core, _ = make_core(network=network)
    core._targets = lambda fqdn: (Target(fqdn, "192.0.2.50", 5060, "udp"), None)  # type: ignore[method-assign]
    core.message_received(request(vias=2), RecordingFlow())
    looped_event = parse_datagram(network.sent[0][2])
    assert isinstance(looped_event, MessageReceived) and isinstance(looped_event.message, Request)
    # The same request, coming back to us with our Via on top of the original stack.
    flow = RecordingFlow(remote=("192.0.2.50", 5060))
    core.message_received(looped_event.message, flow)
    assert (only_response(flow).status, only_response(flow).reason) == (482, "Loop Detected")
    assert len(network.sent) == 1


def test_local_assignment_without_registrar_gets_500() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    core.message_received(request("dir@example.com"), flow)
    assert only_response(flow).status == 500


def test_reject_decision_is_answered() -> None:
    class RejectAll:
        name = "reject"

        def decide(self, request: Request, assignment: Any) -> Reject:
            return Reject(403, "Not today")

    core, _ = make_core(policy=RejectAll())
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert (only_response(flow).status, only_response(flow).reason) == (403, "Not today")


def test_policy_that_raises_gets_500() -> None:
    class Broken:
        name = "broken"

        def decide(self, request: Request, assignment: Any) -> Any:
            raise ValueError("bug")

    core, _ = make_core(policy=Broken())
    flow = RecordingFlow()
    core.message_received(request(), flow)
    assert only_response(flow).status == 500


def test_options_gets_200_and_other_methods_405_with_allow() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    core.message_received(request(method="OPTIONS"), flow)
    core.message_received(request(method="SUBSCRIBE"), flow)
    ok, not_allowed = flow.messages()
    assert isinstance(ok, Response) and ok.status == 200
    assert isinstance(not_allowed, Response) and not_allowed.status == 405
    assert "REGISTER" in (not_allowed.headers.get("Allow") or "")


def test_invite_rejection_and_its_ack_are_absorbed() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    invite = request(method="INVITE")
    core.message_received(invite, flow)
    final = only_response(flow)
    assert final.status == 405
    ack = (
        "ACK sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bK0abc;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f1\r\n"
        f"To: {final.headers.get('To')}\r\n"
        "Call-ID: c1@x\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    event = parse_datagram(ack)
    assert isinstance(event, MessageReceived)
    core.message_received(event.message, flow)
    assert len(flow.sent) == 1


def test_malformed_request_gets_its_status_and_malformed_response_is_dropped() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    bad = request().headers  # a readable header block
    core.message_rejected(
        MessageRejected(SipParseError("bad CSeq 'x'"), bad, True, "REGISTER"),
        flow,
    )
    core.message_rejected(
        MessageRejected(SipParseError("bad"), bad, False),
        flow,
    )
    response = only_response(flow)
    assert (response.status, response.reason) == (400, "bad CSeq 'x'")


def test_core_provides_the_message_sink_interface() -> None:
    from homeredirect.transport.sink import IMessageSink

    core, _ = make_core()
    verifyObject(IMessageSink, core)


def test_each_decision_is_one_structured_event_with_aor_decision_target_latency() -> None:
    from twisted.logger import LogEvent, globalLogPublisher

    from homeredirect.logs import set_level

    set_level("info")
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        resolver = TableResolver(TABLE, hold=True)
        core, clock = make_core(resolver=resolver)
        core.message_received(request(), RecordingFlow())
        clock.advance(0.25)
        resolver.pending[0].callback(Assignment("home1.example.com"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    (decision,) = [e for e in events if e.get("log_namespace") == "homeredirect.director.core"]
    assert decision["aor"] == "alice@example.com"
    assert decision["decision"] == "redirect"
    assert decision["target"] == "home1.example.com"
    assert decision["latency_ms"] == 250.0
    assert decision["policy"] == "via-count"


def test_redirect_with_a_required_extension_gets_420_listing_it() -> None:
    core, _ = make_core()
    flow = RecordingFlow()
    core.message_received(request(extra="Require: foo, bar\r\n"), flow)
    response = only_response(flow)
    assert (response.status, response.reason) == (420, "Bad Extension")
    assert response.headers.get("Unsupported") == "foo, bar"


def test_proxied_request_checks_proxy_require_not_require() -> None:
    network = RecordingNetwork()
    core, _ = make_core(network=network)
    core._targets = lambda fqdn: (Target(fqdn, "192.0.2.50", 5060, "udp"), None)  # type: ignore[method-assign]
    flow = RecordingFlow()
    core.message_received(request(vias=2, extra="Require: path\r\n"), flow)
    assert flow.sent == [] and len(network.sent) == 1  # Require is for the home server
    core, _ = make_core(network=network)  # a new request, not a retransmission
    core.message_received(request(vias=2, extra="Proxy-Require: sec-agree\r\n"), flow)
    response = only_response(flow)
    assert response.status == 420
    assert response.headers.get("Unsupported") == "sec-agree"
