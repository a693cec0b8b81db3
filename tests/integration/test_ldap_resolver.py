"""`LdapAssignmentResolver` against a real slapd holding 10,000 users in the Lync shape, and a
director on loopback sockets using it through `[assignments] backend = "ldap"`."""

from __future__ import annotations

import gc
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

import ldap
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from homeredirect.config.assignments import CacheConfig, LdapAssignmentsConfig
from homeredirect.resolve.cache import CachedResolver
from homeredirect.resolve.errors import AssignmentWriteError, DirectoryUnavailable
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.resolve.ldap_schema import normalize_dn
from homeredirect.resolve.ldap_source import LdapAssignmentResolver
from homeredirect.sip.headers import parse_contacts
from homeredirect.sip.message import Response
from tests.integration.support import director_config, register, start_director, udp_client
from tests.ldap_server import (
    BASE_DN,
    READER_DN,
    SECRET,
    WRITER_DN,
    SlapdServer,
    base_entries,
    expected_home,
    pool_dn,
    service_dn,
    user_entries,
    user_ldif,
)

USERS = 10_000


def aor(name: str) -> AddressOfRecord:
    return AddressOfRecord(name, "example.com")


def special_entries() -> list[str]:
    """Users whose entries are wrong or unusual, one shape each."""
    return [
        user_ldif("disabled", enabled="FALSE", home=service_dn("pool1")),
        user_ldif("noflag", enabled=None, home=service_dn("pool1")),
        user_ldif("twin1", address="sip:twin@example.com", home=service_dn("pool1")),
        user_ldif("twin2", address="sip:twin@example.com", home=service_dn("pool2")),
        user_ldif("nohome"),
        user_ldif("badhome", home="not a host!"),
        user_ldif("brokenpool", home=service_dn("broken")),
        user_ldif("danglingpool", home=service_dn("nosuchpool")),
        user_ldif("poolobject", home=pool_dn("pool3")),
        user_ldif("phone", object_class="contact", home="pool3.example.com"),
        user_ldif("star*", address="sip:star*@example.com", home="pool2.example.com"),
    ]


def start_slapd(directory: Path, users: int) -> SlapdServer:
    server = SlapdServer(directory)
    server.setup([*base_entries(), *user_entries(users), *special_entries()])
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def _until(condition: Any, seconds: float = 10.0) -> Deferred[None]:
    """Fire once `condition()` (a Deferred-returning callable) fires True; poll every 50 ms."""

    @inlineCallbacks
    def poll() -> Generator[Any, Any, None]:
        end = time.monotonic() + seconds
        while not (yield condition()):
            if time.monotonic() > end:
                raise AssertionError("condition not met in time")
            yield deferLater(reactor, 0.05, lambda: None)

    return poll()


class _SlapdTestCase(TestCase):
    """One slapd per test class (start-up is well under a second even with 10,000 users)."""

    users: ClassVar[int] = 50
    server: ClassVar[SlapdServer]

    @classmethod
    def setUpClass(cls) -> None:
        import tempfile

        cls._tmp = tempfile.TemporaryDirectory(prefix="slapd-")
        cls.server = start_slapd(Path(cls._tmp.name), cls.users)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        cls._tmp.cleanup()

    def config(self, **keys: Any) -> LdapAssignmentsConfig:
        settings: dict[str, Any] = {
            "uris": [self.server.uri],
            "base_dn": BASE_DN,
            "bind_dn": READER_DN,
            "bind_password": SECRET,
            "timeout": 2.0,
            "pool_size": 2,
        }
        return LdapAssignmentsConfig(**(settings | keys))

    def resolver(self, **keys: Any) -> LdapAssignmentResolver:
        resolver = LdapAssignmentResolver(self.config(**keys), reactor)
        resolver.startService()
        self.addCleanup(resolver.stopService)
        return resolver


