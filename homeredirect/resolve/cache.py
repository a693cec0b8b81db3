"""The assignment cache in front of every directory backend (LDAP, SQL, Redis).

A director answers every REGISTER from its cache when it can, so the directory sees one query
per user per TTL rather than one per request, and an outage of the directory is survived with
the answers the director already has:

- A found assignment is fresh for `ttl` seconds, an unknown user for `negative_ttl`.
- A lookup within `refresh_ahead` seconds of expiry is answered from the cache and refreshes
  the entry in the background, so busy users never wait for the directory.
- Concurrent lookups of one AOR share one backend query (a client retransmitting, or many
  devices of one user starting at once, cost the directory one query).
- When the backend fails, a found assignment is still served up to `stale_ttl` seconds past
  its expiry. While the backend is failing, such stale answers are given at once and the
  refresh goes on in the background, so that clients do not wait for the backend's timeout
  on every request. An expired *unknown* answer is never served stale: the user may have been
  added meanwhile, and 503 (the client retries) is kinder than 404 (it gives up).
- With no answer at all, the lookup fails with `DirectoryUnavailable`, which the director
  answers with 503 and Retry-After (RFC 3261 §21.5.4).
- At most `max_entries` AORs are kept; the least recently used goes first.

Directory health is logged on transitions only (healthy -> failing, failing -> healthy), not
per request; the counters (`hits`, `misses`, `stale`, ...) are attributes to read or export.
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.config.assignments import CacheConfig
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment, IAssignmentResolver

__all__ = ["CachedResolver"]


@frozen
class _Entry:
    """One cached answer: `assignment` (None: unknown user) is fresh until `expires`."""

    assignment: Assignment | None
    expires: float


@implementer(IAssignmentResolver)
class CachedResolver:
    """Answer `resolve` from a bounded LRU cache in front of `backend` (see the module).

    `name` says which directory this is in log events ("sql", "redis", "ldap"). The
    backend's resources belong to whoever built it; the cache holds none besides memory.
    """

    log = FilteredLogger()

    def __init__(
        self,
        backend: IAssignmentResolver,
        settings: CacheConfig,
        *,
        clock: IReactorTime,
        name: str,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.name = name
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # AOR key -> callers waiting for the backend query in flight for it (an empty list
        # for a refresh nobody waits for).
        self._in_flight: dict[str, list[Deferred[Assignment | None]]] = {}
        self._failing_since: float | None = None
        self.hits = 0
        """Lookups answered with a fresh entry (refresh-ahead ones included)."""
        self.misses = 0
        """Lookups that had to wait for the backend (coalesced ones included)."""
        self.coalesced = 0
        """Misses that joined a query already in flight instead of starting one."""
        self.stale = 0
        """Lookups answered with an expired entry because the backend failed."""
        self.refreshes = 0
        """Background refreshes started (ahead of expiry, or of stale entries)."""
        self.failures = 0
        """Backend queries that failed."""
        self.unavailable = 0
        """Lookups failed with `DirectoryUnavailable`: nothing to serve."""
        self.evictions = 0
        """Entries dropped to stay within `max_entries`."""

    def __len__(self) -> int:
        """The number of cached AORs."""
        return len(self._entries)

    @property
    def healthy(self) -> bool:
        """False from a failed backend query until the next successful one."""
        return self._failing_since is None

    def forget(self, aor: AddressOfRecord) -> None:
        """Drop the cached answer for `aor`, e.g. after moving it through this process."""
        self._entries.pop(str(aor), None)

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        """Fire with the (possibly cached) assignment or None; fail with
        `DirectoryUnavailable` when the backend fails and no usable answer is cached."""
        key = str(aor)
        entry = self._entries.get(key)
        if entry is not None:
            now = self._clock.seconds()
            if now < entry.expires:
                self.hits += 1
                self._entries.move_to_end(key)
                if now >= entry.expires - self.settings.refresh_ahead:
                    self._refresh(aor, key)
                return succeed(entry.assignment)
            if (
                self._failing_since is not None
                and entry.assignment is not None
                and now < entry.expires + self.settings.stale_ttl
            ):
                self.stale += 1
                self._entries.move_to_end(key)
                self._refresh(aor, key)
                return succeed(entry.assignment)
        self.misses += 1
        waiter: Deferred[Assignment | None] = Deferred()
        waiting = self._in_flight.get(key)
        if waiting is not None:
            self.coalesced += 1
            waiting.append(waiter)
        else:
            self._query(aor, key, [waiter])
        return waiter

    def _refresh(self, aor: AddressOfRecord, key: str) -> None:
        """Query the backend for `aor` in the background, unless a query is in flight."""
        if key not in self._in_flight:
            self.refreshes += 1
            self._query(aor, key, [])

    def _query(
        self, aor: AddressOfRecord, key: str, waiting: list[Deferred[Assignment | None]]
    ) -> None:
        self._in_flight[key] = waiting
        try:
            query = self.backend.resolve(aor)
        except Exception:
            query = fail()
        query.addCallbacks(self._answered, self._failed, callbackArgs=(key,), errbackArgs=(key,))

    def _answered(self, assignment: Assignment | None, key: str) -> None:
        now = self._clock.seconds()
        if self._failing_since is not None:
            self.log.info(
                "directory {directory} recovered after {seconds:.1f} s",
                directory=self.name,
                seconds=now - self._failing_since,
                outage_seconds=now - self._failing_since,
            )
            self._failing_since = None
        ttl = self.settings.ttl if assignment is not None else self.settings.negative_ttl
        entries = self._entries
        entries[key] = _Entry(assignment, now + ttl)
        entries.move_to_end(key)
        while len(entries) > self.settings.max_entries:
            entries.popitem(last=False)
            self.evictions += 1
        for waiter in self._in_flight.pop(key):
            waiter.callback(assignment)

    def _failed(self, failure: Failure, key: str) -> None:
        now = self._clock.seconds()
        self.failures += 1
        if not failure.check(DirectoryUnavailable):
            self.log.failure(
                "directory {directory} lookup failed unexpectedly",
                failure,
                LogLevel.error,
                directory=self.name,
            )
        if self._failing_since is None:
            self._failing_since = now
            self.log.warn(
                "directory {directory} failing: {reason}; serving cached answers up to "
                "{stale_ttl} s past expiry",
                directory=self.name,
                reason=str(failure.value),
                stale_ttl=self.settings.stale_ttl,
            )
        waiting = self._in_flight.pop(key)
        if not waiting:
            return  # a background refresh: the entry stays as it is
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.assignment is not None
            and now < entry.expires + self.settings.stale_ttl
        ):
            self.stale += len(waiting)
            for waiter in waiting:
                waiter.callback(entry.assignment)
            return
        self.unavailable += len(waiting)
        error = DirectoryUnavailable(f"directory {self.name} unavailable: {failure.value}")
        for waiter in waiting:
            waiter.errback(Failure(error))
