"""Build the location store `[location]` names (memory, SQLite or Redis).

The backends' modules are imported only when chosen, so that a home server on SQLite
never loads the Redis client, and the other way round.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.python.threadpool import ThreadPool

from homeredirect.config.registrar import LocationConfig
from homeredirect.registrar.location import ILocationStore, LocationStoreError

__all__ = ["build_location_store"]


def build_location_store(config: LocationConfig, reactor: Any, pool: ThreadPool) -> ILocationStore:
    """The `ILocationStore` for *config*.

    *pool* is the service's bounded thread pool, used by the SQLite store for its blocking
    calls (the service starts and stops it); *reactor* provides time and connections.
    Nothing is opened here: SQLite opens its file on first use (or `open()`), Redis
    connects in the background and reconnects by itself. A SQLite file whose directory
    cannot hold it raises `LocationStoreError` now, so the server refuses to start rather
    than answer the first REGISTER with 500.
    """
    if config.backend == "memory":
        from homeredirect.registrar.memory_store import MemoryLocationStore

        return MemoryLocationStore()
    if config.backend == "sqlite":
        from homeredirect.registrar.sqlite_store import SqliteLocationStore

        _check_writable_directory(config.path)
        return SqliteLocationStore(config.path, reactor, pool)
    if config.backend == "redis":
        from homeredirect.redis_connection import RedisConnection
        from homeredirect.registrar.redis_store import RedisLocationStore

        # Each change holds a connection for two round trips (WATCH+GET, MULTI..EXEC).
        connection = RedisConnection(reactor, config.url, pool_size=4)
        return RedisLocationStore(connection, config.key_prefix)
    raise ValueError(f"unknown location backend {config.backend!r}")


def _check_writable_directory(path: Path) -> None:
    """Start-up check (before the reactor runs, so synchronous): SQLite needs to create the
    file and its WAL and shared-memory files beside it."""
    directory = path.parent
    if not directory.is_dir():
        raise LocationStoreError(f"{path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise LocationStoreError(f"{path}: the directory {directory} is not writable")
