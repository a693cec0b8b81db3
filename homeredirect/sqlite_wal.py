"""Opening an SQLite file that several processes share, in WAL mode.

Both SQLite stores (the location store of a home server pool and the assignment table of
several directors) put their file in write-ahead-log mode so that readers never wait for
the writer.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["enable_wal"]


def enable_wal(connection: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL, retrying for up to `busy_timeout` seconds.

    Changing the journal mode takes an exclusive lock, and SQLite reports "database is
    locked" at once, without consulting its busy handler, while another connection is
    opening the same new file. Call it from a thread-pool thread, never the reactor's:
    it sleeps between tries.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
