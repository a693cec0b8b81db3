"""Brute-force defence: failed authentications counted per source address and per user.

After `max_failures` failures within `window` seconds from one address, or against one
user, further attempts are refused with 403 without checking credentials, until the
window has passed (issue "Authentication before redirect"). Counters live in bounded
dictionaries and expire on the injected clock, so a flood of distinct addresses or
usernames cannot grow memory without bound: when full, the oldest counter is dropped.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

__all__ = ["FailureLimiter"]


class _Window:
    """Failures in a sliding-by-reset window: the count restarts once `window` has passed
    since the first failure it counts."""

    def __init__(self, window: float, max_keys: int) -> None:
        self._window = window
        self._max_keys = max_keys
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        entry = self._counts.get(key)
        if entry is None:
            return 0
        started, count = entry
        if now - started >= self._window:
            del self._counts[key]
            return 0
        return count

    def add(self, key: str, now: float) -> int:
        count = self.count(key, now) + 1
        started = self._counts[key][0] if count > 1 else now
        self._counts[key] = (started, count)
        self._counts.move_to_end(key)
        while len(self._counts) > self._max_keys:
            self._counts.popitem(last=False)
        return count

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)

    def __len__(self) -> int:
        return len(self._counts)


class FailureLimiter:
    """Counts failures by source address and by user; `blocked` says whether to refuse."""

    def __init__(
        self, clock: IReactorTime, max_failures: int, window: float, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self.max_failures = max_failures
        self._by_source = _Window(window, max_keys)
        self._by_user = _Window(window, max_keys)

    def blocked(self, source: str, user: str | None) -> bool:
        now = self._clock.seconds()
        if self._by_source.count(source, now) >= self.max_failures:
            return True
        return user is not None and self._by_user.count(user, now) >= self.max_failures

    def failed(self, source: str, user: str | None) -> bool:
        """Count a failure; whether `source` or `user` is now blocked (as `blocked` would
        say at once, without looking the counts up again)."""
        now = self._clock.seconds()
        count = self._by_source.add(source, now)
        if user is not None:
            count = max(count, self._by_user.add(user, now))
        return count >= self.max_failures

    def succeeded(self, source: str, user: str) -> None:
        """A success clears the user's count (not the address's: many users may share a
        NAT, and one good password must not unlock guessing for the others)."""
        self._by_user.forget(user)

    def tracked(self) -> tuple[int, int]:
        """How many (addresses, users) have counters, for tests and metrics."""
        return len(self._by_source), len(self._by_user)
