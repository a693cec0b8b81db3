"""MemoryLocationStore: the ILocationStore contract, synchronously underneath."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from homeredirect.registrar.location import Binding, ILocationStore
from homeredirect.registrar.memory_store import MemoryLocationStore
from homeredirect.resolve.interfaces import AddressOfRecord

ALICE = AddressOfRecord("alice", "example.com")
BOB = AddressOfRecord("bob", "example.com")


def binding(aor: AddressOfRecord, contact: str, expires_at: float) -> Binding:
    return Binding(aor=aor, contact=contact, expires_at=expires_at, call_id="c", cseq=1)


class MemoryLocationStoreTests(SynchronousTestCase):
    def test_provides_the_location_store_interface(self) -> None:
        verifyObject(ILocationStore, MemoryLocationStore())

    def test_modify_stores_what_the_change_returns_and_lookup_reads_it(self) -> None:
        store = MemoryLocationStore()
        one = binding(ALICE, "sip:alice@192.0.2.1", 100.0)
        stored = self.successResultOf(store.modify(ALICE, lambda current: (*current, one), 0.0))
        self.assertEqual(stored, (one,))
        self.assertEqual(self.successResultOf(store.lookup(ALICE, 0.0)), (one,))
        self.assertEqual(self.successResultOf(store.lookup(BOB, 0.0)), ())

    def test_expired_bindings_are_neither_looked_up_nor_given_to_a_change(self) -> None:
        store = MemoryLocationStore()
        old = binding(ALICE, "sip:alice@192.0.2.1", 10.0)
        self.successResultOf(store.modify(ALICE, lambda current: (old,), 0.0))
        self.assertEqual(self.successResultOf(store.lookup(ALICE, 10.0)), ())
        seen: list[tuple[Binding, ...]] = []

        def record(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            seen.append(current)
            return current

        self.successResultOf(store.modify(ALICE, record, 11.0))
        self.assertEqual(seen, [()])

    def test_a_change_that_raises_writes_nothing_and_fails_with_its_exception(self) -> None:
        store = MemoryLocationStore()
        one = binding(ALICE, "sip:alice@192.0.2.1", 100.0)
        self.successResultOf(store.modify(ALICE, lambda current: (one,), 0.0))

        def refuse(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            raise ValueError("no")

        failed: Deferred[tuple[Binding, ...]] = store.modify(ALICE, refuse, 0.0)
        self.failureResultOf(failed, ValueError)
        self.assertEqual(self.successResultOf(store.lookup(ALICE, 0.0)), (one,))

    def test_purge_drops_only_expired_bindings_and_counts_them(self) -> None:
        store = MemoryLocationStore()
        short = binding(ALICE, "sip:alice@192.0.2.1", 10.0)
        long = binding(ALICE, "sip:alice@192.0.2.2", 100.0)
        gone = binding(BOB, "sip:bob@192.0.2.3", 5.0)
        self.successResultOf(store.modify(ALICE, lambda current: (short, long), 0.0))
        self.successResultOf(store.modify(BOB, lambda current: (gone,), 0.0))
        self.assertEqual(len(store), 3)
        self.assertEqual(self.successResultOf(store.purge(50.0)), 2)
        self.assertEqual(len(store), 1)
        self.assertEqual(self.successResultOf(store.lookup(ALICE, 50.0)), (long,))

    def test_purge_after_a_refresh_keeps_the_refreshed_binding(self) -> None:
        store = MemoryLocationStore()
        first = binding(ALICE, "sip:alice@192.0.2.1", 10.0)
        refreshed = binding(ALICE, "sip:alice@192.0.2.1", 100.0)
        self.successResultOf(store.modify(ALICE, lambda current: (first,), 0.0))
        self.successResultOf(store.modify(ALICE, lambda current: (refreshed,), 5.0))
        self.assertEqual(self.successResultOf(store.purge(50.0)), 0)
        self.assertEqual(self.successResultOf(store.lookup(ALICE, 50.0)), (refreshed,))
        self.assertEqual(self.successResultOf(store.purge(100.0)), 1)
        self.assertEqual(len(store), 0)

    def test_purge_drops_later_expiries_of_an_aor_at_their_own_time(self) -> None:
        store = MemoryLocationStore()
        short = binding(ALICE, "sip:alice@192.0.2.1", 10.0)
        long = binding(ALICE, "sip:alice@192.0.2.2", 100.0)
        self.successResultOf(store.modify(ALICE, lambda current: (short, long), 0.0))
        self.assertEqual(self.successResultOf(store.purge(10.0)), 1)
        self.assertEqual(self.successResultOf(store.purge(99.0)), 0)
        self.assertEqual(self.successResultOf(store.purge(100.0)), 1)
        self.assertEqual(len(store), 0)

    def test_purge_visits_only_the_aors_due(self) -> None:
        store = MemoryLocationStore()
        for i in range(100):
            aor = AddressOfRecord(f"user{i}", "example.com")
            due = binding(aor, f"sip:user{i}@192.0.2.1", 10.0 if i == 0 else 1000.0)
            self.successResultOf(store.modify(aor, lambda current, b=due: (b,), 0.0))
        visited: list[AddressOfRecord] = []

        class Watched(dict[AddressOfRecord, tuple[Binding, ...]]):
            def get(self, key: AddressOfRecord, default: object = None) -> object:  # type: ignore[override]
                visited.append(key)
                return super().get(key, default)

            def __iter__(self):  # type: ignore[no-untyped-def]
                raise AssertionError("purge swept every AOR")

        store._bindings = Watched(store._bindings)
        self.assertEqual(self.successResultOf(store.purge(50.0)), 1)
        self.assertEqual(visited, [AddressOfRecord("user0", "example.com")])

    def test_removing_every_binding_forgets_the_aor(self) -> None:
        store = MemoryLocationStore()
        one = binding(ALICE, "sip:alice@192.0.2.1", 100.0)
        self.successResultOf(store.modify(ALICE, lambda current: (one,), 0.0))
        self.assertEqual(self.successResultOf(store.modify(ALICE, lambda current: (), 1.0)), ())
        self.assertEqual(len(store), 0)

    def test_close_fires(self) -> None:
        self.assertIsNone(self.successResultOf(MemoryLocationStore().close()))


def test_bindings_with_a_non_finite_expiry_are_refused() -> None:
    with pytest.raises(ValueError):
        binding(ALICE, "sip:a@b", float("inf"))
