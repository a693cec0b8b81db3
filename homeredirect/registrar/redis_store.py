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

`modify` is optimistic and group-committed, like the SQLite store's transactions. The
changes asked for while a batch is in flight wait in the reactor thread; the next batch
takes them all (up to `max_batch`) and

1. reads every AOR they touch with one script call (`_READ_ALL`: an MGET);
2. runs the changes in order: several changes to one AOR in a batch each see the result
   of the ones before, as they would one by one;
3. writes with one script call (`_COMPARE_AND_SET_ALL`, run atomically by Redis) that,
   for each AOR, writes the result (SET/PEXPIREAT/ZADD, or DEL/ZREM) only if the key
   still holds what step 1 read, and reports per AOR whether it did.

The changes of an AOR that another writer (another home server, or `purge`) changed in
between go round again in the next batch, a bounded number of times; so two servers
cannot interleave a refresh and a removal. A value that changed and changed back counts as
unchanged, which is harmless for a document that is the whole state of the AOR. Scripts
run by digest (EVALSHA), their text sent only when Redis does not know them yet.

Why batches: txredisapi costs tens of microseconds of Python per command (a Deferred or
three, two timers, a pool look-up, building the request argument by argument), and a GET
plus a script per REGISTER were most of the home server's CPU with Redis
(bench/registrar.py); two commands per batch make that cost small under load, while a
lone REGISTER still takes just two round trips.

A change that raises writes nothing and fails alone; an AOR whose stored value cannot be
decoded fails its own changes with `LocationStoreError`; a Redis error (unreachable, past
the connection's deadline, a command refused) fails the whole batch with
`LocationStoreError` and, the script being atomic, nothing or everything of the batch was
written (a batch whose script never answered may have been written: the caller is told
the store failed, as it would be for a lone write whose reply was lost).

Binding times are the home servers' wall clock; key expiry is the Redis server's. Lookups
filter by the home server's clock, so clock skew can only make Redis keep an expired AOR
a little longer, or drop one a little early (keep the machines on NTP).
"""

from __future__ import annotations

import json
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

from homeredirect.redis_connection import (
    Command,
    RedisConnection,
    RedisError,
    RedisScript,
    RedisValue,
)
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

# KEYS: the AORs' keys. Returns their values (false for a missing key) as one JSON array:
# one bulk reply, which txredisapi's own parser takes in one go, where an MGET's array of
# N values costs it a pass through the reactor per value (it pauses the transport after
# each bulk string that has more data behind it).
_READ_ALL = RedisScript("return cjson.encode(redis.call('MGET', unpack(KEYS)))")

# KEYS: the expiry index, then one key per AOR. ARGV: four per AOR, in KEYS' order: the
# value read, the new value ("" to delete), the AOR, and "1 PEXPIREAT-MS SCORE" ("0 ..."
# when the key did not exist when read; just "1" or "0" to delete). Returns one character
# per AOR: "1" when written, "0" when its key no longer held what was read (one bulk
# string, for the reason above).
_COMPARE_AND_SET_ALL = RedisScript("""
local written = {}
for i = 2, #KEYS do
  local key, a = KEYS[i], (i - 2) * 4
  local meta = ARGV[a + 4]
  local current = redis.call('GET', key)
  local same
  if string.sub(meta, 1, 1) == '1' then same = current == ARGV[a + 1] else same = not current end
  if same then
    if ARGV[a + 2] == '' then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[1], ARGV[a + 3])
    else
      local expire_at, score = string.match(meta, '^. (%S+) (%S+)$')
      redis.call('SET', key, ARGV[a + 2])
      redis.call('PEXPIREAT', key, expire_at)
      redis.call('ZADD', KEYS[1], score, ARGV[a + 3])
    end
    written[i - 1] = '1'
  else
    written[i - 1] = '0'
  end
