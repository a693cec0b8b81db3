"""Transaction timer values and the fixed-delay timer queue (RFC 3261 §17, Table 4).

Every server-transaction timer has a delay that depends only on the settings and
the transport, never on the transaction: Timer J and H are 64*T1, Timer I is T4,
each step of Timer G is one of T1, 2*T1, 4*T1 ... T2, and the 100 (Trying) delay
is 200 ms.  `FixedDelayQueue` exploits that: timers sharing a delay expire in
the order they were set, so one FIFO with one pending `IDelayedCall` serves them
all, instead of one `DelayedCall` per transaction in the reactor's heap.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from attrs import Attribute, field, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from homeredirect.logs import FilteredLogger

log = FilteredLogger()

_A = TypeVar("_A")

TRYING_DELAY = 0.2
"""RFC 3261 §17.2.1: an INVITE server transaction sends 100 (Trying) unless the
TU has answered within 200 ms."""


def _positive_seconds(instance: object, attribute: Attribute[float], value: float) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, not {value!r}")


@frozen
class TimerSettings:
    """T1, T2 and T4 of RFC 3261 §17.1.1.1 (Table 4), and the server timers derived from them.

    T1 is the round-trip estimate, T2 the cap on the retransmission interval of
    INVITE final responses, T4 the time a message may linger in the network.
    """

    t1: float = field(default=0.5, validator=_positive_seconds)
    t2: float = field(default=4.0, validator=_positive_seconds)
    t4: float = field(default=5.0, validator=_positive_seconds)

    @property
    def timer_g_initial(self) -> float:
        """The first INVITE final-response retransmission interval (§17.2.1), unreliable only."""
        return self.t1

    def timer_g_next(self, interval: float) -> float:
        """The Timer G interval after *interval*: doubled, but never above T2 (§17.2.1)."""
        return min(2 * interval, self.t2)

    @property
    def timer_h(self) -> float:
        """How long an INVITE server transaction waits for the ACK (§17.2.1)."""
        return 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """How long the Confirmed state absorbs ACK retransmissions (§17.2.1)."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """How long a non-INVITE server transaction absorbs request retransmissions (§17.2.2)."""
        return 0.0 if reliable else 64 * self.t1


DEFAULT_TIMERS = TimerSettings()
"""RFC 3261 Table 4 defaults: T1 500 ms, T2 4 s, T4 5 s."""


class TimerHandle:
    """One timer of a `FixedDelayQueue`; `cancel` makes it a no-op (also after it fired).

    It holds a function and its argument rather than one callable: a transaction's timer
    is ``(TransactionClass._timer_j_fired, transaction)``, where a bound method would be
    one more object for the cyclic collector to walk per live timer (a completed
    transaction lives 32 s over UDP, RFC 3261 §17.2.2; see homeredirect.collector).
    """

    __slots__ = ("_argument", "_deadline", "_function", "_queue")

    def __init__(
        self,
        queue: FixedDelayQueue,
        deadline: float,
        function: Callable[[_A], object],
        argument: _A,
    ) -> None:
        self._queue = queue
        self._deadline = deadline
        self._function: Callable[[Any], object] | None = function
        self._argument: object = argument

    def cancel(self) -> None:
        if self._function is not None:
            self._release()
            queue = self._queue
            queue._live -= 1
            if not queue._live:
                queue._clear()

    def _release(self) -> None:
        # A cancelled timer lingers in the FIFO until its deadline: it must not keep its
        # transaction alive that long.
        self._function = None
        self._argument = None


def _call(callback: Callable[[], object]) -> object:
    return callback()


class FixedDelayQueue:
    """Timers that all share one constant delay (Timer J, H, I, each step of G, 100 Trying).

    Since expiry order is insertion order, one FIFO and one pending IDelayedCall
    at a time replace one DelayedCall per transaction (at 10,000 transactions/s
    with a 32 s Timer J that is 320,000 live timers otherwise).  A cancelled
    timer stays in the FIFO, inert, until its deadline passes, unless it was
    the last live one: then the queue empties and its DelayedCall is cancelled.

    A zero delay fires on the next reactor turn (``callLater(0)``), never inline
    from `schedule`: a callback never runs inside the code that set its timer,
    and everything scheduled during one turn is expired by one call.

    A callback that raises is logged and does not stop the others that are due.
    """

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"delay must be a non-negative number of seconds, not {delay!r}")
        self._clock = clock
        self._delay = delay
        self._entries: deque[TimerHandle] = deque()
        self._live = 0
        self._call: IDelayedCall | None = None
        self._due: list[TimerHandle] = []

    def schedule(self, callback: Callable[[], object]) -> TimerHandle:
        """Call *callback* once, *delay* seconds from now, unless the handle is cancelled first."""
        return self.schedule_with(_call, callback)

    def schedule_with(self, function: Callable[[_A], object], argument: _A) -> TimerHandle:
        """Call ``function(argument)`` once, *delay* seconds from now, unless the handle is
        cancelled first: `schedule` without a callable made for the timer (see `TimerHandle`)."""
        handle = TimerHandle(self, self._clock.seconds() + self._delay, function, argument)
        self._entries.append(handle)
        self._live += 1
        if self._call is None:
            self._call = self._clock.callLater(self._delay, self._expire)
        return handle

    def __len__(self) -> int:
        """Timers still to fire: neither cancelled nor fired."""
        return self._live

    def stop(self) -> None:
        """Cancel every timer and the pending DelayedCall (service shutdown)."""
        for handle in (*self._entries, *self._due):
            handle._release()
        self._live = 0
        self._clear()

    def _clear(self) -> None:
        # No live timer is left: drop the inert ones and stop waking up for them.
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._entries.clear()

    def _expire(self) -> None:
        # Take the due timers off the FIFO and set the next wake-up before running
        # any callback, so that a callback may schedule (even on this queue) or cancel.
        self._call = None
        now = self._clock.seconds()
        entries = self._entries
        self._due = due = []
        while entries and entries[0]._deadline <= now:
            due.append(entries.popleft())
        if entries:
            self._call = self._clock.callLater(entries[0]._deadline - now, self._expire)
        for handle in due:
            function, argument = handle._function, handle._argument
            if function is None:
                continue
            handle._release()
            self._live -= 1
            try:
                function(argument)
            except Exception:
                log.failure(
                    "timer callback {callback!r}({argument!r}) failed",
                    callback=function,
                    argument=argument,
                    delay=self._delay,
                )
        self._due = []
