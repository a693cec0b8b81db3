"""The home-server role through the shared pipeline: DirectorCore with the registrar and
user routing as its local handler (one code path for both roles), the purge timer, and
the choice of location store."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from homeredirect.director.core import DirectorCore, DirectorSettings
from homeredirect.director.interfaces import PolicyContext
from homeredirect.director.policy import ViaCountPolicy
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import Target
from homeredirect.registrar.home import (
    EveryoneHereResolver,
    HomeRequestHandler,
    LocationService,
)
from homeredirect.registrar.location import Binding
from homeredirect.registrar.memory_store import MemoryLocationStore
from homeredirect.registrar.registrar import Registrar, RegistrarSettings
from homeredirect.registrar.routing import UserRouter, best_binding, forwarding_target
from homeredirect.resolve.interfaces import AddressOfRecord, IAssignmentResolver
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.transaction.server import ServerTransactionTable
from tests.unit.fakes import RecordingFlow, RecordingNetwork, TableResolver, stateful_proxy

ALICE = AddressOfRecord("alice", "example.com")
PHONE = ("192.0.2.10", 5099)


class Home:
    """A home server's core on a Clock, recording what it sends."""

    def __init__(self, resolver: Any = None) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryLocationStore()
        self.network = RecordingNetwork()
        proxy = stateful_proxy(self.network, self.clock)
        self.core = DirectorCore(
            settings=DirectorSettings(domains=frozenset({"example.com"})),
            resolver=resolver or EveryoneHereResolver("home1.example.com"),
            policy=ViaCountPolicy(PolicyContext(fqdn="home1.example.com", role="home")),
            transactions=ServerTransactionTable(self.clock),
            responses=ResponseFactory("test", iter(f"tag{n}" for n in range(1000)).__next__),
            proxy=proxy,
            targets=lambda fqdn: (Target(fqdn, fqdn, 5060, "udp"), None),
            clock=self.clock,
            local_handler=HomeRequestHandler(
                Registrar(self.store, RegistrarSettings(), self.clock),
                UserRouter(self.store, proxy, self.clock),
            ),
        )

    def receive(self, data: str, flow: RecordingFlow | None = None) -> RecordingFlow:
        flow = flow or RecordingFlow(remote=PHONE)
        event = parse_datagram(data.encode())
        assert isinstance(event, MessageReceived), event
        self.core.message_received(event.message, flow)
        return flow

    def forwarded(self) -> list[Request]:
        requests = []
        for _, _, data, _ in self.network.sent:
            event = parse_datagram(data)
            assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
            requests.append(event.message)
        return requests


def register(user: str = "alice", extra: str = "", branch: str = "z9hG4bKr1") -> str:
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5099;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@example.com>;tag=f1\r\nTo: <sip:{user}@example.com>\r\n"
        "Call-ID: reg1@x\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@192.0.2.10:5099>\r\nExpires: 3600\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    )


def request(method: str = "INVITE", uri: str = "sip:alice@example.com", extra: str = "") -> str:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKcall1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:carol@example.com>;tag=c1\r\nTo: <sip:alice@example.com>\r\n"
        f"Call-ID: call1@x\r\nCSeq: 1 {method}\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    )


def only_response(flow: RecordingFlow) -> Response:
    (message,) = flow.messages()
    assert isinstance(message, Response)
    return message


def _result(deferred: Any) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    (value,) = results
    return value


def test_everyone_here_resolver_provides_the_resolver_interface() -> None:
    verifyObject(IAssignmentResolver, EveryoneHereResolver("home1.example.com"))


def test_register_for_a_local_user_is_registered_and_answered_200() -> None:
    home = Home()
    response = only_response(home.receive(register()))
    assert response.status == 200
    assert response.headers.get_all("Contact") == ["<sip:alice@192.0.2.10:5099>;expires=3600"]
    assert response.headers.get("Expires") == "3600"
    assert response.headers.get("To") == "<sip:alice@example.com>;tag=tag0"
    assert "rport=5099" in (response.headers.get("Via") or "")
    (binding,) = _result(home.store.lookup(ALICE, home.clock.seconds()))
    assert binding.received == "UDP:192.0.2.10:5099"


