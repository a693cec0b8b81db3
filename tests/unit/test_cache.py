"""The assignment cache: TTLs, LRU bound, coalescing, refresh ahead, stale answers in an
outage, and health events on transitions only. A scripted in-memory backend and a Clock."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.config.assignments import CacheConfig
from homeredirect.resolve.cache import CachedResolver
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment, IAssignmentResolver

ALICE = AddressOfRecord("alice", "example.com")
BOB = AddressOfRecord("bob", "example.com")
CAROL = AddressOfRecord("carol", "example.com")


@implementer(IAssignmentResolver)
class ScriptedDirectory:
    """Answers from `table`, fails while `down`, or holds answers in `held` while `hold`."""

    def __init__(self, **table: str) -> None:
        self.table = {f"{user}@example.com": home for user, home in table.items()}
        self.down = False
        self.hold = False
        self.held: list[Deferred[Assignment | None]] = []
        self.queries: list[str] = []

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        self.queries.append(str(aor))
        if self.hold:
            held: Deferred[Assignment | None] = Deferred()
            self.held.append(held)
            return held
        if self.down:
            return fail(DirectoryUnavailable("connection refused"))
        home = self.table.get(str(aor))
        return succeed(Assignment(home) if home else None)


def cached(directory: ScriptedDirectory, clock: Clock, **settings: float) -> CachedResolver:
    config = CacheConfig(
        **{
            "ttl": 300,
            "negative_ttl": 30,
            "stale_ttl": 3600,
            "refresh_ahead": 30,
            "max_entries": 1000,
            **settings,
        }  # type: ignore[arg-type]
    )
    return CachedResolver(directory, config, clock=clock, name="test")


class CacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = ScriptedDirectory(alice="home1.example.com", bob="home2.example.com")
        self.cache = cached(self.directory, self.clock)

    def home(self, aor: AddressOfRecord) -> str | None:
        assignment = self.successResultOf(self.cache.resolve(aor))
        return None if assignment is None else assignment.home_server

    def test_cached_resolver_provides_the_resolver_interface(self) -> None:
        self.assertTrue(verifyObject(IAssignmentResolver, self.cache))

    def test_found_assignment_is_served_from_cache_until_ttl(self) -> None:
        self.assertEqual(self.home(ALICE), "home1.example.com")
        self.directory.table["alice@example.com"] = "home3.example.com"
        self.clock.advance(269)
        self.assertEqual(self.home(ALICE), "home1.example.com")
        self.assertEqual(self.directory.queries, ["alice@example.com"])
        self.clock.advance(31)
        self.assertEqual(self.home(ALICE), "home3.example.com")
        self.assertEqual((self.cache.hits, self.cache.misses), (1, 2))

    def test_unknown_user_is_remembered_for_negative_ttl(self) -> None:
        self.assertIsNone(self.home(CAROL))
        self.directory.table["carol@example.com"] = "home1.example.com"
        self.clock.advance(29)
        self.assertIsNone(self.home(CAROL))
        self.clock.advance(1)
        self.assertEqual(self.home(CAROL), "home1.example.com")
        self.assertEqual(len(self.directory.queries), 2)

    def test_least_recently_used_entry_is_dropped_beyond_max_entries(self) -> None:
        self.cache = cached(self.directory, self.clock, max_entries=2)
        self.home(ALICE)
        self.home(BOB)
        self.home(ALICE)  # alice is now the most recently used
        self.home(CAROL)
        self.assertEqual((len(self.cache), self.cache.evictions), (2, 1))
        self.directory.queries.clear()
        self.home(ALICE)
        self.home(BOB)
        self.assertEqual(self.directory.queries, ["bob@example.com"])

    def test_hundred_concurrent_lookups_make_one_backend_query(self) -> None:
        self.directory.hold = True
        lookups = [self.cache.resolve(ALICE) for _ in range(100)]
        self.assertEqual(self.directory.queries, ["alice@example.com"])
        self.assertNoResult(lookups[0])
        self.directory.held[0].callback(Assignment("home1.example.com"))
        homes = {self.successResultOf(lookup).home_server for lookup in lookups}  # type: ignore[union-attr]
        self.assertEqual(homes, {"home1.example.com"})
        self.assertEqual(self.cache.coalesced, 99)

    def test_lookup_near_expiry_is_answered_from_cache_and_refreshed_in_background(
        self,
    ) -> None:
        self.home(ALICE)
        self.directory.table["alice@example.com"] = "home3.example.com"
        self.directory.hold = True
        self.clock.advance(271)  # within refresh_ahead (30 s) of the 300 s expiry
        self.assertEqual(self.home(ALICE), "home1.example.com")
        self.assertEqual(self.home(ALICE), "home1.example.com")
        self.assertEqual(len(self.directory.held), 1)  # one refresh, not one per lookup
        self.directory.held[0].callback(Assignment("home3.example.com"))
        self.clock.advance(100)  # past the old expiry, within the refreshed one
        self.assertEqual(self.home(ALICE), "home3.example.com")
        self.assertEqual(self.cache.refreshes, 1)

    def test_expired_answer_is_served_stale_while_backend_fails(self) -> None:
        self.home(ALICE)
        self.directory.down = True
        self.clock.advance(300 + 3599)
        self.assertEqual(self.home(ALICE), "home1.example.com")
        self.assertEqual(self.cache.stale, 1)

    def test_answer_older_than_stale_ttl_gives_directory_unavailable(self) -> None:
        self.home(ALICE)
        self.directory.down = True
        self.clock.advance(300 + 3600)
        self.failureResultOf(self.cache.resolve(ALICE), DirectoryUnavailable)
        self.assertEqual(self.cache.unavailable, 1)

    def test_uncached_user_gives_directory_unavailable_when_backend_fails(self) -> None:
        self.directory.down = True
        failure = self.failureResultOf(self.cache.resolve(ALICE), DirectoryUnavailable)
        self.assertIn("connection refused", str(failure.value))

    def test_expired_unknown_answer_is_not_served_stale(self) -> None:
        self.assertIsNone(self.home(CAROL))
        self.directory.down = True
        self.clock.advance(31)
        self.failureResultOf(self.cache.resolve(CAROL), DirectoryUnavailable)

    def test_stale_answers_do_not_wait_for_a_failing_backend(self) -> None:
        self.home(ALICE)
        self.home(BOB)
        self.directory.down = True
        self.clock.advance(301)
        self.assertEqual(self.home(ALICE), "home1.example.com")  # marks the backend failing
        self.directory.hold = True  # a backend that now hangs until its timeout
        self.assertEqual(self.home(BOB), "home2.example.com")  # answered at once
        self.assertEqual(len(self.directory.held), 1)  # and refreshed in the background
        self.directory.held[0].callback(Assignment("home4.example.com"))
        self.assertEqual(self.home(BOB), "home4.example.com")
        self.assertTrue(self.cache.healthy)

    def test_backend_recovers_without_a_new_resolver(self) -> None:
        self.directory.down = True
        self.failureResultOf(self.cache.resolve(ALICE), DirectoryUnavailable)
        self.directory.down = False
        self.assertEqual(self.home(ALICE), "home1.example.com")

    def test_health_is_logged_on_transitions_only(self) -> None:
        with capturedLogs() as events:
            self.directory.down = True
            for _ in range(5):
                self.failureResultOf(self.cache.resolve(ALICE), DirectoryUnavailable)
            self.clock.advance(12)
            self.directory.down = False
            for _ in range(5):
                self.home(BOB)
        health = [e for e in events if e.get("directory") == "test"]
        self.assertEqual(
            [(e["log_level"], e["log_format"].split(" ")[2]) for e in health],
            [(LogLevel.warn, "failing:"), (LogLevel.info, "recovered")],
        )
        self.assertEqual(health[1]["outage_seconds"], 12)

    def test_unexpected_backend_error_is_logged_and_reported_unavailable(self) -> None:
        @implementer(IAssignmentResolver)
        class Broken:
            def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
                raise KeyError("bug")

        cache = CachedResolver(Broken(), CacheConfig(), clock=self.clock, name="broken")
        with capturedLogs() as events:
            self.failureResultOf(cache.resolve(ALICE), DirectoryUnavailable)
        self.assertTrue(any(e.get("log_failure") is not None for e in events))
        self.flushLoggedErrors(KeyError)

    def test_forget_drops_the_cached_answer(self) -> None:
        self.home(ALICE)
        self.cache.forget(ALICE)
        self.home(ALICE)
        self.assertEqual(len(self.directory.queries), 2)
