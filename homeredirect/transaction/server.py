"""Server transactions (RFC 3261 §17.2): absorbing retransmitted requests, retransmitting responses.

Each transaction is an explicit state machine: a transition table maps
``(state, input)`` to ``(next state, action)``, where the inputs are a request
retransmission or ACK from the network, a response from the TU, a timer firing
or a transport error.  A pair missing from a table raises `UndefinedTransition`;
inputs that the RFC says to discard have rows of their own.

`ServerTransactionTable` matches requests to transactions (§17.2.3) and owns
the timers.  Every server timer has a fixed delay per transport (see
`homeredirect.transaction.timers`), so transactions share a few
`FixedDelayQueue`s and none holds a DelayedCall of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum

from twisted.internet.interfaces import IReactorTime

from homeredirect.logs import FilteredLogger
from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.serialize import serialize
from homeredirect.transaction.keys import (
    TransactionKey,
    is_rfc2543_key,
    rfc2543_ack_fallback_key,
    rfc2543_to_tag,
    server_transaction_key,
)
from homeredirect.transaction.machine import (
    Action,
    TransactionMachine,
    TransactionTable,
    UndefinedTransitionError,
    staying,
)
from homeredirect.transaction.timers import (
    DEFAULT_TIMERS,
    TRYING_DELAY,
    FixedDelayQueue,
    TimerHandle,
    TimerSettings,
)
from homeredirect.transport.flows import Address, IFlow

log = FilteredLogger()


def check_stateless_final(response: Response) -> None:
    """A response sent statelessly (RFC 3261 §8.2.7) is final and not a 2xx, which would
    have to be retransmitted until ACKed (§13.3.1.4): ValueError otherwise."""
    if not 300 <= response.status < 700:
        raise ValueError(f"a stateless final response is 300-699, not {response.status}")


class State(Enum):
    """The states of RFC 3261 Figures 7 and 8."""

    # Members are singletons compared by identity; hashing them by identity (in C)
    # rather than by name (Enum's Python-level __hash__) halves the cost of a
    # transition-table lookup.
    __hash__ = object.__hash__

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Input(Enum):
    """What can happen to a server transaction (the arcs of RFC 3261 Figures 7 and 8)."""

    __hash__ = object.__hash__

    REQUEST = "request retransmission"
    ACK = "ACK"
    PROVISIONAL = "1xx from TU"
    SUCCESS = "2xx from TU"
    FAILURE = "300-699 from TU"
    TIMER_TRYING = "200 ms without a response from TU"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TRANSPORT_ERROR = "transport error"
    STATELESS_FINAL = "300-699 from a stateless TU"


_REQUEST = Input.REQUEST
_ACK = Input.ACK
_PROVISIONAL = Input.PROVISIONAL
_SUCCESS = Input.SUCCESS
_FAILURE = Input.FAILURE
_TRANSPORT_ERROR = Input.TRANSPORT_ERROR
_STATELESS_FINAL = Input.STATELESS_FINAL
_TU_RESPONSES = (_PROVISIONAL, _SUCCESS, _FAILURE)
_NON_INVITE_TU_RESPONSES = (*_TU_RESPONSES, _STATELESS_FINAL)


class UndefinedTransition(UndefinedTransitionError):
    """A server transaction received an input that its transition table has no row for.

    This is a bug in the caller or in the table, never the network's doing:
    every input that a peer can cause has a row in every live state.
    """

    side = "server"


class DuplicateTransaction(ValueError):
    """`ServerTransactionTable.create` was given a request that matches a live transaction."""


_NonInviteAction = Callable[["NonInviteServerTransaction", "Response | None"], None]
_InviteAction = Callable[["InviteServerTransaction", "Response | None"], None]
Transitions = Mapping[tuple[State, Input], tuple[State, Action]]


class ServerTransaction(TransactionMachine[State, Input]):
    """What the TU and the table see of a server transaction (RFC 3261 §17.2).

    The TU calls `respond` with each response; the transaction sends it,
    keeps the serialized bytes for retransmission and runs its timers.
    The engine (`_input`, inherited) looks up each input in the kind's
    transition table.
    """

    __slots__ = ("_destination", "_flow", "_last", "_reliable", "_request", "_table")

    _side = "server"
    _undefined = UndefinedTransition

    def __init__(
        self,
        table: ServerTransactionTable,
        key: TransactionKey,
        request: Request,
        flow: IFlow,
        destination: Address | None,
        state: State,
    ) -> None:
        self.key = key
        self._state = state
        # Kept only until the final response: a completed transaction lives on for
        # Timer J (32 s over UDP) and needs nothing but the bytes it resends; keeping
        # the parsed request would cost ~5 KB each and the cyclic GC's time.
        self._request: Request | None = request
        self._table = table
        # The flow and the address, not a callable made for the request: a closure and
        # its cells would be four more objects per completed transaction for the cyclic
        # collector to walk (homeredirect.collector).
        self._flow = flow
        self._destination = destination
        self._reliable: bool = flow.reliable
        self._last: bytes | None = None

    def respond(self, response: Response) -> None:
        """Send *response* (provisional or final) from the TU to the peer (§17.2.1, §17.2.2).

        A response that the current state cannot send (a second final
        response, anything after termination) is logged and discarded.
        """
        status = response.status
        if status < 200:
            if status < 100:
                raise ValueError(f"status code {status} is not a SIP status code")
            self._input(_PROVISIONAL, response)
        elif status < 300:
            self._request = None
            self._input(_SUCCESS, response)
        elif status < 700:
            self._request = None
            self._input(_FAILURE, response)
        else:
            raise ValueError(f"status code {status} is not a SIP status code")

    def respond_statelessly(self, response: Response) -> None:
        """Send the final non-2xx *response* once and end the transaction at once: the TU
        answered as a stateless UAS would (RFC 3261 §8.2.7), so nothing is kept for Timer J
        and a retransmission of the request is processed as a new request.

        For the challenge to a request that carries no credentials: a client that has not
        authenticated must not be able to make the server keep state for 32 s per request
        (a spoofed flood would fill the table). Non-INVITE transactions only: an INVITE's
        final response has to wait for its ACK (§17.2.1).
        """
        check_stateless_final(response)
        self._request = None
        self._input(Input.STATELESS_FINAL, response)

    def transport_error(self) -> None:
        """The transport failed to deliver a response: terminate (§17.2.4)."""
        self._input(_TRANSPORT_ERROR)

    # -- actions shared by both kinds -----------------------------------------
    # An action that sends does so last: a failed send feeds TRANSPORT_ERROR
    # (re-entering the machine), after which the action must do nothing more.

    def _transmit(self, data: bytes) -> None:
        try:
            self._flow.send(data, self._destination)
        except Exception as error:
            log.info(
                "transport failed to send a response of {kind} server transaction {key}: {error}",
                kind=self._kind,
                key=self.key,
                error=repr(error),
            )
            self._input(_TRANSPORT_ERROR)

    def _resend_last(self, response: Response | None) -> None:
        """Retransmit the last response sent, if there was one (§17.2.1, §17.2.2)."""
        if self._last is not None:
            self._transmit(self._last)

    def _send_provisional(self, response: Response | None) -> None:
        assert response is not None
        self._last = data = serialize(response)
        self._transmit(data)

    def _discard_response(self, response: Response | None) -> None:
        """§17.2.2: final responses after the first are discarded; so is anything after the end."""
        assert response is not None
        log.info(
            "{kind} server transaction {key} in state {state} discarded a {status} from the TU",
            kind=self._kind,
            key=self.key,
            status=response.status,
            state=self._state.value,
        )

    def _terminate(self, response: Response | None) -> None:
        self._cancel_timers()
        self._table._forget(self.key)

    def _fail(self, response: Response | None) -> None:
        """§17.2.4: a transport error terminates the transaction."""
        log.info(
            "{kind} server transaction {key} terminated by a transport error",
            kind=self._kind,
            key=self.key,
        )
        self._terminate(None)

    def _cancel_timers(self) -> None:
        raise NotImplementedError


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2, Figure 8: Trying, Proceeding, Completed, Terminated; Timer J."""

    __slots__ = ("_timer_j",)

    _kind = "non-INVITE"

    def __init__(
        self,
        table: ServerTransactionTable,
        key: TransactionKey,
        request: Request,
        flow: IFlow,
        destination: Address | None,
    ) -> None:
        super().__init__(table, key, request, flow, destination, State.TRYING)
        self._timer_j: TimerHandle | None = None

    def _send_final(self, response: Response | None) -> None:
        """Enter Completed: keep the final response for retransmission, set Timer J."""
        assert response is not None
        self._last = data = serialize(response)
        self._timer_j = self._table._timer_j(self._reliable).schedule_with(
            NonInviteServerTransaction._timer_j_fired, self
        )
        self._transmit(data)

    def _send_final_and_end(self, response: Response | None) -> None:
        """Send the final response once and leave the table (§8.2.7): Terminated, whatever
        the send does."""
        assert response is not None
        data = serialize(response)
        self._terminate(None)
        self._transmit(data)

    def _timer_j_fired(self) -> None:
        self._timer_j = None
        self._input(Input.TIMER_J)

    def _cancel_timers(self) -> None:
        if self._timer_j is not None:
            self._timer_j.cancel()
            self._timer_j = None


