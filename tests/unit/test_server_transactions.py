"""RFC 3261 §17.2 server transactions, their matching (§17.2.3) and timers, on a Clock."""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Iterator
from functools import partial
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, capturedLogs, globalLogPublisher
from zope.interface import implementer

from homeredirect.logs import set_level
from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.transaction.keys import server_transaction_key
from homeredirect.transaction.server import (
    INVITE_TRANSITIONS,
    NON_INVITE_TRANSITIONS,
    DuplicateTransaction,
    Input,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    ServerTransactionTable,
    State,
    UndefinedTransition,
)
from homeredirect.transaction.timers import DEFAULT_TIMERS, FixedDelayQueue, TimerSettings
from homeredirect.transport.flows import Address, IFlow

BRANCH = "z9hG4bK74bf9"


def request(
    method: str = "REGISTER",
    branch: str | None = BRANCH,
    sent_by: str = "192.0.2.4:5060",
    to_tag: str | None = None,
    uri: str = "sip:example.com",
    cseq: int = 1,
    extra: str = "",
) -> Request:
    branch_param = f";branch={branch}" if branch is not None else ""
    to_param = f";tag={to_tag}" if to_tag is not None else ""
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by}{branch_param}\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKouter\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:alice@example.com>{to_param}\r\n"
        "From: <sip:alice@example.com>;tag=456248\r\n"
        "Call-ID: 843817637684230@998sdasdh09\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived), event
    message = event.message
    assert isinstance(message, Request)
    return message


def response(
    to: Request, status: int, reason: str = "Reason", to_tag: str | None = "srv1"
) -> Response:
    fields: list[tuple[str, str]] = []
    for name, value in to.headers:
        if name == "To" and to_tag is not None and to.to_addr.tag is None:
            value = f"{value};tag={to_tag}"
        if name in ("Via", "From", "To", "Call-ID", "CSeq"):
            fields.append((name, value))
    return Response(status, reason, Headers(fields))


PEER = ("192.0.2.4", 5060)


@implementer(IFlow)
class Peer:
    """The flow to the far end: records what the transaction sends, where, and when."""

    transport = "UDP"
    remote = PEER
    local = ("192.0.2.1", 5060)
    peer_identity = None

    def __init__(self, clock: Clock | None = None, reliable: bool = False) -> None:
        self.clock = clock or Clock()
        self.reliable = reliable
        self.sent: list[bytes] = []
        self.sent_at: list[float] = []
        self.destinations: list[Address | None] = []
        self.broken = False

    def send(self, data: bytes, destination: Address | None = None) -> None:
        if self.broken:
            raise ConnectionError("connection lost")
        self.sent.append(data)
        self.sent_at.append(self.clock.seconds())
        self.destinations.append(destination)

    def statuses(self) -> list[int]:
        return [int(data.split(b" ", 2)[1]) for data in self.sent]


@pytest.fixture(autouse=True)
def logged_failures() -> Iterator[list[LogEvent]]:
    """Fail a test that logged a failure it did not expect.

    Timer callbacks run inside `FixedDelayQueue`, which logs their exceptions
    (UndefinedTransition among them) rather than raising them into the test.
    A test expecting a failure removes it from the list.
    """
    failures: list[LogEvent] = []

    def record(event: LogEvent) -> None:
        if "log_failure" in event:
            failures.append(event)

    observe = cast(ILogObserver, record)
    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)
    assert [event["log_failure"].getTraceback() for event in failures] == []


def start(
    req: Request, reliable: bool = False, timers: TimerSettings = DEFAULT_TIMERS
) -> tuple[Clock, ServerTransactionTable, Peer, ServerTransaction]:
    clock = Clock()
    table = ServerTransactionTable(clock, timers)
    peer = Peer(clock, reliable)
    assert not table.absorb(req)
    transaction = table.create(req, peer, None if reliable else PEER)
    return clock, table, peer, transaction


# -- TimerSettings -----------------------------------------------------------------


