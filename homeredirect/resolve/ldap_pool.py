"""Blocking LDAP connections, pooled, for the worker threads of `LdapAssignmentResolver`.

Everything here blocks and runs in the resolver's thread pool, never on the reactor thread
(STYLE b.11). A pool holds `pool_size` connections, as many as there are threads, so a job
never waits for a connection, only for the directory. A connection is opened lazily: the
URIs are tried in order (failover), each within `timeout`; TLS (`ldaps://` or StartTLS,
RFC 4513 §3) verifies the server's certificate against `ca`; then a simple bind (RFC 4513
§5.1.3), a SASL GSSAPI bind (RFC 4752) with the keytab, or none (anonymous). A connection
that fails or times out is dropped, and the next job opens a new one.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ldap
import ldap.sasl
from attrs import frozen
from ldap.controls import SimplePagedResultsControl

from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.resolve.errors import AssignmentWriteError, DirectoryUnavailable
from homeredirect.resolve.ldap_schema import Entry

__all__ = [
    "ConnectionSettings",
    "DirectoryUnreachable",
    "LdapConnectionPool",
    "SearchResult",
    "describe_ldap_error",
]

# Failures that mean the connection (or the server) is gone: drop the connection.
_CONNECTION_ERRORS = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE)
# A refused write: reported as AssignmentWriteError, never as "directory down".
_WRITE_REFUSED = (
    ldap.INSUFFICIENT_ACCESS,
    ldap.STRONG_AUTH_REQUIRED,
    ldap.CONSTRAINT_VIOLATION,
    ldap.INVALID_SYNTAX,
    ldap.OBJECT_CLASS_VIOLATION,
    ldap.UNWILLING_TO_PERFORM,
    ldap.NO_SUCH_OBJECT,
    ldap.UNDEFINED_TYPE,
)


class DirectoryUnreachable(DirectoryUnavailable):
    """No configured server could be connected to and bound: the resolver backs off."""


def describe_ldap_error(error: BaseException) -> str:
    """One line from a python-ldap exception (its `desc` and `info`), for logs and errors."""
    details = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    parts = [str(details.get("desc") or type(error).__name__)]
    if details.get("info"):
        parts.append(str(details["info"]))
    return ": ".join(parts)


@frozen
class ConnectionSettings:
    """How to open and bind one connection; from `LdapAssignmentsConfig`."""

    uris: tuple[str, ...]
    timeout: float
    starttls: bool
    ca: str | None
    bind_dn: str | None
    bind_password: str | None
    sasl_gssapi: bool

    @classmethod
    def from_config(cls, config: LdapAssignmentsConfig) -> ConnectionSettings:
        return cls(
            uris=config.uris,
            timeout=config.timeout,
            starttls=config.starttls,
            ca=None if config.ca is None else str(config.ca),
            bind_dn=config.bind_dn,
            bind_password=config.bind_password,
            sasl_gssapi=config.sasl_mechanism == "GSSAPI",
        )

    @property
    def uses_tls(self) -> bool:
        return self.starttls or any(uri.lower().startswith("ldaps://") for uri in self.uris)


def use_keytab(keytab: str, environ: Any = os.environ) -> None:
    """Point MIT Kerberos at `keytab` for the client credentials of the GSSAPI bind.

    libsasl's GSSAPI plug-in takes its credentials from the default credential cache, and MIT
    krb5 (1.11 and later) fills that cache from the client keytab named by
    `KRB5_CLIENT_KTNAME` when it is empty or expired, renewing as needed: no kinit cron job.
    A memory cache keeps the ticket private to this process unless the operator chose one.
    """
    environ["KRB5_CLIENT_KTNAME"] = keytab
    environ.setdefault("KRB5CCNAME", "MEMORY:homeredirect-ldap")


@frozen
class SearchResult:
    """Entries of one search; `truncated` when the size limit cut it short."""

    entries: list[Entry]
    truncated: bool


class LdapConnectionPool:
    """`size` connections shared by the worker threads; every method blocks.

    `searches` counts the search operations sent, so that tests and operators can see how
    many queries a burst of lookups really cost.
    """

    def __init__(self, settings: ConnectionSettings, size: int) -> None:
        self.settings = settings
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(size):
            self._idle.put(None)  # a slot without a connection yet
        self._count_lock = threading.Lock()
        self.searches = 0
        self.connects = 0

    def _count_search(self) -> None:
        with self._count_lock:
            self.searches += 1

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """Borrow a bound connection (opening one if the slot has none); on a connection
        failure drop it and raise `DirectoryUnavailable`."""
        connection = self._idle.get()
        try:
            if connection is None:
                connection = self._open()
            yield connection
        except _CONNECTION_ERRORS as e:
            _close(connection)
            connection = None
            raise DirectoryUnavailable(f"LDAP: {describe_ldap_error(e)}") from None
        except ldap.LDAPError as e:
            # The server answered, with an error (busy, an operations error...): the
            # connection is fine, this operation is not.
            raise DirectoryUnavailable(f"LDAP: {describe_ldap_error(e)}") from None
        finally:
            self._idle.put(connection)

    def close(self) -> None:
        """Unbind every idle connection (at service stop, when no job runs)."""
        slots = []
        while True:
            try:
                slots.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for connection in slots:
            _close(connection)
            self._idle.put(None)

    def _open(self) -> Any:
        """Connect to the first URI that answers, set up TLS and bind; raise
        `DirectoryUnreachable` naming each URI's failure if none does."""
        failures = []
        for uri in self.settings.uris:
            connection = None
            try:
                connection = self._connect(uri)
            except ldap.LDAPError as e:
                _close(connection)
                failures.append(f"{uri}: {describe_ldap_error(e)}")
                continue
            with self._count_lock:
                self.connects += 1
            return connection
        raise DirectoryUnreachable("no LDAP server reachable: " + "; ".join(failures))

    def _connect(self, uri: str) -> Any:
        settings = self.settings
        connection = ldap.initialize(uri)
        # python-ldap's synchronous calls (binds, StartTLS, modify) wait this long for the
        # answer; libldap's own OPT_TIMEOUT does not bound them.
        connection.timeout = settings.timeout
        connection.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        # Active Directory answers subtree searches at a domain root with referrals to the
        # other partitions; chasing them would bind anonymously to other servers.
        connection.set_option(ldap.OPT_REFERRALS, 0)
        connection.set_option(ldap.OPT_NETWORK_TIMEOUT, settings.timeout)
        connection.set_option(ldap.OPT_TIMEOUT, settings.timeout)
        if settings.uses_tls:
            if settings.ca is not None:
                connection.set_option(ldap.OPT_X_TLS_CACERTFILE, settings.ca)
            connection.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            connection.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # last: applies the options above
        if settings.starttls:
            connection.start_tls_s()  # RFC 4511 §4.14; fails if the certificate does not verify
        if settings.sasl_gssapi:
            # The service principal is ldap/<host of the URI>, not what reverse DNS says.
            connection.set_option(ldap.OPT_X_SASL_NOCANON, 1)
            if settings.uses_tls:
                # AD refuses SASL signing or sealing inside TLS (one protection layer only).
                connection.set_option(ldap.OPT_X_SASL_SECPROPS, "maxssf=0")
            connection.sasl_interactive_bind_s("", ldap.sasl.gssapi())
        elif settings.bind_dn is not None:
            connection.simple_bind_s(settings.bind_dn, settings.bind_password or "")
        else:
            connection.simple_bind_s("", "")  # anonymous, and it proves the server answers
        return connection

    def search(
        self,
        connection: Any,
        base: str,
        scope: int,
        filterstr: str,
        attributes: Sequence[str],
        size_limit: int = 0,
    ) -> SearchResult:
        """One search, entries as they come (so that those read before a size limit are
        kept); continuation references (RFC 4511 §4.5.3) are skipped."""
        timeout = self.settings.timeout
        self._count_search()
        msgid = connection.search_ext(
            base, scope, filterstr, list(attributes), timeout=timeout, sizelimit=size_limit
        )
        entries: list[Entry] = []
        try:
            while True:
                kind, data, _, _ = connection.result3(msgid, all=0, timeout=timeout)
                for dn, attributes_read in data or ():
                    if dn is not None and isinstance(attributes_read, dict):
                        entries.append((dn, attributes_read))
                if kind == ldap.RES_SEARCH_RESULT:
                    return SearchResult(entries, truncated=False)
        except ldap.SIZELIMIT_EXCEEDED:
            return SearchResult(entries, truncated=True)
        except ldap.NO_SUCH_OBJECT:
            return SearchResult(entries, truncated=False)
        except ldap.TIMEOUT:
            connection.abandon(msgid)
            raise

    def paged_search(
        self,
        connection: Any,
        base: str,
        filterstr: str,
        attributes: Sequence[str],
        page_size: int,
        size_limit: int,
    ) -> Iterator[Entry]:
        """A subtree search in pages (RFC 2696 simple paged results): AD stops an unpaged
        search at 1,000 entries. Raise `DirectoryUnavailable` past `size_limit` (0: none)."""
        control = SimplePagedResultsControl(True, size=page_size, cookie="")
        timeout = self.settings.timeout
        count = 0
        while True:
            self._count_search()
            msgid = connection.search_ext(
                base,
                ldap.SCOPE_SUBTREE,
                filterstr,
                list(attributes),
                serverctrls=[control],
                timeout=timeout,
            )
            _, data, _, controls = connection.result3(msgid, timeout=timeout)
            for dn, attributes_read in data or ():
                if dn is None or not isinstance(attributes_read, dict):
                    continue
                count += 1
                if size_limit and count > size_limit:
                    raise DirectoryUnavailable(f"more than size_limit = {size_limit} entries")
                yield dn, attributes_read
            cookies = [c.cookie for c in controls or () if c.controlType == control.controlType]
            if not cookies or not cookies[0]:
                return
            control.cookie = cookies[0]

    def replace(self, connection: Any, dn: str, attribute: str, value: str) -> None:
        """Replace `attribute` of `dn` with `value` (RFC 4511 §4.6); raise
        `AssignmentWriteError` with the server's words if it refuses."""
        try:
            connection.modify_ext_s(dn, [(ldap.MOD_REPLACE, attribute, [value.encode()])])
        except _WRITE_REFUSED as e:
            raise AssignmentWriteError(f"{dn}: {describe_ldap_error(e)}") from None


def _close(connection: Any) -> None:
    if connection is None:
        return
    try:
        connection.unbind_ext()
    except ldap.LDAPError:
        pass  # already gone: nothing left to release
