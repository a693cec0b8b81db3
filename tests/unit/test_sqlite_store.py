"""What only the SQLite location store does: persistence across instances (a restart),
WAL mode, work off the reactor thread, and failing writes that leave nothing behind.
The behaviour shared with the other stores is in test_location_contract.py."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from homeredirect.config.registrar import LocationConfig
from homeredirect.registrar.factory import build_location_store
from homeredirect.registrar.location import Binding, LocationStoreError
from homeredirect.registrar.sqlite_store import SqliteLocationStore
from tests.unit.location_store_contract import ALICE, BOB, NOW, binding
from tests.unit.test_location_contract import started_pool


class SqliteStoreTests(TestCase):
    def setUp(self) -> None:
        self.pool = started_pool(self)
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.path = self.directory / "bindings.sqlite"

    def store(self, path: Path | None = None) -> SqliteLocationStore:
        store = SqliteLocationStore(path or self.path, reactor, self.pool)
        self.addCleanup(store.close)
        return store

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        """Run *statement* on a connection of our own, as another process would."""
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            return connection.execute(statement).fetchall()
        finally:
            connection.close()

    @inlineCallbacks
    def test_bindings_survive_closing_and_reopening_the_file(self):  # type: ignore[no-untyped-def]
        first = SqliteLocationStore(self.path, reactor, self.pool)
        kept = binding("sip:alice@192.0.2.1", path=("<sip:edge.example.com;lr>",), reg_id=1)
        yield first.modify(ALICE, lambda current: (kept,), NOW)
        yield first.close()
        second = self.store()
        self.assertEqual((yield second.lookup(ALICE, NOW)), (kept,))

    @inlineCallbacks
    def test_database_uses_wal_and_one_row_per_aor(self):  # type: ignore[no-untyped-def]
        store = self.store()
        yield store.modify(ALICE, lambda current: (binding("sip:a@x"), binding("sip:b@x")), NOW)
        self.assertEqual(self.sql("PRAGMA journal_mode"), [("wal",)])
        rows = self.sql("SELECT aor, next_expiry FROM bindings")
        self.assertEqual(rows, [("alice@example.com", NOW + 3600)])

    @inlineCallbacks
    def test_changes_run_off_the_reactor_thread(self):  # type: ignore[no-untyped-def]
        store = self.store()
        threads: list[threading.Thread] = []

        def change(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            threads.append(threading.current_thread())
            return current

        yield store.modify(ALICE, change, NOW)
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())

    @inlineCallbacks
    def test_failing_write_is_a_store_error_and_writes_nothing(self):  # type: ignore[no-untyped-def]
        """A write SQLite itself refuses (here a trigger standing in for a full disk or an
        I/O error) fails with LocationStoreError; the AOR keeps exactly what it had."""
        store = self.store()
        before = binding("sip:a@192.0.2.1")
        yield store.modify(ALICE, lambda current: (before,), NOW)
        self.sql(
            "CREATE TRIGGER refuse_update BEFORE UPDATE ON bindings"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        self.sql(
            "CREATE TRIGGER refuse_insert BEFORE INSERT ON bindings"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        failure = yield self.assertFailure(
            store.modify(ALICE, lambda current: (*current, binding("sip:b@192.0.2.2")), NOW),
            LocationStoreError,
        )
        self.assertIn("disk on fire", str(failure))
        yield self.assertFailure(
            store.modify(BOB, lambda current: (binding(aor=BOB),), NOW), LocationStoreError
        )
        self.assertEqual((yield store.lookup(ALICE, NOW)), (before,))
        self.assertEqual((yield store.lookup(BOB, NOW)), ())
        # The store's transaction was rolled back: the file is not left locked.
        self.sql("DROP TRIGGER refuse_update")
        self.sql("DROP TRIGGER refuse_insert")
        yield store.modify(BOB, lambda current: (binding(aor=BOB),), NOW)

    @inlineCallbacks
    def test_full_database_is_a_store_error(self):  # type: ignore[no-untyped-def]
        """SQLite's real "database or disk is full", by capping the file's size."""
        store = self.store()
        yield store.modify(ALICE, lambda current: (binding(),), NOW)
        (pages,) = self.sql("PRAGMA page_count")[0]
        yield store._in_thread(
            lambda connection: connection.execute(f"PRAGMA max_page_count = {pages}")
        )
        big = tuple(binding(f"sip:{n}@192.0.2.1", user_agent="x" * 2000) for n in range(50))
        failure = yield self.assertFailure(
            store.modify(BOB, lambda current: big, NOW), LocationStoreError
        )
        self.assertIn("full", str(failure))
        self.assertEqual((yield store.lookup(BOB, NOW)), ())
        self.assertEqual((yield store.lookup(ALICE, NOW)), (binding(),))

    @inlineCallbacks
    def test_closed_store_refuses_work(self):  # type: ignore[no-untyped-def]
        store = SqliteLocationStore(self.path, reactor, self.pool)
        yield store.modify(ALICE, lambda current: (binding(),), NOW)
        yield store.close()
        yield self.assertFailure(store.lookup(ALICE, NOW), LocationStoreError)
        yield self.assertFailure(store.modify(ALICE, lambda current: (), NOW), LocationStoreError)
        self.assertEqual(len(self.sql("SELECT * FROM bindings")), 1)

    def test_closing_without_a_running_pool_does_not_wait(self) -> None:
        store = SqliteLocationStore(self.path, reactor, ThreadPool(name="never started"))
        self.successResultOf(store.close())

    @inlineCallbacks
    def test_unusable_path_fails_on_open(self):  # type: ignore[no-untyped-def]
        store = self.store(self.directory / "missing" / "bindings.sqlite")
        yield self.assertFailure(store.open(), LocationStoreError)

    @inlineCallbacks
    def test_unreadable_row_is_a_store_error(self):  # type: ignore[no-untyped-def]
        store = self.store()
        yield store.open()
        self.sql("INSERT INTO bindings VALUES ('alice@example.com', 'not json', 0)")
        yield self.assertFailure(store.lookup(ALICE, NOW), LocationStoreError)

    @inlineCallbacks
    def test_file_from_a_newer_schema_is_refused(self):  # type: ignore[no-untyped-def]
        self.sql("PRAGMA user_version = 99")
        failure = yield self.assertFailure(self.store().open(), LocationStoreError)
        self.assertIn("newer", str(failure))

    @inlineCallbacks
    def test_factory_builds_the_configured_store(self):  # type: ignore[no-untyped-def]
        store = build_location_store(
            LocationConfig(backend="sqlite", path=self.path), reactor, self.pool
        )
        self.addCleanup(store.close)
        self.assertIsInstance(store, SqliteLocationStore)
        yield store.modify(ALICE, lambda current: (binding(),), NOW)
        self.assertEqual(len(self.sql("SELECT * FROM bindings")), 1)