def test_timer_settings_default_to_rfc3261_table_4() -> None:
    timers = TimerSettings()
    assert (timers.t1, timers.t2, timers.t4) == (0.5, 4.0, 5.0)
    assert timers.timer_g_initial == 0.5
    assert timers.timer_h == 32.0
    assert (timers.timer_i(reliable=False), timers.timer_i(reliable=True)) == (5.0, 0.0)
    assert (timers.timer_j(reliable=False), timers.timer_j(reliable=True)) == (32.0, 0.0)


def test_timer_g_doubles_up_to_t2() -> None:
    timers = TimerSettings()
    intervals = [timers.timer_g_initial]
    for _ in range(5):
        intervals.append(timers.timer_g_next(intervals[-1]))
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize("value", [0, -0.5, math.nan, math.inf])
def test_timer_settings_reject_non_positive_or_non_finite_values(value: float) -> None:
    for name in ("t1", "t2", "t4"):
        with pytest.raises(ValueError, match=name):
            TimerSettings(**{name: value})


# -- FixedDelayQueue ---------------------------------------------------------------


def test_queue_fires_each_timer_its_delay_after_scheduling() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 32)
    fired: list[tuple[str, float]] = []
    queue.schedule(lambda: fired.append(("a", clock.seconds())))
    clock.advance(10)
    queue.schedule(lambda: fired.append(("b", clock.seconds())))
    clock.advance(21.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [("a", 32.0)]
    clock.advance(9.9)
    assert fired == [("a", 32.0)]
    clock.advance(0.1)
    assert fired == [("a", 32.0), ("b", 42.0)]
    assert clock.getDelayedCalls() == []


def test_queue_keeps_one_delayed_call_for_many_timers() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 32)
    fired: list[int] = []
    for i in range(1000):
        queue.schedule(partial(fired.append, i))
        clock.advance(0.001)
    assert len(clock.getDelayedCalls()) == 1
    assert len(queue) == 1000
    clock.advance(40)
    assert fired == list(range(1000))
    assert len(queue) == 0


def test_cancelled_timer_does_not_fire_and_is_not_counted() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 1)
    fired: list[str] = []
    handle = queue.schedule(lambda: fired.append("cancelled"))
    queue.schedule(lambda: fired.append("kept"))
    handle.cancel()
    handle.cancel()
    assert len(queue) == 1
    clock.advance(1)
    assert fired == ["kept"]
    assert len(queue) == 0


def test_cancelling_a_fired_timer_is_a_no_op() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 1)
    handle = queue.schedule(lambda: None)
    clock.advance(1)
    handle.cancel()
    assert len(queue) == 0


def test_zero_delay_fires_on_the_next_reactor_turn_not_inline() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 0)
    fired: list[int] = []
    queue.schedule(lambda: fired.append(1))
    queue.schedule(lambda: fired.append(2))
    assert fired == []
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert fired == [1, 2]


def test_callback_may_reschedule_on_its_own_queue_without_delaying_others() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 4)
    fired: list[tuple[str, float]] = []

    def first() -> None:
        fired.append(("first", clock.seconds()))
        queue.schedule(lambda: fired.append(("again", clock.seconds())))

    queue.schedule(first)
    clock.advance(1)
    queue.schedule(lambda: fired.append(("second", clock.seconds())))
    clock.advance(3)
    clock.advance(1)
    clock.advance(3)
    assert fired == [("first", 4.0), ("second", 5.0), ("again", 8.0)]


def test_failing_callback_is_logged_and_the_others_still_fire(
    logged_failures: list[LogEvent],
) -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 1)
    fired: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    queue.schedule(broken)
    queue.schedule(lambda: fired.append("after"))
    clock.advance(1)
    assert fired == ["after"]
    assert [e["log_failure"].type for e in logged_failures] == [RuntimeError]
    logged_failures.clear()


def test_stop_cancels_the_pending_call_and_every_timer() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 1)
    fired: list[int] = []
    handle = queue.schedule(lambda: fired.append(1))
    queue.stop()
    handle.cancel()
    assert clock.getDelayedCalls() == []
    assert len(queue) == 0
    clock.advance(2)
    assert fired == []


def test_stop_from_a_callback_cancels_the_timers_due_with_it() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 1)
    fired: list[str] = []
    queue.schedule(queue.stop)
    queue.schedule(lambda: fired.append("after stop"))
    clock.advance(1)
    assert fired == []
    assert len(queue) == 0
    assert clock.getDelayedCalls() == []


