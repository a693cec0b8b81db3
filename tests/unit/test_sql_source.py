"""The SQLite assignment backend: real SQLite files, queries in a real thread pool."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from homeredirect.config.assignments import CacheConfig
from homeredirect.resolve.cache import CachedResolver
from homeredirect.resolve.errors import AssignmentWriteError, DirectoryUnavailable
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.resolve.sql_source import SqlAssignmentSource

REACTOR = cast(IReactorFromThreads, reactor)
ALICE = AddressOfRecord("alice", "example.com")
BOB = AddressOfRecord("bob", "example.com")


def rows(path: Path, table: str = "assignments") -> list[tuple[str, str]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT user, home_server FROM {table} ORDER BY user").fetchall()


def insert(path: Path, *pairs: tuple[str, str], table: str = "assignments") -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(f"INSERT INTO {table} VALUES (?, ?)", pairs)
    connection.close()


class SqlSourceTests(TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.path = self.directory / "assignments.sqlite"
        self.pool = ThreadPool(minthreads=0, maxthreads=2, name="test-sql")
        self.pool.start()
        self.sources: list[SqlAssignmentSource] = []
        self.addCleanup(self.stop)
        self.source = self.make_source()

    def stop(self) -> None:
        self.pool.stop()
        for source in self.sources:
            source.close()

    def make_source(self, path: Path | None = None, table: str = "assignments") -> Any:
        source = SqlAssignmentSource(
            path or self.path, reactor=REACTOR, threadpool=self.pool, table=table
        )
        self.sources.append(source)
        return source

    def test_source_provides_resolver_and_store_interfaces(self) -> None:
        self.assertTrue(verifyObject(IAssignmentResolver, self.source))
        self.assertTrue(verifyObject(IAssignmentStore, self.source))

    @inlineCallbacks
    def test_table_is_created_if_missing_in_wal_mode(self):  # type: ignore[no-untyped-def]
        source = self.make_source(table="homes")
        self.assertIsNone((yield source.resolve(ALICE)))
        self.assertEqual(rows(self.path, "homes"), [])
        with sqlite3.connect(self.path) as connection:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        self.assertEqual(mode, "wal")

    @inlineCallbacks
    def test_known_user_resolves_and_unknown_user_is_none(self):  # type: ignore[no-untyped-def]
        yield self.source.export()  # creates the table
        insert(self.path, ("alice@example.com", "HOME1.example.com"))
        self.assertEqual((yield self.source.resolve(ALICE)), Assignment("home1.example.com"))
        self.assertIsNone((yield self.source.resolve(BOB)))

    @inlineCallbacks
    def test_move_adds_a_new_user_and_replaces_an_old_home(self):  # type: ignore[no-untyped-def]
        yield self.source.move(ALICE, "home1.example.com")
        yield self.source.move(ALICE, "Home2.Example.com")
        yield self.source.move(BOB, "home1.example.com")
        self.assertEqual(
            rows(self.path),
            [("alice@example.com", "home2.example.com"), ("bob@example.com", "home1.example.com")],
        )

    @inlineCallbacks
    def test_move_many_is_one_transaction(self):  # type: ignore[no-untyped-def]
        connection = sqlite3.connect(self.path)
        connection.execute(
            "CREATE TABLE assignments (user TEXT PRIMARY KEY, home_server TEXT"
            " CHECK (home_server != 'closed.example.com'))"
        )
        connection.close()
        moves = [(ALICE, "home1.example.com"), (BOB, "closed.example.com")]
        yield self.assertFailure(self.source.move_many(moves), AssignmentWriteError)
        self.assertEqual(rows(self.path), [])
        count = yield self.source.move_many([(ALICE, "home1.example.com"), (BOB, "h2.example")])
        self.assertEqual((count, len(rows(self.path))), (2, 2))

    @inlineCallbacks
    def test_move_to_a_home_that_is_not_an_fqdn_writes_nothing(self):  # type: ignore[no-untyped-def]
        moves = [(ALICE, "home1.example.com"), (BOB, "not a host")]
        failure = yield self.assertFailure(self.source.move_many(moves), AssignmentWriteError)
        self.assertIn("'not a host'", str(failure))
        yield self.source.export()
        self.assertEqual(rows(self.path), [])

    @inlineCallbacks
    def test_stored_home_that_is_not_an_fqdn_is_logged_and_unknown(self):  # type: ignore[no-untyped-def]
        yield self.source.export()
        insert(self.path, ("alice@example.com", "home_1!"), ("bob@example.com", "h.example"))
        with capturedLogs() as events:
            self.assertIsNone((yield self.source.resolve(ALICE)))
            exported = yield self.source.export()
        bad = [e for e in events if e.get("key") == "alice@example.com"]
        self.assertEqual(len(bad), 2)
        self.assertEqual(bad[0]["value"], "home_1!")
        self.assertEqual(exported, [(BOB, Assignment("h.example"))])

    @inlineCallbacks
    def test_export_lists_every_assignment_by_user(self):  # type: ignore[no-untyped-def]
        yield self.source.move_many([(BOB, "home2.example.com"), (ALICE, "home1.example.com")])
        exported = yield self.source.export()
        self.assertEqual(
            exported,
            [(ALICE, Assignment("home1.example.com")), (BOB, Assignment("home2.example.com"))],
        )

    @inlineCallbacks
    def test_unopenable_database_is_directory_unavailable(self):  # type: ignore[no-untyped-def]
        source = self.make_source(self.directory / "missing" / "db.sqlite")
        failure = yield self.assertFailure(source.resolve(ALICE), DirectoryUnavailable)
        self.assertIn("unable to open database file", str(failure))

    @inlineCallbacks
    def test_file_that_is_not_a_database_is_directory_unavailable(self):  # type: ignore[no-untyped-def]
        self.path.write_text("user,home_server\n" * 1000)
        yield self.assertFailure(self.source.resolve(ALICE), DirectoryUnavailable)

    @inlineCallbacks
    def test_move_by_one_director_is_seen_by_another_within_the_cache_ttl(self):  # type: ignore[no-untyped-def]
        clock = Clock()
        settings = CacheConfig(ttl=300)
        first = CachedResolver(self.make_source(), settings, clock=clock, name="sql")
        second = CachedResolver(self.make_source(), settings, clock=clock, name="sql")
        writer = self.sources[-1]
        yield writer.move(ALICE, "home1.example.com")
        self.assertEqual((yield second.resolve(ALICE)).home_server, "home1.example.com")
        yield self.sources[-2].move(ALICE, "home2.example.com")  # through the first one's file
        self.assertEqual((yield first.resolve(ALICE)).home_server, "home2.example.com")
        self.assertEqual((yield second.resolve(ALICE)).home_server, "home1.example.com")
        clock.advance(300)
        self.assertEqual((yield second.resolve(ALICE)).home_server, "home2.example.com")
