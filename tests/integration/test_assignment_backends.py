"""The same behaviour from every writable assignment backend (file, SQL, Redis), built from
configuration by `build_resolver`; and a director on real sockets with the SQL and Redis
backends, including a Redis outage (503 + Retry-After for users not cached) and recovery."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from homeredirect.config.assignments import CacheConfig
from homeredirect.config.load import parse_config
from homeredirect.resolve.cache import CachedResolver
from homeredirect.resolve.errors import AssignmentWriteError
from homeredirect.resolve.factory import AssignmentBackend, build_resolver
from homeredirect.resolve.file_source import FileAssignmentResolver
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.sip.headers import parse_contacts
from homeredirect.sip.message import Response
from tests.integration.support import director_config, register, start_director, udp_client
from tests.integration.test_redis_source import restart_redis, stop_redis
from tests.servers import RedisServer

ALICE = AddressOfRecord("alice", "example.com")
BOB = AddressOfRecord("bob", "example.com")
CAROL = AddressOfRecord("carol", "example.com")
SEED = {"alice@example.com": "home1.example.com", "bob@example.com": "home2.example.com"}


class _BackendBehaviour:
    """Mixed into a TestCase per backend, which provides `assignments_table(directory,
    name)` (the `[assignments]` table of a fresh store called `name`) and `seed(...)`."""

    directory: Path
    pool: ThreadPool

    def assignments_table(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def seed(self, name: str, rows: Mapping[str, str]) -> None:
        raise NotImplementedError

    def build(self, name: str, rows: Mapping[str, str] = SEED) -> AssignmentBackend:
        self.seed(name, rows)
        data = director_config(self.directory, transports=("udp",))
        data["assignments"] = self.assignments_table(name)
        config = parse_config(data, str(self.directory / "test.toml"), self.directory)
        backend = build_resolver(config, reactor, self.pool)
        self.closing.append(backend)
        return backend

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()  # type: ignore[attr-defined]
        self.directory.mkdir()
        self.pool = ThreadPool(minthreads=0, maxthreads=2, name="test-backends")
        self.pool.start()
        self.closing: list[AssignmentBackend] = []
        self.addCleanup(self.close)  # type: ignore[attr-defined]
        self.backend = self.build("main")

    def close(self) -> Deferred[Any]:
        self.pool.stop()
        from twisted.internet.defer import gatherResults

        return gatherResults([backend.close() for backend in self.closing])

    def source(self) -> IAssignmentResolver:
        """The backend itself, without the factory's cache."""
        cache = self.backend.cache
        return cache.backend if cache is not None else self.backend.resolver

    @property
    def store(self) -> IAssignmentStore:
        assert self.backend.store is not None
        return self.backend.store

    @inlineCallbacks
    def test_known_user_resolves(self) -> Generator[Any, Any, None]:
        assignment = yield self.backend.resolver.resolve(ALICE)
        assert assignment == Assignment("home1.example.com")

    @inlineCallbacks
    def test_unknown_user_resolves_to_none(self) -> Generator[Any, Any, None]:
        assert (yield self.backend.resolver.resolve(CAROL)) is None

    @inlineCallbacks
    def test_move_is_resolved_through_the_cache_after_its_ttl(self) -> Generator[Any, Any, None]:
        source = self.source()
        clock = Clock()
        cache = CachedResolver(source, CacheConfig(ttl=300), clock=clock, name="behaviour")
        assert (yield cache.resolve(ALICE)).home_server == "home1.example.com"
        yield self.store.move(ALICE, "home3.example.com")
        assert (yield cache.resolve(ALICE)).home_server == "home1.example.com"
        clock.advance(300)
        assert (yield cache.resolve(ALICE)).home_server == "home3.example.com"

    @inlineCallbacks
    def test_move_adds_a_new_user(self) -> Generator[Any, Any, None]:
        yield self.store.move(CAROL, "home4.example.com")
        source = self.source()
        assert (yield source.resolve(CAROL)) == Assignment("home4.example.com")

    @inlineCallbacks
    def test_export_then_import_round_trips(self) -> Generator[Any, Any, None]:
        yield self.store.move(CAROL, "home4.example.com")
        exported = yield self.store.export()
        assert [(str(aor), a.home_server) for aor, a in exported] == [
            ("alice@example.com", "home1.example.com"),
            ("bob@example.com", "home2.example.com"),
            ("carol@example.com", "home4.example.com"),
        ]
        other = self.build("other", {})
        assert other.store is not None
        count = yield other.store.move_many((aor, a.home_server) for aor, a in exported)
        assert count == 3
        assert (yield other.store.export()) == exported

    @inlineCallbacks
    def test_bulk_move_with_a_bad_home_changes_nothing(self) -> Generator[Any, Any, None]:
        moves = [(ALICE, "home9.example.com"), (CAROL, "not a host")]
        yield self.assertFailure(  # type: ignore[attr-defined]
            self.store.move_many(moves), AssignmentWriteError
        )
        exported = yield self.store.export()
        assert [(str(aor), a.home_server) for aor, a in exported] == list(SEED.items())


