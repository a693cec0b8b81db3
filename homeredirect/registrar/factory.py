"""Build the location store `[location]` names (memory, SQLite or Redis).

The backends' modules are imported only when chosen, so that a home server on SQLite
never loads the Redis client, and the other way round.
"""

from __future__ import annotations

from typing import Any

from twisted.python.threadpool import ThreadPool

from homeredirect.config.registrar import LocationConfig
from homeredirect.registrar.location import ILocationStore

__all__ = ["build_location_store"]


def build_location_store(config: LocationConfig, reactor: Any, pool: ThreadPool) -> ILocationStore:
    """The `ILocationStore` for *config*.

    *pool* is the service's bounded thread pool, used by the SQLite store for its blocking
    calls (the service starts and stops it); *reactor* provides time and connections.
    Nothing is opened here: SQLite opens its file on first use (or `open()`), Redis
    connects in the background and reconnects by itself.
    """
    if config.backend == "memory":
        from homeredirect.registrar.memory_store import MemoryLocationStore

        return MemoryLocationStore()
    if config.backend == "sqlite":
        from homeredirect.registrar.sqlite_store import SqliteLocationStore

        return SqliteLocationStore(config.path, reactor, pool)
    if config.backend == "redis":
        from homeredirect.redis_connection import RedisConnection
        from homeredirect.registrar.redis_store import RedisLocationStore

        return RedisLocationStore(RedisConnection(reactor, config.url), config.key_prefix)
    raise ValueError(f"unknown location backend {config.backend!r}")