def test_retransmitted_register_is_answered_from_the_transaction() -> None:
    home = Home()
    flow = home.receive(register())
    home.receive(register(), flow)
    first, second = flow.messages()
    assert isinstance(first, Response) and isinstance(second, Response)
    assert first.status == second.status == 200


def test_register_for_another_domain_is_refused_without_writing() -> None:
    home = Home()
    data = register().replace("To: <sip:alice@example.com>", "To: <sip:alice@elsewhere.org>")
    assert only_response(home.receive(data)).status == 404
    assert len(home.store) == 0


def test_register_for_a_user_homed_elsewhere_is_redirected_there() -> None:
    home = Home(TableResolver({"bob@example.com": "home2.example.com"}))
    response = only_response(home.receive(register("bob")))
    assert response.status == 301
    assert response.headers.get_all("Contact") == [
        "<sip:home2.example.com:5060;transport=udp>;q=0.7"
    ]
    assert len(home.store) == 0


def test_a_direct_call_to_a_user_homed_elsewhere_is_redirected_to_the_user_there() -> None:
    home = Home(TableResolver({"bob@example.com": "home2.example.com"}))
    response = only_response(home.receive(request(uri="sip:bob@example.com")))
    assert (response.status, response.reason) == (302, "Moved Temporarily")
    assert response.headers.get_all("Contact") == [
        "<sip:bob@home2.example.com:5060;transport=udp>;q=0.7"
    ]
    assert home.network.sent == []


def test_a_proxied_call_to_a_user_homed_elsewhere_is_forwarded_there() -> None:
    home = Home(TableResolver({"bob@example.com": "home2.example.com"}))
    second_via = "Via: SIP/2.0/UDP 192.0.2.60:5060;branch=z9hG4bKedge1\r\n"
    call = request(uri="sip:bob@example.com").replace("Max-Forwards", second_via + "Max-", 1)
    flow = home.receive(call)
    assert flow.messages() == []
    (sent,) = home.network.sent
    assert sent[:2] == ("UDP", ("home2.example.com", 5060))


def test_a_request_to_a_registered_user_goes_to_its_contact() -> None:
    home = Home()
    home.receive(register())
    flow = home.receive(request("MESSAGE"))
    assert flow.messages() == []
    (forwarded,) = home.forwarded()
    transport, destination, _, _ = home.network.sent[0]
    assert (transport, destination) == ("UDP", ("192.0.2.10", 5099))
    assert str(forwarded.uri) == "sip:alice@192.0.2.10:5099"
    assert forwarded.headers.get("Max-Forwards") == "69"
    assert len(forwarded.vias) == 2


def test_a_cancel_is_answered_200_and_cancels_the_invite_once_it_is_ringing() -> None:
    home = Home()
    home.receive(register())
    caller = home.receive(request("INVITE"))
    cancelling = home.receive(request("CANCEL"))
    assert only_response(cancelling).status == 200
    (invite,) = home.forwarded()  # RFC 3261 §9.1: no CANCEL before a provisional response
    ringing = "\r\n".join(
        [
            "SIP/2.0 180 Ringing",
            *(f"Via: {via}" for via in invite.headers.get_all("Via")),
            "From: <sip:carol@example.com>;tag=c1",
            "To: <sip:alice@example.com>;tag=a1",
            "Call-ID: call1@x",
            "CSeq: 1 INVITE",
            "Content-Length: 0",
            "",
            "",
        ]
    )
    home.receive(ringing, RecordingFlow(remote=PHONE))
    assert [m.status for m in caller.messages() if isinstance(m, Response)] == [180]
    _, cancel = home.forwarded()
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(invite.uri) == "sip:alice@192.0.2.10:5099"
    assert cancel.vias[0].branch == invite.vias[0].branch
    assert home.network.sent[1][:2] == home.network.sent[0][:2]


