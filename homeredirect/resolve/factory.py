"""Build the configured assignment backend: `[assignments]` plus `[cache]` -> resolver.

The service and `homeredirect assignments` both start here, so that they agree on what a
configuration means. Directory backends (SQL, Redis, LDAP) get the cache in front
(`homeredirect.resolve.cache`); the file backend does not need one, it is an in-memory table
already. Client libraries are imported only for the backend in use, so a file-backed
director never loads python-ldap or txredisapi.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.python.threadpool import ThreadPool

from homeredirect.config.assignments import (
    FileAssignmentsConfig,
    LdapAssignmentsConfig,
    RedisAssignmentsConfig,
    SqlAssignmentsConfig,
)
from homeredirect.config.schema import Config
from homeredirect.resolve.cache import CachedResolver
from homeredirect.resolve.file_source import FileAssignmentResolver
from homeredirect.resolve.interfaces import IAssignmentResolver, IAssignmentStore

__all__ = ["AssignmentBackend", "BackendUnavailable", "build_resolver"]

# How long one Redis operation may take before the lookup fails with DirectoryUnavailable.
REDIS_TIMEOUT = 2.0


class BackendUnavailable(Exception):
    """The configured backend cannot be built here (its client library or module is
    missing); `str()` says which and what to install."""


@define
class AssignmentBackend:
    """The parts of a configured backend, and how to release them.

    - `resolver`: what the director asks (the cache, for directory backends).
    - `store`: the writable side, or None when the backend cannot write.
    - `cache`: the cache in front, or None (file backend); its counters are its attributes.
    - `file`: the file backend, which `reload()` re-reads (SIGHUP); None for the others.
    """

    resolver: IAssignmentResolver
    store: IAssignmentStore | None
    cache: CachedResolver | None = None
    file: FileAssignmentResolver | None = None
    _closers: list[Callable[[], object]] = field(factory=list)

    def reload(self) -> Deferred[Any]:
        """Re-read the assignment file (file backend); directories need no reload, their
        cache expires on its own."""
        if self.file is not None:
            return self.file.reload()
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Release the backend's connections (call once the thread pool has stopped, as
        SQLite connections are used from its threads); fire when they are closed."""
        closing = [maybeDeferred(close) for close in reversed(self._closers)]
        self._closers.clear()
        return gatherResults(closing).addCallback(lambda _: None)


def build_resolver(config: Config, reactor: Any, threadpool: ThreadPool) -> AssignmentBackend:
    """Build the backend `config.assignments` names, with `config.cache` in front of
    directory backends. Blocking work (SQLite, LDAP) goes to `threadpool`, which the caller
    owns. The file backend's file is loaded here (blocking, so call this before the reactor
    runs or from a command-line tool); raise `AssignmentFileError` if it is invalid, and
    `BackendUnavailable` for a backend that cannot be built here."""
    settings = config.assignments
    if isinstance(settings, FileAssignmentsConfig):
        resolver = FileAssignmentResolver(settings.path, reactor=reactor, threadpool=threadpool)
        resolver.load()
        return AssignmentBackend(resolver, resolver, file=resolver)
    if isinstance(settings, SqlAssignmentsConfig):
        from homeredirect.resolve.sql_source import SqlAssignmentSource

        sql = SqlAssignmentSource(
            settings.path, reactor=reactor, threadpool=threadpool, table=settings.table
        )
        return _cached(config, reactor, "sql", sql, sql, [sql.close])
    if isinstance(settings, RedisAssignmentsConfig):
        try:
            from homeredirect.redis_connection import RedisConnection
            from homeredirect.resolve.redis_source import RedisAssignmentSource
        except ImportError as e:
            raise BackendUnavailable(
                f'[assignments] backend = "redis" needs txredisapi ({e}); install homeredirect'
                " with its dependencies"
            ) from e
        connection = RedisConnection(reactor, settings.url, timeout=REDIS_TIMEOUT)
        redis = RedisAssignmentSource(connection, key_prefix=settings.key_prefix)
        return _cached(config, reactor, "redis", redis, redis, [connection.close])
    if isinstance(settings, LdapAssignmentsConfig):
        return _ldap(config, settings, reactor, threadpool)
    raise BackendUnavailable(f"unknown assignment backend {settings!r}")


def _cached(
    config: Config,
    reactor: Any,
    name: str,
    backend: IAssignmentResolver,
    store: IAssignmentStore | None,
    closers: list[Callable[[], object]],
) -> AssignmentBackend:
    cache = CachedResolver(backend, config.cache, clock=reactor, name=name)
    return AssignmentBackend(cache, store, cache=cache, closers=closers)


def _ldap(
    config: Config, settings: LdapAssignmentsConfig, reactor: Any, threadpool: ThreadPool
) -> AssignmentBackend:
    """The LDAP backend lives in `homeredirect.resolve.ldap_source` and needs python-ldap
    (the `ldap` extra); both are imported only here."""
    try:
        module = importlib.import_module("homeredirect.resolve.ldap_source")
    except ImportError as e:
        raise BackendUnavailable(
            f'[assignments] backend = "ldap" needs python-ldap: install homeredirect[ldap] ({e})'
        ) from e
    builder = getattr(module, "build_ldap_source", None)
    if builder is None:
        raise BackendUnavailable(
            '[assignments] backend = "ldap": homeredirect.resolve.ldap_source provides no'
            " build_ldap_source()"
        )
    source, store, close = builder(settings, reactor=reactor, threadpool=threadpool)
    return _cached(config, reactor, "ldap", source, store, [close])
