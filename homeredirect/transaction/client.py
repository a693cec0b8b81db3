"""Client transactions (RFC 3261 §17.1, with RFC 6026 §7.2): retransmitting requests, timing out.

Each transaction is an explicit state machine: a transition table maps
``(state, input)`` to ``(next state, action)``, where the inputs are a response
from the network (1xx, 2xx or 300-699), a timer firing, a transport error or a
CANCEL asked for by the transaction user.  A pair missing from a table raises
`UndefinedClientTransition`; inputs that the RFC says to discard have rows of
their own.

`ClientTransactionTable` matches responses to transactions (§17.1.3) and owns
the timers.  Like the server side it keeps one `FixedDelayQueue` per distinct
delay rather than one DelayedCall per transaction:

- Timers B, F and M (and the §9.1 wait after a CANCEL) are all 64*T1; over
  unreliable transports D is the larger of 32 s and 64*T1 and K is T4, over
  reliable ones both are zero: fixed per transport.
- Timers A and E change from step to step, but each step's delay depends only
  on the settings and the step (A: T1, 2*T1, 4*T1 ... until Timer B ends the
  transaction after 6 steps; E: T1, 2*T1 ... T2, then T2), so they take a
  queue per interval, as the server's Timer G does.  That is a handful of
  queues, each with one pending DelayedCall, whatever the load.  Plain
  ``callLater`` would push a DelayedCall onto the reactor's heap for every
  transaction and every retransmission, and since most requests are answered
  before T1, nearly all of them would be cancelled again, leaving the reactor
  to compact its heap.

The transaction user (`IClientTransactionUser`) hears of 1xx and final
responses, of timeouts as a synthesized 408 and of transport errors as a
synthesized 503 (§8.1.3.1).  A response that matches no transaction is the
caller's: `ClientTransactionTable.receive` returns False, so that a stateless
proxy forwards it (RFC 3261 §16.11, §18.1.2) and anything else drops it
(RFC 6026 §8.9).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.serialize import serialize
from homeredirect.transaction.interfaces import (
    IClientChannel,
    IClientTransaction,
    IClientTransactionUser,
)
from homeredirect.transaction.keys import MAGIC_COOKIE, TransactionKey
from homeredirect.transaction.machine import (
    TransactionMachine,
    TransactionTable,
    UndefinedTransitionError,
    staying,
)
from homeredirect.transaction.timers import (
    DEFAULT_TIMERS,
    FixedDelayQueue,
    TimerHandle,
    TimerSettings,
)

log = FilteredLogger()

TIMER_D_MINIMUM = 32.0
"""RFC 3261 §17.1.1.2: Timer D is "at least 32 seconds for unreliable transports"."""

DEFAULT_MAX_FORWARDS = "70"
"""RFC 3261 §8.1.1.6, for an ACK or CANCEL of a request that had no Max-Forwards."""


class State(Enum):
    """The states of RFC 3261 Figures 5 and 6, and RFC 6026's Accepted."""

    # Identity hashing (in C) rather than Enum's Python-level __hash__: see server.py.
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(Enum):
    """What can happen to a client transaction (the arcs of RFC 3261 Figures 5 and 6)."""

    __hash__ = object.__hash__

    RESPONSE_1XX = "1xx from transport"
    RESPONSE_2XX = "2xx from transport"
    RESPONSE_300_699 = "300-699 from transport"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_C = "Timer C"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_K = "Timer K"
    TIMER_M = "Timer M"
    CANCEL = "CANCEL from TU"
    CANCEL_TIMEOUT = "64*T1 after CANCEL"
    TRANSPORT_ERROR = "transport error"


_1XX = Input.RESPONSE_1XX
_2XX = Input.RESPONSE_2XX
_FAILURE = Input.RESPONSE_300_699
_TRANSPORT_ERROR = Input.TRANSPORT_ERROR
_CANCEL = Input.CANCEL
_RESPONSES = (_1XX, _2XX, _FAILURE)


class UndefinedClientTransition(UndefinedTransitionError):
    """A client transaction received an input that its transition table has no row for.

    This is a bug in the caller or in the table, never the network's doing:
    every response a peer can send has a row in every state in which the
    transaction can still be matched.
    """

    side = "client"


