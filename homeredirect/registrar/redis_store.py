"""`RedisLocationStore`: bindings in Redis, shared by a pool of home servers.

Every home server of a pool points at the same Redis, so a REGISTER that reached one of
them is visible to the others, and the pool grows by adding processes and machines rather
than by growing one (this is the issue's "pool outgrows one machine").

Layout, under `key_prefix` (default ``homeredirect:location:``):

- ``PREFIX + "alice@example.com"``: a string holding the AOR's bindings as one JSON
  document (`bindings_to_json`), with a key expiry (PEXPIREAT) at its latest binding's
  expiry, so that Redis itself drops the AOR once every binding has expired, even if no
  home server is running.
- ``PREFIX + "next-expiry"``: a sorted set of AORs scored by their earliest binding's
  expiry, so that `purge` finds partly expired AORs without scanning the keyspace. It
  cannot collide with an AOR's key: an AOR always contains ``@``.

`modify` is optimistic: GET the AOR's key, run the change, then one Lua script (EVAL, run
atomically by Redis) that writes the result (SET/PEXPIREAT/ZADD, or DEL/ZREM) only if the
key still holds what was read, and otherwise reports a conflict, upon which the whole
round is retried a bounded number of times; so two servers cannot interleave a refresh and
a removal. This is a compare-and-set rather than WATCH/MULTI/EXEC: two replies per
REGISTER instead of seven, and no connection set aside for the transaction, which at a
few thousand REGISTERs a second is most of the client's cost (bench/registrar.py). A value
that changed and changed back counts as unchanged, which is harmless for a document that
is the whole state of the AOR.
Binding times are the home servers' wall clock; key expiry is the Redis server's. Lookups
filter by the home server's clock, so clock skew can only make Redis keep an expired AOR
a little longer, or drop one a little early (keep the machines on NTP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    FirstError,
    gatherResults,
    succeed,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.redis_connection import Command, RedisConflict, RedisConnection, RedisError
from homeredirect.registrar.location import (
    Binding,
    BindingChange,
    ILocationStore,
    LocationStoreError,
    bindings_from_json,
    bindings_to_json,
)
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["RedisLocationStore"]

_PURGE_BATCH = 500

# KEYS: the AOR's key, the expiry index. ARGV: "1" if the key existed when read and "0" if
# not, the value read, the new value ("" to delete), the AOR, PEXPIREAT milliseconds, the
# index score. Returns 1 when written, 0 when the key no longer holds what was read.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
end
return 1
"""


def _unexpired(bindings: tuple[Binding, ...], now: float) -> tuple[Binding, ...]:
    return tuple(b for b in bindings if b.expires_at > now)


def _milliseconds(seconds: float) -> int:
    return math.ceil(seconds * 1000)


@implementer(ILocationStore)
class RedisLocationStore:
    """An `ILocationStore` over *redis* (closed by `close` when *owns_connection*)."""

    def __init__(
        self,
        redis: RedisConnection,
        key_prefix: str = "homeredirect:location:",
        *,
        retries: int = 10,
        owns_connection: bool = True,
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._index = key_prefix + "next-expiry"
        self._retries = retries
        self._owns_connection = owns_connection

    def _key(self, aor: str) -> str:
        return self._prefix + aor

    def _decode(self, aor: str, text: str | None) -> tuple[Binding, ...]:
        if text is None:
            return ()
        try:
            return bindings_from_json(text)
        except (ValueError, KeyError, TypeError) as error:
            raise LocationStoreError(f"unreadable bindings of {aor} in Redis") from error

    def _writes(self, aor: str, bindings: tuple[Binding, ...]) -> list[Command]:
        """The commands that make *bindings* the AOR's stored state."""
        key = self._key(aor)
        if not bindings:
            return [("DEL", key), ("ZREM", self._index, aor)]
        return [
            ("SET", key, bindings_to_json(bindings)),
            ("PEXPIREAT", key, _milliseconds(max(b.expires_at for b in bindings))),
            ("ZADD", self._index, repr(min(b.expires_at for b in bindings)), aor),
        ]

    # -- ILocationStore ------------------------------------------------------------------

    def lookup(self, aor: AddressOfRecord, now: float) -> Deferred[tuple[Binding, ...]]:
        name = str(aor)
        reply = self._redis.get(self._key(name))
        return reply.addCallbacks(
            lambda text: _unexpired(self._decode(name, text), now), _store_error
        )

    def modify(
        self, aor: AddressOfRecord, change: BindingChange, now: float
    ) -> Deferred[tuple[Binding, ...]]:
        return Deferred.fromCoroutine(self._modify(str(aor), change, now)).addErrback(_store_error)

    async def _modify(self, name: str, change: BindingChange, now: float) -> tuple[Binding, ...]:
        key = self._key(name)
        for _attempt in range(self._retries + 1):
            read: str | None = await self._redis.get(key)
            # May run more than once (a conflicting write makes the round retry); only the
            # last run's result is what was stored.
            updated = tuple(change(_unexpired(self._decode(name, read), now)))
            if updated:
                value = bindings_to_json(updated)
                expire_at = _milliseconds(max(b.expires_at for b in updated))
                score = repr(min(b.expires_at for b in updated))
            else:
                value, expire_at, score = "", 0, "0"
            written = await self._redis.execute(
                "EVAL", _COMPARE_AND_SET, 2, key, self._index,
                "0" if read is None else "1", read or "", value, name, expire_at, score,
            )  # fmt: skip
            if written == 1 or written == "1":
                return updated
        raise RedisConflict(f"{key} kept changing ({self._retries + 1} attempts)")

    def purge(self, now: float) -> Deferred[int]:
        return Deferred.fromCoroutine(self._purge(now))

    async def _purge(self, now: float) -> int:
        dropped = 0
        previous: list[str] | None = None
        while True:
            due: Deferred[list[str]] = self._redis.execute(
                "ZRANGEBYSCORE", self._index, "-inf", repr(now), "LIMIT", "0", str(_PURGE_BATCH)
            ).addErrback(_store_error)
            batch = await due
            if not batch or batch == previous:
                # Nothing left, or nothing this round could change (stop, not spin).
                return dropped
            previous = batch
            # Two at a time, so that a large purge does not queue hundreds of transactions
            # ahead of the registrations waiting for the same connections.
            gate = DeferredSemaphore(2)
            counts = await gatherResults(
                [gate.run(self._purge_one, aor, now) for aor in batch], consumeErrors=True
            ).addErrback(_first_error)
            dropped += sum(counts)

    def _purge_one(self, aor: str, now: float) -> Deferred[int]:
        outcome = [0]

        def plan(values: list[str | None]) -> Sequence[Command]:
            bindings = self._decode(aor, values[0])
            kept = _unexpired(bindings, now)
            outcome[0] = len(bindings) - len(kept)
            return self._writes(aor, kept)

        written = self._redis.check_and_set([self._key(aor)], plan, retries=self._retries)
        return written.addCallback(lambda _: outcome[0])

    def close(self) -> Deferred[None]:
        if self._owns_connection:
            return self._redis.close()
        return succeed(None)


def _store_error(failure: Failure) -> Failure:
    """Redis trouble becomes `LocationStoreError`; anything else (a change that refused)
    passes through unchanged."""
    if failure.check(RedisError):
        raise LocationStoreError(str(failure.value)) from failure.value
    return failure


def _first_error(failure: Failure) -> Failure:
    """`gatherResults` wraps the first failure in `FirstError`; unwrap it."""
    if isinstance(failure.value, FirstError):
        return _store_error(failure.value.subFailure)
    return failure
