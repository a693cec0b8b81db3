"""RFC 3261 §17.1 client transactions (with RFC 6026's Accepted state), their matching
(§17.1.3), timers, ACK (§17.1.1.3) and CANCEL (§9.1), on a Clock."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, capturedLogs, globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.logs import set_level
from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.sip.serialize import serialize
from homeredirect.transaction.client import (
    INVITE_TRANSITIONS,
    NON_INVITE_TRANSITIONS,
    ClientTransaction,
    ClientTransactionTable,
    DuplicateClientTransaction,
    Input,
    InviteClientTransaction,
    NonInviteClientTransaction,
    State,
    UndefinedClientTransition,
    _LoggingUser,
    ack_for_failure,
    cancel_for,
    client_transaction_key,
)
from homeredirect.transaction.interfaces import (
    IClientChannel,
    IClientTransaction,
    IClientTransactionUser,
)
from homeredirect.transaction.timers import TimerSettings

BRANCH = "z9hG4bKclient1"
TOP_VIA = f"SIP/2.0/UDP 192.0.2.1:5060;branch={BRANCH}"


def parse(data: bytes) -> Request | Response:
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived), event
    return event.message


def request(method: str = "REGISTER", branch: str = BRANCH, cseq: int = 314159) -> Request:
    """A request as a proxy forwards it: our Via on top, in one line with the previous hop's."""
    data = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}, "
        "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKouter\r\n"
        "Max-Forwards: 69\r\n"
        "Route: <sip:edge1.example.com;lr>\r\n"
        "Route: <sip:edge2.example.com;lr>\r\n"
        "To: Bob <sip:bob@example.com>\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.4>\r\n"
        "Content-Type: application/sdp\r\n"
        "\r\n"
        "v=0\r\n"
    ).encode()
    message = parse(data)
    assert isinstance(message, Request)
    return message


def invite(branch: str = BRANCH) -> Request:
    return request("INVITE", branch)


def response_to(
    req: Request,
    status: int,
    to_tag: str | None = "srv1",
    method: str | None = None,
    wire: bool = True,
) -> Response:
    """The response a next hop sends, as parsed from the wire (or, with *wire* False, as
    a value whose fields are parsed when read, which is cheaper)."""
    fields: list[tuple[str, str]] = []
    for name, value in req.headers:
        if name == "To" and to_tag is not None:
            value = f"{value};tag={to_tag}"
        if name == "CSeq" and method is not None:
            value = f"{req.cseq.number} {method}"
        if name in ("Via", "From", "To", "Call-ID", "CSeq"):
            fields.append((name, value))
    message = Response(status, "Reason", Headers(fields))
    if not wire:
        return message
    parsed = parse(serialize(message))
    assert isinstance(parsed, Response)
    return parsed


@implementer(IClientChannel)
class Channel:
    """A next hop: records what is sent, and when; `broken` makes sends fail."""

    def __init__(self, clock: Clock, reliable: bool = False) -> None:
        self.clock = clock
        self.reliable = reliable
        self.sent: list[tuple[float, bytes]] = []
        self.broken = False

    def send(self, data: bytes) -> bool:
        if self.broken:
            return False
        self.sent.append((self.clock.seconds(), data))
        return True

    def times(self, method: str | None = None) -> list[float]:
        return [at for at, data in self.sent if method is None or data.startswith(method.encode())]

    def requests(self) -> list[Request]:
        messages = [parse(data) for _, data in self.sent]
        return [message for message in messages if isinstance(message, Request)]


