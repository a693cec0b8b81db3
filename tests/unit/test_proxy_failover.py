"""Failover of the stateful proxy between a home server's targets (RFC 3263 §4.3, RFC 3261
§16.7, §21.5.4), through the director's pipeline on a Clock with a recording network: a
target that times out, cannot be reached or answers 503 is followed by the next one, in a
new client transaction, until one answers or none is left."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.config.load import parse_config
from homeredirect.director.core import DirectorCore, DirectorSettings
from homeredirect.director.interfaces import PolicyContext
from homeredirect.director.policy import AlwaysProxyPolicy, ViaCountPolicy
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import HomeServerTargets, Target
from homeredirect.locate.interfaces import ILocator
from homeredirect.locate.rfc3263 import HomeServerNotFound
from homeredirect.proxy.stateful import ProxySettings
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.transaction.server import ServerTransactionTable
from tests.unit.fakes import RecordingFlow, RecordingNetwork, TableResolver, stateful_proxy

FIRST = Target("home1.example.com", "192.0.2.50", 5060, "udp")
SECOND = Target("home1.example.com", "192.0.2.51", 5060, "udp")
BACKUP = Target("home2.example.com", "192.0.2.60", 5060, "udp")
TABLE = {"alice@example.com": "home1.example.com"}
T1 = 0.5
FAILOVER = 4.0  # [proxy] failover_timeout, by default
EPSILON = 1 / 1024  # exact in binary: Clock arithmetic stays exact


@implementer(ILocator)
class ListLocator:
    """Locates every home server at *targets*, or fails with *error*."""

    def __init__(self, targets: list[Target], error: Exception | None = None) -> None:
        self.targets = targets
        self.error = error
        self.asked: list[str] = []

    def locate(self, fqdn: str) -> Deferred[list[Target]]:
        self.asked.append(fqdn)
        if self.error is not None:
            return fail(self.error)
        return succeed(list(self.targets))


class Director:
    """A director core that proxies (two Vias) to whatever *locator* gives, on a Clock."""

    def __init__(self, locator: Any = None, policy: Any = None, targets: Any = None) -> None:
        self.clock = Clock()
        self.network = RecordingNetwork()
        self.transactions = ServerTransactionTable(self.clock)
        self.proxy = stateful_proxy(self.network, self.clock)
        self.core = DirectorCore(
            settings=DirectorSettings(domains=frozenset({"example.com"})),
            resolver=TableResolver(TABLE),
            policy=policy or ViaCountPolicy(PolicyContext(fqdn="director.example.com")),
            transactions=self.transactions,
            responses=ResponseFactory("test", iter(f"tag{n}" for n in range(1000)).__next__),
            proxy=self.proxy,
            targets=targets or (lambda fqdn: (FIRST, None)),
            locator=locator,
            clock=self.clock,
        )

    def receive(self, data: str | bytes, flow: RecordingFlow | None = None) -> RecordingFlow:
        flow = flow or RecordingFlow()
        event = parse_datagram(data.encode() if isinstance(data, str) else data)
        assert isinstance(event, MessageReceived), event
        self.core.message_received(event.message, flow)
        return flow

    def sent(self) -> list[tuple[tuple[str, int], Request]]:
        """(destination, request) of everything sent towards home servers."""
        out = []
        for _, destination, data, _ in self.network.sent:
            event = parse_datagram(data)
            assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
            out.append((destination, event.message))
        return out

    def destinations(self, method: str = "REGISTER") -> list[tuple[str, int]]:
        """Where each new branch of *method* went (retransmissions counted once)."""
        seen: dict[str | None, tuple[str, int]] = {}
        for destination, sent in self.sent():
            if sent.method == method:
                seen.setdefault(sent.vias[0].branch, destination)
        return list(seen.values())

    def answer(self, forwarded: Request, status: int, extra: str = "") -> None:
        """The home server's *status* to *forwarded*."""
        lines = [f"SIP/2.0 {status} X"]
        for name, value in forwarded.headers:
            if name in ("Via", "From", "Call-ID", "CSeq"):
                lines.append(f"{name}: {value}")
            elif name == "To":
                lines.append(f"To: {value};tag=h")
        data = "\r\n".join([*lines, *([extra] if extra else []), "Content-Length: 0", "", ""])
        self.receive(data, RecordingFlow(remote=("192.0.2.50", 5060)))

    def last(self, method: str = "REGISTER") -> Request:
        return [sent for _, sent in self.sent() if sent.method == method][-1]

    def idle(self) -> bool:
        return len(self.transactions) == 0 and len(self.proxy.clients) == 0 and len(self.proxy) == 0


