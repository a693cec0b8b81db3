"""The transaction-stateful proxy through the director's pipeline, on a Clock with a
recording network: forwarding (RFC 3261 §16.6), the response context (§16.7), CANCEL
(§16.10), Path (RFC 3327), Record-Route and loose routing (§16.4), faults and leaks."""

from __future__ import annotations

import gc
import hashlib
from typing import Any

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from homeredirect.director.core import DirectorCore, DirectorSettings
from homeredirect.director.interfaces import PolicyContext
from homeredirect.director.policy import AlwaysProxyPolicy, ViaCountPolicy
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import Target
from homeredirect.proxy.channel import NetworkChannel
from homeredirect.proxy.routing import BranchScheme
from homeredirect.proxy.stateful import ProxySettings, ResponseContext, Upstream
from homeredirect.sip.message import Message, Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.sip.serialize import serialize
from homeredirect.transaction.interfaces import IClientChannel, IClientTransactionUser
from homeredirect.transaction.server import ServerTransactionTable
from homeredirect.transport.interfaces import ISipNetwork
from tests.unit.fakes import RecordingFlow, RecordingNetwork, TableResolver, stateful_proxy

HOME = ("192.0.2.50", 5060)
TABLE = {"alice@example.com": "home1.example.com", "bob@example.com": "home1.example.com"}


class Director:
    """A director core proxying to HOME over *transport*, on a Clock."""

    def __init__(
        self, transport: str = "udp", policy: Any = None, settings: ProxySettings | None = None
    ) -> None:
        self.clock = Clock()
        self.network = RecordingNetwork()
        self.transactions = ServerTransactionTable(self.clock)
        self.proxy = stateful_proxy(self.network, self.clock, settings)
        self.core = DirectorCore(
            settings=DirectorSettings(domains=frozenset({"example.com"})),
            resolver=TableResolver(TABLE),
            policy=policy or ViaCountPolicy(PolicyContext(fqdn="director.example.com")),
            transactions=self.transactions,
            responses=ResponseFactory("test", iter(f"tag{n}" for n in range(100_000)).__next__),
            proxy=self.proxy,
            targets=lambda fqdn: (Target(fqdn, HOME[0], HOME[1], transport), None),
            clock=self.clock,
            # As on a home server: requests to users go through the policy too.
            local_handler=lambda local: local.respond(500),
        )

    def receive(self, data: str | bytes, flow: RecordingFlow | None = None) -> RecordingFlow:
        flow = flow or RecordingFlow()
        event = parse_datagram(data.encode() if isinstance(data, str) else data)
        assert isinstance(event, MessageReceived), event
        self.core.message_received(event.message, flow)
        return flow

    def sent(self) -> list[Request]:
        requests = []
        for _, _, data, _ in self.network.sent:
            event = parse_datagram(data)
            assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
            requests.append(event.message)
        return requests

    def answer(self, forwarded: Request, status: int, reason: str = "X", to_tag: str = "h") -> None:
        """The home server's response to *forwarded*, arriving from HOME."""
        self.receive(response_to(forwarded, status, reason, to_tag), RecordingFlow(remote=HOME))

    def idle(self) -> bool:
        return len(self.transactions) == 0 and len(self.proxy.clients) == 0 and len(self.proxy) == 0


def request(
    method: str = "REGISTER",
    aor: str = "alice@example.com",
    vias: int = 2,
    extra: str = "",
    branch: str = "z9hG4bKc1",
    call_id: str = "c1@x",
    to_tag: str = "",
    uri: str = "sip:example.com",
) -> str:
    via_lines = "".join(
        f"Via: SIP/2.0/UDP 192.0.2.{10 + n}:5099;branch={branch}{n};rport\r\n" for n in range(vias)
    )
    to = f"<sip:{aor}>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {uri} SIP/2.0\r\n{via_lines}Max-Forwards: 70\r\n"
        f"From: <sip:{aor}>;tag=f1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 7 {method}\r\nContact: <sip:alice@192.0.2.10:5099>\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    )


