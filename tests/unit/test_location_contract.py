"""The shared location-store behaviour (tests/unit/location_store_contract.py) run against
the in-memory store and the SQLite store (a real file, a real thread pool); Redis runs it
in tests/integration/test_redis_store.py."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from homeredirect.registrar.location import ILocationStore
from homeredirect.registrar.memory_store import MemoryLocationStore
from homeredirect.registrar.sqlite_store import SqliteLocationStore
from tests.unit.location_store_contract import LocationStoreContract


def started_pool(test: TestCase) -> ThreadPool:
    """A bounded pool like the service's, stopped when *test* ends."""
    pool = ThreadPool(minthreads=0, maxthreads=4, name="test-location")
    pool.start()
    test.addCleanup(pool.stop)
    return pool


class MemoryStoreContractTests(LocationStoreContract, TestCase):
    def setUp(self) -> None:
        self.shared = MemoryLocationStore()

    def make_store(self) -> ILocationStore:
        return self.shared

    def make_peer(self) -> ILocationStore:
        # One process's memory has one store; "another instance" is the same one.
        return self.shared


class SqliteStoreContractTests(LocationStoreContract, TestCase):
    def setUp(self) -> None:
        self.pool = started_pool(self)
        self.path = Path(self.mktemp()).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def make_store(self) -> ILocationStore:
        return SqliteLocationStore(self.path, reactor, self.pool)

    def make_peer(self) -> ILocationStore:
        # Its own connection to the same file, as a second process would have.
        return SqliteLocationStore(self.path, reactor, started_pool(self))