def test_schedule_with_calls_the_function_with_its_argument() -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, 1)
    fired: list[str] = []
    queue.schedule_with(fired.append, "argument")
    clock.advance(1)
    assert fired == ["argument"]


class _Owner:
    """Something a timer is for (a transaction), to see whether the timer keeps it."""


def test_a_cancelled_timer_lets_go_of_what_it_was_for() -> None:
    """A cancelled timer stays in the FIFO until its deadline: it must not keep its
    transaction alive that long."""
    clock = Clock()
    queue = FixedDelayQueue(clock, 32)
    owner = _Owner()
    owner_ref = weakref.ref(owner)
    handle = queue.schedule_with(id, owner)
    queue.schedule(lambda: None)  # keeps the queue, and the cancelled handle, waiting
    handle.cancel()
    del owner
    assert owner_ref() is None


def test_queue_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError):
        FixedDelayQueue(Clock(), -1)


@given(st.lists(st.tuples(st.floats(0, 100), st.booleans()), max_size=40), st.floats(0, 40))
def test_queue_fires_exactly_the_uncancelled_timers_in_order_never_early(
    plan: list[tuple[float, bool]], delay: float
) -> None:
    clock = Clock()
    queue = FixedDelayQueue(clock, delay)
    fired: list[tuple[int, float]] = []
    expected: list[int] = []
    deadlines: dict[int, float] = {}

    def fire(index: int) -> None:
        fired.append((index, clock.seconds()))

    for index, (wait, cancel) in enumerate(plan):
        clock.advance(wait)
        deadlines[index] = clock.seconds() + delay
        handle = queue.schedule(partial(fire, index))
        if cancel:
            handle.cancel()
        else:
            expected.append(index)
    assert len(queue) == len(expected) - len(fired)
    clock.advance(delay + 1)
    clock.advance(0)
    assert [index for index, _ in fired] == expected
    assert all(when >= deadlines[index] for index, when in fired)
    assert len(queue) == 0


# -- matching (§17.2.3) --------------------------------------------------------------


def test_rfc3261_key_is_branch_sent_by_and_method() -> None:
    assert server_transaction_key(request(sent_by="PC33.Example.COM:5060")) == (
        BRANCH,
        "pc33.example.com:5060",
        "REGISTER",
    )


def test_ack_shares_the_invite_key_and_cancel_has_its_own() -> None:
    invite = server_transaction_key(request("INVITE"))
    assert server_transaction_key(request("ACK")) == invite
    assert server_transaction_key(request("CANCEL")) == (BRANCH, "192.0.2.4:5060", "CANCEL")


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    other = server_transaction_key(request(sent_by="192.0.2.4:5070"))
    assert other != server_transaction_key(request())


def test_branch_without_magic_cookie_uses_rfc2543_rules() -> None:
    key = server_transaction_key(request(branch="74bf9", uri="sip:EXAMPLE.com"))
    assert len(key) == 8
    assert key != server_transaction_key(request(branch="74bf9", cseq=2))
    assert server_transaction_key(request(branch=None)) != server_transaction_key(
        request(branch="x")
    )


def test_retransmission_matches_but_a_new_request_does_not() -> None:
    _, table, _, _ = start(request())
    assert table.absorb(request())
    assert not table.absorb(request(branch="z9hG4bKother", cseq=2))


def test_ack_does_not_create_a_transaction() -> None:
    table = ServerTransactionTable(Clock())
    with pytest.raises(ValueError):
        table.create(request("ACK"), Peer(), PEER)


def test_creating_a_transaction_twice_fails() -> None:
    _, table, peer, _ = start(request())
    with pytest.raises(DuplicateTransaction):
        table.create(request(), peer, PEER)


def test_stray_ack_is_not_absorbed() -> None:
    table = ServerTransactionTable(Clock())
    assert not table.absorb(request("ACK"))


# -- non-INVITE (§17.2.2) -------------------------------------------------------------


def test_non_invite_request_creates_a_non_invite_transaction() -> None:
    _, table, peer, transaction = start(request())
    assert isinstance(transaction, NonInviteServerTransaction)
    assert transaction.key == server_transaction_key(request())
    assert len(table) == 1
    assert peer.sent == []


