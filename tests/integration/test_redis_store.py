"""The Redis location store against a real redis-server (tests/servers.py): the behaviour
shared with the other stores, the key layout and key expiry, and failing (never hanging)
when Redis is gone."""

from __future__ import annotations

import json
import socket
from itertools import count

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.config.registrar import LocationConfig
from homeredirect.redis_connection import RedisConnection
from homeredirect.registrar import redis_store
from homeredirect.registrar.factory import build_location_store
from homeredirect.registrar.location import ILocationStore, LocationStoreError
from homeredirect.registrar.redis_store import RedisLocationStore
from homeredirect.resolve.interfaces import AddressOfRecord
from tests.servers import RedisServer
from tests.unit.location_store_contract import (
    ALICE,
    BOB,
    NOW,
    LocationStoreContract,
    binding,
)

_prefixes = count()


class RedisTestCase(TestCase):
    """One redis-server for the class; each test its own key prefix."""

    server: RedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.prefix = f"test{next(_prefixes)}:location:"

    def redis_store(self, url: str | None = None, timeout: float = 2.0) -> RedisLocationStore:
        connection = RedisConnection(reactor, url or self.server.url, timeout=timeout)
        store = RedisLocationStore(connection, self.prefix)
        self.addCleanup(store.close)
        return store


class RedisStoreContractTests(LocationStoreContract, RedisTestCase):
    def make_store(self) -> ILocationStore:
        return RedisLocationStore(RedisConnection(reactor, self.server.url), self.prefix)

    def make_peer(self) -> ILocationStore:
        # Its own connections to the same Redis and prefix, as another home server's.
        return RedisLocationStore(RedisConnection(reactor, self.server.url), self.prefix)


class RedisStoreTests(RedisTestCase):
    @inlineCallbacks
    def test_aor_key_holds_json_and_expires_with_the_latest_binding(self):  # type: ignore[no-untyped-def]
        store = self.redis_store()
        early, late = binding("sip:a@192.0.2.1", 60), binding("sip:b@192.0.2.2", 600)
        yield store.modify(ALICE, lambda current: (early, late), NOW)
        key = self.prefix + "alice@example.com"
        stored = json.loads(str(self.server.command("GET", key)))
        self.assertEqual(
            [item["contact"] for item in stored], ["sip:a@192.0.2.1", "sip:b@192.0.2.2"]
        )
        self.assertEqual(self.server.command("PEXPIRETIME", key), int((NOW + 600) * 1000))
        # The purge index holds the earliest expiry.
        score = self.server.command("ZSCORE", self.prefix + "next-expiry", "alice@example.com")
        self.assertEqual(float(str(score)), NOW + 60)

    @inlineCallbacks
    def test_removing_every_binding_deletes_the_key(self):  # type: ignore[no-untyped-def]
        store = self.redis_store()
        yield store.modify(ALICE, lambda current: (binding(),), NOW)
        yield store.modify(ALICE, lambda current: (), NOW)
        self.assertEqual(self.server.command("EXISTS", self.prefix + "alice@example.com"), 0)
        self.assertEqual(self.server.command("ZCARD", self.prefix + "next-expiry"), 0)

    @inlineCallbacks
    def test_redis_expiring_the_key_leaves_purge_consistent(self):  # type: ignore[no-untyped-def]
        """When Redis has dropped an AOR by key expiry, purge just forgets its index entry."""
        store = self.redis_store()
        yield store.modify(ALICE, lambda current: (binding(expires_in=5),), NOW)
        yield store.modify(BOB, lambda current: (binding(aor=BOB, expires_in=5),), NOW)
        self.server.command("DEL", self.prefix + "alice@example.com")  # as key expiry would
        self.assertEqual((yield store.purge(NOW + 10)), 1)
        self.assertEqual(self.server.command("ZCARD", self.prefix + "next-expiry"), 0)

    @inlineCallbacks
    def test_purge_works_through_the_index_in_batches(self):  # type: ignore[no-untyped-def]
        self.patch(redis_store, "_PURGE_BATCH", 3)
        store = self.redis_store()
        users = [AddressOfRecord.parse(f"user{n}@example.com") for n in range(7)]
        for n, user in enumerate(users):
            bindings = (
                binding(aor=user, expires_in=5),
                binding("sip:x@192.0.2.9", 50 + n, aor=user),
            )
            yield store.modify(user, lambda current, bindings=bindings: bindings, NOW)
        self.assertEqual((yield store.purge(NOW + 10)), 7)
        self.assertEqual((yield store.purge(NOW + 53)), 4)  # expiring at +50..+53
        self.assertEqual(self.server.command("ZCARD", self.prefix + "next-expiry"), 3)
        self.assertEqual(len((yield store.lookup(users[6], NOW))), 1)

    @inlineCallbacks
    def test_unreadable_value_is_a_store_error(self):  # type: ignore[no-untyped-def]
        store = self.redis_store()
        self.server.command("SET", self.prefix + "alice@example.com", "not json")
        yield self.assertFailure(store.lookup(ALICE, NOW), LocationStoreError)
        yield self.assertFailure(store.modify(ALICE, lambda current: (), NOW), LocationStoreError)
        self.assertEqual(self.server.command("GET", self.prefix + "alice@example.com"), "not json")

    @inlineCallbacks
    def test_unreachable_redis_fails_every_operation_quickly(self):  # type: ignore[no-untyped-def]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = self.redis_store(f"redis://127.0.0.1:{port}/0", timeout=0.2)
        started = reactor.seconds()  # type: ignore[attr-defined]
        yield self.assertFailure(store.lookup(ALICE, NOW), LocationStoreError)
        yield self.assertFailure(
            store.modify(ALICE, lambda current: (binding(),), NOW), LocationStoreError
        )
        yield self.assertFailure(store.purge(NOW), LocationStoreError)
        self.assertLess(reactor.seconds() - started, 3.0)  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_prefixes_and_databases_keep_stores_apart(self):  # type: ignore[no-untyped-def]
        store = self.redis_store()
        yield store.modify(ALICE, lambda current: (binding(),), NOW)
        other_prefix = RedisLocationStore(RedisConnection(reactor, self.server.url), "other:")
        self.addCleanup(other_prefix.close)
        other_db = RedisLocationStore(RedisConnection(reactor, self.server.url_for(1)), self.prefix)
        self.addCleanup(other_db.close)
        self.assertEqual((yield other_prefix.lookup(ALICE, NOW)), ())
        self.assertEqual((yield other_db.lookup(ALICE, NOW)), ())

    @inlineCallbacks
    def test_factory_builds_the_configured_store(self):  # type: ignore[no-untyped-def]
        config = LocationConfig(backend="redis", url=self.server.url, key_prefix=self.prefix)
        store = build_location_store(config, reactor, None)  # type: ignore[arg-type]
        self.addCleanup(store.close)
        self.assertIsInstance(store, RedisLocationStore)
        yield store.modify(ALICE, lambda current: (binding(),), NOW)
        self.assertEqual(self.server.command("EXISTS", self.prefix + "alice@example.com"), 1)