class LdapLookupTests(_SlapdTestCase):
    users = USERS

    def test_resolver_provides_the_interfaces(self) -> None:
        resolver = self.resolver()
        verifyObject(IAssignmentResolver, resolver)
        verifyObject(IAssignmentStore, resolver)

    @inlineCallbacks
    def test_users_resolve_to_their_pools_fqdn_or_plain_fqdn(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        numbers = [0, 1, 2, 9, 19, 4242, USERS - 1, *range(100, USERS, 997)]
        found = yield gatherResults([resolver.resolve(aor(f"user{n:05d}")) for n in numbers])
        self.assertEqual(
            [a.home_server for a in found], [expected_home(n) for n in numbers], numbers
        )

    @inlineCallbacks
    def test_pool_dn_is_resolved_once(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(pool_size=1)
        first = yield resolver.resolve(aor("user00003"))  # pool1, FQDN on the pool object
        after_first = resolver.searches
        second = yield resolver.resolve(aor("user00006"))  # pool1 again
        self.assertEqual((first, second), (Assignment("pool1.example.com"),) * 2)
        self.assertEqual(after_first, 4)  # the user, then LC Services, Microsoft, pool1
        self.assertEqual(resolver.searches - after_first, 1)

    @inlineCallbacks
    def test_fqdn_on_the_service_object_itself(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        self.assertEqual(
            (yield resolver.resolve(aor("user00001"))), Assignment("pool2.example.com")
        )
        self.assertEqual(
            (yield resolver.resolve(aor("poolobject"))), Assignment("pool3.example.com")
        )

    @inlineCallbacks
    def test_contact_objects_are_found(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        self.assertEqual((yield resolver.resolve(aor("phone"))), Assignment("pool3.example.com"))

    @inlineCallbacks
    def test_disabled_and_unflagged_users_are_unknown(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        self.assertIsNone((yield resolver.resolve(aor("disabled"))))
        self.assertIsNone((yield resolver.resolve(aor("noflag"))))

    @inlineCallbacks
    def test_unknown_user_is_none(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        self.assertIsNone((yield resolver.resolve(aor("mallory"))))
        self.assertIsNone((yield resolver.resolve(AddressOfRecord("user00001", "example.org"))))

    @inlineCallbacks
    def test_star_user_would_match_everyone_unescaped_but_matches_nothing(
        self,
    ) -> Generator[Any, Any, None]:
        # What the filter would do without escaping: a substring match on every user.
        raw = ldap.initialize(self.server.uri)
        raw.simple_bind_s(READER_DN, SECRET)
        try:
            with self.assertRaises(ldap.SIZELIMIT_EXCEEDED):
                raw.search_ext_s(
                    BASE_DN,
                    ldap.SCOPE_SUBTREE,
                    "(&(|(objectClass=user)(objectClass=contact))"
                    "(msRTCSIP-PrimaryUserAddress=sip:*@example.com))",
                    ["1.1"],
                )
        finally:
            raw.unbind_s()
        resolver = self.resolver()
        with capturedLogs() as events:
            # Unescaped, each would find users: all of them (ambiguous, logged), or exactly
            # user04242, whose home would then be the answer.
            self.assertIsNone((yield resolver.resolve(aor("*"))))
            self.assertIsNone((yield resolver.resolve(aor("user04242*"))))
            self.assertIsNone((yield resolver.resolve(aor("x)(msRTCSIP-UserEnabled=TRUE"))))
            self.assertIsNone((yield resolver.resolve(aor("\\2a"))))
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])
        # A literal "*" in a real address is still found, escaped (RFC 4515 \2a).
        self.assertEqual((yield resolver.resolve(aor("star*"))), Assignment("pool2.example.com"))
        self.assertEqual(resolver.searches, 5)

    @inlineCallbacks
    def test_invalid_aor_never_reaches_the_directory(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        forged = AddressOfRecord("alice", "example.com")
        object.__setattr__(forged, "user", "al\x00ice")  # what of_uri_parts could let by
        self.assertIsNone((yield resolver.resolve(forged)))
        object.__setattr__(forged, "user", "x" * 300)
        self.assertIsNone((yield resolver.resolve(forged)))
        self.assertEqual(resolver.searches, 0)

    @inlineCallbacks
    def test_bad_entries_are_404_and_logged_with_their_dn(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        cases = {
            "twin": ("cn=twin1,ou=users", "several entries"),
            "nohome": ("cn=nohome,ou=users", "no msRTCSIP-PrimaryHomeServer"),
            "badhome": ("cn=badhome,ou=users", "is not an FQDN or DN"),
            "brokenpool": ("cn=brokenpool,ou=users", "no dNSHostName on pool"),
            "danglingpool": ("cn=danglingpool,ou=users", "no dNSHostName on pool"),
        }
        for name, (dn, problem) in cases.items():
            with capturedLogs() as events:
                self.assertIsNone((yield resolver.resolve(aor(name))), name)
            errors = [e for e in events if e["log_level"] == LogLevel.error]
            self.assertEqual(len(errors), 1, (name, events))
            self.assertIn(dn, errors[0]["dn"])
            self.assertIn(problem, errors[0]["problem"])
            self.assertNotIn("log_failure", errors[0])
        with capturedLogs() as events:
            yield resolver.resolve(aor("twin"))
        self.assertIn("cn=twin2,ou=users", events[0]["dn"])

    @inlineCallbacks
    def test_hundred_concurrent_lookups_make_one_query(self) -> Generator[Any, Any, None]:
        resolver = self.resolver()
        cached = CachedResolver(resolver, CacheConfig(), clock=reactor, name="ldap")
        found = yield gatherResults([cached.resolve(aor("user00129")) for _ in range(100)])
        self.assertEqual(set(found), {Assignment(expected_home(129))})
        self.assertEqual(resolver.searches, 1)

    @inlineCallbacks
    def test_export_pages_past_the_servers_1000_entry_limit(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(page_size=700)
        with capturedLogs() as events:
            exported = yield resolver.export()
        table = {str(user): assignment.home_server for user, assignment in exported}
        self.assertEqual(len([u for u in table if u.startswith("user")]), USERS)
        self.assertEqual(table["user04242@example.com"], expected_home(4242))
        self.assertEqual(table["phone@example.com"], "pool3.example.com")
        self.assertFalse({"disabled@example.com", "twin@example.com"} & table.keys())
        self.assertGreaterEqual(resolver.searches, USERS // 700 + 1)
        (warning,) = [e for e in events if e["log_level"] == LogLevel.warn]
        # nohome, badhome, brokenpool, danglingpool, and twin (on two entries)
        self.assertEqual(warning["count"], 5)

    @inlineCallbacks
    def test_export_beyond_size_limit_fails(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(size_limit=1500)
        yield self.assertFailure(resolver.export(), DirectoryUnavailable)

    @inlineCallbacks
    def test_generic_preset_uses_filter_and_home_attribute(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(
            preset="generic",
            filter="(&(objectClass=user)(mail={aor}))",
            home_attribute="sipHomeServer",
        )
        self.assertEqual((yield resolver.resolve(aor("user00042"))), Assignment(expected_home(42)))
        self.assertIsNone((yield resolver.resolve(aor("*"))))

    @inlineCallbacks
    def test_reactor_never_stalls_while_the_directory_hangs(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(timeout=0.3, pool_size=4)
        yield resolver.resolve(aor("user00000"))  # connect first: measure lookups only
        gaps: list[float] = []
        last = [0.0]

        def beat() -> None:
            now = time.monotonic()
            gaps.append(now - last[0])
            last[0] = now

        heartbeat = LoopingCall(beat)
        # What is measured is the resolver's work on the reactor thread, not CPython's
        # collector scanning the whole test process (every earlier test's objects): a
        # full collection of that heap alone can take longer than 50 ms. Freezing moves
        # it out of the collector's reach; objects made from here on are still collected.
        # (Under twistd, homeredirect.collector schedules collections instead.)
        gc.collect()
        gc.freeze()
        self.addCleanup(gc.unfreeze)
        last[0] = time.monotonic()
        heartbeat.start(0.005)
        self.server.pause()
        try:
            lookups = [
                resolver.resolve(aor(f"user{n:05d}")).addErrback(
                    lambda f: f.trap(DirectoryUnavailable)
                )
                for n in range(1000, 1200)
            ]
            results = yield gatherResults(lookups)
        finally:
            self.server.resume()
        heartbeat.stop()
        self.assertEqual(set(results), {DirectoryUnavailable})
        self.assertLess(max(gaps), 0.05, sorted(gaps)[-5:])

        def recovered() -> Deferred[bool]:
            # Binds that timed out count as an unreachable directory: wait out the backoff.
            return resolver.resolve(aor("user01000")).addCallbacks(
                lambda found: found == Assignment(expected_home(1000)),
                lambda f: f.trap(DirectoryUnavailable) and False,
            )

        yield _until(recovered)


class LdapTlsAndFailoverTests(_SlapdTestCase):
    @inlineCallbacks
    def test_starttls_verified_by_ca(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(starttls=True, ca=self.server.pki.ca_certificate)
        self.assertEqual(
            (yield resolver.resolve(aor("user00002"))), Assignment("pool3.example.com")
        )

    @inlineCallbacks
    def test_ldaps_verified_by_ca(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(uris=[self.server.ldaps_uri], ca=self.server.pki.ca_certificate)
        self.assertEqual(
            (yield resolver.resolve(aor("user00002"))), Assignment("pool3.example.com")
        )

    @inlineCallbacks
    def test_unverifiable_certificate_is_unavailable(self) -> Generator[Any, Any, None]:
        other = Path(self.mktemp())
        from homeredirect.tools.certs import ensure_test_pki

        stranger = ensure_test_pki(other, ["ldap.example.com"], ["127.0.0.1"])
        resolver = self.resolver(starttls=True, ca=stranger.ca_certificate)
        yield self.assertFailure(resolver.resolve(aor("user00002")), DirectoryUnavailable)

    @inlineCallbacks
    def test_second_uri_is_used_when_the_first_is_down(self) -> Generator[Any, Any, None]:
        from tests.ldap_server import _free_port

        dead = f"ldap://127.0.0.1:{_free_port()}"
        resolver = self.resolver(uris=[dead, self.server.uri])
        self.assertEqual(
            (yield resolver.resolve(aor("user00002"))), Assignment("pool3.example.com")
        )

    @inlineCallbacks
    def test_wrong_password_is_unavailable_not_unknown(self) -> Generator[Any, Any, None]:
        resolver = self.resolver(bind_password="wrong")
        failure = yield self.assertFailure(resolver.resolve(aor("user00002")), DirectoryUnavailable)
        self.assertIn("Invalid credentials", str(failure))

    @inlineCallbacks
    def test_gssapi_bind_without_kerberos_is_unavailable(self) -> Generator[Any, Any, None]:
        keytab = Path(self.mktemp())
        keytab.write_bytes(b"")
        resolver = self.resolver(
            bind_dn=None, bind_password=None, sasl_mechanism="GSSAPI", keytab=keytab
        )
        failure = yield self.assertFailure(resolver.resolve(aor("user00002")), DirectoryUnavailable)
        self.assertIn(self.server.uri, str(failure))


class LdapWriteTests(_SlapdTestCase):
    @inlineCallbacks
    def test_move_writes_the_pool_dn_for_the_ad_preset(self) -> Generator[Any, Any, None]:
        writer = self.resolver(bind_dn=WRITER_DN)
        yield writer.move(aor("user00010"), "pool3.example.com")
        raw = ldap.initialize(self.server.uri)
        raw.simple_bind_s(READER_DN, SECRET)
        self.addCleanup(raw.unbind_s)
        ((_, entry),) = raw.search_s(
            f"cn=user00010,ou=users,{BASE_DN}",
            ldap.SCOPE_BASE,
            attrlist=["msRTCSIP-PrimaryHomeServer"],
        )
        (written,) = entry["msRTCSIP-PrimaryHomeServer"]
        self.assertEqual(normalize_dn(written.decode()), normalize_dn(service_dn("pool3")))
        reader = self.resolver()
        self.assertEqual((yield reader.resolve(aor("user00010"))), Assignment("pool3.example.com"))

    @inlineCallbacks
    def test_move_many_writes_fqdns_for_the_generic_preset(self) -> Generator[Any, Any, None]:
        generic = {"preset": "generic", "filter": "(mail={aor})", "home_attribute": "sipHomeServer"}
        writer = self.resolver(bind_dn=WRITER_DN, **generic)
        moves = [(aor("user00011"), "home7.example.com"), (aor("user00012"), "home8.example.com")]
        self.assertEqual((yield writer.move_many(moves)), 2)
        self.assertEqual((yield writer.resolve(aor("user00012"))), Assignment("home8.example.com"))

    @inlineCallbacks
    def test_read_only_account_cannot_move(self) -> Generator[Any, Any, None]:
        reader = self.resolver()
        failure = yield self.assertFailure(
            reader.move(aor("user00013"), "pool1.example.com"), AssignmentWriteError
        )
        self.assertIn("Insufficient access", str(failure))
        self.assertIn("cn=user00013", str(failure))

    @inlineCallbacks
    def test_move_to_a_pool_nobody_knows_is_refused(self) -> Generator[Any, Any, None]:
        writer = self.resolver(bind_dn=WRITER_DN)
        failure = yield self.assertFailure(
            writer.move(aor("user00014"), "pool9.example.com"), AssignmentWriteError
        )
        self.assertIn("no pool object with dNSHostName=pool9.example.com", str(failure))

    @inlineCallbacks
    def test_move_of_an_unknown_user_is_refused(self) -> Generator[Any, Any, None]:
        writer = self.resolver(bind_dn=WRITER_DN)
        failure = yield self.assertFailure(
            writer.move(aor("mallory"), "pool1.example.com"), AssignmentWriteError
        )
        self.assertIn("no directory entry for mallory@example.com", str(failure))


class LdapOutageTests(_SlapdTestCase):
    @inlineCallbacks
    def test_killed_slapd_cached_users_served_uncached_unavailable_then_recovers(
        self,
    ) -> Generator[Any, Any, None]:
        resolver = self.resolver(reconnect_backoff=0.05, reconnect_backoff_max=0.2, timeout=1.0)
        cached = CachedResolver(resolver, CacheConfig(), clock=reactor, name="ldap")
        warm = [aor(f"user{n:05d}") for n in range(10)]
        yield gatherResults([cached.resolve(user) for user in warm])

        def traffic(numbers: range) -> Deferred[list[Any]]:
            return gatherResults(
                [
                    cached.resolve(aor(f"user{n:05d}")).addErrback(
                        lambda f: f.trap(DirectoryUnavailable)
                    )
                    for n in numbers
                ]
            )

        in_flight = traffic(range(10, 40))
        self.server.kill()
        try:
            results = yield in_flight
            for n, result in zip(range(10, 40), results, strict=True):
                self.assertIn(result, (Assignment(expected_home(n)), DirectoryUnavailable))
            found = yield gatherResults([cached.resolve(user) for user in warm])
            self.assertEqual([a.home_server for a in found], [expected_home(n) for n in range(10)])
            yield self.assertFailure(cached.resolve(aor("user00045")), DirectoryUnavailable)
            # During the backoff a lookup fails at once, without trying to connect.
            yield self.assertFailure(resolver.resolve(aor("user00046")), DirectoryUnavailable)
        finally:
            self.server.start()

        def recovered() -> Deferred[bool]:
            return resolver.resolve(aor("user00047")).addCallbacks(
                lambda found: found == Assignment(expected_home(47)),
                lambda f: f.trap(DirectoryUnavailable) and False,
            )

        yield _until(recovered)
        self.assertEqual((yield cached.resolve(aor("user00045"))), Assignment(expected_home(45)))


def first_contact_host(response: object) -> str:
    assert isinstance(response, Response), response
    assert response.status == 301, (response.status, response.reason)
    contacts = parse_contacts(response.headers.get_all("Contact"))
    assert contacts != "*"
    return contacts[0].uri.host  # type: ignore[no-any-return]


class LdapDirectorTests(_SlapdTestCase):
    """The director, built from `[assignments] backend = "ldap"`, on real sockets."""

    users = 100

    def start(self) -> Any:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        config = director_config(directory, transports=("udp",))
        config["assignments"] = {
            "backend": "ldap",
            "uris": [self.server.uri],
            "base_dn": BASE_DN,
            "bind_dn": READER_DN,
            "bind_password": SECRET,
            "timeout": 1,
            "reconnect_backoff": 0.05,
            "reconnect_backoff_max": 0.2,
        }
        service = start_director(directory, config)
        self.addCleanup(service.stopService)
        client = udp_client()
        self.addCleanup(client.transport.stopListening)
        return service, client

    @staticmethod
    def ask(service: Any, client: Any, user: str) -> Deferred[Any]:
        request = register(f"{user}@example.com", via_port=client.port)
        client.transport.write(request, ("127.0.0.1", service.listener("udp").address[1]))
        return client.next()  # type: ignore[no-any-return]

    @inlineCallbacks
    def test_director_redirects_404s_and_survives_an_outage(self) -> Generator[Any, Any, None]:
        service, client = self.start()
        response = yield self.ask(service, client, "user00042")
        self.assertEqual(first_contact_host(response), expected_home(42))
        self.assertEqual((yield self.ask(service, client, "disabled")).status, 404)
        self.assertEqual((yield self.ask(service, client, "*")).status, 404)

        self.server.kill()
        try:
            cached = yield self.ask(service, client, "user00042")
            self.assertEqual(first_contact_host(cached), expected_home(42))
            uncached = yield self.ask(service, client, "user00043")
            self.assertEqual((uncached.status, uncached.headers.get("Retry-After")), (503, "30"))
        finally:
            self.server.start()

        @inlineCallbacks
        def recovered() -> Generator[Any, Any, bool]:
            response = yield self.ask(service, client, "user00043")
            return bool(response.status == 301)

        yield _until(recovered)