def test_completed_transaction_keeps_the_response_bytes_but_not_the_request() -> None:
    original = request()
    _, table, peer, transaction = start(original)
    seen = weakref.ref(original)
    del original
    gc.collect()
    assert seen() is not None  # held while the TU has not answered
    transaction.respond(response(request(), 301))
    gc.collect()
    assert seen() is None
    assert table.absorb(request())
    assert peer.sent[-1] == peer.sent[0]


def test_retransmission_in_trying_is_absorbed_silently() -> None:
    _, table, peer, _ = start(request())
    assert table.absorb(request())
    assert peer.sent == []


def test_retransmission_in_proceeding_resends_the_last_provisional() -> None:
    req = request()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 100, "Trying", to_tag=None))
    transaction.respond(response(req, 182, "Queued", to_tag=None))
    assert table.absorb(req)
    assert peer.statuses() == [100, 182, 182]
    assert peer.sent[2] == peer.sent[1]


def _complete_redirects(table: ServerTransactionTable, flow: Peer, first: int, count: int) -> None:
    for n in range(first, first + count):
        req = request(branch=f"z9hG4bK{n}")
        table.create(req, flow, PEER).respond(response(req, 301))


def test_a_completed_transaction_holds_two_tracked_objects() -> None:
    """A completed non-INVITE transaction lives for Timer J (32 s over UDP, §17.2.2): 64,000
    of them at 2,000 requests/s, every object of which the full cyclic collection walks
    (homeredirect.collector). Each is the transaction and its Timer J entry: no request, no
    response, no callable for the timer or for sending (the flow is the caller's: one per
    connection, or per datagram over UDP)."""
    clock = Clock()
    table = ServerTransactionTable(clock)
    flow = Peer(clock)
    _complete_redirects(table, flow, 0, 100)  # warms up whatever the parser caches
    clock.advance(32)
    count = 1000
    gc.collect()
    before = len(gc.get_objects())
    _complete_redirects(table, flow, 100, count)
    gc.collect()
    assert len(table) == count
    added = len(gc.get_objects()) - before
    assert added <= 2 * count + 10
    clock.advance(32)
    assert len(table) == 0


def test_retransmission_in_completed_resends_the_final_each_time() -> None:
    req = request()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 301))
    assert table.absorb(req)
    assert table.absorb(req)
    assert peer.statuses() == [301, 301, 301]
    assert len(set(peer.sent)) == 1
    assert peer.destinations == [PEER] * 3


def test_stateless_final_is_sent_once_and_keeps_nothing() -> None:
    """RFC 3261 §8.2.7: the transaction ends at once; a retransmission of the request is
    no longer absorbed (the TU answers it as a new request)."""
    req = request()
    clock, table, peer, transaction = start(req)
    transaction.respond_statelessly(response(req, 401))
    assert peer.statuses() == [401]
    assert len(table) == 0
    assert not table.absorb(req)
    clock.advance(64)
    assert peer.statuses() == [401]


def test_stateless_final_after_a_provisional_ends_the_transaction() -> None:
    req = request()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 100, "Trying", to_tag=None))
    transaction.respond_statelessly(response(req, 407))
    assert peer.statuses() == [100, 407]
    assert len(table) == 0


def test_stateless_final_after_the_final_is_discarded() -> None:
    req = request()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 301))
    transaction.respond_statelessly(response(req, 401))
    assert peer.statuses() == [301]
    assert len(table) == 1


@pytest.mark.parametrize("status", [100, 200, 299, 700])
def test_stateless_response_must_be_a_final_non_2xx(status: int) -> None:
    req = request()
    _, table, peer, transaction = start(req)
    with pytest.raises(ValueError):
        transaction.respond_statelessly(response(req, status))
    assert peer.sent == [] and len(table) == 1


def test_failed_stateless_send_leaves_nothing_behind() -> None:
    req = request()
    _, table, peer, transaction = start(req)
    peer.broken = True
    transaction.respond_statelessly(response(req, 401))
    assert len(table) == 0


