"""The Redis location store's group commit against a real redis-server (tests/servers.py):
changes that arrive while a batch is in flight go together (one MGET, one script), each
sees the ones before it, a change that raises fails alone, an AOR written by another
client between the read and the script goes round again (a bounded number of times), and
scripts run by digest with a fallback to their text."""

from __future__ import annotations

from itertools import count
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.redis_connection import RedisCommandError, RedisConnection, RedisScript
from homeredirect.registrar import redis_store
from homeredirect.registrar.location import Binding, LocationStoreError, bindings_to_json
from homeredirect.registrar.redis_store import RedisLocationStore
from homeredirect.resolve.interfaces import AddressOfRecord
from tests.servers import RedisServer
from tests.unit.location_store_contract import ALICE, BOB, NOW, Refused, binding

_prefixes = count()

CAROL = AddressOfRecord.parse("carol@example.com")


def adding(new: Binding, seen: list[tuple[Binding, ...]] | None = None) -> Any:
    """A change that appends *new* (recording what it was given in *seen*)."""

    def change(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
        if seen is not None:
            seen.append(current)
        return (*current, new)

    return change


def refuse(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
    raise Refused("out of order CSeq")


class GroupCommitTests(TestCase):
    server: RedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.prefix = f"batch{next(_prefixes)}:location:"

    def store(self, *, retries: int = 10, max_batch: int = 256) -> RedisLocationStore:
        connection = RedisConnection(reactor, self.server.url)
        store = RedisLocationStore(connection, self.prefix, retries=retries, max_batch=max_batch)
        self.addCleanup(store.close)
        return store

    def key(self, aor: AddressOfRecord) -> str:
        return self.prefix + str(aor)

    def calls(self, command: str) -> int:
        """How many times the server has run *command* since its statistics were reset."""
        info = str(self.server.command("INFO", "commandstats"))
        for line in info.splitlines():
            if line.startswith(f"cmdstat_{command}:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    @inlineCallbacks
    def test_changes_that_arrive_during_a_batch_go_together_in_order(self):  # type: ignore[no-untyped-def]
        store = self.store()
        yield store.modify(BOB, adding(binding(aor=BOB)), NOW)  # the script loaded
        yield store.lookup(BOB, NOW)  # and that batch over
        self.server.command("CONFIG", "RESETSTAT")
        first = store.modify(BOB, lambda current: (), NOW)  # in flight
        seen: list[tuple[Binding, ...]] = []
        contacts = [f"sip:a{n}@192.0.2.1" for n in range(4)]
        queued = [store.modify(ALICE, adding(binding(c), seen), NOW) for c in contacts]
        queued.append(store.modify(CAROL, adding(binding(aor=CAROL)), NOW))
        results = yield gatherResults([first, *queued])
        # Each change to ALICE saw the ones before it in the same batch.
        self.assertEqual([len(s) for s in seen], [0, 1, 2, 3])
        self.assertEqual([b.contact for b in results[4]], contacts)
        self.assertEqual([b.contact for b in (yield store.lookup(ALICE, NOW))], contacts)
        self.assertEqual(len((yield store.lookup(CAROL, NOW))), 1)
        self.assertEqual((yield store.lookup(BOB, NOW)), ())
        # Two batches, the one in flight and the six changes queued behind it: each one
        # read (an MGET in a script) and one write.
        self.assertEqual(self.calls("mget"), 2)
        self.assertEqual(self.calls("evalsha"), 4)

    @inlineCallbacks
    def test_a_refusing_change_fails_alone(self):  # type: ignore[no-untyped-def]
        store = self.store()
        first, second = binding("sip:a@192.0.2.1"), binding("sip:b@192.0.2.2")
        in_flight = store.modify(BOB, adding(binding(aor=BOB)), NOW)
        batch = [
            store.modify(ALICE, adding(first), NOW),
            store.modify(ALICE, refuse, NOW),
            store.modify(ALICE, adding(second), NOW),
            store.modify(CAROL, refuse, NOW),
        ]
        yield in_flight
        self.assertEqual((yield batch[0]), (first,))
        yield self.assertFailure(batch[1], Refused)
        self.assertEqual((yield batch[2]), (first, second))
        yield self.assertFailure(batch[3], Refused)
        self.assertEqual((yield store.lookup(ALICE, NOW)), (first, second))
        self.assertEqual(self.server.command("EXISTS", self.key(CAROL)), 0)

    @inlineCallbacks
    def test_an_unreadable_aor_fails_only_its_own_changes(self):  # type: ignore[no-untyped-def]
        store = self.store()
        dave = AddressOfRecord.parse("dave@example.com")
        self.server.command("SET", self.key(CAROL), "not json")
        self.server.command("SET", self.key(dave), b"\xff\xfe not even UTF-8")
        in_flight = store.modify(BOB, adding(binding(aor=BOB)), NOW)
        broken = store.modify(CAROL, adding(binding(aor=CAROL)), NOW)
        fine = store.modify(ALICE, adding(binding()), NOW)
        garbled = store.modify(dave, adding(binding(aor=dave)), NOW)
        yield in_flight
        yield self.assertFailure(broken, LocationStoreError)
        yield self.assertFailure(garbled, LocationStoreError)
        self.assertEqual(len((yield fine)), 1)
        self.assertEqual(self.server.command("GET", self.key(CAROL)), "not json")
        self.assertEqual(self.server.command("STRLEN", self.key(dave)), 17)

    @inlineCallbacks
    def test_a_write_between_read_and_script_sends_the_aor_round_again(self):  # type: ignore[no-untyped-def]
        """Another client writes ALICE after the batch read it: the script leaves ALICE
        alone but writes BOB; ALICE's change runs again on what the other client wrote."""
        store = self.store()
        in_flight = store.modify(CAROL, adding(binding(aor=CAROL)), NOW)
        theirs, mine = binding("sip:theirs@192.0.2.7"), binding("sip:mine@192.0.2.1")
        seen: list[tuple[Binding, ...]] = []

        def change(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            seen.append(current)
            if len(seen) == 1:
                # Another home server, after our MGET and before our script.
                self.server.command("SET", self.key(ALICE), bindings_to_json((theirs,)))
            return (*current, mine)

        results = yield gatherResults(
            [
                store.modify(ALICE, change, NOW),
                store.modify(BOB, adding(binding(aor=BOB)), NOW),
                in_flight,
            ]
        )
        self.assertEqual(seen, [(), (theirs,)])
        self.assertEqual(results[0], (theirs, mine))
        self.assertEqual(set((yield store.lookup(ALICE, NOW))), {theirs, mine})
        self.assertEqual(len((yield store.lookup(BOB, NOW))), 1)

    @inlineCallbacks
    def test_an_aor_that_keeps_changing_fails_after_the_retries(self):  # type: ignore[no-untyped-def]
        store = self.store(retries=2)
        runs: list[int] = []

        def change(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            runs.append(len(current))
            value = bindings_to_json((binding(f"sip:other{len(runs)}@192.0.2.7"),))
            self.server.command("SET", self.key(ALICE), value)
            return (binding(),)

        yield self.assertFailure(store.modify(ALICE, change, NOW), LocationStoreError)
        self.assertEqual(len(runs), 3)
        # The other client's last write stands; the store goes on working.
        self.assertEqual(
            [b.contact for b in (yield store.lookup(ALICE, NOW))], ["sip:other3@192.0.2.7"]
        )
        self.assertEqual((yield store.modify(ALICE, lambda current: (), NOW)), ())

    @inlineCallbacks
    def test_a_refused_or_misshapen_write_fails_the_batch_as_a_store_error(self):  # type: ignore[no-untyped-def]
        store = self.store()
        for script in ("return redis.error_reply('READONLY replica')", "return '1111'"):
            self.patch(redis_store, "_COMPARE_AND_SET_ALL", RedisScript(script))
            in_flight = store.modify(CAROL, adding(binding(aor=CAROL)), NOW)
            batch = [
                store.modify(ALICE, adding(binding()), NOW),
                store.modify(BOB, adding(binding(aor=BOB)), NOW),
            ]
            for change in (in_flight, *batch):
                yield self.assertFailure(change, LocationStoreError)
        self.assertEqual(self.server.command("EXISTS", self.key(ALICE), self.key(BOB)), 0)

    def test_a_batch_holds_at_least_one_change(self) -> None:
        connection = RedisConnection(reactor, self.server.url)
        self.addCleanup(connection.close)
        with self.assertRaises(ValueError):
            RedisLocationStore(connection, self.prefix, max_batch=0)

    @inlineCallbacks
    def test_batches_are_bounded_in_size(self):  # type: ignore[no-untyped-def]
        store = self.store(max_batch=2)
        self.server.command("CONFIG", "RESETSTAT")
        users = [AddressOfRecord.parse(f"user{n}@example.com") for n in range(5)]
        yield gatherResults([store.modify(u, adding(binding(aor=u)), NOW) for u in users])
        self.assertEqual(self.calls("mget"), 3)
        for user in users:
            self.assertEqual(len((yield store.lookup(user, NOW))), 1)

    @inlineCallbacks
    def test_close_waits_for_the_changes_already_asked_for(self):  # type: ignore[no-untyped-def]
        store = RedisLocationStore(RedisConnection(reactor, self.server.url), self.prefix)
        changes = [
            store.modify(ALICE, adding(binding(f"sip:{n}@192.0.2.1")), NOW) for n in range(3)
        ]
        yield store.close()
        self.assertEqual(len((yield changes[2])), 3)
        yield self.assertFailure(store.modify(ALICE, lambda current: (), NOW), LocationStoreError)

    @inlineCallbacks
    def test_unknown_scripts_are_sent_once_then_run_by_digest(self):  # type: ignore[no-untyped-def]
        redis = RedisConnection(reactor, self.server.url)
        self.addCleanup(redis.close)
        script = RedisScript("return KEYS[1] .. ARGV[1]")
        self.server.command("SCRIPT", "FLUSH")
        self.server.command("CONFIG", "RESETSTAT")
        self.assertEqual((yield redis.run_script(script, ["k"], ["v"])), "kv")
        self.assertEqual((yield redis.run_script(script, ["k"], [2])), "k2")
        self.assertEqual(self.calls("eval"), 1)
        self.assertEqual(self.calls("evalsha"), 2)  # the one answered NOSCRIPT counts too
        broken = RedisScript("return redis.call('NO-SUCH-COMMAND')")
        yield self.assertFailure(redis.run_script(broken, [], []), RedisCommandError)
