"""Assignments in an SQLite table, read and written off the reactor thread.

The table is `assignments(user TEXT PRIMARY KEY, home_server TEXT)` (the name is configurable)
and `user` holds the AOR as `AddressOfRecord.__str__` writes it, `alice@example.com`. It is
created if missing, so `homeredirect assignments import` can fill a new database.

SQLite calls block, so every one runs in the bounded thread pool its owner passes in (STYLE
b.11); each pool thread keeps its own connection. The database is put in WAL mode, so that
several director processes can share one file: readers never wait for a writer, and a move
committed by one process is what the others read next -- which, behind the cache, is within
the cache TTL.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import AssignmentWriteError, DirectoryUnavailable
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.resolve.stored import assignment_from_store, checked_moves
from homeredirect.sqlite_wal import enable_wal

__all__ = ["SqlAssignmentSource"]

_T = TypeVar("_T")

# How long a statement waits for another process's write lock before giving up (and the
# lookup fails with DirectoryUnavailable). WAL readers never wait; writers wait for writers.
_BUSY_TIMEOUT = 5.0


@implementer(IAssignmentResolver, IAssignmentStore)
class SqlAssignmentSource:
    """Resolve and write assignments in the SQLite database at `path`.

    `threadpool` belongs to the caller, which starts it, and stops it before calling
    `close()` (so that no query is running when the connections close).
    """

    log = FilteredLogger()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
        table: str = "assignments",
    ) -> None:
        if not table.isidentifier():
            raise ValueError(f"not an SQL table name: {table!r}")
        self.path = Path(path)
        self.table = table
        self._reactor = reactor
        self._threadpool = threadpool
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        quoted = f'"{table}"'
        self._create = (
            f"CREATE TABLE IF NOT EXISTS {quoted} (user TEXT PRIMARY KEY, home_server TEXT)"
        )
        self._select = f"SELECT home_server FROM {quoted} WHERE user = ?"
        self._select_all = f"SELECT user, home_server FROM {quoted} ORDER BY user"
        self._upsert = (
            f"INSERT INTO {quoted} (user, home_server) VALUES (?, ?)"
            " ON CONFLICT (user) DO UPDATE SET home_server = excluded.home_server"
        )

    def _describe(self) -> str:
        return f"SQLite {self.path} table {self.table}"

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the table created) on first use."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise sqlite3.ProgrammingError("closed")
        connection = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            enable_wal(connection, _BUSY_TIMEOUT)
            connection.execute(self._create)
        except BaseException:
            connection.close()
            raise
        with self._connections_lock:
            self._connections.append(connection)
        self._local.connection = connection
        return connection

    def _in_thread(self, work: Callable[[sqlite3.Connection], _T]) -> Deferred[_T]:
        """Run `work(connection)` in the pool; SQLite errors become `DirectoryUnavailable`
        (the file cannot be opened, is locked past the busy timeout, is not a database),
        except a refused write (a read-only file, a constraint of the table), which becomes
        `AssignmentWriteError`."""

        def run() -> _T:
            try:
                return work(self._connection())
            except sqlite3.Error as e:
                message = str(e)
                if isinstance(e, sqlite3.IntegrityError) or "readonly" in message:
                    raise AssignmentWriteError(f"{self._describe()}: {message}") from e
                raise DirectoryUnavailable(f"{self._describe()}: {message}") from e

        if self._closed:
            return fail(DirectoryUnavailable(f"{self._describe()}: closed"))
        return deferToThreadPool(self._reactor, self._threadpool, run)

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        """Fire with the user's assignment, or None (unknown, or a stored value that is not
        an FQDN: logged); fail with `DirectoryUnavailable`."""
        key = str(aor)
        select = self._select

        def lookup(connection: sqlite3.Connection) -> object:
            # fetchall, so the statement runs to completion and ends its read transaction
            # (WAL: an open one would keep reading the snapshot it started with).
            rows = connection.execute(select, (key,)).fetchall()
            return rows[0][0] if rows else None

        return self._in_thread(lookup).addCallback(self._assignment, key)

    def _assignment(self, value: object, key: str) -> Assignment | None:
        if value is None:
            return None
        return assignment_from_store(value, key, self._describe())

    def move(self, aor: AddressOfRecord, home_server: str) -> Deferred[None]:
        """Assign `aor` to `home_server`, adding the row if new."""
        return self.move_many([(aor, home_server)]).addCallback(lambda _: None)

    def move_many(self, moves: Iterable[tuple[AddressOfRecord, str]]) -> Deferred[int]:
        """Apply all moves in one transaction (all or none); fire with their count."""
        try:
            rows = list(checked_moves(moves).items())
        except AssignmentWriteError:
            return fail()
        upsert = self._upsert

        def write(connection: sqlite3.Connection) -> int:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(upsert, rows)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return len(rows)

        return self._in_thread(write)

    def export(self) -> Deferred[list[tuple[AddressOfRecord, Assignment]]]:
        """Fire with every valid row, ordered by user; invalid rows are logged and left out."""
        select_all = self._select_all

        def read(connection: sqlite3.Connection) -> list[tuple[object, object]]:
            return connection.execute(select_all).fetchall()

        return self._in_thread(read).addCallback(self._exported)

    def _exported(
        self, rows: list[tuple[object, object]]
    ) -> list[tuple[AddressOfRecord, Assignment]]:
        exported = []
        for user, home in rows:
            try:
                aor = AddressOfRecord.parse(str(user))
            except ValueError:
                self.log.error(
                    "bad assignment in {directory}: user {key!r} is not an AOR; not exported",
                    directory=self._describe(),
                    key=user,
                )
                continue
            assignment = assignment_from_store(home, str(user), self._describe())
            if assignment is not None:
                exported.append((aor, assignment))
        return exported

    def close(self) -> None:
        """Close every connection; call once the thread pool has stopped."""
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