def test_final_response_goes_out_serialized() -> None:
    req = request()
    _, _, peer, transaction = start(req)
    transaction.respond(response(req, 200, "OK"))
    assert peer.sent[0].startswith(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK74bf9\r\n"
    )
    assert peer.sent[0].endswith(b"Content-Length: 0\r\n\r\n")


def test_timer_j_is_64_t1_over_unreliable_transports() -> None:
    req = request()
    clock, table, _, transaction = start(req)
    transaction.respond(response(req, 301))
    clock.advance(31.9)
    assert table.absorb(req)
    assert len(table) == 1
    clock.advance(0.1)
    assert len(table) == 0
    assert not table.absorb(req)
    assert clock.getDelayedCalls() == []


def test_timer_j_follows_t1() -> None:
    req = request()
    clock, table, _, transaction = start(req, timers=TimerSettings(t1=0.25))
    transaction.respond(response(req, 200, "OK"))
    clock.advance(16)
    assert len(table) == 0


def test_timer_j_is_zero_over_reliable_transports() -> None:
    req = request()
    clock, table, peer, transaction = start(req, reliable=True)
    transaction.respond(response(req, 200, "OK"))
    assert len(table) == 1
    clock.advance(0)
    assert len(table) == 0
    assert peer.statuses() == [200]


def test_many_transactions_share_one_delayed_call_for_timer_j() -> None:
    clock = Clock()
    table = ServerTransactionTable(clock)
    for n in range(100):
        req = request(branch=f"z9hG4bK{n}")
        table.create(req, Peer(), PEER).respond(response(req, 200, "OK"))
        clock.advance(0.01)
    assert len(table) == 100
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(32)
    assert len(table) == 0


@pytest.mark.parametrize("status", [180, 200, 500])
def test_response_after_the_final_one_is_discarded_and_logged(status: int) -> None:
    req = request()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 301))
    with capturedLogs() as events:
        transaction.respond(response(req, status))
    assert peer.statuses() == [301]
    [event] = events
    assert event["log_level"] == LogLevel.info
    assert event["status"] == status
    assert event["state"] == "Completed"
    assert table.absorb(req)
    assert peer.statuses() == [301, 301]


@pytest.mark.parametrize("status", [200, 404])
def test_final_response_after_a_provisional_completes(status: int) -> None:
    req = request()
    clock, table, peer, transaction = start(req)
    transaction.respond(response(req, 100, "Trying", to_tag=None))
    transaction.respond(response(req, status))
    assert table.absorb(req)
    assert peer.statuses() == [100, status, status]
    clock.advance(32)
    assert len(table) == 0


def test_transport_error_terminates_and_removes_the_transaction() -> None:
    req = request()
    clock, table, _, transaction = start(req)
    transaction.respond(response(req, 301))
    transaction.transport_error()
    assert len(table) == 0
    assert not table.absorb(req)
    assert clock.getDelayedCalls() == []


def test_response_after_a_transport_error_is_discarded() -> None:
    req = request()
    _, _, peer, transaction = start(req)
    transaction.transport_error()
    with capturedLogs() as events:
        transaction.respond(response(req, 301))
    transaction.transport_error()
    assert peer.sent == []
    assert [e["state"] for e in events] == ["Terminated"]


def test_failing_send_is_a_transport_error() -> None:
    req = request()
    clock, table, peer, transaction = start(req, reliable=True)
    peer.broken = True
    with capturedLogs() as events:
        transaction.respond(response(req, 301))
    assert len(table) == 0
    assert "connection lost" in events[0]["error"]
    assert clock.getDelayedCalls() == []


def test_failing_retransmission_in_completed_terminates() -> None:
    req = request()
    clock, table, peer, transaction = start(req)
    transaction.respond(response(req, 301))
    peer.broken = True
    assert table.absorb(req)
    assert len(table) == 0
    clock.advance(32)


def test_status_codes_outside_100_to_699_are_refused() -> None:
    req = request()
    _, _, _, transaction = start(req)
    for status in (99, 700):
        with pytest.raises(ValueError):
            transaction.respond(response(req, status))


def test_input_without_a_row_raises_undefined_transition() -> None:
    _, _, _, transaction = start(request())
    with pytest.raises(UndefinedTransition) as raised:
        transaction._input(Input.TIMER_J)
    assert (raised.value.state, raised.value.input) == (State.TRYING, Input.TIMER_J)


