"""A Redis connection shared by every part of homeredirect that talks to Redis.

The client underneath is txredisapi (a non-blocking Twisted client; the README's "Redis
client" section says why). This module wraps it in the few operations we need, typed,
with three guarantees the raw client does not give:

- **No hang.** Every operation has a deadline on the injected reactor; a server that is
  down, unreachable or stalled fails the operation with `RedisUnavailable` after
  `timeout` seconds instead of queueing it until the server comes back.
- **Reconnection.** The pool reconnects on its own (with a backoff capped at
  `max_retry_delay`), so an operation after an outage succeeds without a restart.
- **Optimistic transactions** (`check_and_set`): WATCH, read, decide, MULTI/EXEC, retried
  a bounded number of times when another client wrote a watched key in between.
- **Lua scripts by digest** (`run_script`): EVALSHA, so that the script's text crosses
  the network once, not with every call; EVAL when the server does not have it yet.

The module is named `redis_connection` so that it never shadows the `redis` package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha1
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi
from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from homeredirect.logs import FilteredLogger

__all__ = [
    "RedisAddress",
    "RedisCommandError",
    "RedisConflict",
    "RedisConnection",
    "RedisError",
    "RedisScript",
    "RedisUnavailable",
    "connect_redis",
    "parse_redis_url",
]

log = FilteredLogger(namespace="homeredirect.redis")

_T = TypeVar("_T")

RedisValue = str | bytes | int | float
"""An argument of a Redis command."""

Command = tuple[RedisValue, ...]
"""One Redis command with its arguments, e.g. ``("SET", key, value)``."""


class RedisError(Exception):
    """Something went wrong talking to Redis."""


class RedisUnavailable(RedisError):
    """Redis could not be reached, or did not answer within the operation's deadline."""


class RedisCommandError(RedisError):
    """Redis answered with an error (a wrong type, a bad argument, a failed AUTH...)."""


class RedisConflict(RedisError):
    """An optimistic transaction lost to concurrent writers more times than it may retry."""


def _listed(value: str | None) -> list[str | None]:
    return [value]


