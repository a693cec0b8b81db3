"""The SQLite location store's group commit: changes that arrive while a batch is being
written go to the pool together, in one transaction, with the same outcome as one by one.

SQLite's own statement trace (`set_trace_callback` on the store's connection) shows how
many transactions ran; everything else is observed through the store's API and the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from homeredirect.registrar.location import Binding, LocationStoreError
from homeredirect.registrar.sqlite_store import SqliteLocationStore
from homeredirect.resolve.interfaces import AddressOfRecord
from tests.unit.location_store_contract import ALICE, BOB, NOW, Refused, binding
from tests.unit.test_location_contract import started_pool

CAROL = AddressOfRecord.parse("carol@example.com")


class GroupCommitTests(TestCase):
    def setUp(self) -> None:
        self.pool = started_pool(self)
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        self.path = directory / "bindings.sqlite"
        self.statements: list[str] = []

    @inlineCallbacks
    def traced_store(self):  # type: ignore[no-untyped-def]
        store = SqliteLocationStore(self.path, reactor, self.pool)
        self.addCleanup(store.close)
        yield store._in_thread(lambda c: c.set_trace_callback(self.statements.append))
        return store

    def transactions(self) -> int:
        return sum(1 for s in self.statements if s.startswith("BEGIN"))

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            return connection.execute(statement).fetchall()
        finally:
            connection.close()

    @inlineCallbacks
    def test_changes_waiting_for_a_batch_share_one_transaction(self):  # type: ignore[no-untyped-def]
        store = yield self.traced_store()
        aors = [AddressOfRecord(f"user{n}", "example.com") for n in range(20)]
        results = yield gatherResults(
            [store.modify(aor, lambda c, a=aor: (binding(aor=a),), NOW) for aor in aors]
        )
        self.assertEqual([r[0].aor for r in results], aors)
        # The first change starts a batch alone; the 19 made meanwhile go in one more.
        self.assertEqual(self.transactions(), 2)
        self.assertEqual(self.sql("SELECT count(*) FROM bindings"), [(20,)])

    @inlineCallbacks
    def test_changes_made_by_callbacks_join_the_next_batch(self):  # type: ignore[no-untyped-def]
        store = yield self.traced_store()
        follow_ups: list[Deferred[tuple[Binding, ...]]] = []

        def again(_: object, aor: AddressOfRecord) -> None:
            follow_ups.append(store.modify(aor, lambda c: (*c, binding("sip:b@x", aor=aor)), NOW))

        first = [
            store.modify(aor, lambda c, a=aor: (binding(aor=a),), NOW).addCallback(again, aor)
            for aor in (ALICE, BOB, CAROL)
        ]
        yield gatherResults(first)
        results = yield gatherResults(follow_ups)
        self.assertEqual([len(r) for r in results], [2, 2, 2])
        # ALICE alone, BOB and CAROL together, then the three follow-ups together.
        self.assertEqual(self.transactions(), 3)

    @inlineCallbacks
    def test_later_change_in_a_batch_sees_the_earlier_one(self):  # type: ignore[no-untyped-def]
        store = yield self.traced_store()
        seen: list[int] = []

        def add(contact: str):  # type: ignore[no-untyped-def]
            def change(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
                seen.append(len(current))
                return (*current, binding(contact))

            return change

        yield gatherResults([store.modify(ALICE, add(f"sip:{n}@x"), NOW) for n in range(4)])
        self.assertEqual(seen, [0, 1, 2, 3])
        self.assertEqual(len((yield store.lookup(ALICE, NOW))), 4)
        self.assertEqual(self.transactions(), 2)

    @inlineCallbacks
    def test_raising_change_fails_alone(self):  # type: ignore[no-untyped-def]
        store = yield self.traced_store()

        def refuse(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            raise Refused()

        outcomes = [
            store.modify(ALICE, lambda c: (binding(),), NOW),
            store.modify(BOB, refuse, NOW),
            store.modify(CAROL, lambda c: (binding(aor=CAROL),), NOW),
        ]
        yield outcomes[0]
        yield self.assertFailure(outcomes[1], Refused)
        yield outcomes[2]
        self.assertEqual((yield store.lookup(BOB, NOW)), ())
        self.assertEqual((yield store.lookup(CAROL, NOW)), (binding(aor=CAROL),))

    @inlineCallbacks
    def test_sqlite_error_fails_the_whole_batch_and_writes_none_of_it(self):  # type: ignore[no-untyped-def]
        store = yield self.traced_store()
        yield store.modify(ALICE, lambda c: (binding(),), NOW)
        # Refuse the write of CAROL only: BOB's write, before it in the batch, is rolled back.
        self.sql(
            "CREATE TRIGGER refuse_carol BEFORE INSERT ON bindings"
            " WHEN NEW.aor = 'carol@example.com' BEGIN SELECT RAISE(ABORT, 'no carol'); END"
        )
        # Out of the callback of the modify above (which runs while its batch is still
        # "writing"), so that the next change starts a batch of its own.
        yield deferLater(reactor, 0, lambda: None)
        blocker = store.modify(ALICE, lambda c: c, NOW)  # the batch in flight
        bob = store.modify(BOB, lambda c: (binding(aor=BOB),), NOW)
        carol = store.modify(CAROL, lambda c: (binding(aor=CAROL),), NOW)
        yield blocker
        yield self.assertFailure(bob, LocationStoreError)
        failure = yield self.assertFailure(carol, LocationStoreError)
        self.assertIn("no carol", str(failure))
        self.assertEqual(self.sql("SELECT aor FROM bindings"), [("alice@example.com",)])
        # Rolled back, not left locked: the next batch writes.
        self.sql("DROP TRIGGER refuse_carol")
        yield store.modify(BOB, lambda c: (binding(aor=BOB),), NOW)
        self.assertEqual(len(self.sql("SELECT aor FROM bindings")), 2)

    @inlineCallbacks
    def test_close_runs_the_changes_already_asked_for(self):  # type: ignore[no-untyped-def]
        store = SqliteLocationStore(self.path, reactor, self.pool)
        changes = [
            store.modify(aor, lambda c, a=aor: (binding(aor=a),), NOW) for aor in (ALICE, BOB)
        ]
        yield store.close()
        yield gatherResults(changes)
        self.assertEqual(len(self.sql("SELECT aor FROM bindings")), 2)
        yield self.assertFailure(store.modify(CAROL, lambda c: (), NOW), LocationStoreError)