@pytest.fixture
def debug_logging() -> Iterator[None]:
    set_level("debug")
    yield
    set_level("info")


@pytest.mark.usefixtures("debug_logging")
def test_state_changes_are_logged_at_debug_level() -> None:
    clock = Clock()
    table = ServerTransactionTable(clock)
    req = request()
    with capturedLogs() as events:
        table.create(req, Peer(), PEER).respond(response(req, 301))
        clock.advance(32)
    assert [(e["log_level"], e["source"], e["target"], e["input"]) for e in events] == [
        (LogLevel.debug, "Trying", "Completed", "300-699 from TU"),
        (LogLevel.debug, "Completed", "Terminated", "Timer J"),
    ]
    assert events[0]["key"] == server_transaction_key(req)


def test_state_changes_are_not_logged_at_info_level() -> None:
    req = request()
    with capturedLogs() as events:
        clock, _, _, transaction = start(req)
        transaction.respond(response(req, 301))
        clock.advance(32)
    assert events == []


NETWORK_AND_TU_INPUTS = (
    Input.REQUEST,
    Input.PROVISIONAL,
    Input.SUCCESS,
    Input.FAILURE,
    Input.TRANSPORT_ERROR,
)


@pytest.mark.parametrize("state", [State.TRYING, State.PROCEEDING, State.COMPLETED])
def test_non_invite_table_has_a_row_for_every_peer_or_tu_input_in_live_states(state: State) -> None:
    for event in NETWORK_AND_TU_INPUTS:
        assert (state, event) in NON_INVITE_TRANSITIONS


@pytest.mark.parametrize("state", [State.PROCEEDING, State.COMPLETED, State.CONFIRMED])
def test_invite_table_has_a_row_for_every_peer_or_tu_input_in_live_states(state: State) -> None:
    for event in (*NETWORK_AND_TU_INPUTS, Input.ACK):
        assert (state, event) in INVITE_TRANSITIONS


# -- INVITE (§17.2.1) ---------------------------------------------------------------


def invite(branch: str | None = BRANCH, to_tag: str | None = None, extra: str = "") -> Request:
    return request("INVITE", branch, uri="sip:bob@example.com", to_tag=to_tag, extra=extra)


def ack(branch: str | None = BRANCH, to_tag: str | None = None) -> Request:
    return request("ACK", branch, uri="sip:bob@example.com", to_tag=to_tag)


def test_invite_creates_an_invite_transaction() -> None:
    _, _, _, transaction = start(invite())
    assert isinstance(transaction, InviteServerTransaction)


def test_100_trying_is_sent_when_the_tu_is_silent_for_200_ms() -> None:
    req = invite(extra="Timestamp: 54\r\nSubject: lunch\r\n")
    clock, _, peer, _ = start(req)
    clock.advance(0.199)
    assert peer.sent == []
    clock.advance(0.001)
    assert peer.statuses() == [100]
    trying = parse_datagram(peer.sent[0])
    assert isinstance(trying, MessageReceived)
    message = trying.message
    assert isinstance(message, Response)
    assert message.reason == "Trying"
    assert message.headers.get_all("Via") == req.headers.get_all("Via")
    for name in ("From", "To", "Call-ID", "CSeq"):
        assert message.headers.get(name) == req.headers.get(name)
    assert message.headers.get("Timestamp") == "54 0.200"
    assert "Subject" not in message.headers


@pytest.mark.parametrize("status", [180, 302, 200])
def test_no_100_trying_when_the_tu_answers_within_200_ms(status: int) -> None:
    req = invite()
    clock, _, peer, transaction = start(req)
    clock.advance(0.1)
    transaction.respond(response(req, status))
    clock.advance(0.2)
    assert peer.statuses() == [status]


def test_non_invite_gets_no_100_trying() -> None:
    clock, _, peer, _ = start(request())
    clock.advance(1)
    assert peer.sent == []


def test_invite_retransmission_in_proceeding_resends_the_last_provisional() -> None:
    req = invite()
    clock, table, peer, transaction = start(req)
    assert table.absorb(req)
    assert peer.sent == []
    clock.advance(0.2)
    assert table.absorb(req)
    transaction.respond(response(req, 180, "Ringing"))
    assert table.absorb(req)
    assert peer.statuses() == [100, 100, 180, 180]


