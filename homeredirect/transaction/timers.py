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

from attrs import Attribute, field, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from homeredirect.logs import FilteredLogger

log = FilteredLogger()

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
    """One timer of a `FixedDelayQueue`; `cancel` makes it a no-op (also after it fired)."""

    __slots__ = ("_callback", "_deadline", "_queue")

    def __init__(
        self, queue: FixedDelayQueue, deadline: float, callback: Callable[[], None]
    ) -> None:
        self._queue = queue
        self._deadline = deadline
        self._callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        if self._callback is not None:
            self._callback = None
            queue = self._queue
            queue._live -= 1
            if not queue._live:
                queue._clear()


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

    def schedule(self, callback: Callable[[], None]) -> TimerHandle:
        """Call *callback* once, *delay* seconds from now, unless the handle is cancelled first."""
        handle = TimerHandle(self, self._clock.seconds() + self._delay, callback)
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
            handle._callback = None
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
            callback = handle._callback
            if callback is None:
                continue
            handle._callback = None
            self._live -= 1
            try:
                callback()
            except Exception:
                log.failure(
                    "timer callback {callback!r} failed", callback=callback, delay=self._delay
                )
        self._due = []