def request(method: str = "REGISTER", uri: str = "sip:example.com") -> str:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bKc10;rport\r\n"
        "Via: SIP/2.0/UDP 192.0.2.11:5099;branch=z9hG4bKc11;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f1\r\n"
        f"To: <sip:alice@example.com>\r\nCall-ID: c1@x\r\nCSeq: 7 {method}\r\n"
        "Contact: <sip:alice@192.0.2.10:5099>\r\nContent-Length: 0\r\n\r\n"
    )


def responses(flow: RecordingFlow) -> list[Response]:
    return [m for m in flow.messages() if isinstance(m, Response)]


def statuses(flow: RecordingFlow) -> list[int]:
    return [m.status for m in responses(flow)]


def test_the_list_locator_provides_ilocator() -> None:
    verifyObject(ILocator, ListLocator([FIRST]))


def test_a_silent_target_is_followed_by_the_next_in_a_new_transaction() -> None:
    director = Director(ListLocator([FIRST, SECOND]))
    flow = director.receive(request())
    director.clock.pump([T1] * 7 + [T1 - EPSILON])
    assert director.destinations() == [FIRST_ADDRESS]
    director.clock.advance(EPSILON)  # [proxy] failover_timeout (4 s) after the first send
    assert director.destinations() == [FIRST_ADDRESS, SECOND_ADDRESS]
    branches = {sent.vias[0].branch for _, sent in director.sent()}
    assert len(branches) == 2  # a new client transaction, a branch of its own
    director.answer(director.last(), 200)
    assert statuses(flow) == [200]
    director.clock.advance(64 * T1)
    assert director.idle()


FIRST_ADDRESS = (FIRST.host, FIRST.port)
SECOND_ADDRESS = (SECOND.host, SECOND.port)
BACKUP_ADDRESS = (BACKUP.host, BACKUP.port)


def test_a_503_from_the_home_is_followed_by_the_next_target() -> None:
    director = Director(ListLocator([FIRST, BACKUP]))
    flow = director.receive(request())
    director.answer(director.last(), 503, "Retry-After: 600")
    assert director.destinations() == [FIRST_ADDRESS, BACKUP_ADDRESS]
    assert statuses(flow) == []
    director.answer(director.last(), 200)
    assert statuses(flow) == [200]


def test_a_lost_connection_fails_over_at_once() -> None:
    tcp_first = Target("home1.example.com", "192.0.2.50", 5060, "tcp")
    director = Director(ListLocator([tcp_first, BACKUP]))
    flow = director.receive(request())
    director.network.lose("TCP", FIRST_ADDRESS)
    assert director.destinations() == [FIRST_ADDRESS, BACKUP_ADDRESS]
    director.answer(director.last(), 200)
    assert statuses(flow) == [200]


def test_a_target_we_have_no_transport_for_is_skipped() -> None:
    tls_first = Target("home1.example.com", "192.0.2.50", 5061, "tls")  # no TLS listener
    director = Director(ListLocator([tls_first, BACKUP]))
    flow = director.receive(request())
    assert director.destinations() == [BACKUP_ADDRESS]
    director.answer(director.last(), 200)
    assert statuses(flow) == [200]


def test_another_failure_is_relayed_without_trying_further_targets() -> None:
    director = Director(ListLocator([FIRST, BACKUP]))
    flow = director.receive(request())
    director.answer(director.last(), 404)
    assert director.destinations() == [FIRST_ADDRESS]
    assert statuses(flow) == [404]


