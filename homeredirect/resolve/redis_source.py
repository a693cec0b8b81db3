"""Assignments in Redis: one string key per user, the key prefix followed by the AOR.

`homeredirect:assignment:alice@example.com` -> `home1.example.com`. The connection is the
shared `homeredirect.redis_connection.RedisConnection` (txredisapi underneath, never
blocking the reactor), whose every operation has a deadline: a dead or stalled Redis makes a
lookup fail with `DirectoryUnavailable` after that timeout, never hang. Several directors
may share one Redis; behind the cache, a move is seen within the cache TTL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.redis_connection import RedisCommandError, RedisConnection, RedisError
from homeredirect.resolve.errors import AssignmentWriteError, DirectoryUnavailable
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.resolve.stored import assignment_from_store, checked_moves

__all__ = ["RedisAssignmentSource"]

# Keys fetched per SCAN round and per MGET when exporting.
_EXPORT_BATCH = 1000
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@implementer(IAssignmentResolver, IAssignmentStore)
class RedisAssignmentSource:
    """Resolve and write assignments under `key_prefix` through `connection`, which belongs
    to the caller (who closes it)."""

    log = FilteredLogger()

    def __init__(self, connection: RedisConnection, *, key_prefix: str) -> None:
        self.connection = connection
        self.key_prefix = key_prefix
        self._describe = f"Redis {connection.address.describe()}"

    def _unavailable(self, failure: Failure) -> Failure:
        """Redis errors become `DirectoryUnavailable` (down, timed out, or answering with
        errors: either way it cannot say where the user belongs)."""
        failure.trap(RedisError)
        return Failure(DirectoryUnavailable(str(failure.value)))

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        """Fire with the user's assignment or None (unknown, or a stored value that is not
        an FQDN: logged); fail with `DirectoryUnavailable` within the connection's timeout."""
        key = self.key_prefix + str(aor)
        return self.connection.get(key).addCallbacks(
            self._assignment, self._unavailable, callbackArgs=(key,)
        )

    def _assignment(self, value: str | None, key: str) -> Assignment | None:
        if value is None:
            return None
        return assignment_from_store(value, key, self._describe)

    def move(self, aor: AddressOfRecord, home_server: str) -> Deferred[None]:
        """Assign `aor` to `home_server` (SET)."""
        return self.move_many([(aor, home_server)]).addCallback(lambda _: None)

    def move_many(self, moves: Iterable[tuple[AddressOfRecord, str]]) -> Deferred[int]:
        """Apply all moves with one MSET, which Redis applies atomically (all keys or none,
        and no client sees a partial batch); fire with their count."""
        try:
            checked = checked_moves(moves)
        except AssignmentWriteError:
            return fail()
        if not checked:
            return succeed(0)
        arguments: list[str] = []
        for key, home in checked.items():
            arguments += (self.key_prefix + key, home)
        return self.connection.execute("MSET", *arguments).addCallbacks(
            lambda _: len(checked), self._write_failed
        )

    def _write_failed(self, failure: Failure) -> Failure:
        if failure.check(RedisCommandError):
            return Failure(AssignmentWriteError(str(failure.value)))
        return self._unavailable(failure)

    def export(self) -> Deferred[list[tuple[AddressOfRecord, Assignment]]]:
        """Fire with every valid assignment under the prefix, ordered by user (SCAN, so
        Redis is never blocked by one long command); invalid entries are logged and left
        out."""
        return Deferred.fromCoroutine(self._export())

    async def _export(self) -> list[tuple[AddressOfRecord, Assignment]]:
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self.key_prefix) + "*"
        found: dict[str, Assignment] = {}
        cursor = "0"
        try:
            while True:
                reply: Any = await self.connection.execute(
                    "SCAN", cursor, "MATCH", pattern, "COUNT", _EXPORT_BATCH
                )
                cursor, keys = str(reply[0]), list(reply[1])
                if keys:
                    values: Any = await self.connection.execute("MGET", *keys)
                    for key, value in zip(keys, values, strict=True):
                        if value is None:
                            continue  # deleted between SCAN and MGET
                        assignment = assignment_from_store(value, key, self._describe)
                        if assignment is not None:
                            found[key] = assignment
                if cursor == "0":
                    break
        except RedisError as e:
            raise DirectoryUnavailable(str(e)) from e
        exported = []
        for key in sorted(found):
            user = key[len(self.key_prefix) :]
            try:
                aor = AddressOfRecord.parse(user)
            except ValueError:
                self.log.error(
                    "bad assignment in {directory}: key {key!r} does not end in an AOR;"
                    " not exported",
                    directory=self._describe,
                    key=key,
                )
                continue
            exported.append((aor, found[key]))
        return exported