def test_a_request_to_a_user_without_binding_gets_480() -> None:
    home = Home()
    response = only_response(home.receive(request("INVITE")))
    assert (response.status, response.reason) == (480, "Temporarily Unavailable")


def test_a_request_after_the_binding_expired_gets_480() -> None:
    home = Home()
    home.receive(register())
    home.clock.advance(3601)
    assert only_response(home.receive(request("OPTIONS"))).status == 480


def test_options_to_the_server_itself_is_still_answered_200() -> None:
    home = Home()
    assert only_response(home.receive(request("OPTIONS", uri="sip:example.com"))).status == 200


def test_the_path_becomes_route_headers_and_the_request_goes_to_its_first_hop() -> None:
    home = Home()
    # The REGISTER came through the edge (two Vias): only then is its Path kept.
    edge_via = "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKedge\r\n"
    home.receive(register(extra=edge_via + "Path: <sip:edge.example.com:5070;lr>\r\n"))
    home.receive(request("INVITE", extra="Route: <sip:other.example.com;lr>\r\n"))
    (forwarded,) = home.forwarded()
    assert forwarded.headers.get_all("Route") == [
        "<sip:edge.example.com:5070;lr>",
        "<sip:other.example.com;lr>",
    ]
    assert str(forwarded.uri) == "sip:alice@192.0.2.10:5099"
    assert home.network.sent[0][:2] == ("UDP", ("edge.example.com", 5070))


def test_the_best_binding_has_the_highest_q_then_the_latest_expiry() -> None:
    def binding(contact: str, q: float | None, expires_at: float) -> Binding:
        return Binding(ALICE, contact, expires_at, "c", 1, q=q)

    low = binding("sip:a@192.0.2.1", 0.1, 500)
    high = binding("sip:a@192.0.2.2", 0.9, 100)
    assert best_binding((low, high)) == high
    plain_old = binding("sip:a@192.0.2.3", None, 100)
    plain_new = binding("sip:a@192.0.2.4", None, 200)
    assert best_binding((plain_old, low, plain_new)) == plain_new
    assert best_binding(()) is None


def test_a_stream_binding_is_reached_over_the_connection_it_registered_on() -> None:
    binding = Binding(
        ALICE,
        "sip:192.0.2.10:5099;transport=tls",
        100,
        "c",
        1,
        received="TLS:198.51.100.7:40123",
    )
    target = forwarding_target(binding)
    assert (target.host, target.port, target.transport) == ("198.51.100.7", 40123, "tls")
    udp = Binding(ALICE, "sips:alice@192.0.2.10", 100, "c", 1, received="UDP:198.51.100.7:1")
    assert (forwarding_target(udp).port, forwarding_target(udp).transport) == (5061, "tls")


def test_purge_timer_drops_expired_bindings_and_stopping_closes_the_store() -> None:
    clock = Clock()
    closed: list[bool] = []

    class Store(MemoryLocationStore):
        def close(self) -> Any:
            closed.append(True)
            return super().close()

    store = Store()
    _result(store.modify(ALICE, lambda _: (Binding(ALICE, "sip:a@192.0.2.1", 40, "c", 1),), 0))
    service = LocationService(store, clock, 30)
    service.startService()
    clock.advance(30)
    assert len(store) == 1
    clock.advance(30)
    assert len(store) == 0
    _result(service.stopService())
    assert closed == [True]
    assert clock.getDelayedCalls() == []


def test_the_home_example_loads_as_a_home_server_on_sqlite() -> None:
    from pathlib import Path

    from homeredirect.config.load import load_config
    from homeredirect.config.schema import Role

    config = load_config(Path(__file__).parents[2] / "examples" / "home1.toml")
    assert (config.server.role, config.server.fqdn) == (Role.HOME, "home1.example.com")
    assert config.location.backend == "sqlite"
    assert config.location.path.name == "home1-bindings.sqlite"
    assert config.assignments is not None