def test_failure_response_is_retransmitted_by_timer_g_up_to_t2() -> None:
    req = invite()
    clock, _, peer, transaction = start(req)
    transaction.respond(response(req, 302))
    clock.pump([0.5] * 40)
    # intervals T1, 2*T1, 4*T1, then T2 = 4 s
    assert peer.sent_at[:8] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
    assert set(peer.statuses()) == {302}


def test_timer_h_terminates_when_no_ack_arrives() -> None:
    req = invite()
    clock, table, peer, transaction = start(req)
    transaction.respond(response(req, 404))
    with capturedLogs() as events:
        clock.pump([0.5] * 63)
        assert len(table) == 1
        clock.advance(0.5)
    assert len(table) == 0
    assert clock.getDelayedCalls() == []
    [event] = events
    assert (event["key"], event["timeout"]) == (transaction.key, 32.0)
    assert peer.sent_at == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert not table.absorb(ack())


def test_failure_response_is_not_retransmitted_over_reliable_transports() -> None:
    req = invite()
    clock, table, peer, transaction = start(req, reliable=True)
    transaction.respond(response(req, 486))
    clock.advance(31.9)
    assert peer.statuses() == [486]
    assert len(table) == 1
    clock.advance(0.1)
    assert len(table) == 0


def test_invite_retransmission_in_completed_resends_the_final() -> None:
    req = invite()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 302))
    assert table.absorb(req)
    assert peer.statuses() == [302, 302]


def test_ack_confirms_and_timer_i_terminates() -> None:
    req = invite()
    clock, table, peer, transaction = start(req)
    transaction.respond(response(req, 302))
    clock.advance(0.25)
    assert table.absorb(ack())
    clock.advance(1)
    assert table.absorb(ack())
    assert table.absorb(req)
    clock.advance(3.99)
    assert peer.sent_at == [0]
    assert len(table) == 1
    clock.advance(0.01)
    assert len(table) == 0
    assert clock.getDelayedCalls() == []
    assert not table.absorb(ack())


def test_ack_after_some_retransmissions_stops_them() -> None:
    req = invite()
    clock, table, peer, transaction = start(req)
    transaction.respond(response(req, 302))
    clock.pump([0.5, 1, 1])
    assert table.absorb(ack())
    clock.pump([0.5] * 20)
    assert peer.sent_at == [0, 0.5, 1.5]


def test_timer_i_is_zero_over_reliable_transports() -> None:
    req = invite()
    clock, table, _, transaction = start(req, reliable=True)
    transaction.respond(response(req, 302))
    assert table.absorb(ack())
    assert len(table) == 1
    clock.advance(0)
    assert len(table) == 0
    assert clock.getDelayedCalls() == []


def test_2xx_terminates_at_once() -> None:
    req = invite()
    clock, table, peer, transaction = start(req)
    transaction.respond(response(req, 200, "OK"))
    assert len(table) == 0
    assert clock.getDelayedCalls() == []
    assert not table.absorb(ack(branch="z9hG4bKnew", to_tag="srv1"))
    assert not table.absorb(req)
    clock.advance(64)
    assert peer.statuses() == [200]


def test_ack_before_a_final_response_is_absorbed_and_ignored() -> None:
    req = invite()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 180, "Ringing"))
    assert table.absorb(ack())
    transaction.respond(response(req, 486))
    assert peer.statuses() == [180, 486]


def test_cancel_has_a_transaction_of_its_own_beside_the_invite() -> None:
    clock = Clock()
    table = ServerTransactionTable(clock)
    peer = Peer()
    req = invite()
    invite_transaction = table.create(req, peer, PEER)
    cancel = request("CANCEL", uri="sip:bob@example.com")
    assert not table.absorb(cancel)
    cancel_transaction = table.create(cancel, peer, PEER)
    assert isinstance(cancel_transaction, NonInviteServerTransaction)
    cancel_transaction.respond(response(cancel, 200, "OK"))
    invite_transaction.respond(response(req, 487, "Request Terminated"))
    assert len(table) == 2
    assert peer.statuses() == [200, 487]


