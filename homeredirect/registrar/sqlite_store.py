"""`SqliteLocationStore`: bindings in an SQLite file, the embedded persistent default.

Bindings survive a restart, and several processes on one machine may share the file
(SQLite locks it). sqlite3 blocks, so every call runs in a thread pool the service owns and
the reactor only ever waits on a Deferred.

Schema: one row per AOR, its bindings as one JSON document (`bindings_to_json`), plus the
earliest expiry among them in an indexed column. A registration rewrites the AOR's row in
one statement inside one ``BEGIN IMMEDIATE`` transaction, so a change is atomic without
reconciling per-binding rows, and `purge` finds the rows holding something expired through
the index instead of reading every row. The table is small: a row per registered user.

One connection, guarded by a lock, serves every thread of the pool: SQLite serialises
writers anyway, and a keyed read takes microseconds.

Changes are group-committed: while one batch of changes runs in the pool, the changes that
arrive meanwhile wait in the reactor thread, and all of them go to the pool together, as one
``BEGIN IMMEDIATE`` transaction. Each change still reads the AOR's row as left by the
changes before it, so the outcome is the same as running them one by one; what is saved is
a thread hand-off and a commit per REGISTER, which at a few thousand REGISTERs a second is
most of the cost (bench/registrar.py). A change that raises writes nothing and fails alone;
an SQLite error rolls the whole batch back and fails every change in it.

The database runs in WAL mode with ``synchronous = NORMAL``: a commit is durable against a
process crash (a restart is what we care about) without an fsync per REGISTER; a power cut
may lose the last commits.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from homeredirect.registrar.location import (
    Binding,
    BindingChange,
    ILocationStore,
    LocationStoreError,
    bindings_from_json,
    bindings_to_json,
)
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sqlite_wal import enable_wal

__all__ = ["SqliteLocationStore"]

_T = TypeVar("_T")

_SCHEMA_VERSION = 1

_Pending = tuple[str, BindingChange, float, Deferred[tuple[Binding, ...]]]
"""A change waiting for the next batch: AOR, change, time, and the caller's Deferred."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT PRIMARY KEY,
    bindings TEXT NOT NULL,
    next_expiry REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bindings_next_expiry ON bindings (next_expiry);