class RedisScript:
    """A Lua script for `RedisConnection.run_script`, with its SHA1 digest (the name
    EVALSHA knows it by; https://redis.io/docs/interact/programmability/eval-intro/)."""

    __slots__ = ("digest", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.digest = sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"<RedisScript {self.digest}>"


@frozen
class RedisAddress:
    """Where a Redis server is, parsed from a URL (`parse_redis_url`)."""

    host: str | None
    port: int
    unix_path: str | None
    db: int
    tls: bool
    username: str | None
    password: str | None

    def describe(self) -> str:
        """The address without credentials, for logs and error messages."""
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """Parse ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
    ``unix:///path[?db=N]`` -- the forms `homeredirect.config.fields.is_redis_url`
    accepts. Raise `ValueError` for anything else."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            raise ValueError(f"unix Redis URL needs an absolute path: {url!r}")
        db_text = parse_qs(parts.query).get("db", ["0"])[0]
        if not db_text.isdigit():
            raise ValueError(f"bad Redis database number in {url!r}")
        return RedisAddress(None, 0, parts.path, int(db_text), False, username, password)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"not a Redis URL: {url!r}")
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"bad Redis database number in {url!r}")
    return RedisAddress(
        host=parts.hostname,
        port=parts.port or 6379,
        unix_path=None,
        db=int(db_text),
        tls=parts.scheme == "rediss",
        username=username,
        password=password,
    )


def _endpoint(reactor: Any, address: RedisAddress, timeout: float) -> IStreamClientEndpoint:
    if address.unix_path is not None:
        return UNIXClientEndpoint(reactor, address.unix_path, timeout=timeout)
    assert address.host is not None
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, address.host, address.port, timeout=timeout
    )
    if address.tls:
        # The server's certificate is checked against the URL's host name and the
        # platform's trust store, as for any other TLS client.
        endpoint = wrapClientTLS(optionsForClientTLS(address.host), endpoint)
    return endpoint


def _translate(failure: Failure, address: RedisAddress, timeout: float) -> Failure:
    """Map the client's (and our deadline's) exceptions onto ours."""
    if failure.check(DeferredTimeout, CancelledError, txredisapi.TimeoutError):
        raise RedisUnavailable(f"{address.describe()} did not answer within {timeout:g}s")
    if failure.check(txredisapi.ConnectionError):
        raise RedisUnavailable(f"{address.describe()}: {failure.getErrorMessage()}")
    if failure.check(txredisapi.WatchError):
        raise RedisConflict(f"{address.describe()}: a watched key changed")
    if failure.check(txredisapi.ResponseError, txredisapi.InvalidResponse):
        raise RedisCommandError(f"{address.describe()}: {failure.getErrorMessage()}")
    return failure


class _RetryingFactory(txredisapi.RedisFactory):  # type: ignore[misc]
    """txredisapi's pool factory, except that a failed connection handshake (AUTH or
    SELECT answered with an error, or the connection lost half-way, as happens while
    Redis restarts or loads its dataset) is retried with the usual backoff instead of
    ending all reconnection for good. Only `RedisConnection.close` stops it."""

    def stopTrying(self) -> Deferred[Any]:
        if self.stopped:
            return super().stopTrying()  # type: ignore[no-any-return]
        return succeed(None)

    def connectionError(self, why: str) -> None:
        log.warn("redis {address}: {error}", address=self.uuid, error=why)
        super().connectionError(why)


class RedisConnection:
    """A small pool of connections to one Redis server (`pool_size` of them; an optimistic
    transaction holds one for its duration), reconnecting whenever one is lost.

    Construction starts connecting and returns at once; an operation issued before the
    first connection is up waits for it, up to its deadline. Use `connect_redis` to wait
    for the server before going on.
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        *,
        pool_size: int = 2,
        timeout: float = 2.0,
        max_retry_delay: float = 2.0,
    ) -> None:
        self._reactor = reactor
        self.address = parse_redis_url(url)
        self.timeout = timeout
        factory = _RetryingFactory(
            self.address.describe(),
            self.address.db,
            pool_size,
            isLazy=True,
            password=self.address.password,
            username=self.address.username,
            # The client's own reply deadline drops a connection that stops answering, so
            # that the replies of a stalled connection can never be handed to later commands.
            replyTimeout=timeout,
            # Values come back as the text that was stored; "42" stays "42".
            convertNumbers=False,
        )
        factory.maxDelay = max_retry_delay
        factory.initialDelay = min(factory.initialDelay, max_retry_delay / 4)
        # Fires when the whole pool is first connected; with a lazy pool nobody waits on
        # it, and connection errors are logged (connectionError) and retried.
        factory.deferred.addErrback(lambda _: None)
        self._factory = factory
        self._client: Any = factory.handler
        self._closed = False
        factory.startConnecting(_endpoint(reactor, self.address, timeout))

    def _deadline(self, deferred: Deferred[_T]) -> Deferred[_T]:
        deferred.addTimeout(self.timeout, self._reactor)
        deferred.addErrback(_translate, self.address, self.timeout)
        return deferred

    def _check_open(self) -> None:
        if self._closed:
            raise RedisUnavailable(f"{self.address.describe()}: connection closed")

    def execute(self, *command: RedisValue) -> Deferred[Any]:
        """Run one command; fire with its reply (str, int, list, None), fail with
        `RedisUnavailable` or `RedisCommandError`."""
        reply: Deferred[Any]
        try:
            self._check_open()
            # The pool's handler sends a command on the connection at the head of its
            # queue, once one is there (`getConnection(peek=True)`); when one already
            # is, send on it directly and skip the handler's generator and Deferreds,
            # a third of the client's cost per command.
            idle = self._factory.connectionQueue.pending
            if idle and idle[0].connected:
                reply = idle[0].execute_command(*command)
            else:
                reply = self._client.execute_command(*command)
        except Exception:
            reply = fail()
        return self._deadline(reply)

    def get(self, key: str) -> Deferred[str | None]:
        """The value of a string key, or None when it does not exist."""
        return self.execute("GET", key)

    def run_script(
        self, script: RedisScript, keys: Sequence[str], arguments: Sequence[RedisValue]
    ) -> Deferred[Any]:
        """Run *script* with *keys* and *arguments*; fire with its reply, fail like
        `execute`.

        EVALSHA first: the server keeps every script it has run (until it restarts or
        SCRIPT FLUSH), so the text is sent only when it answers NOSCRIPT, with EVAL, which
        also caches it for the next call. A script runs atomically either way.
        """
        count = len(keys)
        reply = self.execute("EVALSHA", script.digest, count, *keys, *arguments)

        def unknown(failure: Failure) -> Deferred[Any] | Failure:
            if failure.check(RedisCommandError) and "NOSCRIPT" in failure.getErrorMessage():
                return self.execute("EVAL", script.source, count, *keys, *arguments)
            return failure

        return reply.addErrback(unknown)

    def ping(self) -> Deferred[None]:
        """Fire when the server answers PING."""
        return self.execute("PING").addCallback(lambda _: None)

    def check_and_set(
        self,
        keys: Sequence[str],
        plan: Callable[[list[str | None]], Sequence[Command]],
        *,
        retries: int = 10,
    ) -> Deferred[list[Any]]:
        """An optimistic transaction (https://redis.io/docs/interact/transactions/).

        WATCH `keys`, read their values, call `plan(values)` for the commands to run, and
        run them in MULTI/EXEC. If another client wrote one of the keys meanwhile, start
        again, at most `retries` more times, then fail with `RedisConflict`. If `plan`
        raises, nothing is written and the Deferred fails with that exception; if it
        returns no commands, nothing is written and it fires with ``[]``. Otherwise it
        fires with EXEC's replies. `plan` may therefore run several times: keep it free of
        side effects. The whole attempt, not each command, has the deadline `timeout`.
        """
        return Deferred.fromCoroutine(self._check_and_set(list(keys), plan, retries))

    async def _check_and_set(
        self,
        keys: list[str],
        plan: Callable[[list[str | None]], Sequence[Command]],
        retries: int,
    ) -> list[Any]:
        for _attempt in range(retries + 1):
            self._check_open()
            attempt: Deferred[list[Any] | None] = Deferred.fromCoroutine(self._attempt(keys, plan))
            result = await self._deadline(attempt)
            if result is not None:
                return result
        raise RedisConflict(
            f"{self.address.describe()}: {', '.join(keys)} kept changing ({retries + 1} attempts)"
        )

    async def _attempt(
        self, keys: list[str], plan: Callable[[list[str | None]], Sequence[Command]]
    ) -> list[Any] | None:
        """One WATCH/read/MULTI/EXEC round; return EXEC's replies, or None when a watched
        key changed.

        The round takes a connection out of the pool for itself (txredisapi's
        `getConnection`, which its own `watch` uses) and pipelines it in two writes:
        WATCH with the read, then MULTI, the commands and EXEC. (txredisapi's `watch` and
        `multi` wait for each reply in turn: four round trips, and on this kind of VM each
        write to a socket costs more than the rest of the work.) The connection goes back
        to the pool after EXEC or UNWATCH; if the round fails or is cancelled half-way
        (the deadline), it is dropped instead, never returned in an unknown state.
        """
        connection = await self._factory.getConnection()
        pending: list[Deferred[Any]] = []
        try:
            pending.append(connection.execute_command("WATCH", *keys))
            if len(keys) == 1:
                pending.append(connection.execute_command("GET", keys[0]).addCallback(_listed))
            else:
                pending.append(connection.execute_command("MGET", *keys))
            await pending[0]
            values: list[str | None] = list(await pending[1])
        except BaseException:
            for reply in pending:
                reply.addErrback(lambda _: None)  # the one not awaited fails with the drop
            self._drop(connection)
            raise
        try:
            commands = list(plan(values))
        except BaseException:
            await self._unwatch(connection)
            raise
        if not commands:
            await self._unwatch(connection)
            return []
        try:
            # Each command answers QUEUED, or an error that EXEC then reports for them all.
            for command in (("MULTI",), *commands):
                connection.execute_command(*command).addErrback(lambda _: None)
            replies = await connection.execute_command("EXEC")
        except BaseException:
            self._drop(connection)
            raise
        # txredisapi counts QUEUED replies for its own multi(), which is not used here.
        connection.transactions = 0
        self._release(connection)
        if replies is None:
            return None  # a watched key changed
        for reply in replies:
            if isinstance(reply, Exception):
                raise RedisCommandError(f"{self.address.describe()}: {reply}")
        return list(replies)

    async def _unwatch(self, connection: Any) -> None:
        try:
            await connection.execute_command("UNWATCH")
        except BaseException:
            self._drop(connection)
            raise
        self._release(connection)

    @staticmethod
    def _drop(connection: Any) -> None:
        """Close a connection left in an unknown state; the pool reconnects."""
        if connection.transport is not None:
            connection.transport.abortConnection()

    def _release(self, connection: Any) -> None:
        """Hand a connection taken by `_attempt` back to the pool (if it is still up)."""
        if connection.connected:
            self._factory.connectionQueue.put(connection)

    def close(self) -> Deferred[None]:
        """Stop reconnecting and close every connection; fire when they are closed."""
        self._closed = True
        done: Deferred[Any] = self._factory.disconnect()

        def closed(result: object) -> None:
            if isinstance(result, Failure):
                log.failure(
                    "closing {address} failed",
                    result,
                    LogLevel.warn,
                    address=self.address.describe(),
                )

        return done.addBoth(closed)


def connect_redis(
    reactor: Any, url: str, *, pool_size: int = 2, timeout: float = 2.0
) -> Deferred[RedisConnection]:
    """Connect to the Redis server at `url` and fire with the connection once it answers
    PING; fail with `RedisUnavailable` (and close it) if it does not within `timeout`."""
    connection = RedisConnection(reactor, url, pool_size=pool_size, timeout=timeout)

    def failed(failure: Failure) -> Deferred[Any]:
        return connection.close().addCallback(lambda _: failure)

    return connection.ping().addCallbacks(lambda _: connection, failed)
