"""The behaviour every `ILocationStore` shares, as a mixin for trial TestCases.

A backend's test class mixes `LocationStoreContract` into a `TestCase` and provides
`make_store()` (a fresh, empty store) and `make_peer()` (a second store instance over the
same storage: the same SQLite file, the same Redis database and prefix; this is how the
home servers of a pool share one location service). tests/unit/test_location_contract.py
runs it against memory and SQLite, tests/integration/test_redis_store.py against Redis.

Times are far in the future (2033) so that Redis, which expires keys on its own wall
clock, keeps everything the tests write for as long as they run.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from zope.interface.verify import verifyObject

from homeredirect.registrar.location import Binding, ILocationStore
from homeredirect.resolve.interfaces import AddressOfRecord

NOW = 2_000_000_000.0

ALICE = AddressOfRecord.parse("alice@example.com")
BOB = AddressOfRecord.parse("bob@example.com")


def binding(
    contact: str = "sip:alice@192.0.2.1:5060",
    expires_in: float = 3600,
    aor: AddressOfRecord = ALICE,
    **fields: Any,
) -> Binding:
    values: dict[str, Any] = {"call_id": "call-1", "cseq": 1} | fields
    return Binding(aor=aor, contact=contact, expires_at=NOW + expires_in, **values)


class Refused(Exception):
    """What the tests' changes raise to abort."""