class FileBackendTests(_BackendBehaviour, TestCase):
    def assignments_table(self, name: str) -> dict[str, Any]:
        return {"backend": "file", "path": f"{name}.csv"}

    def seed(self, name: str, rows: Mapping[str, str]) -> None:
        lines = ["# seeded\n", "user,home_server\n"]
        lines += [f"{user},{home}\n" for user, home in rows.items()]
        (self.directory / f"{name}.csv").write_text("".join(lines))

    @inlineCallbacks
    def test_rewrite_keeps_comments_order_and_permissions(self):  # type: ignore[no-untyped-def]
        path = self.directory / "main.csv"
        path.chmod(0o640)
        yield self.store.move_many([(BOB, "home3.example.com"), (CAROL, "home1.example.com")])
        self.assertEqual(
            path.read_text(),
            "# seeded\nuser,home_server\nalice@example.com,home1.example.com\n"
            "bob@example.com,home3.example.com\ncarol@example.com,home1.example.com\n",
        )
        self.assertEqual(path.stat().st_mode & 0o777, 0o640)
        self.assertEqual([p.name for p in self.directory.iterdir() if ".tmp" in p.name], [])

    @inlineCallbacks
    def test_write_refuses_a_file_made_invalid_meanwhile(self):  # type: ignore[no-untyped-def]
        path = self.directory / "main.csv"
        path.write_text("user,home_server\nalice@example.com\n")
        failure = yield self.assertFailure(
            self.store.move(BOB, "home3.example.com"), AssignmentWriteError
        )
        self.assertIn("main.csv:2:", str(failure))
        self.assertEqual(path.read_text(), "user,home_server\nalice@example.com\n")
        assert isinstance(self.backend.file, FileAssignmentResolver)
        self.assertEqual(len(self.backend.file), 2)  # the loaded table stays


class SqlBackendTests(_BackendBehaviour, TestCase):
    def assignments_table(self, name: str) -> dict[str, Any]:
        return {"backend": "sql", "path": f"{name}.sqlite", "table": "homes"}

    def seed(self, name: str, rows: Mapping[str, str]) -> None:
        connection = sqlite3.connect(self.directory / f"{name}.sqlite")
        with connection:
            connection.execute("CREATE TABLE homes (user TEXT PRIMARY KEY, home_server TEXT)")
            connection.executemany("INSERT INTO homes VALUES (?, ?)", rows.items())
        connection.close()


class RedisBackendTests(_BackendBehaviour, TestCase):
    server: RedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.server.flush()
        super().setUp()

    def assignments_table(self, name: str) -> dict[str, Any]:
        return {"backend": "redis", "url": self.server.url, "key_prefix": f"{name}:"}

    def seed(self, name: str, rows: Mapping[str, str]) -> None:
        for user, home in rows.items():
            self.server.command("SET", f"{name}:{user}", home)


def first_contact_host(response: object) -> str:
    assert isinstance(response, Response), response
    assert response.status == 301, (response.status, response.reason)
    contacts = parse_contacts(response.headers.get_all("Contact"))
    assert contacts != "*"
    return contacts[0].uri.host  # type: ignore[no-any-return]


class _DirectorWithBackend:
    """A director on loopback with a directory backend answers REGISTER with 301."""

    directory: Path

    def assignments_table(self) -> dict[str, Any]:
        raise NotImplementedError

    def start(self) -> Any:
        self.directory = Path(self.mktemp()).resolve()  # type: ignore[attr-defined]
        self.directory.mkdir()
        config = director_config(self.directory, transports=("udp",))
        config["assignments"] = self.assignments_table()
        config["cache"] = {"ttl": 300}
        service = start_director(self.directory, config)
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        client = udp_client()
        self.addCleanup(client.transport.stopListening)  # type: ignore[attr-defined]
        return service, client

    @staticmethod
    def ask(service: Any, client: Any, aor: str) -> Deferred[Any]:
        request = register(aor, via_port=client.port)
        client.transport.write(request, ("127.0.0.1", service.listener("udp").address[1]))
        return client.next()  # type: ignore[no-any-return]


class SqlDirectorTests(_DirectorWithBackend, TestCase):
    def assignments_table(self) -> dict[str, Any]:
        return {"backend": "sql", "path": "assignments.sqlite"}

    @inlineCallbacks
    def test_director_redirects_to_the_home_in_the_database(self):  # type: ignore[no-untyped-def]
        service, client = self.start()
        assert service.assignments.store is not None
        yield service.assignments.store.move_many(
            [(ALICE, "home1.example.com"), (BOB, "home2.example.com")]
        )
        self.assertEqual(
            first_contact_host((yield self.ask(service, client, "bob@example.com"))),
            "home2.example.com",
        )
        response = yield self.ask(service, client, "carol@example.com")
        self.assertEqual(response.status, 404)


class RedisDirectorTests(_DirectorWithBackend, TestCase):
    server: RedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def assignments_table(self) -> dict[str, Any]:
        return {"backend": "redis", "url": self.server.url}

    def seed(self) -> None:
        for user, home in SEED.items():
            self.server.command("SET", f"homeredirect:assignment:{user}", home)

    @inlineCallbacks
    def test_redis_outage_gives_503_for_uncached_users_and_recovers(self):  # type: ignore[no-untyped-def]
        self.seed()
        service, client = self.start()
        alice = yield self.ask(service, client, "alice@example.com")
        self.assertEqual(first_contact_host(alice), "home1.example.com")

        stop_redis(self.server)
        try:
            alice = yield self.ask(service, client, "alice@example.com")
            self.assertEqual(first_contact_host(alice), "home1.example.com")  # cached
            bob = yield self.ask(service, client, "bob@example.com")
            self.assertEqual((bob.status, bob.headers.get("Retry-After")), (503, "30"))
        finally:
            restart_redis(self.server)
        self.seed()  # the restarted server is empty: it keeps nothing on disk
        end = time.monotonic() + 15
        while True:
            bob = yield self.ask(service, client, "bob@example.com")
            if bob.status != 503 or time.monotonic() > end:
                break
        self.assertEqual(first_contact_host(bob), "home2.example.com")
