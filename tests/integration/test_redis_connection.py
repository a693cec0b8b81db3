"""`homeredirect.redis_connection` against a real redis-server (tests/servers.py): commands,
database selection, Unix sockets, optimistic transactions under contention, and failing
fast (never hanging) when the server is gone, then recovering when it is back."""

from __future__ import annotations

import os
import signal
import socket

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.redis_connection import (
    RedisConflict,
    RedisConnection,
    RedisUnavailable,
    connect_redis,
)
from tests.servers import RedisServer


class RedisConnectionTests(TestCase):
    server: RedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.server.flush()

    def connection(self, url: str | None = None, **options: float) -> RedisConnection:
        connection = RedisConnection(reactor, url or self.server.url, **options)  # type: ignore[arg-type]
        self.addCleanup(connection.close)
        return connection

    @inlineCallbacks
    def test_commands_round_trip_text(self):  # type: ignore[no-untyped-def]
        redis = self.connection()
        yield redis.execute("SET", "greeting", "héllo")
        yield redis.execute("SET", "number", "42")
        self.assertEqual((yield redis.get("greeting")), "héllo")
        # Stored text comes back as text, not converted to a number.
        self.assertEqual((yield redis.get("number")), "42")
        self.assertIsNone((yield redis.get("missing")))

    @inlineCallbacks
    def test_url_database_is_selected(self):  # type: ignore[no-untyped-def]
        redis = self.connection(self.server.url_for(3))
        yield redis.execute("SET", "where", "db3")
        self.assertEqual(self.server.command("SELECT", "3"), "OK")
        self.assertIsNone(self.server.command("GET", "where"))  # the helper uses db 0

    @inlineCallbacks
    def test_unix_socket_url_connects(self):  # type: ignore[no-untyped-def]
        redis = yield connect_redis(reactor, self.server.unix_url)
        self.addCleanup(redis.close)
        yield redis.execute("SET", "via", "unix")
        self.assertEqual(self.server.command("GET", "via"), "unix")

    @inlineCallbacks
    def test_check_and_set_writes_what_plan_returns(self):  # type: ignore[no-untyped-def]
        redis = self.connection()
        seen: list[list[str | None]] = []

        def plan(values: list[str | None]) -> list[tuple[str, ...]]:
            seen.append(values)
            return [("SET", "k", "v1"), ("PEXPIREAT", "k", "99999999999999")]

        replies = yield redis.check_and_set(["k"], plan)
        self.assertEqual(seen, [[None]])
        self.assertEqual(replies, ["OK", 1])
        self.assertEqual(self.server.command("GET", "k"), "v1")

    @inlineCallbacks
    def test_check_and_set_plan_raising_writes_nothing(self):  # type: ignore[no-untyped-def]
        redis = self.connection()

        def plan(values: list[str | None]) -> list[tuple[str, ...]]:
            raise ZeroDivisionError("refused")

        yield self.assertFailure(redis.check_and_set(["k"], plan), ZeroDivisionError)
        self.assertIsNone(self.server.command("GET", "k"))
        # The connection went back to the pool: more work goes through.
        for _ in range(3):
            yield redis.execute("INCR", "after")
        self.assertEqual(self.server.command("GET", "after"), "3")

    @inlineCallbacks
    def test_concurrent_increments_are_not_lost(self):  # type: ignore[no-untyped-def]
        """Two connections each add 1 to the same key 20 times through WATCH/MULTI/EXEC;
        conflicts are retried, so the total is exactly 40."""
        first, second = self.connection(pool_size=4), self.connection(pool_size=4)  # type: ignore[arg-type]

        def plus_one(values: list[str | None]) -> list[tuple[str, ...]]:
            return [("SET", "counter", str(int(values[0] or "0") + 1))]

        yield gatherResults(
            [
                redis.check_and_set(["counter"], plus_one, retries=100)
                for _ in range(20)
                for redis in (first, second)
            ]
        )
        self.assertEqual(self.server.command("GET", "counter"), "40")

    @inlineCallbacks
    def test_conflict_beyond_retries_fails(self):  # type: ignore[no-untyped-def]
        """A writer that changes the key between every read and EXEC exhausts the retries."""
        redis = self.connection()

        def plan(values: list[str | None]) -> list[tuple[str, ...]]:
            self.server.command("INCR", "hot")  # another client, between WATCH and EXEC
            return [("SET", "hot", "mine")]

        yield self.assertFailure(redis.check_and_set(["hot"], plan, retries=2), RedisConflict)
        self.assertEqual(self.server.command("GET", "hot"), "3")

    @inlineCallbacks
    def test_nobody_listening_fails_within_the_timeout(self):  # type: ignore[no-untyped-def]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        redis = self.connection(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        started = reactor.seconds()  # type: ignore[attr-defined]
        yield self.assertFailure(redis.get("k"), RedisUnavailable)
        yield self.assertFailure(
            redis.check_and_set(["k"], lambda values: [("SET", "k", "v")]), RedisUnavailable
        )
        self.assertLess(reactor.seconds() - started, 2.0)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_connect_redis_fails_when_nobody_listens(self):  # type: ignore[no-untyped-def]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        yield self.assertFailure(
            connect_redis(reactor, f"redis://127.0.0.1:{port}/0", timeout=0.3), RedisUnavailable
        )

    @inlineCallbacks
    def test_reconnects_after_the_server_drops_connections(self):  # type: ignore[no-untyped-def]
        redis = self.connection(timeout=1.0, max_retry_delay=0.2)
        yield redis.execute("SET", "k", "before")
        self.server.command("CLIENT", "KILL", "TYPE", "normal")
        # Each attempt either fails fast (connection lost) or succeeds once reconnected.
        value = None
        for _ in range(50):
            try:
                value = yield redis.get("k")
                break
            except RedisUnavailable:
                continue
        self.assertEqual(value, "before")

    @inlineCallbacks
    def test_closed_connection_refuses_work(self):  # type: ignore[no-untyped-def]
        redis = RedisConnection(reactor, self.server.url)
        yield redis.ping()
        yield redis.close()
        yield self.assertFailure(redis.get("k"), RedisUnavailable)

    @inlineCallbacks
    def test_failed_handshake_is_retried_not_given_up(self):  # type: ignore[no-untyped-def]
        """AUTH refused (the server has no password yet, as while it is being set up) does
        not end reconnection: once the server accepts the password, work goes through."""
        server = RedisServer.start()
        self.addCleanup(server.stop)
        redis = self.connection(
            f"redis://:s3cret@127.0.0.1:{server.port}/2", timeout=0.3, max_retry_delay=0.1
        )
        yield self.assertFailure(redis.ping(), RedisUnavailable)
        server.command("CONFIG", "SET", "requirepass", "s3cret")
        for _ in range(100):
            try:
                yield redis.execute("SET", "k", "authenticated")
                break
            except RedisUnavailable:
                continue
        self.assertEqual((yield redis.get("k")), "authenticated")

    @inlineCallbacks
    def test_stalled_server_fails_transactions_in_time_then_recovers(self):  # type: ignore[no-untyped-def]
        """A server that stops answering (SIGSTOP) mid-stream: the transaction fails at its
        deadline, its connection is dropped, and once the server runs again so does work."""
        redis = self.connection(timeout=0.3, max_retry_delay=0.1)
        yield redis.execute("SET", "k", "0")
        os.kill(self.server.process.pid, signal.SIGSTOP)
        try:
            started = reactor.seconds()  # type: ignore[attr-defined]
            yield self.assertFailure(
                redis.check_and_set(["k"], lambda values: [("SET", "k", "1")]), RedisUnavailable
            )
            self.assertLess(reactor.seconds() - started, 1.5)  # type: ignore[attr-defined]
        finally:
            os.kill(self.server.process.pid, signal.SIGCONT)
        for _ in range(50):
            try:
                yield redis.check_and_set(["k"], lambda values: [("SET", "k", "2")])
                break
            except RedisUnavailable:
                continue
        self.assertEqual(self.server.command("GET", "k"), "2")