_N = NonInviteServerTransaction
_TRYING, _PROCEEDING, _COMPLETED, _CONFIRMED, _TERMINATED = (
    State.TRYING,
    State.PROCEEDING,
    State.COMPLETED,
    State.CONFIRMED,
    State.TERMINATED,
)

NON_INVITE_TRANSITIONS: dict[tuple[State, Input], tuple[State, _NonInviteAction]] = {
    # §17.2.2: "any further request retransmissions are discarded"
    (_TRYING, _REQUEST): (_TRYING, _N._ignore),
    (_TRYING, _PROVISIONAL): (_PROCEEDING, _N._send_provisional),
    (_TRYING, _SUCCESS): (_COMPLETED, _N._send_final),
    (_TRYING, _FAILURE): (_COMPLETED, _N._send_final),
    (_TRYING, _TRANSPORT_ERROR): (_TERMINATED, _N._fail),
    (_PROCEEDING, _REQUEST): (_PROCEEDING, _N._resend_last),
    (_PROCEEDING, _PROVISIONAL): (_PROCEEDING, _N._send_provisional),
    (_PROCEEDING, _SUCCESS): (_COMPLETED, _N._send_final),
    (_PROCEEDING, _FAILURE): (_COMPLETED, _N._send_final),
    (_PROCEEDING, _TRANSPORT_ERROR): (_TERMINATED, _N._fail),
    # §8.2.7: the TU answers as a stateless UAS (see `respond_statelessly`).
    (_TRYING, _STATELESS_FINAL): (_TERMINATED, _N._send_final_and_end),
    (_PROCEEDING, _STATELESS_FINAL): (_TERMINATED, _N._send_final_and_end),
    (_COMPLETED, _REQUEST): (_COMPLETED, _N._resend_last),
    # "Any other final responses passed by the TU ... MUST be discarded"
    **staying(_COMPLETED, _NON_INVITE_TU_RESPONSES, _N._discard_response),
    (_COMPLETED, Input.TIMER_J): (_TERMINATED, _N._terminate),
    (_COMPLETED, _TRANSPORT_ERROR): (_TERMINATED, _N._fail),
    # The TU may answer after a transport error ended the transaction.
    **staying(_TERMINATED, _NON_INVITE_TU_RESPONSES, _N._discard_response),
    (_TERMINATED, _TRANSPORT_ERROR): (_TERMINATED, _N._ignore),
}
NonInviteServerTransaction._transitions = NON_INVITE_TRANSITIONS

