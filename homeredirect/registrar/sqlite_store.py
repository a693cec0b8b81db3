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
writers anyway, and a keyed read takes microseconds. The database runs in WAL mode with
``synchronous = NORMAL``: a commit is durable against a process crash (a restart is what
we care about) without an fsync per REGISTER; a power cut may lose the last commits.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
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

__all__ = ["SqliteLocationStore"]

_T = TypeVar("_T")

_SCHEMA_VERSION = 1

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

    # -- ILocationStore ------------------------------------------------------------------

    def lookup(self, aor: AddressOfRecord, now: float) -> Deferred[tuple[Binding, ...]]:
        return self._in_thread(self._lookup, str(aor), now)

    def modify(
        self, aor: AddressOfRecord, change: BindingChange, now: float
    ) -> Deferred[tuple[Binding, ...]]:
        return self._in_thread(self._modify, str(aor), change, now)

    def purge(self, now: float) -> Deferred[int]:
        return self._in_thread(self._purge, now)

    def close(self) -> Deferred[None]:
        """Close the connection (in the pool, after the operations already queued; at
        once if the pool is not running, since nothing could then be queued)."""
        if not self._pool.started:
            self._close()
            return succeed(None)
        return deferToThreadPool(self._reactor, self._pool, self._close)

    def open(self) -> Deferred[None]:
        """Open the file and create the schema now rather than on first use, so that a
        service can refuse to start on an unusable path; fail with `LocationStoreError`."""
        return self._in_thread(lambda connection: None)

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
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                (version,) = connection.execute("PRAGMA user_version").fetchone()
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
        row = connection.execute("SELECT bindings FROM bindings WHERE aor = ?", (aor,)).fetchone()
        return () if row is None else _unexpired(self._decode(aor, row[0]), now)

    def _modify(
        self, connection: sqlite3.Connection, aor: str, change: BindingChange, now: float
    ) -> tuple[Binding, ...]:
        # IMMEDIATE takes the write lock before reading, so that another process sharing
        # the file cannot write this AOR between our read and our write.
        connection.execute("BEGIN IMMEDIATE")
        try:
            updated = tuple(change(self._lookup(connection, aor, now)))
            if updated:
                connection.execute(
                    "INSERT INTO bindings (aor, bindings, next_expiry) VALUES (?, ?, ?)"
                    " ON CONFLICT (aor) DO UPDATE"
                    " SET bindings = excluded.bindings, next_expiry = excluded.next_expiry",
                    (aor, bindings_to_json(updated), min(b.expires_at for b in updated)),
                )
            else:
                connection.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return updated

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
