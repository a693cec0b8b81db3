"""Assignments from LDAP or Active Directory, looked up without blocking the reactor.

python-ldap is a blocking library, so every directory operation runs in a thread pool that
this service owns (`pool_size` threads, one pooled connection each; STYLE b.11); the
reactor thread only builds the filter, dispatches, and turns the result into an
`Assignment`, None (unknown user) or `DirectoryUnavailable`. Why threads rather than
python-ldap's asynchronous calls on a reactor-watched descriptor, with measurements: see
"LDAP and Active Directory" in README.md.

What each answer means (the director maps None to 404 and `DirectoryUnavailable` to 503
with Retry-After):

- no entry for the AOR, or its entry disabled (`msRTCSIP-UserEnabled` not TRUE): None;
- the AOR is not one a directory could hold (`InvalidAddress`): None, without a query;
- bad directory data -- two entries for one AOR, an entry without the home attribute, a home
  value that is neither an FQDN nor the DN of a pool whose FQDN can be found: None (404:
  the user cannot be routed, and retrying will not help), logged at error level with the
  DN(s), never a traceback;
- no server reachable, a query timed out (`timeout`, counted from the call), or the server
  answered with an error: `DirectoryUnavailable`. After no server could be reached, lookups
  fail at once for `reconnect_backoff` seconds (doubling up to `reconnect_backoff_max`),
  so that an outage costs the callers nothing while the cache serves stale answers.

Pool DNs are resolved to FQDNs once and kept for the life of the service (pools are
rebuilt, not renamed, in Lync topologies; a restart forgets them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import ldap
from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.hostnames import normalize_hostname
from homeredirect.resolve.errors import AssignmentWriteError
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.resolve.ldap_filter import InvalidAddress, escape_filter_value
from homeredirect.resolve.ldap_schema import (
    Entry,
    first_value,
    parent_dn,
    parse_home_value,
)
from homeredirect.resolve.ldap_service import LdapDirectoryService

__all__ = ["LdapAssignmentResolver", "build_ldap_source"]

_MAX_DN_DEPTH = 16  # how far up a pool DN the FQDN is looked for


@frozen
class _Outcome:
    """What a lookup found, for the reactor thread to log: `problem` is set when the entry
    could not be used (`level` "error" for bad data, "info" for a disabled user)."""

    assignment: Assignment | None
    problem: str | None = None
    level: str = "error"
    dns: tuple[str, ...] = ()


@implementer(IAssignmentResolver, IAssignmentStore)
class LdapAssignmentResolver(LdapDirectoryService):
    """`IAssignmentResolver` and `IAssignmentStore` on an LDAP directory; a Service that
    owns its thread pool and connections (`LdapDirectoryService`).

    `reactor` provides IReactorTime and IReactorFromThreads (a `Clock` does not run thread
    results back: unit tests use the pure parts; integration tests use the real reactor).
    """

    def __init__(self, config: LdapAssignmentsConfig, reactor: Any) -> None:
        super().__init__(config, reactor, "ldap")
        self._pools_lock = threading.Lock()
        self._pool_homes: dict[str, Assignment] = {}  # normalised pool DN -> home
        self._pool_dns: dict[str, str] = {}  # home FQDN -> a pool DN as the directory spells it

    # -- IAssignmentResolver

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        """Fire with the user's home, or None (unknown, disabled, or unusable data); fail
        with `DirectoryUnavailable`. Answers within `timeout` seconds, whatever the
        directory does."""
        try:
            filterstr = self._schema.user_filter.render(aor)
        except InvalidAddress as e:
            self.log.info("not looking up {aor!r} in LDAP: {reason}", aor=str(aor), reason=str(e))
            return succeed(None)
        lookup = self._query(self._find, filterstr)
        return lookup.addCallbacks(self._looked_up, self._failed, (aor,))

    def _looked_up(self, outcome: _Outcome, aor: AddressOfRecord) -> Assignment | None:
        self._now_reachable()
        if outcome.problem is not None:
            self.log.emit(
                LogLevel.levelWithName(outcome.level),
                "LDAP entry {dn} for {aor}: {problem}; answering as an unknown user",
                dn="; ".join(outcome.dns),
                aor=str(aor),
                problem=outcome.problem,
            )
        return outcome.assignment

    # -- worker threads

    def _find(self, connection: Any, filterstr: str) -> _Outcome:
        schema = self._schema
        result = self._search_user(connection, filterstr, schema.attributes)
        entries = result.entries
        if not entries:
            return _Outcome(None)
        dns = tuple(dn for dn, _ in entries)
        if len(entries) > 1 or result.truncated:
            return _Outcome(None, "several entries have this address", dns=dns)
        entry = entries[0]
        if not schema.enabled(entry):
            return _Outcome(None, "disabled", level="info", dns=dns)
        return self._home_of(connection, entry)

    def _home_of(self, connection: Any, entry: Entry) -> _Outcome:
        schema = self._schema
        dns = (entry[0],)
        value = schema.home_value(entry)
        if value is None:
            return _Outcome(None, f"no {schema.home_attribute}", dns=dns)
        home = parse_home_value(value)
        if home.assignment is not None:
            return _Outcome(home.assignment)
        if home.dn is None:
            return _Outcome(
                None, f"{schema.home_attribute} {value!r} is not an FQDN or DN", dns=dns
            )
        assignment = self._pool_home(connection, home.dn, value)
        if assignment is None:
            problem = (
                f"no {schema.pool_fqdn_attribute} on pool {value!r} or its ancestors"
                " (or it does not exist)"
            )
            return _Outcome(None, problem, dns=dns)
        return _Outcome(assignment)

    def _pool_home(self, connection: Any, key: str, dn: str) -> Assignment | None:
        """The FQDN of the pool whose object is `dn`: on it or its nearest ancestor that has
        `pool_fqdn_attribute`; None if `dn` does not exist or no such ancestor does."""
        with self._pools_lock:
            known = self._pool_homes.get(key)
        if known is not None:
            return known
        attribute = self._schema.pool_fqdn_attribute
        current: str | None = dn
        for depth in range(_MAX_DN_DEPTH):
            if current is None:
                return None
            found = self.pool.search(
                connection, current, ldap.SCOPE_BASE, "(objectClass=*)", [attribute]
            ).entries
            if not found and depth == 0:
                return None  # the pool's service object is gone: do not guess from above
            value = first_value(found[0], attribute) if found else None
            if value:
                try:
                    assignment = Assignment(normalize_hostname(value))
                except ValueError:
                    return None
                with self._pools_lock:
                    assignment = self._pool_homes.setdefault(key, assignment)
                    self._pool_dns.setdefault(assignment.home_server, dn)
                return assignment
            current = parent_dn(current)
        return None

    # -- IAssignmentStore

    def move(self, aor: AddressOfRecord, home_server: str) -> Deferred[None]:
        """Write `home_server` into the user's home attribute (RFC 4511 §4.6 modify): the
        FQDN for the generic preset; for AD (a DN-syntax attribute) the DN of the pool
        with that FQDN, its `CN=LC Services,CN=Microsoft` service object when it has one.
        Users are not created: an AOR without an entry fails with `AssignmentWriteError`,
        as does a refused write (e.g. insufficient access)."""
        return self.move_many([(aor, home_server)]).addCallback(lambda _: None)

    def move_many(self, moves: Iterable[tuple[AddressOfRecord, str]]) -> Deferred[int]:
        """Apply the moves one by one (LDAP has no multi-entry transaction); fail with
        `AssignmentWriteError` saying how many were applied before the one that failed."""
        try:
            planned = [
                (aor, self._schema.user_filter.render(aor), normalize_hostname(home))
                for aor, home in moves
            ]
        except ValueError as e:
            return fail(AssignmentWriteError(str(e)))
        return self._run(self._write_all, planned).addErrback(self._failed)

    def _write_all(self, planned: list[tuple[AddressOfRecord, str, str]]) -> int:
        done = 0
        with self.pool.connection() as connection:
            for aor, filterstr, home in planned:
                try:
                    self._write(connection, aor, filterstr, home)
                except AssignmentWriteError as e:
                    raise AssignmentWriteError(
                        f"{e} ({done} of {len(planned)} moves applied)"
                    ) from None
                done += 1
        return done

    def _write(self, connection: Any, aor: AddressOfRecord, filterstr: str, home: str) -> None:
        schema = self._schema
        entries = self._search_user(connection, filterstr, ["1.1"]).entries
        if len(entries) != 1:
            found = "no directory entry" if not entries else "several directory entries"
            raise AssignmentWriteError(f"{found} for {aor}")
        value = self._pool_dn_for(connection, home) if schema.writes_dn else home
        self.pool.replace(connection, entries[0][0], schema.home_attribute, value)

    def _pool_dn_for(self, connection: Any, home: str) -> str:
        """The DN that names the pool with FQDN `home`: one already seen in a lookup, else
        found under `pool_base_dn` by `pool_fqdn_attribute`."""
        with self._pools_lock:
            known = self._pool_dns.get(home)
        if known is not None:
            return known
        attribute = self._schema.pool_fqdn_attribute
        base = self.config.pool_base_dn or self.config.base_dn
        candidates = self.pool.search(
            connection,
            base,
            ldap.SCOPE_SUBTREE,
            f"({attribute}={escape_filter_value(home)})",
            ["1.1"],
        ).entries
        with_service = []
        for dn, _ in candidates:
            service = f"CN=LC Services,CN=Microsoft,{dn}"
            if self.pool.search(
                connection, service, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"]
            ).entries:
                with_service.append(service)
        chosen = with_service or [dn for dn, _ in candidates]
        if len(chosen) != 1:
            found = "no pool object" if not chosen else "several pool objects"
            raise AssignmentWriteError(f"{found} with {attribute}={home} under {base}")
        return chosen[0]

    def export(self) -> Deferred[list[tuple[AddressOfRecord, Assignment]]]:
        """Fire with every enabled user's assignment, read in pages (RFC 2696); entries
        that cannot be used are left out and logged (count and first DNs)."""
        if self._schema.user_filter.aor_attribute() is None:
            return fail(
                AssignmentWriteError("export needs a filter that matches {aor} in one attribute")
            )
        return self._run(self._export).addCallbacks(self._exported, self._failed)

    def _export(self) -> tuple[list[tuple[AddressOfRecord, Assignment]], list[str]]:
        schema = self._schema
        found: list[tuple[AddressOfRecord, Assignment]] = []
        skipped: list[str] = []
        with self.pool.connection() as connection:
            entries = list(
                self.pool.paged_search(
                    connection,
                    self.config.base_dn,
                    schema.user_filter.match_all(),
                    schema.attributes,
                    self.config.page_size,
                    self.config.size_limit,
                )
            )
            for entry in entries:
                if not schema.enabled(entry):
                    continue
                aor = schema.aor_of(entry)
                outcome = self._home_of(connection, entry)
                if aor is None or outcome.assignment is None:
                    skipped.append(entry[0])
                    continue
                found.append((aor, outcome.assignment))
        # An AOR on several entries is ambiguous, as in a lookup: none of them is exported.
        owners: dict[AddressOfRecord, int] = {}
        for aor, _ in found:
            owners[aor] = owners.get(aor, 0) + 1
        if len(owners) < len(found):
            skipped.extend(f"{aor} (on several entries)" for aor, n in owners.items() if n > 1)
            found = [(aor, assignment) for aor, assignment in found if owners[aor] == 1]
        return found, skipped

    def _exported(
        self, result: tuple[list[tuple[AddressOfRecord, Assignment]], list[str]]
    ) -> list[tuple[AddressOfRecord, Assignment]]:
        found, skipped = result
        if skipped:
            self.log.warn(
                "LDAP export left out {count} unusable entries, e.g. {dns}",
                count=len(skipped),
                dns="; ".join(skipped[:5]),
            )
        return found


def build_ldap_source(
    config: LdapAssignmentsConfig, *, reactor: Any, threadpool: ThreadPool | None = None
) -> tuple[LdapAssignmentResolver, LdapAssignmentResolver, Callable[[], None]]:
    """A started resolver for `homeredirect.resolve.factory`: (resolver, store, close).

    The resolver runs its own `pool_size` threads rather than the caller's `threadpool`:
    each of its threads holds a directory connection, and a directory that hangs must stall
    only LDAP lookups, never the SQLite or file work that shares the caller's pool.
    """
    del threadpool  # see the docstring
    resolver = LdapAssignmentResolver(config, reactor)
    resolver.startService()
    return resolver, resolver, resolver.stopService
