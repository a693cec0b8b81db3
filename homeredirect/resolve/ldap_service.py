"""What every user of the `[assignments]` LDAP directory shares: threads, connections, and
how it behaves when the directory is slow or gone.

python-ldap blocks, so a directory service owns a thread pool (`pool_size` threads, one
pooled connection each; STYLE b.11) and the reactor thread only dispatches. A query
answers within `timeout` seconds, counted from the call, whatever the directory does;
otherwise, and when the server answered with an error, it fails with
`DirectoryUnavailable`. After no server could be reached (`DirectoryUnreachable`),
queries fail at once for `reconnect_backoff` seconds, doubling up to
`reconnect_backoff_max`, so an outage does not queue callers behind dead connects. The
assignment resolver (`homeredirect.resolve.ldap_source`) and the Digest credentials
lookup (`homeredirect.auth.ldap_credentials`) are both such services.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import ldap
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import AssignmentWriteError, DirectoryUnavailable
from homeredirect.resolve.ldap_pool import (
    ConnectionSettings,
    DirectoryUnreachable,
    LdapConnectionPool,
    SearchResult,
    use_keytab,
)
from homeredirect.resolve.ldap_schema import schema_for

__all__ = ["LOOKUP_SIZE_LIMIT", "LdapDirectoryService"]

LOOKUP_SIZE_LIMIT = 2
"""Entries a user lookup asks for: enough to tell one user from none or an ambiguous
address."""

_T = TypeVar("_T")


class LdapDirectoryService(Service):
    """A Service owning a thread pool and pooled connections to `config`'s directory
    (start it before the first query; stopping it stops the threads and unbinds).

    `reactor` provides IReactorTime and IReactorFromThreads. Subclasses name their events
    (`purpose`, `failure_event`) and their threads.
    """

    log = FilteredLogger()
    purpose: ClassVar[str] = ""
    """What the directory is unreachable for, in the reachability events (" for ...")."""
    failure_event: ClassVar[str] = "LDAP operation failed"
    """Logged, with the traceback, for a failure that is none of the expected ones."""

    def __init__(self, config: LdapAssignmentsConfig, reactor: Any, thread_name: str) -> None:
        self.config = config
        self._reactor = reactor
        self._schema = schema_for(config)
        self.pool = LdapConnectionPool(ConnectionSettings.from_config(config), config.pool_size)
        self.threadpool = ThreadPool(minthreads=0, maxthreads=config.pool_size, name=thread_name)
        if config.keytab is not None:
            use_keytab(str(config.keytab))
        self._retry_at = 0.0
        self._backoff = config.reconnect_backoff
        self._reachable = True

    def startService(self) -> None:
        self.threadpool.start()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.close()

    def close(self) -> None:
        """Stop the threads (a job stuck on a dead server ends within `timeout`) and unbind
        the connections."""
        if self.threadpool.started:
            self.threadpool.stop()
        self.pool.close()

    @property
    def searches(self) -> int:
        """LDAP search operations sent so far: `pool.searches`."""
        return self.pool.searches

    # -- the reactor thread

    def _run(self, function: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self.threadpool, function, *args)

    def _query(self, work: Callable[[Any, str], _T], filterstr: str) -> Deferred[_T]:
        """`work(connection, filterstr)` in a worker thread with a pooled connection,
        within `timeout`; at once `DirectoryUnavailable` while backing off."""
        refused = self._refuse_during_backoff()
        if refused is not None:
            return fail(refused)
        deadline = self._reactor.seconds() + self.config.timeout
        query: Deferred[_T] = self._run(self._in_connection, work, filterstr, deadline)
        query.addTimeout(self.config.timeout, self._reactor)
        return query

    def _refuse_during_backoff(self) -> DirectoryUnavailable | None:
        wait = self._retry_at - self._reactor.seconds()
        if wait <= 0:
            return None
        return DirectoryUnavailable(f"LDAP directory unreachable; next try in {wait:.1f} s")

    def _failed(self, failure: Failure) -> Failure:
        """Turn every failure into `DirectoryUnavailable`, backing off when no server could
        be reached; an `AssignmentWriteError` (a refused write) passes as is."""
        if failure.check(AssignmentWriteError):
            return failure
        if failure.check(TimeoutError, CancelledError):
            error = DirectoryUnavailable(
                f"LDAP lookup took longer than timeout = {self.config.timeout:g} s"
            )
            return Failure(error)
        if failure.check(DirectoryUnreachable):
            self._now_unreachable(str(failure.value))
            return failure
        if failure.check(DirectoryUnavailable):
            return failure
        self.log.failure(self.failure_event, failure)
        return Failure(DirectoryUnavailable(f"LDAP: {failure.getErrorMessage()}"))

    def _now_unreachable(self, reason: str) -> None:
        wait = self._backoff
        self._retry_at = self._reactor.seconds() + wait
        self._backoff = min(wait * 2, self.config.reconnect_backoff_max)
        if self._reachable:
            self.log.warn(
                f"LDAP directory unreachable{self.purpose}: {{reason}}; retrying in {{wait}} s",
                reason=reason,
                wait=wait,
            )
        self._reachable = False

    def _now_reachable(self) -> None:
        self._retry_at = 0.0
        self._backoff = self.config.reconnect_backoff
        if not self._reachable:
            self.log.info(f"LDAP directory reachable again{self.purpose}")
        self._reachable = True

    # -- worker threads

    def _in_connection(self, work: Callable[[Any, str], _T], filterstr: str, deadline: float) -> _T:
        if self._reactor.seconds() >= deadline:
            raise DirectoryUnavailable("no LDAP connection free within timeout")
        with self.pool.connection() as connection:
            return work(connection, filterstr)

    def _search_user(
        self, connection: Any, filterstr: str, attributes: Sequence[str]
    ) -> SearchResult:
        """The entries under `base_dn` that the user filter `filterstr` selects (RFC 4511
        §4.5.1), at most `LOOKUP_SIZE_LIMIT`."""
        return self.pool.search(
            connection,
            self.config.base_dn,
            ldap.SCOPE_SUBTREE,
            filterstr,
            attributes,
            size_limit=LOOKUP_SIZE_LIMIT,
        )