end
return table.concat(written)
""")


def _unexpired(bindings: tuple[Binding, ...], now: float) -> tuple[Binding, ...]:
    return tuple(b for b in bindings if b.expires_at > now)


def _milliseconds(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class _Pending:
    """A change waiting for a batch, with the caller's Deferred and how many batches it
    has already lost to a concurrent writer."""

    __slots__ = ("aor", "change", "conflicts", "done", "now")

    def __init__(self, aor: str, change: BindingChange, now: float) -> None:
        self.aor = aor
        self.change = change
        self.now = now
        self.done: Deferred[tuple[Binding, ...]] = Deferred()
        self.conflicts = 0


_Outcome = tuple[Binding, ...] | Failure


@implementer(ILocationStore)
class RedisLocationStore:
    """An `ILocationStore` over *redis* (closed by `close` when *owns_connection*).

    A change whose AOR another writer changes under it is tried again up to *retries*
    times, then fails with `LocationStoreError`; a batch takes at most *max_batch* changes.
    """

    def __init__(
        self,
        redis: RedisConnection,
        key_prefix: str = "homeredirect:location:",
        *,
        retries: int = 10,
        max_batch: int = 256,
        owns_connection: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._redis = redis
        self._prefix = key_prefix
        self._index = key_prefix + "next-expiry"
        self._retries = retries
        self._max_batch = max_batch
        self._owns_connection = owns_connection
        # Group commit (module docstring): changes waiting for the batch in flight.
        self._pending: list[_Pending] = []
        self._writing = False
        self._drained: list[Deferred[None]] = []

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
        pending = _Pending(str(aor), change, now)
        self._pending.append(pending)
        if not self._writing:
            self._write_batch()
        return pending.done

    # -- group commit --------------------------------------------------------------------

    def _write_batch(self) -> None:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        self._writing = True
        writing = Deferred.fromCoroutine(self._run_batch(batch))
        writing.addBoth(self._batch_written, batch)

    def _batch_written(self, result: object, batch: list[_Pending]) -> None:
        if isinstance(result, Failure):
            # Redis trouble (`_run_batch` settles the changes' own failures itself), or a
            # reply not shaped as the scripts return: every change of the batch not yet
            # answered fails with it, as the store's failure.
            failure = _as_store_error(result)
            for pending in batch:
                if not pending.done.called:
                    pending.done.errback(failure)
        # Still "writing" while the callers' callbacks ran: the changes they made joined
        # the next batch instead of each starting one of its own.
        self._writing = False
        if self._pending:
            self._write_batch()
        else:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        """Read, change and write *batch*; answer each change or put it back in the queue
        (a conflict). Raise on Redis trouble, leaving the unanswered changes to the
        caller."""
        by_aor: dict[str, list[_Pending]] = {}
        for pending in batch:
            by_aor.setdefault(pending.aor, []).append(pending)
        aors = list(by_aor)
        prefix = self._prefix
        read = await self._read([prefix + aor for aor in aors])

        keys: list[str] = [self._index]
        arguments: list[RedisValue] = []
        planned: list[tuple[list[_Pending], list[_Outcome]]] = []
        for aor, value in zip(aors, read, strict=True):
            changes = by_aor[aor]
            try:
                bindings = self._decode(aor, value)
            except LocationStoreError:
                failure = Failure()
                for pending in changes:
                    pending.done.errback(failure)
                continue
            outcomes: list[_Outcome] = []
            changed = False
            for pending in changes:
                # May run more than once (a conflicting write sends the AOR round again);
                # only the run whose batch was written counts.
                try:
                    bindings = tuple(pending.change(_unexpired(bindings, pending.now)))
                except Exception:
                    outcomes.append(Failure())
                    continue
                outcomes.append(bindings)
                changed = True
            if not changed:
                # Every change refused: nothing to write, each fails with its own error.
                for pending, outcome in zip(changes, outcomes, strict=True):
                    assert isinstance(outcome, Failure)
                    pending.done.errback(outcome)
                continue
            keys.append(prefix + aor)
            existed = "0" if value is None else "1"
            if bindings:
                expire_at = _milliseconds(max(b.expires_at for b in bindings))
                score = repr(min(b.expires_at for b in bindings))
                meta = f"{existed} {expire_at} {score}"
                arguments += (value or "", bindings_to_json(bindings), aor, meta)
            else:
                arguments += (value or "", "", aor, existed)
            planned.append((changes, outcomes))
        if not planned:
            return

        flags = await self._redis.run_script(_COMPARE_AND_SET_ALL, keys, arguments)
        if not isinstance(flags, str) or len(flags) != len(planned):
            raise LocationStoreError(f"unexpected reply from Redis to a write: {flags!r}")
        again: list[_Pending] = []
        for (changes, outcomes), flag in zip(planned, flags, strict=True):
            if flag == "1":
                for pending, outcome in zip(changes, outcomes, strict=True):
                    if isinstance(outcome, Failure):
                        pending.done.errback(outcome)
                    else:
                        pending.done.callback(outcome)
                continue
            # Another writer changed the AOR after it was read: its changes go round again,
            # ahead of those asked for since, so that they keep their order.
            for pending in changes:
                pending.conflicts += 1
                if pending.conflicts > self._retries:
                    key = self._key(pending.aor)
                    pending.done.errback(
                        LocationStoreError(f"{key} kept changing ({pending.conflicts} attempts)")
                    )
                else:
                    again.append(pending)
        self._pending[:0] = again

    async def _read(self, keys: list[str]) -> list[str | None]:
        """The values of *keys* (None for a missing key), in one reply (`_READ_ALL`)."""
        reply = await self._redis.run_script(_READ_ALL, keys, ())
        try:
            values = json.loads(reply)
        except (TypeError, ValueError):
            # A value that is not UTF-8 (no home server writes one) makes the reply bytes
            # or bad JSON: read them as they are, so that only that AOR fails.
            raw: list[str | None] = await self._redis.execute("MGET", *keys)
            return raw
        if not isinstance(values, list) or len(values) != len(keys):
            raise LocationStoreError(f"unexpected reply from Redis to a read: {reply!r}")
        return [None if value is False else value for value in values]

    # -- purge ---------------------------------------------------------------------------

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
        """Close the connection (if owned) once the changes already asked for are done."""
        if self._writing:
            drained: Deferred[None] = Deferred()
            self._drained.append(drained)
            return drained.addCallback(lambda _: self._close())
        return self._close()

    def _close(self) -> Deferred[None]:
        if self._owns_connection:
            return self._redis.close()
        return succeed(None)


def _as_store_error(failure: Failure) -> Failure:
    """*failure* as a `LocationStoreError` failure."""
    if failure.check(LocationStoreError):
        return failure
    try:
        raise LocationStoreError(str(failure.value) or repr(failure.value)) from failure.value
    except LocationStoreError:
        return Failure()


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