def test_when_every_target_fails_the_client_gets_our_503_with_retry_after() -> None:
    tcp_first = Target("home1.example.com", "192.0.2.50", 5060, "tcp")
    director = Director(ListLocator([tcp_first, BACKUP]))
    flow = director.receive(request())
    director.network.lose("TCP", FIRST_ADDRESS)
    director.answer(director.last(), 503, "Retry-After: 600")
    (final,) = responses(flow)
    # The home's 503 is not relayed (RFC 3261 §16.7 step 6): ours, with our Retry-After.
    assert (final.status, final.headers.get("Retry-After")) == (503, "30")
    director.clock.advance(64 * T1)
    assert director.idle()


def test_when_every_target_is_silent_the_client_gets_408_once_all_were_tried() -> None:
    director = Director(ListLocator([FIRST, SECOND, BACKUP]))
    flow = director.receive(request())
    director.clock.advance(FAILOVER)
    director.clock.advance(FAILOVER)
    assert director.destinations() == [FIRST_ADDRESS, SECOND_ADDRESS, BACKUP_ADDRESS]
    # The last target has no other after it: it keeps its whole Timer F (64*T1).
    director.clock.pump([T1] * 63 + [T1 - EPSILON])
    assert statuses(flow) == []
    director.clock.advance(EPSILON)
    (final,) = responses(flow)
    assert (final.status, final.headers.get("Retry-After")) == (408, "30")
    director.clock.advance(64 * T1)
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_a_timeout_beats_a_transport_failure_as_the_best_response() -> None:
    tcp_last = Target("home2.example.com", "192.0.2.60", 5060, "tcp")
    director = Director(ListLocator([FIRST, tcp_last]))
    flow = director.receive(request())
    director.clock.pump([T1] * 64)
    director.network.lose("TCP", BACKUP_ADDRESS)
    assert statuses(flow) == [408]  # the lowest class (RFC 3261 §16.7 step 6)


def test_an_invite_that_rang_and_timed_out_is_not_sent_elsewhere() -> None:
    director = Director(
        ListLocator([FIRST, BACKUP]),
        policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")),
    )
    flow = director.receive(request("INVITE", "sip:alice@example.com"))
    director.answer(director.last("INVITE"), 180)
    # Timer C cancels it (§16.8); the CANCEL is not answered either.
    director.clock.pump([1.0] * (180 + 64))
    assert director.destinations("INVITE") == [FIRST_ADDRESS]
    assert [sent.method for _, sent in director.sent()][-1] == "CANCEL"
    assert statuses(flow)[:2] == [180, 408]
    assert set(statuses(flow)) == {180, 408}  # the 408 retransmitted upstream (UDP)


def test_a_cancelled_invite_tries_no_further_target() -> None:
    director = Director(
        ListLocator([FIRST, BACKUP]),
        policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")),
    )
    caller = director.receive(request("INVITE", "sip:alice@example.com"))
    invite = director.last("INVITE")
    director.answer(invite, 100)
    cancelling = director.receive(request("CANCEL", "sip:alice@example.com"))
    assert statuses(cancelling) == [200]
    director.answer(invite, 503)
    assert director.destinations("INVITE") == [FIRST_ADDRESS]
    assert statuses(caller)[-1] == 503


def test_a_home_server_that_cannot_be_located_costs_a_503_with_retry_after() -> None:
    locator = ListLocator([], HomeServerNotFound("home1.example.com", "no SRV records"))
    director = Director(locator)
    flow = director.receive(request())
    (final,) = responses(flow)
    assert (final.status, final.reason) == (503, "Home server unavailable")
    assert final.headers.get("Retry-After") == "30"
    assert locator.asked == ["home1.example.com"] and director.network.sent == []


def test_without_a_locator_the_configured_backup_is_the_next_target(tmp_path: Any) -> None:
    config = parse_config(
        {
            "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
            "assignments": {"backend": "file", "path": "a.csv"},
            "listen": [{"transport": "udp", "port": 0}],
            "home_servers": {
                "home1.example.com": {
                    "host": "192.0.2.50",
                    "port": 5060,
                    "transport": "udp",
                    "backup": "home2.example.com",
                },
                "home2.example.com": {"host": "192.0.2.60", "port": 5060, "transport": "udp"},
            },
        },
        "unit.toml",
        _with_assignments(tmp_path),
    )
    director = Director(targets=HomeServerTargets(config))
    flow = director.receive(request())
    director.answer(director.last(), 503)
    assert director.destinations() == [FIRST_ADDRESS, BACKUP_ADDRESS]
    director.answer(director.last(), 200)
    assert statuses(flow) == [200]