def test_transport_error_terminates_an_invite_transaction_and_its_timers() -> None:
    req = invite()
    clock, table, _, transaction = start(req)
    transaction.respond(response(req, 302))
    transaction.transport_error()
    assert len(table) == 0
    assert clock.getDelayedCalls() == []


def test_failing_100_trying_terminates() -> None:
    req = invite()
    clock, table, peer, _ = start(req, reliable=True)
    peer.broken = True
    clock.advance(0.2)
    assert len(table) == 0


@pytest.mark.parametrize("status", [180, 200, 486])
def test_response_from_tu_in_confirmed_is_discarded(status: int) -> None:
    req = invite()
    _, table, peer, transaction = start(req)
    transaction.respond(response(req, 302))
    table.absorb(ack())
    with capturedLogs() as events:
        transaction.respond(response(req, status))
    assert peer.statuses() == [302]
    assert events[0]["state"] == "Confirmed"


def test_transport_error_in_confirmed_terminates() -> None:
    req = invite()
    clock, table, _, transaction = start(req)
    transaction.respond(response(req, 302))
    table.absorb(ack())
    transaction.transport_error()
    assert len(table) == 0
    assert clock.getDelayedCalls() == []


def test_rfc2543_ack_matches_by_the_to_tag_of_the_final_response() -> None:
    req = invite(branch=None)
    clock, table, peer, transaction = start(req)
    transaction.respond(response(req, 302, to_tag="srv1"))
    assert not table.absorb(ack(branch=None, to_tag="other"))
    assert table.absorb(req)
    assert table.absorb(ack(branch=None, to_tag="srv1"))
    clock.advance(5)
    assert peer.statuses() == [302, 302]
    assert len(table) == 0


def test_rfc2543_ack_inside_a_dialog_matches_directly() -> None:
    req = invite(branch=None, to_tag="dlg")
    _, table, _, transaction = start(req)
    assert not table.absorb(ack(branch=None, to_tag="dlg"))
    transaction.respond(response(req, 491))
    assert table.absorb(ack(branch=None, to_tag="dlg"))


def test_stop_cancels_every_timer() -> None:
    clock = Clock()
    table = ServerTransactionTable(clock)
    peer = Peer()
    table.create(invite(), peer, PEER)
    failed = invite(branch="z9hG4bK2")
    table.create(failed, peer, PEER).respond(response(failed, 302))
    done = request()
    table.create(done, peer, PEER).respond(response(done, 200, "OK"))
    assert clock.getDelayedCalls() != []
    table.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert peer.statuses() == [302, 200]


# -- any order of events ---------------------------------------------------------------

EVENTS = st.one_of(
    st.tuples(st.just("respond"), st.sampled_from([100, 180, 200, 302, 486, 503])),
    st.tuples(st.just("retransmit"), st.just(0)),
    st.tuples(st.just("ack"), st.just(0)),
    st.tuples(st.just("advance"), st.sampled_from([0, 0.2, 0.5, 4, 32])),
    st.tuples(st.just("transport_error"), st.just(0)),
    st.tuples(st.just("break"), st.just(0)),
)


@settings(max_examples=500)
@given(
    st.sampled_from(["INVITE", "REGISTER"]),
    st.booleans(),
    st.lists(EVENTS, max_size=12),
)
def test_any_sequence_of_events_is_handled_and_cleans_up(
    method: str, reliable: bool, events: list[tuple[str, float]]
) -> None:
    req = request(method)
    clock, table, peer, transaction = start(req, reliable=reliable)
    with capturedLogs() as logged:
        for event, value in events:
            if event == "respond":
                transaction.respond(response(req, int(value)))
            elif event == "retransmit":
                table.absorb(req)
            elif event == "ack":
                table.absorb(request("ACK"))
            elif event == "advance":
                clock.advance(value)
            elif event == "transport_error":
                transaction.transport_error()
            else:
                peer.broken = True
        transaction.respond(response(req, 500))
        clock.pump([1] * 70)
    assert not [e for e in logged if "log_failure" in e]
    assert len(table) == 0
    assert clock.getDelayedCalls() == []
