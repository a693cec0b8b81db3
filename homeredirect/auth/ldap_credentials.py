"""Digest credentials from the LDAP directory that `[assignments]` names: H(A1) values only.

With `[auth] digest_source = "ldap"`, a Digest login looks the user up with the same
filter the assignment lookup uses (the AD preset's `msRTCSIP-PrimaryUserAddress`, or the
generic preset's `filter`) and reads H(A1) = H(user-part:realm:password) (RFC 7616
§3.4.2) from the attributes `[auth] ha1_attributes` names per algorithm. A clear-text
password is never read: the configuration refuses password attributes, and nothing else
is requested from the directory.

Three parts, each replaceable:

- `LdapDigestAccounts`: the directory lookup, a Service owning its thread pool and pooled
  connections (`homeredirect.resolve.ldap_pool`), so python-ldap never blocks the reactor
  (STYLE b.11) and a hanging directory stalls only Digest logins.
- `CachedDigestAccounts`: a small TTL cache on the injected clock, so a client's
  401-then-retry and the re-REGISTERs of busy users cost the directory one query per TTL;
  concurrent lookups of one user share one query, failures are not cached.
- `DirectoryDigestChecker`: the `twisted.cred` checker, whose `requestAvatarId` returns
  the lookup's Deferred. An unknown user costs the same as a known one (a lookup, then
  the hash work of `verify_account`); a directory that cannot answer fails the login with
  `DirectoryUnavailable`, which the authenticator answers with 503 and Retry-After (RFC
  3261 §21.5.4), never as a wrong password.

An entry that is disabled (AD preset), ambiguous (several entries for one address) or has
no usable H(A1) is an account without secrets: its logins fail like an unknown user's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import ldap
from attrs import frozen
from twisted.application.service import Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from homeredirect.auth.cred import ISipDigestCredentials, aor_of_username, verify_account
from homeredirect.auth.credentials_file import DigestAccount
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.resolve.ldap_filter import InvalidAddress
from homeredirect.resolve.ldap_pool import (
    ConnectionSettings,
    DirectoryUnreachable,
    LdapConnectionPool,
    SearchResult,
    use_keytab,
)
from homeredirect.resolve.ldap_schema import Entry, first_value, schema_for

__all__ = [
    "CachedDigestAccounts",
    "DirectoryDigestChecker",
    "IDigestAccountSource",
    "LdapDigestAccounts",
    "accounts_from_entries",
]

_LOOKUP_SIZE_LIMIT = 2  # enough to see that an address is ambiguous
_HEX = frozenset("0123456789abcdef")


class IDigestAccountSource(Interface):
    """Where a checker finds a user's Digest secrets, asynchronously."""

    def account(aor: AddressOfRecord) -> Deferred[DigestAccount | None]:
        """Fire with the account of `aor`, or None (unknown, disabled, no H(A1)); fail with
        `DirectoryUnavailable` when the source cannot answer now."""


def accounts_from_entries(
    aor: AddressOfRecord,
    result: SearchResult,
    attributes: Mapping[DigestAlgorithm, str],
    enabled: Callable[[Entry], bool],
) -> tuple[DigestAccount | None, str | None]:
    """The account the search `result` for `aor` describes, and a problem to log (or
    None). Pure: the unit tests feed it entries as python-ldap returns them.

    `enabled(entry)` says whether the entry may log in. A value that is not the hex digest
    length of its algorithm is ignored (logged), so that a password put by mistake into an
    H(A1) attribute never authenticates anyone.
    """
    entries = result.entries
    if not entries:
        return None, None
    if len(entries) > 1 or result.truncated:
        return None, "several entries have this address: " + "; ".join(dn for dn, _ in entries)
    entry = entries[0]
    if not enabled(entry):
        return None, None
    hashes: dict[DigestAlgorithm, str] = {}
    bad: list[str] = []
    for algorithm, attribute in attributes.items():
        value = first_value(entry, attribute)
        if value is None:
            continue
        value = value.lower()
        if len(value) != len(algorithm.hash(b"")) or not _HEX.issuperset(value):
            bad.append(attribute)
            continue
        hashes[algorithm] = value
    problem = None
    if bad:
        problem = f"{entry[0]}: {', '.join(bad)} not a hex H(A1) of the right length; ignored"
    if not hashes:
        return None, problem
    return DigestAccount(aor, None, MappingProxyType(hashes)), problem