def response_to(forwarded: Request, status: int, reason: str, to_tag: str = "h") -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    for name, value in forwarded.headers:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            lines.append(f"{name}: {value}")
        elif name == "To":
            lines.append(f"To: {value};tag={to_tag}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def responses(flow: RecordingFlow) -> list[Response]:
    return [m for m in flow.messages() if isinstance(m, Response)]


def statuses(flow: RecordingFlow) -> list[int]:
    return [m.status for m in responses(flow)]


def test_the_parts_provide_their_interfaces() -> None:
    clock = Clock()
    network = RecordingNetwork()
    proxy = stateful_proxy(network, clock)
    verifyObject(ISipNetwork, network)
    verifyObject(IClientChannel, NetworkChannel(network, Target("h", "h", 5060, "udp")))
    upstream = Upstream(
        _parse(request()),
        "",
        ServerTransactionTable(clock).create(_parse(request()), RecordingFlow(), None),
        lambda data: None,
    )
    verifyObject(IClientTransactionUser, ResponseContext(proxy, upstream))


def _parse(data: str) -> Request:
    event = parse_datagram(data.encode())
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


def test_a_proxied_register_gets_our_via_and_the_homes_200_once() -> None:
    director = Director()
    flow = director.receive(request())
    (forwarded,) = director.sent()
    assert director.network.sent[0][:2] == ("UDP", HOME)
    assert len(forwarded.vias) == 3 and forwarded.vias[0].host == "192.0.2.1"
    assert forwarded.vias[0].branch.startswith("z9hG4bK")
    assert forwarded.max_forwards == 69
    assert "Path" not in forwarded.headers  # no Supported: path
    director.answer(forwarded, 200, "OK")
    director.answer(forwarded, 200, "OK")  # a retransmission is absorbed
    (ok,) = responses(flow)
    assert (ok.status, len(ok.vias)) == (200, 2)
    # A retransmitted REGISTER is answered from the server transaction, not forwarded.
    director.receive(request(), flow)
    assert statuses(flow) == [200, 200] and len(director.network.sent) == 1
    director.clock.advance(64 * 0.5)
    assert director.idle()


def test_path_is_added_when_the_client_supports_it_with_ob_for_outbound() -> None:
    director = Director()
    director.receive(request(extra="Supported: path, outbound\r\n"))
    (forwarded,) = director.sent()
    assert forwarded.headers.get_all("Path") == ["<sip:192.0.2.1:5060;transport=udp;lr;ob>"]
    always = Director(settings=ProxySettings(path="always"))
    always.receive(request())
    assert always.sent()[0].headers.get_all("Path") == ["<sip:192.0.2.1:5060;transport=udp;lr>"]
    never = Director(settings=ProxySettings(path="never"))
    never.receive(request(extra="Supported: path\r\n"))
    assert "Path" not in never.sent()[0].headers


def test_a_home_that_never_answers_costs_a_408_with_retry_after() -> None:
    director = Director()
    flow = director.receive(request())
    director.clock.pump([0.5] * 70)
    assert len(director.network.sent) == 11  # the request and its Timer E retransmissions
    (timeout,) = responses(flow)
    assert (timeout.status, timeout.headers.get("Retry-After")) == (408, "30")
    assert timeout.to_addr.tag  # answered as a UAS would (RFC 3261 §8.2.6.2)
    director.clock.advance(64 * 0.5)
    assert director.idle()


def test_a_lost_connection_costs_a_503_at_once() -> None:
    director = Director(transport="tcp")
    flow = director.receive(request())
    director.network.lose("TCP", HOME)
    (unavailable,) = responses(flow)
    assert (unavailable.status, unavailable.headers.get("Retry-After")) == (503, "30")
    assert director.network.watchers == {} and len(director.proxy.clients) == 0
    director.clock.advance(64 * 0.5)  # Timer J of the server transaction (UDP upstream)
    assert director.idle()


def test_an_answered_branch_stops_watching_its_connection() -> None:
    director = Director(transport="tcp")
    director.receive(request())
    assert list(director.network.watchers) == [("TCP", HOME)]
    director.answer(director.sent()[0], 404, "Not Found")
    assert director.network.watchers == {}
    director.clock.advance(64 * 0.5)
    assert director.idle()


def test_provisional_responses_but_100_go_upstream_and_a_failure_ends_the_invite() -> None:
    director = Director(policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")))
    flow = director.receive(request("INVITE", uri="sip:alice@example.com"))
    (invite,) = director.sent()
    director.answer(invite, 100, "Trying")
    director.answer(invite, 180, "Ringing")
    director.answer(invite, 486, "Busy Here")
    assert statuses(flow) == [180, 486]
    # The ACK for the 486 is absorbed by the server transaction (hop by hop).
    ack = request("ACK", uri="sip:alice@example.com", to_tag="h").replace(
        "CSeq: 7 ACK", "CSeq: 7 ACK"
    )
    director.receive(ack, flow)
    assert [r.method for r in director.sent()] == ["INVITE", "ACK"]  # ours, to the home
    director.clock.advance(64 * 0.5)
    assert director.idle()


def test_cancel_is_answered_200_and_the_487_goes_upstream() -> None:
    director = Director(policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")))
    caller = director.receive(request("INVITE", uri="sip:alice@example.com"))
    (invite,) = director.sent()
    director.answer(invite, 180, "Ringing")
    cancelling = director.receive(request("CANCEL", uri="sip:alice@example.com"))
    assert statuses(cancelling) == [200]
    cancel = director.sent()[1]
    assert (cancel.method, cancel.vias[0].branch) == ("CANCEL", invite.vias[0].branch)
    director.answer(invite, 487, "Request Terminated")
    assert statuses(caller) == [180, 487]
    # A retransmitted CANCEL is answered by its own server transaction.
    director.receive(request("CANCEL", uri="sip:alice@example.com"), cancelling)
    assert statuses(cancelling) == [200, 200]


def test_a_cancel_for_no_invite_gets_481() -> None:
    director = Director()
    assert statuses(director.receive(request("CANCEL", uri="sip:alice@example.com"))) == [481]


def test_the_best_response_is_a_6xx_else_the_lowest_class() -> None:
    for answers, best in (((404, 603), 603), ((500, 486), 486), ((503, 408), 408)):
        clock = Clock()
        network = RecordingNetwork()
        proxy = stateful_proxy(network, clock)
        original = _parse(request("INVITE", uri="sip:alice@example.com"))
        flow = RecordingFlow()
        upstream = Upstream(
            original,
            original.headers.get_all("Via")[0],
            ServerTransactionTable(clock).create(original, flow, None),
            flow.send,
        )
        context = ResponseContext(proxy, upstream)
        copies = [
            _parse(request("INVITE", uri="sip:alice@example.com", branch=f"z9hG4bKfork{n}"))
            for n in range(2)
        ]
        for copy in copies:
            context.start_branch(copy, Target("h", "192.0.2.50", 5060, "udp"))
        for copy, status in zip(copies, answers, strict=True):
            proxy.response_received(_response(response_to(copy, status, "X")))
        (final,) = [_response(data) for data, _ in flow.sent]
        assert final.status == best


def _response(data: bytes) -> Response:
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived) and isinstance(event.message, Response)
    return event.message


def test_a_forged_route_on_a_register_does_not_steer_the_forward() -> None:
    director = Director()
    director.receive(request(extra="Route: <sip:127.0.0.99:5060;lr>\r\n"))
    assert [destination for _, destination, _, _ in director.network.sent] == [HOME]
    assert "Route" not in director.sent()[0].headers


def test_a_client_that_connects_directly_cannot_put_in_a_path() -> None:
    director = Director(policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")))
    director.receive(request(vias=1, extra="Path: <sip:127.0.0.99;lr>\r\nSupported: path\r\n"))
    (forwarded,) = director.sent()
    assert forwarded.headers.get_all("Path") == ["<sip:192.0.2.1:5060;transport=udp;lr>"]


def test_record_route_lets_the_dialogs_requests_through_and_nothing_else() -> None:
    director = Director(
        policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")),
        settings=ProxySettings(record_route=True),
    )
    director.receive(request("INVITE", uri="sip:alice@example.com", call_id="d1"))
    (invite,) = director.sent()
    (record_route,) = invite.headers.get_all("Record-Route")
    assert record_route.startswith("<sip:192.0.2.1:5060;transport=udp;lr;hr=")
    route = record_route
    # An in-dialog BYE with our Route is loose-routed to its Request-URI (§16.4, §16.6).
    director.receive(
        request(
            "BYE",
            uri="sip:alice@192.0.2.77:5099",
            call_id="d1",
            to_tag="a1",
            branch="z9hG4bKbye",
            extra=f"Route: {route}\r\n",
        )
    )
    assert director.network.sent[-1][:2] == ("UDP", ("192.0.2.77", 5099))
    bye = director.sent()[-1]
    assert bye.method == "BYE" and "Route" not in bye.headers
    # The 2xx's ACK goes end to end, statelessly.
    director.receive(
        request(
            "ACK",
            uri="sip:alice@192.0.2.77:5099",
            call_id="d1",
            to_tag="a1",
            branch="z9hG4bKack",
            extra=f"Route: {route}\r\n",
        )
    )
    assert director.sent()[-1].method == "ACK"
    assert director.network.sent[-1][:2] == ("UDP", ("192.0.2.77", 5099))
    # A Route naming us without the dialog's token is not followed anywhere.
    before = len(director.network.sent)
    forged = "<sip:192.0.2.1:5060;lr>, <sip:127.0.0.99;lr>"
    director.receive(
        request(
            "BYE",
            uri="sip:x@127.0.0.99",
            call_id="d2",
            to_tag="a1",
            branch="z9hG4bKf",
            extra=f"Route: {forged}\r\n",
        )
    )
    assert all(dest[0] != "127.0.0.99" for _, dest, _, _ in director.network.sent[before:])


def test_a_stray_response_is_dropped() -> None:
    director = Director()
    director.receive(response_to(_parse(request()), 200, "OK"), RecordingFlow(remote=HOME))
    assert director.network.sent == []


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ten_thousand_faulty_forwards_leave_no_transaction_and_no_growth() -> None:
    """A home that hangs, resets its connections or answers garbage (dropped as
    unparseable, so the same as hanging) costs every client a 408 or 503; afterwards the
    tables are empty and RSS is back within 10% of what it was after a warm-up."""
    director = Director(transport="tcp")
    udp = Director()
    answered: dict[int, int] = {}

    def batch(start: int, count: int) -> None:
        for n in range(start, start + count):
            which = director if n % 2 else udp
            flow = which.receive(request(branch=f"z9hG4bKl{n}-", call_id=f"l{n}"))
            if which is director and n % 4 == 1:
                director.network.lose("TCP", HOME)
            flows.append(flow)
        for which in (director, udp):
            which.clock.advance(64 * 0.5)
            which.clock.advance(64 * 0.5)
        for flow in flows:
            for status in statuses(flow):
                answered[status] = answered.get(status, 0) + 1
        flows.clear()
        udp.network.sent.clear()
        director.network.sent.clear()

    flows: list[RecordingFlow] = []
    batch(0, 1000)
    gc.collect()
    baseline = _rss_kib()
    for start in range(1000, 11_000, 1000):
        batch(start, 1000)
    gc.collect()
    assert director.idle() and udp.idle()
    assert director.network.watchers == {}
    assert sum(answered.values()) == 11_000
    assert set(answered) == {408, 503}
    assert _rss_kib() <= baseline * 1.10


def test_serialized_upstream_sends_survive_a_closed_flow() -> None:
    director = Director(policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")))
    flow = director.receive(request("INVITE", uri="sip:alice@example.com"))
    (invite,) = director.sent()
    director.answer(invite, 200, "OK")
    director.answer(invite, 200, "OK", to_tag="other")  # RFC 6026 §7.2: a second 2xx
    assert statuses(flow) == [200, 200]
    message: Message = responses(flow)[1]
    assert serialize(message)


def test_branch_digest_is_the_keyed_hash_of_the_nul_terminated_parts() -> None:
    """`digest` hashes its parts in one call: the same value as hashing each part and a
    NUL in turn, so branches (and Record-Route tokens) are unchanged by how it is fed."""
    scheme = BranchScheme(b"secret")
    reference = hashlib.blake2b(key=b"secret", digest_size=8)
    for part in ("a", "", "é\udcff", "z9hG4bK.1"):
        reference.update(part.encode("utf-8", "surrogateescape"))
        reference.update(b"\x00")
    assert scheme.digest("a", "", "é\udcff", "z9hG4bK.1") == reference.hexdigest()
    assert scheme.digest("ab") != scheme.digest("a", "b")


def test_branch_of_a_routing_hash_is_the_branch_of_its_request() -> None:
    """The proxy hashes a request's routing fields once and derives each copy's branch from
    that; the result is what `branch` gives, and the loop check recognises it."""
    scheme = BranchScheme(b"secret")
    message = parse_datagram(
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@example.com>;tag=f\r\nTo: <sip:alice@example.com>\r\n"
        b"Call-ID: c@x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(message, MessageReceived)
    request = message.message
    assert isinstance(request, Request)
    routing = scheme.routing(request)
    top = "SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bK1"
    assert scheme.branch_of(routing, top, 2) == scheme.branch(request, top, 2)
    assert scheme.branch_of(routing, top, 2) != scheme.branch_of(routing, top, 1)
    assert scheme.branch(request, top).endswith("." + routing)


def test_vias_sharing_a_line_are_kept_apart_both_ways() -> None:
    """A first Via line holding several values (RFC 3261 §7.3.1): the forwarded copy puts
    our Via above it and annotates only its first value (§18.2.1); the relayed response
    loses only our Via, however the home wrote the Vias (§16.7 step 3)."""
    director = Director()
    two_in_one = request(vias=0, extra="").replace(
        "Max-Forwards",
        "Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bKa;rport, "
        "SIP/2.0/UDP 192.0.2.11:5099;branch=z9hG4bKb\r\nMax-Forwards",
        1,
    )
    flow = director.receive(two_in_one)
    (forwarded,) = director.sent()
    assert forwarded.headers.get_all("Via")[1:] == [
        "SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bKa;rport=5099;received=192.0.2.10, "
        "SIP/2.0/UDP 192.0.2.11:5099;branch=z9hG4bKb"
    ]
    ours, theirs = forwarded.headers.get_all("Via")
    answer = response_to(forwarded, 200, "OK").replace(
        f"Via: {ours}\r\nVia: {theirs}".encode(), f"Via: {ours}, {theirs}".encode()
    )
    assert answer.count(b"Via: ") == 1
    director.receive(answer, RecordingFlow(remote=HOME))
    (ok,) = responses(flow)
    assert ok.headers.get_all("Via") == [theirs]


def test_only_a_stream_channel_watches_its_connection() -> None:
    """A datagram has no connection to lose (`ISipNetwork.watch`): a UDP channel never
    asks to watch one, a TCP channel does from its first send."""
    network = RecordingNetwork()
    udp = NetworkChannel(network, Target("h", "192.0.2.50", 5060, "udp"))
    assert udp.send(b"x") and network.watchers == {}
    tcp = NetworkChannel(network, Target("h", "192.0.2.50", 5060, "tcp"))
    assert tcp.send(b"x") and list(network.watchers) == [("TCP", ("192.0.2.50", 5060))]
    tcp.close()
    assert network.watchers == {}


def test_a_request_carrying_our_branch_from_elsewhere_is_no_loop() -> None:
    """§16.3 step 4 asks whether one of *our* Vias carries the routing hash: the same
    branch under another host's Via is not a loop (the quick text check must not decide
    on the branch alone)."""
    director = Director()
    director.receive(request())
    (forwarded,) = director.sent()
    ours = forwarded.headers.get_all("Via")[0]
    elsewhere = ours.replace("192.0.2.1:5060", "198.51.100.7:5060")
    director.receive(
        request(vias=1, branch="z9hG4bKnew").replace(
            "Max-Forwards", f"Via: {elsewhere}\r\nMax-Forwards", 1
        )
    )
    assert len(director.sent()) == 2