def test_the_home_server_targets_locate_the_backup_after_the_home(tmp_path: Any) -> None:
    config = parse_config(
        {
            "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
            "assignments": {"backend": "file", "path": "a.csv"},
            "listen": [{"transport": "udp", "port": 0}],
            "home_servers": {
                "home1.example.com": {"host": "192.0.2.50", "backup": "home2.example.com"},
                "home2.example.com": {"host": "192.0.2.60", "port": 5060, "transport": "udp"},
            },
        },
        "unit.toml",
        _with_assignments(tmp_path),
    )
    targets = HomeServerTargets(config)
    director = Director(locator=targets, targets=targets)
    director.receive(request())
    director.network.lose("TLS", ("192.0.2.50", 5061))
    # home1 is TLS (no TLS listener here: skipped), its backup UDP.
    assert director.destinations() == [BACKUP_ADDRESS]


def _with_assignments(directory: Any) -> Any:
    (directory / "a.csv").write_text("alice@example.com,home1.example.com\n")
    return directory


# -- failover on silence: [proxy] failover_timeout -------------------------------------


def _sent_to(director: Director, address: tuple[str, int]) -> int:
    return sum(1 for destination, _ in director.sent() if destination == address)


def test_a_silent_target_is_abandoned_cleanly_when_the_next_is_tried() -> None:
    director = Director(ListLocator([FIRST, SECOND]))
    flow = director.receive(request())
    director.clock.pump([T1] * 8)  # 4 s: copies at 0, 0.5, 1.5, 3.5 s (Timer E), then over
    assert _sent_to(director, FIRST_ADDRESS) == 4
    assert len(director.proxy.clients) == 1  # the first branch's transaction is gone
    director.clock.pump([T1] * 64)
    assert _sent_to(director, FIRST_ADDRESS) == 4  # and sends nothing more
    # A late answer from the abandoned target matches nothing and is dropped.
    first = next(sent for destination, sent in director.sent() if destination == FIRST_ADDRESS)
    director.answer(first, 200)
    assert statuses(flow) == [408]  # the second target's Timer F, 4 + 32 s
    director.clock.advance(64 * T1)
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_the_next_target_answers_within_the_clients_own_timer_f() -> None:
    director = Director(ListLocator([FIRST, SECOND]))
    flow = director.receive(request())
    director.clock.advance(FAILOVER)
    director.answer(director.last(), 200)
    assert statuses(flow) == [200]  # after 4 s, where the UDP client waits 32 s
    director.clock.advance(64 * T1)
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_a_target_that_sent_100_trying_keeps_its_timer_f() -> None:
    director = Director(ListLocator([FIRST, SECOND]))
    flow = director.receive(request())
    director.clock.advance(1.0)
    director.answer(director.last(), 100)
    director.clock.pump([T1] * 62 + [T1 - EPSILON])  # to just before 64*T1
    assert director.destinations() == [FIRST_ADDRESS]
    director.clock.advance(EPSILON)
    # It was there: not retried elsewhere (RFC 3261 §16.7), the client hears 408.
    assert director.destinations() == [FIRST_ADDRESS]
    assert statuses(flow) == [408]
    director.clock.advance(64 * T1)
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_an_answer_before_the_failover_timeout_stops_it() -> None:
    director = Director(ListLocator([FIRST, SECOND]))
    flow = director.receive(request())
    director.clock.advance(FAILOVER - EPSILON)
    director.answer(director.last(), 404)
    director.clock.advance(64 * T1)
    assert director.destinations() == [FIRST_ADDRESS]
    assert statuses(flow) == [404]
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_an_invite_with_no_provisional_response_fails_over_without_a_cancel() -> None:
    director = Director(
        ListLocator([FIRST, BACKUP]),
        policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")),
    )
    caller = director.receive(request("INVITE", "sip:alice@example.com"))
    director.clock.advance(FAILOVER - EPSILON)
    assert director.destinations("INVITE") == [FIRST_ADDRESS]
    director.clock.advance(EPSILON)
    assert director.destinations("INVITE") == [FIRST_ADDRESS, BACKUP_ADDRESS]
    # §9.1: no CANCEL before a provisional response; the first INVITE is just dropped.
    assert "CANCEL" not in {sent.method for _, sent in director.sent()}
    assert len(director.proxy.clients) == 1
    director.answer(director.last("INVITE"), 486)
    assert statuses(caller)[-1] == 486
    director.clock.advance(64 * T1)
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_an_invite_that_got_100_trying_is_not_failed_over() -> None:
    director = Director(
        ListLocator([FIRST, BACKUP]),
        policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")),
    )
    director.receive(request("INVITE", "sip:alice@example.com"))
    director.answer(director.last("INVITE"), 100)
    director.clock.pump([1.0] * 30)
    assert director.destinations("INVITE") == [FIRST_ADDRESS]