@implementer(IDigestAccountSource)
class LdapDigestAccounts(Service):
    """`IDigestAccountSource` on the `[assignments]` LDAP directory; a Service that owns
    its thread pool and connections (stopping it stops the threads and unbinds).

    `reactor` provides IReactorTime and IReactorFromThreads. Lookups answer within
    `config.timeout` seconds. After no server could be reached, lookups fail at once for
    `reconnect_backoff` seconds (doubling up to `reconnect_backoff_max`), as the
    assignment resolver does, so an outage does not queue logins behind dead connects.
    """

    log = FilteredLogger()

    def __init__(
        self,
        config: LdapAssignmentsConfig,
        attributes: Mapping[DigestAlgorithm, str],
        reactor: Any,
    ) -> None:
        self.config = config
        self._reactor = reactor
        self._schema = schema_for(config)
        self._attributes = MappingProxyType(dict(attributes))
        requested = list(self._attributes.values())
        if self._schema.enabled_attribute is not None:
            requested.append(self._schema.enabled_attribute)
        self._requested = requested
        self.pool = LdapConnectionPool(ConnectionSettings.from_config(config), config.pool_size)
        self.threadpool = ThreadPool(minthreads=0, maxthreads=config.pool_size, name="ldap-digest")
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
        if self.threadpool.started:
            self.threadpool.stop()
        self.pool.close()

    @property
    def searches(self) -> int:
        """Search operations sent so far."""
        return self.pool.searches

    def account(self, aor: AddressOfRecord) -> Deferred[DigestAccount | None]:
        try:
            filterstr = self._schema.user_filter.render(aor)
        except InvalidAddress:
            return succeed(None)  # no directory could hold it: unknown, without a query
        wait = self._retry_at - self._reactor.seconds()
        if wait > 0:
            return fail(
                DirectoryUnavailable(f"LDAP directory unreachable; next try in {wait:.1f} s")
            )
        deadline = self._reactor.seconds() + self.config.timeout
        search: Deferred[SearchResult] = deferToThreadPool(
            self._reactor, self.threadpool, self._search, filterstr, deadline
        )
        search.addTimeout(self.config.timeout, self._reactor)
        return search.addCallbacks(self._found, self._failed, (aor,))

    def _search(self, filterstr: str, deadline: float) -> SearchResult:
        """In a worker thread: the entries the user filter selects."""
        if self._reactor.seconds() >= deadline:
            raise DirectoryUnavailable("no LDAP connection free within timeout")
        with self.pool.connection() as connection:
            return self.pool.search(
                connection,
                self.config.base_dn,
                ldap.SCOPE_SUBTREE,
                filterstr,
                self._requested,
                size_limit=_LOOKUP_SIZE_LIMIT,
            )

    def _found(self, result: SearchResult, aor: AddressOfRecord) -> DigestAccount | None:
        self._now_reachable()
        account, problem = accounts_from_entries(
            aor, result, self._attributes, self._schema.enabled
        )
        if problem is not None:
            self.log.error(
                "LDAP Digest credentials for {aor}: {problem}", aor=str(aor), problem=problem
            )
        return account

    def _failed(self, failure: Failure) -> Failure:
        """Every failure becomes `DirectoryUnavailable` (503), never a failed login."""
        if failure.check(TimeoutError, CancelledError):
            return Failure(
                DirectoryUnavailable(
                    f"LDAP lookup took longer than timeout = {self.config.timeout:g} s"
                )
            )
        if failure.check(DirectoryUnreachable):
            self._now_unreachable(str(failure.value))
            return failure
        if failure.check(DirectoryUnavailable):
            return failure
        self.log.failure("LDAP Digest credentials lookup failed", failure)
        return Failure(DirectoryUnavailable(f"LDAP: {failure.getErrorMessage()}"))

    def _now_unreachable(self, reason: str) -> None:
        wait = self._backoff
        self._retry_at = self._reactor.seconds() + wait
        self._backoff = min(wait * 2, self.config.reconnect_backoff_max)
        if self._reachable:
            self.log.warn(
                "LDAP directory unreachable for Digest logins: {reason}; retrying in {wait} s",
                reason=reason,
                wait=wait,
            )
        self._reachable = False

    def _now_reachable(self) -> None:
        self._retry_at = 0.0
        self._backoff = self.config.reconnect_backoff
        if not self._reachable:
            self.log.info("LDAP directory reachable again for Digest logins")
        self._reachable = True


