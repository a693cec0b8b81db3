"""The Redis assignment backend against a real redis-server: lookups, writes, bad values,
a stalled server (a deadline, never a hang), and an outage mid-test survived by the cache
and recovered from without a new resolver."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from homeredirect.config.assignments import CacheConfig
from homeredirect.redis_connection import RedisConnection
from homeredirect.resolve.cache import CachedResolver
from homeredirect.resolve.errors import AssignmentWriteError, DirectoryUnavailable
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.resolve.redis_source import RedisAssignmentSource
from tests.servers import REDIS_SERVER, RedisServer

PREFIX = "test:assignment:"
ALICE = AddressOfRecord("alice", "example.com")
BOB = AddressOfRecord("bob", "example.com")


def stop_redis(server: RedisServer) -> None:
    """Stop the server but keep its directory and port, for `restart_redis`."""
    server.stop(remove=False)


def restart_redis(server: RedisServer) -> None:
    """Start redis-server again on the same port (empty: it keeps nothing on disk)."""
    server.process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(server.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(server.directory),
            "--daemonize", "no",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            if server.command("PING") == "PONG":
                return
        except OSError:
            server.process.poll()
        try:
            server.process.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            pass
    raise RuntimeError("redis-server did not restart")


@inlineCallbacks
def eventually(
    lookup: Any, expected: object, timeout: float = 10.0
) -> Generator[Deferred[Any], Any, None]:
    """Repeat `lookup()` (a Deferred) until it fires with `expected`, failing after
    `timeout` seconds: the client reconnects on its own schedule."""
    end = time.monotonic() + timeout
    while True:
        try:
            result = yield lookup()
        except DirectoryUnavailable:
            result = DirectoryUnavailable
        if result == expected or time.monotonic() > end:
            assert result == expected, f"still {result!r} after {timeout} s"
            return
        yield deferLater(reactor, 0.05, lambda: None)


class RedisSourceTests(TestCase):
    server: RedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        if self.server.process.poll() is not None:
            restart_redis(self.server)
        self.server.flush()
        self.source = self.make_source()

    def make_source(self, timeout: float = 2.0) -> RedisAssignmentSource:
        connection = RedisConnection(reactor, self.server.url, timeout=timeout, max_retry_delay=0.2)
        self.addCleanup(connection.close)
        return RedisAssignmentSource(connection, key_prefix=PREFIX)

    def test_source_provides_resolver_and_store_interfaces(self) -> None:
        self.assertTrue(verifyObject(IAssignmentResolver, self.source))
        self.assertTrue(verifyObject(IAssignmentStore, self.source))

    @inlineCallbacks
    def test_known_user_resolves_from_prefixed_string_key(self):  # type: ignore[no-untyped-def]
        self.server.command("SET", PREFIX + "alice@example.com", "HOME1.example.com")
        self.assertEqual((yield self.source.resolve(ALICE)), Assignment("home1.example.com"))
        self.assertIsNone((yield self.source.resolve(BOB)))

    @inlineCallbacks
    def test_move_many_writes_every_key(self):  # type: ignore[no-untyped-def]
        count = yield self.source.move_many(
            [(ALICE, "home1.example.com"), (BOB, "Home2.example.com")]
        )
        self.assertEqual(count, 2)
        self.assertEqual(
            self.server.command("GET", PREFIX + "bob@example.com"), "home2.example.com"
        )

    @inlineCallbacks
    def test_move_many_with_a_bad_home_writes_nothing(self):  # type: ignore[no-untyped-def]
        moves = [(ALICE, "home1.example.com"), (BOB, "-bad-")]
        yield self.assertFailure(self.source.move_many(moves), AssignmentWriteError)
        self.assertEqual(self.server.command("DBSIZE"), 0)

    @inlineCallbacks
    def test_export_lists_only_keys_under_the_prefix(self):  # type: ignore[no-untyped-def]
        yield self.source.move_many([(BOB, "home2.example.com"), (ALICE, "home1.example.com")])
        self.server.command("SET", "other:alice@example.com", "home9.example.com")
        self.assertEqual(
            (yield self.source.export()),
            [(ALICE, Assignment("home1.example.com")), (BOB, Assignment("home2.example.com"))],
        )

    @inlineCallbacks
    def test_stored_value_that_is_not_an_fqdn_is_logged_with_its_key(self):  # type: ignore[no-untyped-def]
        self.server.command("SET", PREFIX + "alice@example.com", "home one")
        with capturedLogs() as events:
            self.assertIsNone((yield self.source.resolve(ALICE)))
        [event] = [e for e in events if "key" in e]
        self.assertEqual((event["key"], event["value"]), (PREFIX + "alice@example.com", "home one"))

    @inlineCallbacks
    def test_stalled_redis_fails_within_the_timeout_instead_of_hanging(self):  # type: ignore[no-untyped-def]
        source = self.make_source(timeout=0.3)
        yield source.move(ALICE, "home1.example.com")
        os.kill(self.server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            yield self.assertFailure(source.resolve(ALICE), DirectoryUnavailable)
            self.assertLess(time.monotonic() - started, 2.0)
        finally:
            os.kill(self.server.process.pid, signal.SIGCONT)

    @inlineCallbacks
    def test_outage_serves_cached_users_stale_and_recovers_after_restart(self):  # type: ignore[no-untyped-def]
        clock = Clock()
        source = self.make_source(timeout=0.5)
        cache = CachedResolver(source, CacheConfig(ttl=60), clock=clock, name="redis")
        yield source.move(ALICE, "home1.example.com")
        self.assertEqual((yield cache.resolve(ALICE)).home_server, "home1.example.com")

        stop_redis(self.server)
        clock.advance(61)  # alice's answer has expired: only a stale one is left
        self.assertEqual((yield cache.resolve(ALICE)).home_server, "home1.example.com")
        yield self.assertFailure(cache.resolve(BOB), DirectoryUnavailable)
        self.assertFalse(cache.healthy)
        self.assertGreaterEqual(cache.stale, 1)

        restart_redis(self.server)  # empty: it keeps nothing on disk
        self.server.command("SET", PREFIX + "bob@example.com", "home2.example.com")
        yield eventually(lambda: cache.resolve(BOB), Assignment("home2.example.com"))
        self.assertTrue(cache.healthy)