def test_a_cancelled_invite_stops_the_failover_timer() -> None:
    director = Director(
        ListLocator([FIRST, BACKUP]),
        policy=AlwaysProxyPolicy(PolicyContext(fqdn="director.example.com")),
    )
    caller = director.receive(request("INVITE", "sip:alice@example.com"))
    cancelling = director.receive(request("CANCEL", "sip:alice@example.com"))
    assert statuses(cancelling) == [200]
    director.clock.advance(FAILOVER)
    assert director.destinations("INVITE") == [FIRST_ADDRESS]
    director.answer(director.last("INVITE"), 487)
    assert statuses(caller)[-1] == 487
    director.clock.advance(64 * T1)
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_the_failover_timeout_is_configurable() -> None:
    director = Director(ListLocator([FIRST, SECOND]))
    director.proxy = stateful_proxy(
        director.network, director.clock, ProxySettings(failover_timeout=1.5)
    )
    director.core._proxy = director.proxy  # type: ignore[attr-defined]
    director.receive(request())
    director.clock.advance(1.5 - EPSILON)
    assert director.destinations() == [FIRST_ADDRESS]
    director.clock.advance(EPSILON)
    assert director.destinations() == [FIRST_ADDRESS, SECOND_ADDRESS]


def test_stopping_the_proxy_leaves_no_delayed_call() -> None:
    director = Director(ListLocator([FIRST, SECOND]))
    director.receive(request())
    assert director.clock.getDelayedCalls() != []
    director.proxy.stop()
    director.transactions.stop()
    assert director.clock.getDelayedCalls() == []


def test_a_send_refused_at_once_fails_over_at_once() -> None:
    # SipNetwork.send returns False when the only TLS connection to an address proved
    # another server's name: a transport error (RFC 3261 §17.1.4), not a wait for Timer F.
    tcp_first = Target("home1.example.com", "192.0.2.50", 5060, "tcp")
    director = Director(ListLocator([tcp_first, BACKUP]))
    director.network.refused.add(("TCP", FIRST_ADDRESS))
    flow = director.receive(request())
    assert director.destinations() == [BACKUP_ADDRESS]
    director.answer(director.last(), 200)
    assert statuses(flow) == [200]
    director.clock.advance(64 * T1)
    assert director.idle() and director.clock.getDelayedCalls() == []


def test_a_send_refused_for_the_last_target_is_our_503_at_once() -> None:
    tcp_first = Target("home1.example.com", "192.0.2.50", 5060, "tcp")
    director = Director(ListLocator([tcp_first]))
    director.network.refused.add(("TCP", FIRST_ADDRESS))
    flow = director.receive(request())
    (final,) = responses(flow)
    assert (final.status, final.headers.get("Retry-After")) == (503, "30")
    assert len(director.proxy.clients) == 0
    director.clock.advance(64 * T1)  # the server transaction's Timer J (UDP)
    assert director.idle() and director.clock.getDelayedCalls() == []