@frozen
class _Cached:
    account: DigestAccount | None
    expires: float


@implementer(IDigestAccountSource)
class CachedDigestAccounts:
    """`source` behind a bounded LRU cache whose answers (unknown users included) are fresh
    for `ttl` seconds on `clock`.

    Kept short (the default is 30 s): a changed or removed H(A1) takes effect within it.
    Concurrent lookups of one AOR share the query in flight; a failure reaches every waiter
    and is not kept, so the next login asks again.
    """

    def __init__(
        self,
        source: IDigestAccountSource,
        *,
        clock: IReactorTime,
        ttl: float,
        max_entries: int = 10_000,
    ) -> None:
        self.source = source
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[AddressOfRecord, _Cached] = OrderedDict()
        self._in_flight: dict[AddressOfRecord, list[Deferred[DigestAccount | None]]] = {}
        self.hits = 0
        self.misses = 0

    def account(self, aor: AddressOfRecord) -> Deferred[DigestAccount | None]:
        cached = self._entries.get(aor)
        if cached is not None:
            if cached.expires > self._clock.seconds():
                self._entries.move_to_end(aor)
                self.hits += 1
                return succeed(cached.account)
            del self._entries[aor]
        waiter: Deferred[DigestAccount | None] = Deferred()
        waiting = self._in_flight.get(aor)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self.misses += 1
        self._in_flight[aor] = [waiter]
        try:
            query = self.source.account(aor)
        except Exception:
            query = fail()
        query.addCallbacks(self._answered, self._not_answered, (aor,), {}, (aor,))
        return waiter

    def _answered(self, account: DigestAccount | None, aor: AddressOfRecord) -> None:
        self._entries[aor] = _Cached(account, self._clock.seconds() + self._ttl)
        self._entries.move_to_end(aor)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        for waiter in self._in_flight.pop(aor, []):
            waiter.callback(account)

    def _not_answered(self, failure: Failure, aor: AddressOfRecord) -> None:
        for waiter in self._in_flight.pop(aor, []):
            waiter.errback(failure)


@implementer(ICredentialsChecker)
class DirectoryDigestChecker:
    """Checks `ISipDigestCredentials` against an `IDigestAccountSource`; the avatar id is
    the AOR, UTF-8. Fails with `UnauthorizedLogin` for a wrong user or response, and with
    `DirectoryUnavailable` when the source cannot answer."""

    credentialInterfaces = (ISipDigestCredentials,)

    def __init__(self, accounts: IDigestAccountSource) -> None:
        self._accounts = accounts

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        creds: ISipDigestCredentials = credentials
        aor = aor_of_username(creds.username, creds.realm)
        if aor is None:
            return verify_account(creds, None)
        found = self._accounts.account(aor)
        return found.addCallback(lambda account: verify_account(creds, account))