_TRYING_HEADERS = frozenset({"Via", "From", "To", "Call-ID", "CSeq", "Timestamp"})


def trying_response(request: Request, delay: float) -> Response:
    """The 100 (Trying) a server transaction sends for *request* (RFC 3261 §8.2.6).

    It copies Via, From, To (no tag needed), Call-ID and CSeq, and Timestamp with
    *delay*, the seconds since the request arrived, added (§8.2.6.1).
    """
    fields: list[tuple[str, str]] = []
    for name, value in request.headers:
        if name in _TRYING_HEADERS:
            if name == "Timestamp" and len(value.split()) == 1:
                value = f"{value} {delay:.3f}"
            fields.append((name, value))
    return Response(100, "Trying", Headers(fields))


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1, Figure 7: Proceeding, Completed, Confirmed, Terminated; Timers G, H, I.

    A 2xx response terminates the transaction at once: retransmitting it and
    receiving its ACK are the TU's business (§13.3.1.4).
    """

    __slots__ = (
        "_g_interval",
        "_response_to_tag",
        "_timer_g",
        "_timer_h",
        "_timer_i",
        "_timer_trying",
    )

    _kind = "INVITE"

    def __init__(
        self,
        table: ServerTransactionTable,
        key: TransactionKey,
        request: Request,
        flow: IFlow,
        destination: Address | None,
    ) -> None:
        super().__init__(table, key, request, flow, destination, State.PROCEEDING)
        self._timer_trying: TimerHandle | None = table._timer_trying.schedule_with(
            InviteServerTransaction._timer_trying_fired, self
        )
        self._timer_g: TimerHandle | None = None
        self._timer_h: TimerHandle | None = None
        self._timer_i: TimerHandle | None = None
        self._g_interval = 0.0
        self._response_to_tag: str | None = None

    def _acknowledged_by(self, to_tag: str) -> bool:
        """§17.2.3, RFC 2543 rules: an ACK matches only with the To tag of our final response."""
        return self._response_to_tag == to_tag

    # -- timer callbacks --------------------------------------------------------

    def _timer_trying_fired(self) -> None:
        self._timer_trying = None
        self._input(Input.TIMER_TRYING)

    def _timer_g_fired(self) -> None:
        self._timer_g = None
        self._input(Input.TIMER_G)

    def _timer_h_fired(self) -> None:
        self._timer_h = None
        self._input(Input.TIMER_H)

    def _timer_i_fired(self) -> None:
        self._timer_i = None
        self._input(Input.TIMER_I)

    def _cancel_timers(self) -> None:
        for timer in (self._timer_trying, self._timer_g, self._timer_h, self._timer_i):
            if timer is not None:
                timer.cancel()
        self._timer_trying = self._timer_g = self._timer_h = self._timer_i = None

    def _cancel_trying(self) -> None:
        if self._timer_trying is not None:
            self._timer_trying.cancel()
            self._timer_trying = None

    # -- actions ------------------------------------------------------------------

    def _send_trying(self, response: Response | None) -> None:
        """§17.2.1: the TU has not answered within 200 ms, so say 100 (Trying) ourselves."""
        assert self._request is not None, "100 Trying after the final response"
        self._last = data = serialize(trying_response(self._request, TRYING_DELAY))
        self._transmit(data)

    def _send_tu_provisional(self, response: Response | None) -> None:
        self._cancel_trying()
        self._send_provisional(response)

    def _send_success(self, response: Response | None) -> None:
        """§17.2.1: send the 2xx once and terminate; the TU retransmits it."""
        assert response is not None
        self._terminate(None)
        self._transmit(serialize(response))

    def _send_failure(self, response: Response | None) -> None:
        """Enter Completed: keep the final response, set Timer H and (unreliable) Timer G."""
        assert response is not None
        self._cancel_trying()
        if is_rfc2543_key(self.key):
            self._response_to_tag = response.to_addr.tag or ""
        self._last = data = serialize(response)
        table = self._table
        self._timer_h = table._timer_h.schedule_with(InviteServerTransaction._timer_h_fired, self)
        if not self._reliable:
            self._g_interval = interval = table.timers.timer_g_initial
            self._timer_g = table._timer_g(interval).schedule_with(
                InviteServerTransaction._timer_g_fired, self
            )
        self._transmit(data)

    def _retransmit_failure(self, response: Response | None) -> None:
        """Timer G: resend the final response, then wait twice as long, at most T2."""
        assert self._last is not None
        table = self._table
        self._g_interval = interval = table.timers.timer_g_next(self._g_interval)
        self._timer_g = table._timer_g(interval).schedule_with(
            InviteServerTransaction._timer_g_fired, self
        )
        self._transmit(self._last)

    def _confirm(self, response: Response | None) -> None:
        """Enter Confirmed: stop waiting for the ACK, absorb its retransmissions until Timer I."""
        if self._timer_h is not None:
            self._timer_h.cancel()
            self._timer_h = None
        self._timer_i = self._table._timer_i(self._reliable).schedule_with(
            InviteServerTransaction._timer_i_fired, self
        )

    def _time_out(self, response: Response | None) -> None:
        """Timer H: the ACK never came; the transaction failed (§17.2.1)."""
        log.info(
            "INVITE server transaction {key} got no ACK for its final response within {timeout} s",
            key=self.key,
            timeout=self._table.timers.timer_h,
        )
        self._terminate(None)


_I = InviteServerTransaction

INVITE_TRANSITIONS: dict[tuple[State, Input], tuple[State, _InviteAction]] = {
    # "the most recent provisional response ... MUST be passed to the transport layer"
    (_PROCEEDING, _REQUEST): (_PROCEEDING, _I._resend_last),
    # An ACK for a final response not yet sent acknowledges nothing.
    (_PROCEEDING, _ACK): (_PROCEEDING, _I._ignore),
    (_PROCEEDING, Input.TIMER_TRYING): (_PROCEEDING, _I._send_trying),
    (_PROCEEDING, _PROVISIONAL): (_PROCEEDING, _I._send_tu_provisional),
    (_PROCEEDING, _SUCCESS): (_TERMINATED, _I._send_success),
    (_PROCEEDING, _FAILURE): (_COMPLETED, _I._send_failure),
    (_PROCEEDING, _TRANSPORT_ERROR): (_TERMINATED, _I._fail),
    (_COMPLETED, _REQUEST): (_COMPLETED, _I._resend_last),
    (_COMPLETED, _ACK): (_CONFIRMED, _I._confirm),
    (_COMPLETED, Input.TIMER_G): (_COMPLETED, _I._retransmit_failure),
    (_COMPLETED, Input.TIMER_H): (_TERMINATED, _I._time_out),
    **staying(_COMPLETED, _TU_RESPONSES, _I._discard_response),
    (_COMPLETED, _TRANSPORT_ERROR): (_TERMINATED, _I._fail),
    # "The purpose of the Confirmed state is to absorb any additional ACK messages"
    (_CONFIRMED, _ACK): (_CONFIRMED, _I._ignore),
    (_CONFIRMED, _REQUEST): (_CONFIRMED, _I._ignore),
    # "As Timer G is ignored in this state, any retransmissions of the response will cease."
    (_CONFIRMED, Input.TIMER_G): (_CONFIRMED, _I._ignore),
    (_CONFIRMED, Input.TIMER_I): (_TERMINATED, _I._terminate),
    **staying(_CONFIRMED, _TU_RESPONSES, _I._discard_response),
    (_CONFIRMED, _TRANSPORT_ERROR): (_TERMINATED, _I._fail),
    # The TU may answer after a transport error ended the transaction.
    **staying(_TERMINATED, _TU_RESPONSES, _I._discard_response),
    (_TERMINATED, _TRANSPORT_ERROR): (_TERMINATED, _I._ignore),
}
InviteServerTransaction._transitions = INVITE_TRANSITIONS


class ServerTransactionTable(TransactionTable[ServerTransaction]):
    """The live server transactions, by §17.2.3 key, and the timer queues they share."""

    def __init__(
        self,
        clock: IReactorTime,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        super().__init__(clock, timers)
        # The key `absorb` computed last, which `create` usually needs next.
        self._keyed: tuple[Request | None, TransactionKey] = (None, ())
        self._timer_trying = self._queue(TRYING_DELAY)
        self._timer_h = self._queue(timers.timer_h)
        self._timer_j_unreliable = self._queue(timers.timer_j(reliable=False))
        self._timer_j_reliable = self._queue(timers.timer_j(reliable=True))
        self._timer_i_unreliable = self._queue(timers.timer_i(reliable=False))
        self._timer_i_reliable = self._queue(timers.timer_i(reliable=True))

    def absorb(self, request: Request) -> bool:
        """If *request* matches a live transaction (a retransmission, or an ACK for a non-2xx
        final response of an INVITE transaction), feed it to that transaction (which resends
        its last response where §17.2 says so) and return True.  Otherwise False: the caller
        treats it as new (an ACK that matches nothing is a stray ACK, the TU's business).
        """
        key = server_transaction_key(request)
        self._keyed = (request, key)
        transaction = self._transactions.get(key)
        if request.method == "ACK":
            return self._absorb_ack(key, transaction)
        if transaction is None:
            return False
        transaction._input(_REQUEST)
        return True

    def _absorb_ack(self, key: TransactionKey, transaction: ServerTransaction | None) -> bool:
        if is_rfc2543_key(key):
            if transaction is None:
                fallback = rfc2543_ack_fallback_key(key)
                if fallback is not None:
                    transaction = self._transactions.get(fallback)
            if not (
                isinstance(transaction, InviteServerTransaction)
                and transaction._acknowledged_by(rfc2543_to_tag(key))
            ):
                return False
        elif transaction is None:
            return False
        transaction._input(_ACK)
        return True

    def create(
        self, request: Request, flow: IFlow, destination: Address | None
    ) -> ServerTransaction:
        """Start the server transaction of a new request (not an ACK: ValueError).

        Responses go back on *flow*, the one the request came on, to *destination*
        (RFC 3261 §18.2.2; None over a stream); a reliable flow (TCP, TLS) turns off
        retransmission timers and zeroes Timers I and J.
        Raises `DuplicateTransaction` if *request* matches a live transaction:
        call `absorb` first.
        """
        method = request.method
        if method == "ACK":
            raise ValueError("an ACK does not create a server transaction (RFC 3261 §17.2.3)")
        keyed, key = self._keyed
        if keyed is not request:
            key = server_transaction_key(request)
        self._keyed = (None, ())
        if key in self._transactions:
            raise DuplicateTransaction(f"request matches live server transaction {key!r}")
        transaction: ServerTransaction
        if method == "INVITE":
            transaction = InviteServerTransaction(self, key, request, flow, destination)
        else:
            transaction = NonInviteServerTransaction(self, key, request, flow, destination)
        self._transactions[key] = transaction
        return transaction

    # -- for transactions ---------------------------------------------------------

    def _timer_g(self, interval: float) -> FixedDelayQueue:
        return self._queue(interval)

    def _timer_i(self, reliable: bool) -> FixedDelayQueue:
        return self._timer_i_reliable if reliable else self._timer_i_unreliable

    def _timer_j(self, reliable: bool) -> FixedDelayQueue:
        return self._timer_j_reliable if reliable else self._timer_j_unreliable