@implementer(IClientTransactionUser)
class User:
    """A transaction user that records every callback as (event, status, time)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[tuple[str, int, float]] = []
        self.responses: list[Response] = []

    def _record(self, event: str, response: Response) -> None:
        self.events.append((event, response.status, self.clock.seconds()))
        self.responses.append(response)

    def provisional_response(self, transaction: IClientTransaction, response: Response) -> None:
        self._record("provisional", response)

    def final_response(self, transaction: IClientTransaction, response: Response) -> None:
        self._record("final", response)

    def timed_out(self, transaction: IClientTransaction, response: Response) -> None:
        self._record("timed out", response)

    def transport_failed(self, transaction: IClientTransaction, response: Response) -> None:
        self._record("transport failed", response)


class Setup:
    def __init__(
        self,
        reliable: bool = False,
        timers: TimerSettings | None = None,
        timer_c: float | None = None,
    ) -> None:
        self.clock = Clock()
        if timers is None:
            self.table = ClientTransactionTable(self.clock, timer_c=timer_c)
        else:
            self.table = ClientTransactionTable(self.clock, timers, timer_c=timer_c)
        self.channel = Channel(self.clock, reliable)
        self.user = User(self.clock)

    def start(self, req: Request) -> ClientTransaction:
        return self.table.create(req, self.channel, self.user)

    def advance_to(self, when: float) -> None:
        """Move time forward the way a reactor does: stopping at every DelayedCall due
        on the way (`Clock.advance` alone would run them all late, at *when*)."""
        clock = self.clock
        while True:
            due = [call.getTime() for call in clock.getDelayedCalls() if call.getTime() <= when]
            if not due:
                break
            clock.advance(max(min(due) - clock.seconds(), 0))
        clock.advance(when - clock.seconds())

    def idle(self) -> bool:
        """No transaction left and nothing scheduled on the reactor."""
        return len(self.table) == 0 and self.clock.getDelayedCalls() == []


@pytest.fixture(autouse=True)
def logged_failures() -> Iterator[list[LogEvent]]:
    """Fail a test that logged a failure: timer callbacks run inside FixedDelayQueue,
    which logs their exceptions (UndefinedClientTransition among them)."""
    failures: list[LogEvent] = []

    def record(event: LogEvent) -> None:
        if "log_failure" in event:
            failures.append(event)

    observe = cast(ILogObserver, record)
    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)
    assert [event["log_failure"].getTraceback() for event in failures] == []


# -- interfaces and construction -----------------------------------------------------


def test_transactions_and_users_provide_their_interfaces() -> None:
    setup = Setup()
    verifyObject(IClientTransaction, setup.start(request()))
    verifyObject(IClientTransaction, setup.start(invite("z9hG4bKother")))
    verifyObject(IClientTransactionUser, setup.user)
    verifyObject(IClientTransactionUser, _LoggingUser())
    verifyObject(IClientChannel, setup.channel)


def test_create_picks_the_machine_by_method() -> None:
    setup = Setup()
    assert isinstance(setup.start(invite()), InviteClientTransaction)
    assert isinstance(setup.start(request("OPTIONS")), NonInviteClientTransaction)
    assert len(setup.table) == 2


def test_create_refuses_an_ack() -> None:
    with pytest.raises(ValueError, match="ACK"):
        Setup().start(request("ACK"))


def test_create_refuses_a_branch_without_the_magic_cookie() -> None:
    with pytest.raises(ValueError, match="z9hG4bK"):
        Setup().start(request(branch="1234"))


def test_create_refuses_a_branch_and_method_in_use() -> None:
    setup = Setup()
    setup.start(request())
    with pytest.raises(DuplicateClientTransaction):
        setup.start(request())


def test_timer_c_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timer_c"):
        ClientTransactionTable(Clock(), timer_c=0)


# -- non-INVITE over UDP (§17.1.2.2) ---------------------------------------------------


def test_non_invite_retransmits_at_doubling_intervals_capped_at_t2_until_timer_f() -> None:
    setup = Setup()
    setup.start(request())
    setup.advance_to(31.9)
    assert setup.channel.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert setup.user.events == []
    setup.advance_to(32)
    assert setup.user.events == [("timed out", 408, 32.0)]
    assert setup.idle()
    setup.advance_to(100)
    assert len(setup.channel.sent) == 11
    assert len(setup.user.events) == 1


def test_retransmissions_are_the_same_bytes() -> None:
    setup = Setup()
    req = request()
    setup.start(req)
    setup.advance_to(4)
    assert {data for _, data in setup.channel.sent} == {serialize(req)}


def test_timeout_408_looks_like_a_response_from_the_next_hop() -> None:
    setup = Setup()
    req = request()
    setup.start(req)
    setup.advance_to(32)
    [timeout] = setup.user.responses
    assert (timeout.status, timeout.reason) == (408, "Request Timeout")
    assert client_transaction_key(timeout) == (BRANCH, "REGISTER")
    assert len(timeout.vias) == 2
    assert (timeout.call_id, timeout.cseq, timeout.from_addr) == (
        req.call_id,
        req.cseq,
        req.from_addr,
    )


def test_non_invite_provisional_continues_retransmissions_every_t2() -> None:
    setup = Setup()
    req = request()
    setup.start(req)
    setup.advance_to(0.2)
    assert setup.table.receive(response_to(req, 100, to_tag=None))
    setup.advance_to(31.9)
    # The pending Timer E still fires at 0.5; from then on every T2 (§17.1.2.2).
    assert setup.channel.times() == [0.0, 0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    assert setup.user.events == [("provisional", 100, 0.2)]
    setup.advance_to(32)
    assert setup.user.events[1:] == [("timed out", 408, 32.0)]
    assert setup.idle()


def test_non_invite_final_response_completes_for_t4_absorbing_retransmissions() -> None:
    setup = Setup()
    req = request()
    setup.start(req)
    setup.advance_to(1.0)
    assert setup.table.receive(response_to(req, 180))
    assert setup.table.receive(response_to(req, 200))
    setup.advance_to(3.0)
    assert setup.table.receive(response_to(req, 200))
    assert setup.table.receive(response_to(req, 180))
    assert setup.user.events == [("provisional", 180, 1.0), ("final", 200, 1.0)]
    assert setup.channel.times() == [0.0, 0.5]
    assert len(setup.table) == 1
    setup.advance_to(5.99)
    assert len(setup.table) == 1
    setup.advance_to(6.0)
    assert setup.idle()
    assert not setup.table.receive(response_to(req, 200))


def test_non_invite_lets_go_of_its_user_once_completed() -> None:
    """Completed passes nothing more to the user (§17.1.2.2): the transaction drops it at
    once, so the user (a proxy's response context and the request it holds) is freed
    before Timer K rather than kept alive for T4."""
    setup = Setup()
    req = request()
    user = User(setup.clock)
    user_ref = weakref.ref(user)
    setup.table.create(req, setup.channel, user)
    assert setup.table.receive(response_to(req, 200))
    assert user.events == [("final", 200, 0.0)]
    del user
    assert user_ref() is None
    assert setup.table.receive(response_to(req, 200))  # still absorbed, silently
    assert len(setup.table) == 1
    setup.advance_to(5.0)
    assert setup.idle()


def test_non_invite_lets_go_of_its_channel_once_completed() -> None:
    """Nothing is sent from Completed (§17.1.2.2): the channel (a proxy's `NetworkChannel`,
    one per branch) is freed before Timer K rather than kept for T4."""
    setup = Setup()
    req = request()
    channel = Channel(setup.clock)
    channel_ref = weakref.ref(channel)
    setup.table.create(req, channel, setup.user)
    assert setup.table.receive(response_to(req, 200))
    del channel
    assert channel_ref() is None
    assert setup.table.receive(response_to(req, 200))  # still absorbed, silently
    assert setup.table.receive(response_to(req, 100))
    setup.advance_to(5.0)
    assert setup.idle()
    assert setup.user.events == [("final", 200, 0.0)]


def _complete(setup: Setup, first: int, count: int) -> None:
    """*count* non-INVITE transactions, each with a channel and a user of its own, as a
    proxy makes them, answered 200."""
    for n in range(first, first + count):
        req = request(branch=f"z9hG4bK{n}")
        setup.table.create(req, Channel(setup.clock), User(setup.clock))
        assert setup.table.receive(response_to(req, 200, wire=False))


def test_a_completed_non_invite_transaction_holds_two_tracked_objects() -> None:
    """A proxied REGISTER's client transaction lives T4 (5 s) after its answer (§17.1.2.2),
    10,000 of them at 2,000 requests/s, every object of which the full cyclic collection
    walks (homeredirect.collector). Each is the transaction and its Timer K entry: no
    channel, user, request or bound method for the timer."""
    setup = Setup()
    _complete(setup, 0, 100)  # warms up whatever the parser caches
    setup.advance_to(5.0)
    count = 1000
    gc.collect()
    before = len(gc.get_objects())
    _complete(setup, 100, count)
    gc.collect()
    assert len(setup.table) == count
    added = len(gc.get_objects()) - before
    assert added <= 2 * count + 10
    setup.advance_to(10.0)
    assert setup.idle()


def test_create_with_the_callers_branch_keys_the_transaction_by_it() -> None:
    """A proxy that made the branch of its own Via gives it: the same key as parsing the
    Via would give, so responses match."""
    setup = Setup()
    req = request()
    transaction = setup.table.create(req, setup.channel, setup.user, BRANCH)
    assert transaction.key == (BRANCH, "REGISTER")
    assert setup.table.receive(response_to(req, 200))
    assert setup.user.events == [("final", 200, 0.0)]


def test_non_invite_failure_response_is_final_too() -> None:
    setup = Setup()
    req = request()
    setup.start(req)
    assert setup.table.receive(response_to(req, 404))
    assert setup.user.events == [("final", 404, 0.0)]
    setup.advance_to(5)
    assert setup.idle()
    assert setup.channel.times() == [0.0]


def test_t1_and_t2_come_from_the_settings() -> None:
    setup = Setup(timers=TimerSettings(t1=0.1, t2=0.3, t4=1.0))
    setup.start(request())
    setup.advance_to(1.0)
    times = [round(at, 6) for at in setup.channel.times()]
    assert times == [0.0, 0.1, 0.3, 0.6, 0.9]
    setup.advance_to(6.4)
    [(event, status, at)] = setup.user.events
    assert (event, status, round(at, 6)) == ("timed out", 408, 6.4)
    assert setup.idle()


# -- non-INVITE over reliable transports -----------------------------------------------


def test_non_invite_over_reliable_transport_is_not_retransmitted() -> None:
    setup = Setup(reliable=True)
    setup.start(request())
    setup.advance_to(32)
    assert setup.channel.times() == [0.0]
    assert setup.user.events == [("timed out", 408, 32.0)]
    assert setup.idle()


def test_non_invite_over_reliable_transport_has_zero_timer_k() -> None:
    setup = Setup(reliable=True)
    req = request()
    setup.start(req)
    assert setup.table.receive(response_to(req, 200))
    assert len(setup.table) == 1
    setup.clock.advance(0)
    assert setup.idle()


# -- INVITE over UDP (§17.1.1.2) --------------------------------------------------------


def test_invite_retransmits_doubling_without_cap_until_timer_b() -> None:
    setup = Setup()
    setup.start(invite())
    setup.advance_to(31.9)
    assert setup.channel.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    setup.advance_to(32)
    assert setup.user.events == [("timed out", 408, 32.0)]
    assert setup.idle()
    setup.advance_to(200)
    assert len(setup.channel.sent) == 7
    assert len(setup.user.events) == 1


def test_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    setup = Setup()
    req = invite()
    setup.start(req)
    setup.advance_to(0.7)
    assert setup.table.receive(response_to(req, 100, to_tag=None))
    assert setup.table.receive(response_to(req, 180))
    setup.advance_to(600)
    assert setup.channel.times() == [0.0, 0.5]
    assert setup.user.events == [("provisional", 100, 0.7), ("provisional", 180, 0.7)]
    # Without Timer C the wait for the final response is the TU's to bound.
    assert len(setup.table) == 1
    assert setup.clock.getDelayedCalls() == []
    assert setup.table.receive(response_to(req, 200))
    assert setup.user.events[-1] == ("final", 200, 600.0)


def test_invite_failure_is_acknowledged_by_the_transaction() -> None:
    setup = Setup()
    req = invite()
    setup.start(req)
    setup.advance_to(0.2)
    assert setup.table.receive(response_to(req, 486, to_tag="busy9"))
    assert setup.user.events == [("final", 486, 0.2)]
    [_, ack] = setup.channel.requests()
    assert ack.method == "ACK"
    assert str(ack.uri) == str(req.uri)
    assert ack.headers.get_all("Via") == [TOP_VIA]
    assert ack.to_addr.tag == "busy9"
    assert ack.to_addr.uri == req.to_addr.uri
    assert ack.headers.get("From") == req.headers.get("From")
    assert ack.call_id == req.call_id
    assert (ack.cseq.number, ack.cseq.method) == (req.cseq.number, "ACK")
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    assert ack.max_forwards == 69
    assert ack.body == b""
    assert "Contact" not in ack.headers


def test_invite_completed_re_acks_retransmitted_failures_until_timer_d() -> None:
    setup = Setup()
    req = invite()
    setup.start(req)
    assert setup.table.receive(response_to(req, 486))
    setup.advance_to(0.5)
    setup.advance_to(10)
    assert setup.table.receive(response_to(req, 486))
    assert setup.table.receive(response_to(req, 180))
    assert setup.channel.times() == [0.0, 0.0, 10.0]
    assert setup.channel.sent[1][1] == setup.channel.sent[2][1]
    assert setup.user.events == [("final", 486, 0.0)]
    setup.advance_to(31.99)
    assert len(setup.table) == 1
    setup.advance_to(32)
    assert setup.idle()
    assert not setup.table.receive(response_to(req, 486))


def test_invite_2xx_enters_accepted_and_passes_every_2xx_up_until_timer_m() -> None:
    setup = Setup()
    req = invite()
    setup.start(req)
    setup.advance_to(1)
    assert setup.table.receive(response_to(req, 200, to_tag="fork1"))
    setup.advance_to(2)
    assert setup.table.receive(response_to(req, 200, to_tag="fork1"))
    assert setup.table.receive(response_to(req, 200, to_tag="fork2"))
    assert setup.table.receive(response_to(req, 180))
    assert setup.table.receive(response_to(req, 500))
    assert setup.user.events == [("final", 200, 1.0), ("final", 200, 2.0), ("final", 200, 2.0)]
    assert [r.to_addr.tag for r in setup.user.responses] == ["fork1", "fork1", "fork2"]
    # The transaction never acknowledges a 2xx, and stops retransmitting.
    setup.advance_to(32.9)
    assert setup.channel.times() == [0.0, 0.5]
    assert len(setup.table) == 1
    setup.advance_to(33)
    assert setup.idle()
    assert not setup.table.receive(response_to(req, 200, to_tag="fork1"))


def test_timer_d_is_at_least_64_t1() -> None:
    setup = Setup(timers=TimerSettings(t1=1.0, t2=4.0))
    req = invite()
    setup.start(req)
    assert setup.table.receive(response_to(req, 404))
    setup.advance_to(63.9)
    assert len(setup.table) == 1
    setup.advance_to(64)
    assert setup.idle()


def test_invite_over_reliable_transport_is_not_retransmitted_and_has_zero_timer_d() -> None:
    setup = Setup(reliable=True)
    req = invite()
    setup.start(req)
    setup.advance_to(10)
    assert setup.channel.times() == [0.0]
    assert setup.table.receive(response_to(req, 603))
    assert [r.method for r in setup.channel.requests()] == ["INVITE", "ACK"]
    assert len(setup.table) == 1
    setup.clock.advance(0)
    assert setup.idle()


def test_invite_over_reliable_transport_still_times_out_with_timer_b() -> None:
    setup = Setup(reliable=True)
    setup.start(invite())
    setup.advance_to(32)
    assert setup.user.events == [("timed out", 408, 32.0)]
    assert setup.channel.times() == [0.0]
    assert setup.idle()


# -- matching (§17.1.3) -----------------------------------------------------------------


def test_response_matches_by_branch_and_cseq_method() -> None:
    setup = Setup()
    req = invite()
    setup.start(req)
    assert not setup.table.receive(response_to(invite("z9hG4bKsomeoneelse"), 200))
    # Same branch, but CSeq method CANCEL: the CANCEL's transaction, not the INVITE's.
    assert not setup.table.receive(response_to(req, 200, method="CANCEL"))
    assert not setup.table.receive(response_to(invite("3261-less-branch"), 200))
    assert setup.user.events == []
    assert setup.table.receive(response_to(req, 180))


def test_stray_response_is_left_to_the_caller() -> None:
    setup = Setup()
    assert not setup.table.receive(response_to(request(), 200))


# -- transport errors (§17.1.4) -----------------------------------------------------------


def test_failed_first_send_reports_503_before_create_returns() -> None:
    setup = Setup()
    setup.channel.broken = True
    setup.start(invite())
    [(event, status, _)] = setup.user.events
    assert (event, status) == ("transport failed", 503)
    assert setup.user.responses[0].reason == "Service Unavailable"
    assert setup.idle()


def test_failed_retransmission_terminates_the_transaction_once() -> None:
    setup = Setup()
    setup.start(request())
    setup.advance_to(1)
    setup.channel.broken = True
    setup.advance_to(100)
    assert setup.user.events == [("transport failed", 503, 1.5)]
    assert setup.idle()


def test_channel_that_raises_counts_as_a_transport_error() -> None:
    @implementer(IClientChannel)
    class Raising:
        reliable = True

        def send(self, data: bytes) -> bool:
            raise OSError("no route")

    setup = Setup()
    setup.table.create(request(), Raising(), setup.user)
    assert [event for event, _, _ in setup.user.events] == ["transport failed"]
    assert setup.idle()


def test_connection_lost_while_proceeding_reports_503() -> None:
    setup = Setup(reliable=True)
    req = invite()
    transaction = setup.start(req)
    assert setup.table.receive(response_to(req, 180))
    transaction.transport_error()
    assert setup.user.events[-1] == ("transport failed", 503, 0.0)
    assert setup.idle()
    transaction.transport_error()
    assert len(setup.user.events) == 2


def test_failed_ack_reports_503_after_the_final_response() -> None:
    setup = Setup()
    req = invite()
    setup.start(req)
    setup.channel.broken = True
    assert setup.table.receive(response_to(req, 486))
    assert setup.user.events == [("final", 486, 0.0), ("transport failed", 503, 0.0)]
    assert setup.idle()


def test_transport_error_after_a_final_non_invite_response_is_ignored() -> None:
    setup = Setup()
    req = request()
    transaction = setup.start(req)
    assert setup.table.receive(response_to(req, 200))
    transaction.transport_error()
    assert setup.user.events == [("final", 200, 0.0)]
    setup.advance_to(5)
    assert setup.idle()


# -- CANCEL (§9.1) ------------------------------------------------------------------------


def test_cancel_copies_the_fields_that_identify_the_invite() -> None:
    req = invite()
    cancel = cancel_for(req)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(req.uri)
    assert cancel.headers.get_all("Via") == [TOP_VIA]
    for name in ("To", "From", "Call-ID"):
        assert cancel.headers.get(name) == req.headers.get(name)
    assert (cancel.cseq.number, cancel.cseq.method) == (req.cseq.number, "CANCEL")
    assert cancel.headers.get_all("Route") == req.headers.get_all("Route")
    assert client_transaction_key(cancel) == (BRANCH, "CANCEL")


def test_ack_for_failure_takes_to_from_the_response() -> None:
    req = invite()
    ack = ack_for_failure(req, response_to(req, 404, to_tag="x7"))
    assert ack.headers.get("To") == "Bob <sip:bob@example.com>;tag=x7"
    assert ack.headers.get("CSeq") == "314159 ACK"


def test_cancel_in_proceeding_sends_a_cancel_in_its_own_transaction() -> None:
    setup = Setup()
    req = invite()
    transaction = setup.start(req)
    assert setup.table.receive(response_to(req, 180))
    assert isinstance(transaction, InviteClientTransaction)
    cancel_user = User(setup.clock)
    setup.advance_to(2)
    transaction.cancel(cancel_user)
    transaction.cancel(cancel_user)
    assert [r.method for r in setup.channel.requests()] == ["INVITE", "CANCEL"]
    assert setup.channel.requests()[1].headers.get_all("Via") == [TOP_VIA]
    assert len(setup.table) == 2
    assert setup.table.receive(response_to(req, 200, method="CANCEL"))
    assert cancel_user.events == [("final", 200, 2.0)]
    assert setup.table.receive(response_to(req, 487))
    assert setup.user.events[-1] == ("final", 487, 2.0)
    assert [r.method for r in setup.channel.requests()][-1] == "ACK"
    setup.advance_to(40)
    assert setup.idle()


def test_cancel_in_calling_waits_for_a_provisional_response() -> None:
    setup = Setup()
    req = invite()
    transaction = setup.start(req)
    assert isinstance(transaction, InviteClientTransaction)
    transaction.cancel()
    setup.advance_to(1)
    assert [r.method for r in setup.channel.requests()] == ["INVITE", "INVITE"]
    assert setup.table.receive(response_to(req, 100, to_tag=None))
    assert [r.method for r in setup.channel.requests()] == ["INVITE", "INVITE", "CANCEL"]
    assert setup.user.events == [("provisional", 100, 1.0)]


def test_user_may_cancel_from_its_provisional_callback() -> None:
    setup = Setup()

    class Cancelling(User):
        def provisional_response(self, transaction: IClientTransaction, response: Response) -> None:
            super().provisional_response(transaction, response)
            assert isinstance(transaction, InviteClientTransaction)
            transaction.cancel()

    user = Cancelling(setup.clock)
    req = invite()
    setup.table.create(req, setup.channel, user)
    assert setup.table.receive(response_to(req, 180))
    assert setup.table.receive(response_to(req, 183))
    assert [r.method for r in setup.channel.requests()] == ["INVITE", "CANCEL"]


def test_cancel_held_back_is_dropped_when_timer_b_fires() -> None:
    setup = Setup()
    transaction = setup.start(invite())
    assert isinstance(transaction, InviteClientTransaction)
    transaction.cancel()
    setup.advance_to(32)
    assert setup.user.events == [("timed out", 408, 32.0)]
    assert "CANCEL" not in [r.method for r in setup.channel.requests()]
    assert setup.idle()


def test_cancel_after_a_final_response_sends_nothing() -> None:
    setup = Setup()
    req = invite()
    transaction = setup.start(req)
    assert isinstance(transaction, InviteClientTransaction)
    assert setup.table.receive(response_to(req, 200))
    transaction.cancel()
    assert [r.method for r in setup.channel.requests()] == ["INVITE"]


def test_cancelled_invite_without_final_response_gives_up_after_64_t1() -> None:
    setup = Setup()
    req = invite()
    transaction = setup.start(req)
    assert isinstance(transaction, InviteClientTransaction)
    setup.advance_to(1)
    assert setup.table.receive(response_to(req, 180))
    setup.advance_to(10)
    transaction.cancel()
    setup.advance_to(41.9)
    assert setup.user.events == [("provisional", 180, 1.0)]
    setup.advance_to(42)
    assert setup.user.events[-1] == ("timed out", 408, 42.0)
    assert setup.idle()


# -- Timer C (§16.6 step 11, §16.8) -------------------------------------------------------


def test_timer_c_cancels_a_proceeding_invite_and_is_reset_by_provisionals_but_100() -> None:
    setup = Setup(timer_c=180)
    req = invite()
    setup.start(req)
    setup.advance_to(1)
    assert setup.table.receive(response_to(req, 100, to_tag=None))
    setup.advance_to(100)
    assert setup.table.receive(response_to(req, 100, to_tag=None))
    assert setup.table.receive(response_to(req, 183))
    setup.advance_to(279.9)
    assert "CANCEL" not in [r.method for r in setup.channel.requests()]
    setup.advance_to(280)
    assert setup.channel.requests()[-1].method == "CANCEL"
    assert setup.table.receive(response_to(req, 200, method="CANCEL"))
    assert setup.table.receive(response_to(req, 487))
    setup.advance_to(400)
    assert setup.idle()


def test_timer_c_before_any_provisional_response_is_a_408() -> None:
    setup = Setup(timer_c=10)
    setup.start(invite())
    setup.advance_to(10)
    assert setup.user.events == [("timed out", 408, 10.0)]
    assert setup.idle()


# -- the transition tables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "states"),
    [
        (NON_INVITE_TRANSITIONS, [State.TRYING, State.PROCEEDING, State.COMPLETED]),
        (INVITE_TRANSITIONS, [State.CALLING, State.PROCEEDING, State.COMPLETED, State.ACCEPTED]),
    ],
)
def test_every_matchable_state_handles_every_response_and_transport_error(
    table: dict[tuple[State, Input], object], states: list[State]
) -> None:
    inputs = [Input.RESPONSE_1XX, Input.RESPONSE_2XX, Input.RESPONSE_300_699]
    for state in states:
        for event in [*inputs, Input.TRANSPORT_ERROR]:
            assert (state, event) in table, (state, event)
    # Terminated transactions are no longer matched, but the TU or channel may poke them.
    assert (State.TERMINATED, Input.TRANSPORT_ERROR) in table


def test_an_input_without_a_row_raises() -> None:
    setup = Setup()
    transaction = setup.start(invite())
    with pytest.raises(UndefinedClientTransition, match=r"Calling.*Timer K"):
        transaction._input(Input.TIMER_K)
    nontransaction = setup.start(request())
    with pytest.raises(UndefinedClientTransition, match=r"Trying.*CANCEL"):
        nontransaction._input(Input.CANCEL)


@pytest.fixture
def debug_logging() -> Iterator[None]:
    set_level("debug")
    yield
    set_level("info")


@pytest.mark.usefixtures("debug_logging")
def test_state_changes_are_logged_at_debug_level() -> None:
    setup = Setup()
    req = request()
    with capturedLogs() as events:
        setup.start(req)
        setup.table.receive(response_to(req, 200))
        setup.advance_to(5)
    changes = [(e["source"], e["target"], e["input"]) for e in events if "target" in e]
    assert changes == [
        ("Trying", "Completed", "2xx from transport"),
        ("Completed", "Terminated", "Timer K"),
    ]


# -- memory --------------------------------------------------------------------------------


def test_ten_thousand_transactions_leave_nothing_behind() -> None:
    """Every outcome, interleaved, on a clock that keeps moving: afterwards no transaction
    and no DelayedCall is left (RFC 3261 §17.1: "destroyed the instant it enters Terminated")."""
    setup = Setup()
    table, channel = setup.table, setup.channel
    templates = {"REGISTER": request(), "INVITE": invite()}
    for i in range(10_000):
        kind = i % 6
        template = templates["INVITE" if kind >= 3 else "REGISTER"]
        req = Request(
            template.method,
            template.uri,
            template.headers.replaced("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{i}"),
        )
        transaction = setup.start(req)
        if kind == 0:
            table.receive(response_to(req, 200, wire=False))
        elif kind == 1:
            table.receive(response_to(req, 100, to_tag=None, wire=False))  # then Timer F
        elif kind == 3:
            table.receive(response_to(req, 486, wire=False))
        elif kind == 4:
            table.receive(response_to(req, 200, wire=False))
        elif kind == 5:
            table.receive(response_to(req, 180, wire=False))
            assert isinstance(transaction, InviteClientTransaction)
            transaction.cancel()
            table.receive(response_to(req, 200, method="CANCEL", wire=False))
            table.receive(response_to(req, 487, wire=False))
        # kind 2: no answer at all, Timer F
        setup.clock.advance(0.01)
        channel.sent.clear()
    assert len(table) > 1000
    setup.clock.advance(100)
    assert setup.idle()
    assert all(len(queue) == 0 for queue in table._queues.values())
    outcomes = {event for event, _, _ in setup.user.events}
    assert outcomes == {"final", "provisional", "timed out"}