class DuplicateClientTransaction(ValueError):
    """`ClientTransactionTable.create` was given a request whose branch and method are in use."""


def client_transaction_key(message: Request | Response) -> TransactionKey | None:
    """The §17.1.3 key of a request we send, or of a response to one: (branch, method).

    A response matches the client transaction whose request had the same top
    Via branch and whose method is the response's CSeq method; the method is
    needed because a CANCEL shares the INVITE's branch (§9.1).  We only send
    RFC 3261 branches, so a response whose branch lacks the magic cookie
    matches nothing (None).
    """
    branch = message.vias[0].branch
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        return None
    if isinstance(message, Request):
        return (branch, message.method)
    return (branch, message.cseq.method)


def local_response(request: Request, status: int, reason: str) -> Response:
    """A response to *request* made up locally, as if the next hop had sent it.

    It copies every Via (ours on top), From, To, Call-ID and CSeq (RFC 3261
    §8.2.6.2), so that the user can handle it exactly like a received one: the
    408 of a timeout and the 503 of a transport error (§8.1.3.1, §16.7, §16.9).
    """
    fields = [
        (name, value)
        for name, value in request.headers
        if name in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    return Response(status, reason, Headers(fields))


def _hop_request(request: Request, method: str, to: str) -> Request:
    """The header fields shared by an ACK for a non-2xx and a CANCEL (§17.1.1.3, §9.1)."""
    headers = request.headers
    fields: list[tuple[str, str]] = [
        ("Via", str(request.vias[0])),
        ("Max-Forwards", headers.get("Max-Forwards") or DEFAULT_MAX_FORWARDS),
    ]
    fields.extend(("Route", value) for value in headers.get_all("Route"))
    fields.append(("To", to))
    for name in ("From", "Call-ID"):
        value = headers.get(name)
        assert value is not None, f"a request without {name} was sent"
        fields.append((name, value))
    fields.append(("CSeq", f"{request.cseq.number} {method}"))
    return Request(method, request.uri, Headers(fields))


def ack_for_failure(invite: Request, response: Response) -> Request:
    """The ACK that an INVITE client transaction sends for a 300-699 response (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and the CSeq number are the INVITE's, with the
    method ACK; To is the response's (with the tag the server added); the one
    Via is the INVITE's top Via, so that the ACK matches the server
    transaction (§17.2.3); Route is copied from the INVITE.  Max-Forwards
    (§8.1.1.6) is the INVITE's.  No body.
    """
    to = response.headers.get("To")
    assert to is not None, "a parsed response always has a To header"
    return _hop_request(invite, "ACK", to)


def cancel_for(invite: Request) -> Request:
    """The CANCEL of a pending INVITE (RFC 3261 §9.1).

    Request-URI, Call-ID, To, From (tags included) and the CSeq number are the
    INVITE's, with the method CANCEL; the one Via is the INVITE's top Via, so
    the CANCEL has the INVITE's branch and reaches the same server (§9.2);
    Route is copied.  It must be sent to the same destination as the INVITE.
    """
    to = invite.headers.get("To")
    assert to is not None, "a request without To was sent"
    return _hop_request(invite, "CANCEL", to)


_InviteAction = Callable[["InviteClientTransaction", "Response | None"], None]
_NonInviteAction = Callable[["NonInviteClientTransaction", "Response | None"], None]
Transitions = Mapping[tuple[State, Input], tuple[State, Callable[[Any, "Response | None"], None]]]


@implementer(IClientTransaction)
class ClientTransaction(TransactionMachine[State, Input]):
    """What the TU, the channel and the table see of a client transaction (RFC 3261 §17.1).

    The engine (`_input`, inherited) looks up each input in the kind's transition table.
    """

    __slots__ = (
        "_channel",
        "_data",
        "_interval",
        "_request",
        "_retransmit",
        "_table",
        "_timeout",
        "_user",
    )

    _side = "client"
    _undefined = UndefinedClientTransition

    def __init__(
        self,
        table: ClientTransactionTable,
        key: TransactionKey,
        request: Request,
        channel: IClientChannel,
        user: IClientTransactionUser,
        state: State,
    ) -> None:
        self.key = key
        self._state = state
        self._table = table
        self._request: Request | None = request
        self._channel = channel
        self._user = user
        # The bytes sent, for retransmission (§17.1.1.2: "take the message
        # previously sent ... and pass it to the transport layer once more").
        self._data: bytes | None = serialize(request)
        self._interval = 0.0
        self._retransmit: TimerHandle | None = None
        self._timeout: TimerHandle | None = None

    def transport_error(self) -> None:
        """The channel failed after the send (connection lost): RFC 3261 §17.1.4."""
        self._input(_TRANSPORT_ERROR)

    # -- the state machine --------------------------------------------------

    def _start(self) -> None:
        raise NotImplementedError

    def _receive(self, response: Response) -> None:
        status = response.status
        if 100 <= status < 200:
            self._input(_1XX, response)
        elif 200 <= status < 300:
            self._input(_2XX, response)
        elif 300 <= status < 700:
            self._input(_FAILURE, response)
        else:
            raise ValueError(f"status code {status} is not a SIP status code")

    # -- actions shared by both kinds -----------------------------------------
    # An action that sends does so last: a failed send feeds TRANSPORT_ERROR
    # (re-entering the machine), after which the action must do nothing more.

    def _transmit(self, data: bytes) -> None:
        try:
            sent = self._channel.send(data)
        except Exception as error:
            log.info(
                "channel of {kind} client transaction {key} raised {error}; a transport error",
                kind=self._kind,
                key=self.key,
                error=repr(error),
            )
            sent = False
        if not sent:
            self._input(_TRANSPORT_ERROR)

    def _absorb(self, response: Response | None) -> None:
        """A response retransmission the user must not see again (§17.1.1.2, §17.1.2.2)."""

    def _pass_provisional(self, response: Response | None) -> None:
        assert response is not None
        self._user.provisional_response(self, response)

    def _pass_final(self, response: Response | None) -> None:
        assert response is not None
        self._user.final_response(self, response)

    def _stop_waiting(self) -> None:
        """Stop the retransmission and timeout timers (a response came, §17.1.1.2, §17.1.2.2)."""
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def _terminate(self, response: Response | None) -> None:
        """Enter Terminated: the transaction "MUST be destroyed" at once (§17.1.1.2)."""
        self._cancel_timers()
        self._data = None
        self._request = None
        self._table._forget(self.key)

    def _time_out(self, response: Response | None) -> None:
        """Timer B or F (or the §9.1 wait after a CANCEL): tell the TU with a 408 (§8.1.3.1)."""
        request = self._request
        assert request is not None, "a transaction that can time out keeps its request"
        log.info(
            "{kind} client transaction {key} got no final response in time",
            kind=self._kind,
            key=self.key,
        )
        self._terminate(None)
        self._user.timed_out(self, local_response(request, 408, "Request Timeout"))

    def _fail(self, response: Response | None) -> None:
        """§17.1.4: terminate and tell the TU, which treats it as a 503 (§8.1.3.1)."""
        request = self._request
        assert request is not None, "a transaction that reports transport errors keeps its request"
        log.info(
            "{kind} client transaction {key} terminated by a transport error",
            kind=self._kind,
            key=self.key,
        )
        self._terminate(None)
        self._user.transport_failed(self, local_response(request, 503, "Service Unavailable"))

    def _cancel_timers(self) -> None:
        self._stop_waiting()


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2, Figure 6: Trying, Proceeding, Completed, Terminated; Timers E, F, K."""

    __slots__ = ("_timer_k",)

    _kind = "non-INVITE"

    def __init__(
        self,
        table: ClientTransactionTable,
        key: TransactionKey,
        request: Request,
        channel: IClientChannel,
        user: IClientTransactionUser,
    ) -> None:
        super().__init__(table, key, request, channel, user, State.TRYING)
        self._timer_k: TimerHandle | None = None

    def _start(self) -> None:
        """Enter Trying: Timer E (unreliable only) at T1 and Timer F at 64*T1, then send."""
        table = self._table
        if not self._channel.reliable:
            self._interval = interval = table.timers.t1
            self._retransmit = table._queue(interval).schedule_with(
                NonInviteClientTransaction._timer_e_fired, self
            )
        self._timeout = table._timer_64t1.schedule_with(
            NonInviteClientTransaction._timer_f_fired, self
        )
        assert self._data is not None
        self._transmit(self._data)

    def _timer_e_fired(self) -> None:
        self._retransmit = None
        self._input(Input.TIMER_E)

    def _timer_f_fired(self) -> None:
        self._timeout = None
        self._input(Input.TIMER_F)

    def _timer_k_fired(self) -> None:
        self._timer_k = None
        self._input(Input.TIMER_K)

    def _cancel_timers(self) -> None:
        self._stop_waiting()
        if self._timer_k is not None:
            self._timer_k.cancel()
            self._timer_k = None

    def _retransmit_trying(self, response: Response | None) -> None:
        """Timer E in Trying: resend, and wait twice as long, at most T2 (§17.1.2.2)."""
        self._schedule_e(self._table.timers.timer_g_next(self._interval))

    def _retransmit_proceeding(self, response: Response | None) -> None:
        """Timer E in Proceeding: resend, and wait T2 (§17.1.2.2)."""
        self._schedule_e(self._table.timers.t2)

    def _schedule_e(self, interval: float) -> None:
        self._interval = interval
        self._retransmit = self._table._queue(interval).schedule_with(
            NonInviteClientTransaction._timer_e_fired, self
        )
        assert self._data is not None
        self._transmit(self._data)

    def _complete(self, response: Response | None) -> None:
        """Enter Completed: stop E and F, absorb response retransmissions until Timer K."""
        self._stop_waiting()
        self._data = None
        self._request = None
        self._timer_k = self._table._timer_k(self._channel.reliable).schedule_with(
            NonInviteClientTransaction._timer_k_fired, self
        )
        self._pass_final(response)
        # Nothing reaches the user from Completed (retransmissions are absorbed, Timer K
        # and transport errors end the transaction silently), and nothing is sent: let go
        # of the user, the request and response context it holds, and the channel, now
        # rather than T4 (5 s) later. Fewer objects outlive a collection tick, and the
        # full collection walks fewer (homeredirect.collector).
        self._user = _LOGGING_USER
        self._channel = _RELEASED_CHANNEL


_N = NonInviteClientTransaction
_CALLING, _TRYING, _PROCEEDING, _COMPLETED, _ACCEPTED, _TERMINATED = (
    State.CALLING,
    State.TRYING,
    State.PROCEEDING,
    State.COMPLETED,
    State.ACCEPTED,
    State.TERMINATED,
)

NON_INVITE_TRANSITIONS: dict[tuple[State, Input], tuple[State, _NonInviteAction]] = {
    (_TRYING, _1XX): (_PROCEEDING, _N._pass_provisional),
    (_TRYING, _2XX): (_COMPLETED, _N._complete),
    (_TRYING, _FAILURE): (_COMPLETED, _N._complete),
    (_TRYING, Input.TIMER_E): (_TRYING, _N._retransmit_trying),
    (_TRYING, Input.TIMER_F): (_TERMINATED, _N._time_out),
    (_TRYING, _TRANSPORT_ERROR): (_TERMINATED, _N._fail),
    (_PROCEEDING, _1XX): (_PROCEEDING, _N._pass_provisional),
    (_PROCEEDING, _2XX): (_COMPLETED, _N._complete),
    (_PROCEEDING, _FAILURE): (_COMPLETED, _N._complete),
    (_PROCEEDING, Input.TIMER_E): (_PROCEEDING, _N._retransmit_proceeding),
    (_PROCEEDING, Input.TIMER_F): (_TERMINATED, _N._time_out),
    (_PROCEEDING, _TRANSPORT_ERROR): (_TERMINATED, _N._fail),
    # "buffer any additional response retransmissions that may be received"
    **staying(_COMPLETED, _RESPONSES, _N._absorb),
    (_COMPLETED, Input.TIMER_K): (_TERMINATED, _N._terminate),
    # Nothing is sent any more; Timer K ends the transaction anyway.
    (_COMPLETED, _TRANSPORT_ERROR): (_COMPLETED, _N._ignore),
    (_TERMINATED, _TRANSPORT_ERROR): (_TERMINATED, _N._ignore),
}
NonInviteClientTransaction._transitions = NON_INVITE_TRANSITIONS


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1, Figure 5 as amended by RFC 6026 §7.2: Calling, Proceeding,
    Completed, Accepted, Terminated; Timers A, B, D, M, and the proxy's Timer C (§16.8).

    A 300-699 response is acknowledged by the transaction itself (§17.1.1.3)
    and its retransmissions re-acknowledged during Timer D.  A 2xx moves to
    Accepted for Timer M, passing every further 2xx (retransmissions, other
    forks) to the TU, which acknowledges them (RFC 6026 §7.2).
    """

    __slots__ = ("_ack", "_cancel_user", "_cancelled", "_linger", "_timer_c")

    _kind = "INVITE"

    def __init__(
        self,
        table: ClientTransactionTable,
        key: TransactionKey,
        request: Request,
        channel: IClientChannel,
        user: IClientTransactionUser,
    ) -> None:
        super().__init__(table, key, request, channel, user, State.CALLING)
        self._ack: bytes | None = None
        self._linger: TimerHandle | None = None
        self._timer_c: TimerHandle | None = None
        # Who hears of the CANCEL's own transaction; set once a CANCEL is asked for.
        self._cancel_user: IClientTransactionUser | None = None
        self._cancelled = False

    def cancel(self, user: IClientTransactionUser | None = None) -> None:
        """Cancel the INVITE (RFC 3261 §9.1): send a CANCEL in a client transaction of its own.

        §9.1 forbids a CANCEL before a provisional response ("the client MUST
        wait for the arrival of a provisional response"), since the server may
        not have the INVITE yet: in Calling the CANCEL is held back and sent
        with the first 1xx, and dropped if a final response or Timer B comes
        first.  After a final response nothing is sent (§9.1: SHOULD NOT).
        Once the CANCEL is sent, the INVITE transaction gives up 64*T1 later
        if no final response came (§9.1), and the TU gets a 408.

        *user* hears the CANCEL transaction's own outcome (200, 481, a timeout);
        by default it is only logged.  Asking more than once sends one CANCEL.
        """
        if self._cancel_user is None:
            self._cancel_user = user if user is not None else _LOGGING_USER
        self._input(_CANCEL)

    # -- timer callbacks --------------------------------------------------------

    def _start(self) -> None:
        """Enter Calling: Timer A (unreliable only) at T1, Timer B at 64*T1 and a proxy's
        Timer C (§16.6 step 11), then send."""
        table = self._table
        if not self._channel.reliable:
            self._interval = interval = table.timers.t1
            self._retransmit = table._queue(interval).schedule_with(
                InviteClientTransaction._timer_a_fired, self
            )
        self._timeout = table._timer_64t1.schedule_with(
            InviteClientTransaction._timer_b_fired, self
        )
        if table._timer_c is not None:
            self._timer_c = table._timer_c.schedule_with(
                InviteClientTransaction._timer_c_fired, self
            )
        assert self._data is not None
        self._transmit(self._data)

    def _timer_a_fired(self) -> None:
        self._retransmit = None
        self._input(Input.TIMER_A)

    def _timer_b_fired(self) -> None:
        self._timeout = None
        self._input(Input.TIMER_B)

    def _timer_c_fired(self) -> None:
        self._timer_c = None
        self._input(Input.TIMER_C)

    def _cancel_timeout_fired(self) -> None:
        self._timeout = None
        self._input(Input.CANCEL_TIMEOUT)

    def _timer_d_fired(self) -> None:
        self._linger = None
        self._input(Input.TIMER_D)

    def _timer_m_fired(self) -> None:
        self._linger = None
        self._input(Input.TIMER_M)

    def _cancel_timers(self) -> None:
        self._stop_waiting()
        self._stop_timer_c()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _stop_timer_c(self) -> None:
        if self._timer_c is not None:
            self._timer_c.cancel()
            self._timer_c = None

    def _restart_timer_c(self) -> None:
        """§16.7 step 2: a provisional response other than 100 resets Timer C (proxies only)."""
        queue = self._table._timer_c
        if queue is None or self._cancelled:
            return
        self._stop_timer_c()
        self._timer_c = queue.schedule_with(InviteClientTransaction._timer_c_fired, self)

    # -- actions ------------------------------------------------------------------

    def _retransmit_request(self, response: Response | None) -> None:
        """Timer A: resend and wait twice as long, with no cap; Timer B ends it (§17.1.1.2)."""
        self._interval = interval = 2 * self._interval
        self._retransmit = self._table._queue(interval).schedule_with(
            InviteClientTransaction._timer_a_fired, self
        )
        assert self._data is not None
        self._transmit(self._data)

    def _proceed(self, response: Response | None) -> None:
        """Enter Proceeding: stop retransmitting; Timer B no longer applies (Figure 5).

        A CANCEL held back in Calling goes out now (§9.1).  A provisional
        response other than 100 restarts a proxy's Timer C (§16.7 step 2).
        """
        self._stop_waiting()
        self._pass_provisional_in_proceeding(response)
        if self._cancel_user is not None:
            # An input, not a call: the TU may have ended the transaction meanwhile.
            self._input(_CANCEL)

    def _pass_provisional_in_proceeding(self, response: Response | None) -> None:
        assert response is not None
        if response.status != 100:
            self._restart_timer_c()
        self._user.provisional_response(self, response)

    def _defer_cancel(self, response: Response | None) -> None:
        """§9.1: no CANCEL before a provisional response; `_proceed` sends it."""

    def _send_cancel(self, response: Response | None) -> None:
        """Send the CANCEL (§9.1) in its own non-INVITE client transaction on our channel.

        Reached from `cancel` and from Timer C (§16.8: "the proxy MUST generate
        a CANCEL request").  The INVITE transaction then waits at most 64*T1
        for its final response (§9.1).
        """
        if self._cancelled:
            return
        self._cancelled = True
        self._stop_timer_c()
        request = self._request
        assert request is not None, "a transaction in Proceeding keeps its request"
        table = self._table
        self._timeout = table._timer_64t1.schedule_with(
            InviteClientTransaction._cancel_timeout_fired, self
        )
        table.create(cancel_for(request), self._channel, self._cancel_user or _LOGGING_USER)

    def _accept(self, response: Response | None) -> None:
        """Enter Accepted (RFC 6026 §7.2): pass the 2xx up, wait Timer M for more of them.

        The transaction does not acknowledge a 2xx: the TU (or the UAC beyond
        a proxy) does, end to end (§13.2.2.4).
        """
        self._stop_waiting()
        self._stop_timer_c()
        self._data = None
        self._request = None
        self._linger = self._table._timer_64t1.schedule_with(
            InviteClientTransaction._timer_m_fired, self
        )
        self._pass_final(response)

    def _reject(self, response: Response | None) -> None:
        """Enter Completed on 300-699: pass it up, ACK it (§17.1.1.3), absorb repeats for Timer D.

        The request is kept until Terminated: a transport error while sending
        the ACK is reported with a 503 made from it (Figure 5).
        """
        assert response is not None
        self._stop_waiting()
        self._stop_timer_c()
        request = self._request
        assert request is not None
        self._data = None
        self._ack = ack = serialize(ack_for_failure(request, response))
        self._linger = self._table._timer_d(self._channel.reliable).schedule_with(
            InviteClientTransaction._timer_d_fired, self
        )
        self._pass_final(response)
        self._transmit(ack)

    def _resend_ack(self, response: Response | None) -> None:
        """A retransmitted 300-699 in Completed: ACK it again, do not tell the TU (§17.1.1.2)."""
        assert self._ack is not None
        self._transmit(self._ack)

    def _terminate(self, response: Response | None) -> None:
        self._ack = None
        super()._terminate(response)


_I = InviteClientTransaction

INVITE_TRANSITIONS: dict[tuple[State, Input], tuple[State, _InviteAction]] = {
    (_CALLING, _1XX): (_PROCEEDING, _I._proceed),
    (_CALLING, _2XX): (_ACCEPTED, _I._accept),
    (_CALLING, _FAILURE): (_COMPLETED, _I._reject),
    (_CALLING, Input.TIMER_A): (_CALLING, _I._retransmit_request),
    (_CALLING, Input.TIMER_B): (_TERMINATED, _I._time_out),
    (_CALLING, _TRANSPORT_ERROR): (_TERMINATED, _I._fail),
    # §16.8: "If the client transaction has not received a provisional response,
    # the proxy MUST behave as if the transaction received a 408"
    (_CALLING, Input.TIMER_C): (_TERMINATED, _I._time_out),
    (_CALLING, _CANCEL): (_CALLING, _I._defer_cancel),
    (_PROCEEDING, _1XX): (_PROCEEDING, _I._pass_provisional_in_proceeding),
    (_PROCEEDING, _2XX): (_ACCEPTED, _I._accept),
    (_PROCEEDING, _FAILURE): (_COMPLETED, _I._reject),
    (_PROCEEDING, _CANCEL): (_PROCEEDING, _I._send_cancel),
    (_PROCEEDING, Input.TIMER_C): (_PROCEEDING, _I._send_cancel),
    (_PROCEEDING, Input.CANCEL_TIMEOUT): (_TERMINATED, _I._time_out),
    # A connection lost while waiting: no response can come back on it (§17.1.4).
    (_PROCEEDING, _TRANSPORT_ERROR): (_TERMINATED, _I._fail),
    # "any retransmissions of the final response ... MUST cause the ACK to be
    # re-passed to the transport layer ... but ... MUST NOT be passed up to the TU"
    (_COMPLETED, _FAILURE): (_COMPLETED, _I._resend_ack),
    (_COMPLETED, _1XX): (_COMPLETED, _I._absorb),
    (_COMPLETED, _2XX): (_COMPLETED, _I._absorb),
    (_COMPLETED, Input.TIMER_D): (_TERMINATED, _I._terminate),
    (_COMPLETED, _TRANSPORT_ERROR): (_TERMINATED, _I._fail),
    # §9.1: "If the original request has generated a final response, the CANCEL SHOULD NOT be sent"
    (_COMPLETED, _CANCEL): (_COMPLETED, _I._ignore),
    # RFC 6026 §7.2: "any 2xx responses received while in the Accepted state
    # MUST be passed up to the TU"
    (_ACCEPTED, _2XX): (_ACCEPTED, _I._pass_final),
    (_ACCEPTED, _1XX): (_ACCEPTED, _I._absorb),
    (_ACCEPTED, _FAILURE): (_ACCEPTED, _I._absorb),
    (_ACCEPTED, Input.TIMER_M): (_TERMINATED, _I._terminate),
    # Nothing is sent in Accepted; Timer M ends it anyway.
    (_ACCEPTED, _TRANSPORT_ERROR): (_ACCEPTED, _I._ignore),
    (_ACCEPTED, _CANCEL): (_ACCEPTED, _I._ignore),
    # The TU or the channel may still hold a transaction that has ended.
    (_TERMINATED, _CANCEL): (_TERMINATED, _I._ignore),
    (_TERMINATED, _TRANSPORT_ERROR): (_TERMINATED, _I._ignore),
}
InviteClientTransaction._transitions = INVITE_TRANSITIONS


@implementer(IClientTransactionUser)
class _LoggingUser:
    """The user of a CANCEL transaction whose outcome nobody asked for (§9.1)."""

    def provisional_response(self, transaction: IClientTransaction, response: Response) -> None:
        pass

    def final_response(self, transaction: IClientTransaction, response: Response) -> None:
        log.debug("CANCEL {key} got {status}", key=transaction.key, status=response.status)

    def timed_out(self, transaction: IClientTransaction, response: Response) -> None:
        log.info("CANCEL {key} got no final response", key=transaction.key)

    def transport_failed(self, transaction: IClientTransaction, response: Response) -> None:
        log.info("CANCEL {key} could not be sent", key=transaction.key)


_LOGGING_USER = _LoggingUser()


@implementer(IClientChannel)
class _ReleasedChannel:
    """The channel of a non-INVITE transaction in Completed, which sends nothing more
    (RFC 3261 §17.1.2.2): its own channel is let go so as not to outlive the exchange."""

    reliable = False

    def send(self, data: bytes) -> bool:
        return False


_RELEASED_CHANNEL = _ReleasedChannel()


class ClientTransactionTable(TransactionTable[ClientTransaction]):
    """The live client transactions, by §17.1.3 key, and the timer queues they share.

    *timer_c* turns on a proxy's Timer C for INVITE transactions (RFC 3261
    §16.6 step 11: more than 3 minutes; §16.8): started with the transaction,
    restarted by each provisional response other than 100 (§16.7 step 2); on
    firing the INVITE is cancelled, or times out with a 408 if no provisional
    response came.  Without it (a UAC, the default) an INVITE
    in Proceeding waits for its final response until the TU cancels it.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timers: TimerSettings = DEFAULT_TIMERS,
        timer_c: float | None = None,
    ) -> None:
        if timer_c is not None and not timer_c > 0:
            raise ValueError(f"timer_c must be a positive number of seconds, not {timer_c!r}")
        super().__init__(clock, timers)
        long = 64 * timers.t1
        self._timer_64t1 = self._queue(long)
        self._timer_d_unreliable = self._queue(max(TIMER_D_MINIMUM, long))
        self._timer_k_unreliable = self._queue(timers.t4)
        self._zero = self._queue(0.0)
        self._timer_c = self._queue(timer_c) if timer_c is not None else None

    def create(
        self,
        request: Request,
        channel: IClientChannel,
        user: IClientTransactionUser,
        branch: str | None = None,
    ) -> ClientTransaction:
        """Start the client transaction of *request* and send it on *channel* (RFC 3261 §17.1).

        The request is final: its top Via is ours, with a unique RFC 3261
        branch (§8.1.1.7, §16.6 step 8), else ValueError.  An INVITE gets an
        `InviteClientTransaction`, anything else but ACK (which is never a
        client transaction: ValueError) a `NonInviteClientTransaction`.
        Raises `DuplicateClientTransaction` if the branch and method are in use.

        The first send happens before this returns; if it fails at once, *user*
        hears `transport_failed` before this returns, and the transaction is
        already terminated.

        *branch*, when given, is the branch the caller put in the request's top Via (a
        proxy's own, §16.6 step 8): the key is made from it without parsing the Vias.
        """
        method = request.method
        if method == "ACK":
            raise ValueError("an ACK is not sent in a client transaction (RFC 3261 §17.1)")
        key: TransactionKey | None
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            key = (branch, method)
        else:
            key = client_transaction_key(request)
        if key is None:
            raise ValueError(
                f"a client transaction needs an RFC 3261 branch ({MAGIC_COOKIE}...) in its top Via"
            )
        if key in self._transactions:
            raise DuplicateClientTransaction(f"request matches live client transaction {key!r}")
        transaction: ClientTransaction
        if method == "INVITE":
            transaction = InviteClientTransaction(self, key, request, channel, user)
        else:
            transaction = NonInviteClientTransaction(self, key, request, channel, user)
        self._transactions[key] = transaction
        transaction._start()
        return transaction

    def receive(self, response: Response) -> bool:
        """Give *response* to the client transaction it matches (RFC 3261 §17.1.3).

        Returns False when it matches none (a stray response): the caller
        forwards it if it acts as a stateless proxy (§16.11, §18.1.2) and
        drops it otherwise (RFC 6026 §8.9).
        """
        key = client_transaction_key(response)
        if key is None:
            return False
        transaction = self._transactions.get(key)
        if transaction is None:
            return False
        transaction._receive(response)
        return True

    # -- for transactions ---------------------------------------------------------

    def _timer_d(self, reliable: bool) -> FixedDelayQueue:
        """§17.1.1.2: at least 32 s over unreliable transports (64*T1 if longer), else zero."""
        return self._zero if reliable else self._timer_d_unreliable

    def _timer_k(self, reliable: bool) -> FixedDelayQueue:
        """§17.1.2.2: T4 over unreliable transports, else zero."""
        return self._zero if reliable else self._timer_k_unreliable
