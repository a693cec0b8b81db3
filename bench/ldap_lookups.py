"""Measure LDAP lookups three ways against a local slapd holding 10,000 Lync-shaped users.

    .venv/bin/python -m bench.ldap_lookups [--lookups 3000] [--concurrency 1 16]

1. `sync`: python-ldap's blocking `search_ext_s` in a loop, no Twisted: what one client
   connection can get out of this slapd at all.
2. `threads`: `LdapAssignmentResolver` (the shipped design): each lookup is dispatched to
   the resolver's thread pool (one pooled connection per thread) and its result comes back
   to the reactor thread.
3. `async`: a prototype of the alternative: python-ldap's asynchronous `search_ext` on one
   connection whose socket the reactor watches (an IReadDescriptor); when it is readable,
   `result3(RES_ANY, timeout=0)` is drained on the reactor thread.

Every lookup is a distinct user (a cold cache: each is one LDAP search), with the pool DN
already resolved. Prints lookups/s and p50/p99 latency per approach and concurrency.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ldap
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import react
from zope.interface import implementer

from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.resolve.ldap_filter import FilterTemplate
from homeredirect.resolve.ldap_schema import AD_FILTER
from homeredirect.resolve.ldap_source import LdapAssignmentResolver
from tests.ldap_server import (
    BASE_DN,
    READER_DN,
    SECRET,
    SlapdServer,
    base_entries,
    user_entries,
)

ATTRIBUTES = ["msRTCSIP-PrimaryHomeServer", "msRTCSIP-UserEnabled"]


def users(count: int) -> list[AddressOfRecord]:
    return [AddressOfRecord(f"user{n % 10_000:05d}", "example.com") for n in range(count)]


def summary(name: str, concurrency: int, latencies: list[float], elapsed: float) -> str:
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (
        f"{name:8} concurrency {concurrency:3}: {len(latencies) / elapsed:8.0f} lookups/s, "
        f"p50 {statistics.median(ordered) * 1000:6.2f} ms, p99 {p99 * 1000:6.2f} ms"
    )


def run_sync(uri: str, lookups: list[AddressOfRecord]) -> str:
    connection = ldap.initialize(uri)
    connection.simple_bind_s(READER_DN, SECRET)
    template = FilterTemplate(AD_FILTER)
    latencies = []
    start = time.perf_counter()
    for user in lookups:
        began = time.perf_counter()
        connection.search_ext_s(BASE_DN, ldap.SCOPE_SUBTREE, template.render(user), ATTRIBUTES)
        latencies.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    connection.unbind_s()
    return summary("sync", 1, latencies, elapsed)


@implementer(IReadDescriptor)
class AsyncLdap:
    """The prototype: one connection, its socket watched by the reactor."""

    def __init__(self, uri: str) -> None:
        self.connection = ldap.initialize(uri)
        self.connection.simple_bind_s(READER_DN, SECRET)
        self._fd: int = self.connection.fileno()
        self._waiting: dict[int, tuple[Deferred[Any], list[Any]]] = {}
        reactor.addReader(self)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "ldap-async"

    def connectionLost(self, reason: object) -> None:
        pass

    def search(self, filterstr: str) -> Deferred[Any]:
        msgid = self.connection.search_ext(BASE_DN, ldap.SCOPE_SUBTREE, filterstr, ATTRIBUTES)
        done: Deferred[Any] = Deferred()
        self._waiting[msgid] = (done, [])
        return done

    def doRead(self) -> None:
        # libldap may have read more than one message from the socket: drain until empty.
        while self._waiting:
            kind, data, msgid, _ = self.connection.result3(ldap.RES_ANY, all=0, timeout=0)
            if kind is None:
                return
            waiting = self._waiting.get(msgid)
            if waiting is None:
                continue
            if kind == ldap.RES_SEARCH_RESULT:
                del self._waiting[msgid]
                waiting[0].callback(waiting[1])
            else:
                waiting[1].extend(data or ())

    def close(self) -> None:
        reactor.removeReader(self)
        self.connection.unbind_s()


@inlineCallbacks
def run_concurrent(
    name: str, lookup: Callable[[AddressOfRecord], Deferred[Any]], lookups: list[Any], n: int
) -> Any:
    semaphore = DeferredSemaphore(n)
    latencies: list[float] = []

    def one(user: AddressOfRecord) -> Deferred[Any]:
        began = time.perf_counter()
        return lookup(user).addCallback(lambda _: latencies.append(time.perf_counter() - began))

    start = time.perf_counter()
    yield gatherResults([semaphore.run(one, user) for user in lookups])
    return summary(name, n, latencies, time.perf_counter() - start)


@inlineCallbacks
def main(_reactor: Any, argv: list[str]) -> Any:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lookups", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slapd-bench-") as directory:
        server = SlapdServer(Path(directory))
        server.setup([*base_entries(), *user_entries(10_000)])
        server.start()
        try:
            lookups = users(options.lookups)
            print(run_sync(server.uri, lookups))
            config = LdapAssignmentsConfig(
                uris=[server.uri], base_dn=BASE_DN, bind_dn=READER_DN, bind_password=SECRET
            )
            resolver = LdapAssignmentResolver(config, reactor)
            resolver.startService()
            yield gatherResults([resolver.resolve(users(3)[n]) for n in range(3)])  # pools
            prototype = AsyncLdap(server.uri)
            template = FilterTemplate(AD_FILTER)
            for n in options.concurrency:
                print((yield run_concurrent("threads", resolver.resolve, lookups, n)))
                print(
                    (
                        yield run_concurrent(
                            "async",
                            lambda user: prototype.search(template.render(user)),
                            lookups,
                            n,
                        )
                    )
                )
            prototype.close()
            resolver.stopService()
        finally:
            server.stop()


if __name__ == "__main__":
    import sys

    react(main, [sys.argv[1:]])