class LocationStoreContract:
    """Mix into a trial TestCase; see the module docstring."""

    # Provided by trial's TestCase.
    assertEqual: Any
    assertFailure: Any
    addCleanup: Any

    def make_store(self) -> ILocationStore:
        raise NotImplementedError

    def make_peer(self) -> ILocationStore:
        raise NotImplementedError

    def store(self) -> ILocationStore:
        store = self.make_store()
        self.addCleanup(store.close)
        return store

    def peer(self) -> ILocationStore:
        store = self.make_peer()
        self.addCleanup(store.close)
        return store

    def test_provides_the_interface(self) -> None:
        verifyObject(ILocationStore, self.store())

    @inlineCallbacks
    def test_unknown_aor_has_no_bindings(self):  # type: ignore[no-untyped-def]
        self.assertEqual((yield self.store().lookup(ALICE, NOW)), ())

    @inlineCallbacks
    def test_modified_bindings_are_looked_up_with_every_field(self):  # type: ignore[no-untyped-def]
        store = self.store()
        full = binding(
            "sip:alice@198.51.100.7:5061;transport=tls",
            q=0.5,
            path=("<sip:edge.example.com;lr>",),
            instance='"<urn:uuid:00000000-0000-0000-0000-000000000001>"',
            reg_id=1,
            received="tls:198.51.100.7:50000",
            user_agent="UCCAPI/16.0",
            epid="01010101",
        )
        plain = binding("sip:alice@192.0.2.1:5060", expires_in=60)
        stored = yield store.modify(ALICE, lambda current: (*current, full, plain), NOW)
        self.assertEqual(stored, (full, plain))
        found = yield store.lookup(ALICE, NOW)
        self.assertEqual(
            sorted(found, key=lambda b: b.contact), sorted(stored, key=lambda b: b.contact)
        )

    @inlineCallbacks
    def test_lookup_leaves_out_expired_bindings(self):  # type: ignore[no-untyped-def]
        store = self.store()
        short, long = binding("sip:a@192.0.2.1", expires_in=10), binding("sip:b@192.0.2.2", 100)
        yield store.modify(ALICE, lambda current: (short, long), NOW)
        self.assertEqual((yield store.lookup(ALICE, NOW + 9.5)), (short, long))
        # A binding has expired at its expiry instant.
        self.assertEqual((yield store.lookup(ALICE, NOW + 10)), (long,))
        self.assertEqual((yield store.lookup(ALICE, NOW + 100)), ())

    @inlineCallbacks
    def test_change_sees_only_unexpired_bindings(self):  # type: ignore[no-untyped-def]
        store = self.store()
        short, long = binding("sip:a@192.0.2.1", expires_in=10), binding("sip:b@192.0.2.2", 100)
        yield store.modify(ALICE, lambda current: (short, long), NOW)
        seen: list[tuple[Binding, ...]] = []

        def change(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            seen.append(current)
            return current

        stored = yield store.modify(ALICE, change, NOW + 50)
        self.assertEqual(seen[-1], (long,))
        self.assertEqual(stored, (long,))
        self.assertEqual((yield store.lookup(ALICE, NOW)), (long,))

    @inlineCallbacks
    def test_raising_change_fails_and_writes_nothing(self):  # type: ignore[no-untyped-def]
        store = self.store()
        before = binding("sip:a@192.0.2.1")
        yield store.modify(ALICE, lambda current: (before,), NOW)

        def refuse(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            raise Refused("out of order CSeq")

        yield self.assertFailure(store.modify(ALICE, refuse, NOW), Refused)
        yield self.assertFailure(store.modify(BOB, refuse, NOW), Refused)
        self.assertEqual((yield store.lookup(ALICE, NOW)), (before,))
        self.assertEqual((yield store.lookup(BOB, NOW)), ())

    @inlineCallbacks
    def test_changing_to_nothing_removes_the_aor(self):  # type: ignore[no-untyped-def]
        store = self.store()
        yield store.modify(ALICE, lambda current: (binding(),), NOW)
        self.assertEqual((yield store.modify(ALICE, lambda current: (), NOW)), ())
        self.assertEqual((yield store.lookup(ALICE, NOW)), ())
        self.assertEqual((yield store.purge(NOW + 10_000)), 0)

    @inlineCallbacks
    def test_aors_are_independent(self):  # type: ignore[no-untyped-def]
        store = self.store()
        shouting = AddressOfRecord.parse("ALICE@example.com")  # users compare case-sensitively
        mine, bobs = binding("sip:a@192.0.2.1"), binding("sip:b@192.0.2.2", aor=BOB)
        theirs = binding("sip:c@192.0.2.3", aor=shouting)
        yield store.modify(ALICE, lambda current: (mine,), NOW)
        yield store.modify(BOB, lambda current: (bobs,), NOW)
        yield store.modify(shouting, lambda current: (theirs,), NOW)
        yield store.modify(BOB, lambda current: (), NOW)
        self.assertEqual((yield store.lookup(ALICE, NOW)), (mine,))
        self.assertEqual((yield store.lookup(shouting, NOW)), (theirs,))
        self.assertEqual((yield store.lookup(BOB, NOW)), ())

    @inlineCallbacks
    def test_purge_counts_expired_bindings_and_keeps_the_rest(self):  # type: ignore[no-untyped-def]
        store = self.store()
        a1, a2 = binding("sip:a1@192.0.2.1", 10), binding("sip:a2@192.0.2.1", 1000)
        b1 = binding("sip:b1@192.0.2.2", 20, aor=BOB)
        b2 = binding("sip:b2@192.0.2.2", 30, aor=BOB)
        yield store.modify(ALICE, lambda current: (a1, a2), NOW)
        yield store.modify(BOB, lambda current: (b1, b2), NOW)
        self.assertEqual((yield store.purge(NOW)), 0)
        self.assertEqual((yield store.purge(NOW + 20)), 2)  # a1 and b1
        self.assertEqual((yield store.purge(NOW + 20)), 0)
        # Purged bindings are gone, not just hidden: a change at an earlier time sees none.
        self.assertEqual((yield store.lookup(ALICE, NOW)), (a2,))
        self.assertEqual((yield store.lookup(BOB, NOW)), (b2,))
        self.assertEqual((yield store.purge(NOW + 5000)), 2)
        self.assertEqual((yield store.lookup(ALICE, NOW)), ())

    @inlineCallbacks
    def test_concurrent_changes_to_one_aor_are_all_kept(self):  # type: ignore[no-untyped-def]
        """Each change adds one binding to what it read; if two read the same state, one
        would overwrite the other. Atomic read-modify-write keeps all 12."""
        store, peer = self.store(), self.peer()
        adds = [
            (store if n % 2 else peer).modify(
                ALICE, lambda current, n=n: (*current, binding(f"sip:d{n}@192.0.2.9")), NOW
            )
            for n in range(12)
        ]
        yield gatherResults(adds)
        found = yield store.lookup(ALICE, NOW)
        self.assertEqual(
            sorted(b.contact for b in found), sorted(f"sip:d{n}@192.0.2.9" for n in range(12))
        )

    @inlineCallbacks
    def test_two_instances_see_each_others_bindings(self):  # type: ignore[no-untyped-def]
        first, second = self.store(), self.peer()
        mine = binding("sip:a@192.0.2.1")
        yield first.modify(ALICE, lambda current: (mine,), NOW)
        self.assertEqual((yield second.lookup(ALICE, NOW)), (mine,))
        theirs = binding("sip:b@192.0.2.2")
        yield second.modify(ALICE, lambda current: (*current, theirs), NOW)
        self.assertEqual(set((yield first.lookup(ALICE, NOW))), {mine, theirs})
        yield second.modify(ALICE, lambda current: (), NOW)
        self.assertEqual((yield first.lookup(ALICE, NOW)), ())
