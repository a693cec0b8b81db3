"""What client and server transactions share (RFC 3261 §17): the transition-table engine and
the table of live transactions with its timer queues.

Both sides are explicit state machines: a table maps ``(state, input)`` to ``(next state,
action)``, and a pair missing from it fails loudly (`UndefinedTransitionError`) instead of
leaving a transaction stuck.  Both sides also keep their live transactions by their §17.1.3
or §17.2.3 key, and share one `FixedDelayQueue` per distinct delay rather than holding a
DelayedCall each.  The RFC's states, inputs, actions and tables stay in ``server.py`` and
``client.py``; this module knows none of them.

The server path is hot (every request of a redirect server goes through it), so the engine
is one plain method reading slots and class attributes, inherited rather than delegated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel

from homeredirect.logs import FilteredLogger, enabled
from homeredirect.sip.message import Response
from homeredirect.transaction.keys import TransactionKey
from homeredirect.transaction.timers import FixedDelayQueue, TimerSettings

__all__ = [
    "Action",
    "TransactionMachine",
    "TransactionTable",
    "Transitions",
    "UndefinedTransitionError",
    "staying",
]

log = FilteredLogger()
_DEBUG = LogLevel.debug

_S = TypeVar("_S", bound=Enum)
_I = TypeVar("_I", bound=Enum)
_A = TypeVar("_A")
_T = TypeVar("_T")

Action = Callable[[Any, "Response | None"], None]
"""What a row runs: an unbound method of the transaction, given the response that came in
(or that the TU passed down), if the input carries one."""
Transitions = Mapping[tuple[Any, Any], tuple[Any, Action]]


class UndefinedTransitionError(Exception):
    """A transaction received an input that its transition table has no row for.

    This is a bug in the caller or in the table, never the network's doing.  Each side
    raises its own subclass, which names the side in `side`.
    """

    side: ClassVar[str]

    def __init__(self, kind: str, key: TransactionKey, state: Enum, event: Enum) -> None:
        super().__init__(
            f"{kind} {self.side} transaction {key!r} in state {state.value}"
            f" has no transition on {event.value}"
        )
        self.kind = kind
        self.key = key
        self.state = state
        self.input = event


def staying(state: _S, inputs: Iterable[_I], action: _A) -> dict[tuple[_S, _I], tuple[_S, _A]]:
    """The rows that keep a transaction in *state* on each of *inputs*, running *action*.

    For the arcs where the RFC has a transaction discard or absorb a whole class of inputs
    (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2): one row per input all the same.
    """
    return {(state, event): (state, action) for event in inputs}


class TransactionMachine(Generic[_S, _I]):
    """The engine of a transaction's state machine: `_input` looks up ``(state, input)``.

    Subclasses set `_kind` ("INVITE" or "non-INVITE"), `_side` ("client" or "server"),
    `_undefined` (the side's `UndefinedTransitionError`) and `_transitions`, and their
    ``__init__`` sets `key` and `_state` itself (no ``super().__init__`` call: creating a
    server transaction is on the hot path).  An action that sends does so last: a failed
    send feeds a transport error back in (re-entering the machine), after which the action
    must do nothing more.
    """

    __slots__ = ("_state", "key")

    key: TransactionKey
    _state: _S
    _kind: ClassVar[str]
    _side: ClassVar[str]
    _undefined: ClassVar[type[UndefinedTransitionError]]
    _transitions: ClassVar[Transitions]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r} {self._state.value}>"

    def _input(self, event: _I, response: Response | None = None) -> None:
        source = self._state
        try:
            target, action = self._transitions[source, event]
        except KeyError:
            raise self._undefined(self._kind, self.key, source, event) from None
        self._state = target
        if enabled(_DEBUG):  # the check is 20 times cheaper than a filtered event
            log.debug(
                "{kind} {side} transaction {key}: {source} -> {target} on {input}",
                kind=self._kind,
                side=self._side,
                key=self.key,
                source=source.value,
                target=target.value,
                input=event.value,
            )
        action(self, response)

    def _ignore(self, response: Response | None) -> None:
        """An input that the RFC says to discard in this state."""


class TransactionTable(Generic[_T]):
    """The live transactions of one side, by key, and the timer queues they share.

    Timers are kept per delay (`_queue`): every timer of a transaction has a delay that
    depends only on the settings, the transport and, for the retransmission timers, the
    step, so a handful of queues with one pending DelayedCall each serve any load.
    """

    def __init__(self, clock: IReactorTime, timers: TimerSettings) -> None:
        self.timers = timers
        self._clock = clock
        self._transactions: dict[TransactionKey, _T] = {}
        self._queues: dict[float, FixedDelayQueue] = {}

    def __len__(self) -> int:
        """The number of live transactions."""
        return len(self._transactions)

    def stop(self) -> None:
        """Cancel every timer (service stop); transactions stay where they are."""
        for queue in self._queues.values():
            queue.stop()

    # -- for transactions ---------------------------------------------------------

    def _forget(self, key: TransactionKey) -> None:
        del self._transactions[key]

    def _queue(self, delay: float) -> FixedDelayQueue:
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = FixedDelayQueue(self._clock, delay)
        return queue
