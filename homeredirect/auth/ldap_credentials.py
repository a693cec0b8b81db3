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

from attrs import frozen
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from homeredirect.auth.cred import ISipDigestCredentials, aor_of_username, verify_account
from homeredirect.auth.credentials_file import DigestAccount
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.resolve.ldap_filter import InvalidAddress
from homeredirect.resolve.ldap_pool import (
    SearchResult,
)
from homeredirect.resolve.ldap_schema import Entry, first_value
from homeredirect.resolve.ldap_service import LdapDirectoryService

__all__ = [
    "CachedDigestAccounts",
    "DirectoryDigestChecker",
    "IDigestAccountSource",
    "LdapDigestAccounts",
    "accounts_from_entries",
]

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
class LdapDigestAccounts(LdapDirectoryService):
    """`IDigestAccountSource` on the `[assignments]` LDAP directory; a Service that owns
    its thread pool and connections, answering within `config.timeout` seconds and backing
    off after no server could be reached, as the assignment resolver does
    (`LdapDirectoryService`), so an outage does not queue logins behind dead connects.

    `reactor` provides IReactorTime and IReactorFromThreads.
    """

    purpose = " for Digest logins"
    failure_event = "LDAP Digest credentials lookup failed"

    def __init__(
        self,
        config: LdapAssignmentsConfig,
        attributes: Mapping[DigestAlgorithm, str],
        reactor: Any,
    ) -> None:
        super().__init__(config, reactor, "ldap-digest")
        self._attributes = MappingProxyType(dict(attributes))
        requested = list(self._attributes.values())
        if self._schema.enabled_attribute is not None:
            requested.append(self._schema.enabled_attribute)
        self._requested = requested

    def account(self, aor: AddressOfRecord) -> Deferred[DigestAccount | None]:
        try:
            filterstr = self._schema.user_filter.render(aor)
        except InvalidAddress:
            return succeed(None)  # no directory could hold it: unknown, without a query
        search = self._query(self._search, filterstr)
        return search.addCallbacks(self._found, self._failed, (aor,))

    def _search(self, connection: Any, filterstr: str) -> SearchResult:
        """In a worker thread: the entries the user filter selects."""
        return self._search_user(connection, filterstr, self._requested)

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