"""


def _unexpired(bindings: tuple[Binding, ...], now: float) -> tuple[Binding, ...]:
    return tuple(b for b in bindings if b.expires_at > now)


@implementer(ILocationStore)
class SqliteLocationStore:
    """An `ILocationStore` over the SQLite file *path*, created on first use.

    Nothing touches the disk until the first operation (or `open`), which runs in *pool*;
    `busy_timeout` is how long a write waits for another process holding the file's write
    lock before failing with `LocationStoreError`.
    """

    def __init__(
        self, path: Path, reactor: Any, pool: ThreadPool, *, busy_timeout: float = 5.0
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._pool = pool
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        # Group commit (module docstring): changes waiting for the batch in flight.
        self._pending: list[_Pending] = []
        self._writing = False
        self._drained: list[Deferred[None]] = []

    # -- ILocationStore ------------------------------------------------------------------

    def lookup(self, aor: AddressOfRecord, now: float) -> Deferred[tuple[Binding, ...]]:
        return self._in_thread(self._lookup, str(aor), now)

    def modify(
        self, aor: AddressOfRecord, change: BindingChange, now: float
    ) -> Deferred[tuple[Binding, ...]]:
        done: Deferred[tuple[Binding, ...]] = Deferred()
        self._pending.append((str(aor), change, now, done))
        if not self._writing:
            self._write_batch()
        return done

    def purge(self, now: float) -> Deferred[int]:
        return self._in_thread(self._purge, now)

    def close(self) -> Deferred[None]:
        """Close the connection (in the pool, after the operations already queued; at
        once if the pool is not running, since nothing could then be queued)."""
        if not self._pool.started:
            self._close()
            return succeed(None)
        if self._writing:
            # The changes already asked for run first, as they did when queued in the pool.
            drained: Deferred[None] = Deferred()
            self._drained.append(drained)
            return drained.addCallback(
                lambda _: deferToThreadPool(self._reactor, self._pool, self._close)
            )
        return deferToThreadPool(self._reactor, self._pool, self._close)

    def open(self) -> Deferred[None]:
        """Open the file and create the schema now rather than on first use, so that a
        service can refuse to start on an unusable path; fail with `LocationStoreError`."""
        return self._in_thread(lambda connection: None)

    # -- group commit, in the reactor thread ---------------------------------------------

    def _write_batch(self) -> None:
        batch, self._pending = self._pending, []
        self._writing = True
        work = [(aor, change, now) for aor, change, now, _ in batch]
        writing = self._in_thread(self._modify_batch, work)
        writing.addBoth(self._batch_written, batch)

    def _batch_written(
        self, outcome: list[tuple[Binding, ...] | Failure] | Failure, batch: list[_Pending]
    ) -> None:
        # Still "writing" while the callers' callbacks run: the changes they make join the
        # next batch instead of each starting one of its own.
        for index, (_, _, _, done) in enumerate(batch):
            result = outcome if isinstance(outcome, Failure) else outcome[index]
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(result)
        self._writing = False
        if self._pending:
            self._write_batch()
        else:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)

    # -- in the pool's threads ----------------------------------------------------------

    def _in_thread(self, work: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, self._locked, work, *args)

    def _locked(self, work: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            if self._closed:
                raise LocationStoreError(f"{self.path}: the location store is closed")
            try:
                return work(self._connect(), *args)
            except sqlite3.Error as error:
                raise LocationStoreError(f"{self.path}: {error}") from error

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                # Used from several threads of the pool, one at a time (self._lock).
                check_same_thread=False,
                # We issue BEGIN and COMMIT ourselves.
                isolation_level=None,
            )
            try:
                enable_wal(connection, self._busy_timeout)
                connection.execute("PRAGMA synchronous = NORMAL")
                ((version,),) = connection.execute("PRAGMA user_version").fetchall()
                if version > _SCHEMA_VERSION:
                    raise LocationStoreError(
                        f"{self.path}: written by a newer homeredirect"
                        f" (schema {version}, this one knows {_SCHEMA_VERSION})"
                    )
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _lookup(self, connection: sqlite3.Connection, aor: str, now: float) -> tuple[Binding, ...]:
        # fetchall, not fetchone: a statement left unfinished keeps its read snapshot
        # open, and a later BEGIN IMMEDIATE on this connection then fails at once with
        # "database is locked" (SQLITE_BUSY_SNAPSHOT) once another process has written.
        rows = connection.execute("SELECT bindings FROM bindings WHERE aor = ?", (aor,)).fetchall()
        return () if not rows else _unexpired(self._decode(aor, rows[0][0]), now)

    def _modify_batch(
        self, connection: sqlite3.Connection, batch: list[tuple[str, BindingChange, float]]
    ) -> list[tuple[Binding, ...] | Failure]:
        """Run *batch* in order in one transaction: each change's result, or its failure
        (a change that raised, an unreadable row) with nothing written for it. An SQLite
        error rolls everything back and fails the whole batch."""
        outcomes: list[tuple[Binding, ...] | Failure] = []
        # IMMEDIATE takes the write lock before reading, so that another process sharing
        # the file cannot write these AORs between our reads and our writes.
        connection.execute("BEGIN IMMEDIATE")
        try:
            for aor, change, now in batch:
                try:
                    updated = tuple(change(self._lookup(connection, aor, now)))
                except sqlite3.Error:
                    raise
                except Exception:
                    outcomes.append(Failure())
                    continue
                if updated:
                    connection.execute(
                        "INSERT INTO bindings (aor, bindings, next_expiry) VALUES (?, ?, ?)"
                        " ON CONFLICT (aor) DO UPDATE"
                        " SET bindings = excluded.bindings, next_expiry = excluded.next_expiry",
                        (aor, bindings_to_json(updated), min(b.expires_at for b in updated)),
                    )
                else:
                    connection.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
                outcomes.append(updated)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return outcomes

    def _purge(self, connection: sqlite3.Connection, now: float) -> int:
        dropped = 0
        connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute(
                "SELECT aor, bindings FROM bindings WHERE next_expiry <= ?", (now,)
            ).fetchall()
            for aor, text in rows:
                bindings = self._decode(aor, text)
                kept = _unexpired(bindings, now)
                dropped += len(bindings) - len(kept)
                if kept:
                    connection.execute(
                        "UPDATE bindings SET bindings = ?, next_expiry = ? WHERE aor = ?",
                        (bindings_to_json(kept), min(b.expires_at for b in kept), aor),
                    )
                else:
                    connection.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return dropped

    def _decode(self, aor: str, text: str) -> tuple[Binding, ...]:
        try:
            return bindings_from_json(text)
        except (ValueError, KeyError, TypeError) as error:
            raise LocationStoreError(f"{self.path}: unreadable bindings of {aor}") from error

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None
