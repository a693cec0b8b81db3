"""RFC 3263 §4 procedures of the locator, over twisted.names's in-memory authority for the
project's zones (no sockets), with a Clock for TTLs and a seeded random source."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from homeredirect.dns.records import (
    AddressRecord,
    NaptrRecord,
    Record,
    SoaRecord,
    SrvRecord,
    Zone,
)
from homeredirect.dns.server import ZoneAuthority
from homeredirect.locate.cache import TtlCache
from homeredirect.locate.interfaces import ILocator
from homeredirect.locate.rfc3263 import HomeServerNotFound, Locator
from homeredirect.locate.target import Target

HOME = "home1.example.com"


def soa(ttl: int = 300, minimum: int = 120) -> SoaRecord:
    return SoaRecord(
        name="example.com",
        ttl=ttl,
        mname="ns.example.com",
        rname="hostmaster.example.com",
        serial=1,
        refresh=3600,
        retry=600,
        expire=1_209_600,
        minimum=minimum,
    )


def naptr(order: int, service: str, replacement: str, ttl: int = 60) -> NaptrRecord:
    return NaptrRecord(HOME, ttl, order, 50, "s", service, "", replacement)


def srv(name: str, target: str, port: int, priority: int = 10, weight: int = 10) -> SrvRecord:
    return SrvRecord(name, 60, priority, weight, port, target)


def a(name: str, address: str, ttl: int = 60) -> AddressRecord:
    return AddressRecord(name, ttl, address)


class CountingAuthority(ZoneAuthority):
    """The project's zone authority, counting the queries it answers."""

    def __init__(self, zone: Zone) -> None:
        super().__init__(zone)
        self.queries: list[tuple[str, int]] = []

    def query(self, query: Any, timeout: Any = None) -> Deferred[Any]:
        self.queries.append((query.name.name.decode(), query.type))
        return super().query(query, timeout)  # type: ignore[no-any-return]


def locator_for(
    *records: Record, transports: tuple[str, ...] = ("tls", "tcp", "udp"), negative_ttl: int = 30
) -> tuple[Locator, CountingAuthority, Clock]:
    authority = CountingAuthority(Zone("example.com", (soa(), *records)))
    clock = Clock()
    locator = Locator(
        authority, clock, random.Random(5), transports=transports, negative_ttl=negative_ttl
    )
    return locator, authority, clock


class LocatorTests(SynchronousTestCase):
    def locate(self, locator: Locator, fqdn: str = HOME) -> list[Target]:
        return self.successResultOf(locator.locate(fqdn))

    def test_provides_ilocator(self) -> None:
        locator, _, _ = locator_for()
        verifyObject(ILocator, locator)

    def test_naptr_order_chooses_the_transport(self) -> None:
        locator, _, _ = locator_for(
            naptr(10, "SIP+D2T", "_sip._tcp.example.com"),
            naptr(20, "SIPS+D2T", "_sips._tcp.example.com"),
            srv("_sip._tcp.example.com", "a.example.com", 5060),
            srv("_sips._tcp.example.com", "a.example.com", 5061),
            a("a.example.com", "192.0.2.1"),
        )
        self.assertEqual(self.locate(locator), [Target(HOME, "192.0.2.1", 5060, "tcp")])

    def test_naptr_for_a_transport_not_allowed_is_skipped(self) -> None:
        locator, _, _ = locator_for(
            naptr(10, "SIP+D2U", "_sip._udp.example.com"),
            naptr(20, "SIPS+D2T", "_sips._tcp.example.com"),
            srv("_sip._udp.example.com", "a.example.com", 5060),
            srv("_sips._tcp.example.com", "a.example.com", 5061),
            a("a.example.com", "192.0.2.1"),
            transports=("tls", "tcp"),
        )
        self.assertEqual(self.locate(locator), [Target(HOME, "192.0.2.1", 5061, "tls")])

    def test_naptr_whose_srv_is_empty_falls_to_the_next(self) -> None:
        locator, _, _ = locator_for(
            naptr(10, "SIPS+D2T", "_sips._tcp.example.com"),
            naptr(20, "SIP+D2T", "_sip._tcp.example.com"),
            srv("_sip._tcp.example.com", "a.example.com", 5080),
            a("a.example.com", "192.0.2.1"),
        )
        self.assertEqual(self.locate(locator), [Target(HOME, "192.0.2.1", 5080, "tcp")])

    def test_without_naptr_tls_srv_is_preferred(self) -> None:
        locator, authority, _ = locator_for(
            srv(f"_sip._udp.{HOME}", "a.example.com", 5060),
            srv(f"_sips._tcp.{HOME}", "a.example.com", 5061),
            a("a.example.com", "192.0.2.1"),
        )
        self.assertEqual(self.locate(locator), [Target(HOME, "192.0.2.1", 5061, "tls")])
        self.assertNotIn((f"_sip._udp.{HOME}", 33), authority.queries)

    def test_srv_priority_orders_targets_and_every_address_is_a_target(self) -> None:
        locator, _, _ = locator_for(
            srv(f"_sips._tcp.{HOME}", "backup.example.com", 5062, priority=20),
            srv(f"_sips._tcp.{HOME}", "main.example.com", 5061, priority=10),
            a("main.example.com", "192.0.2.1"),
            a("main.example.com", "2001:db8::1"),
            a("backup.example.com", "192.0.2.2"),
        )
        self.assertEqual(
            self.locate(locator),
            [
                Target(HOME, "192.0.2.1", 5061, "tls"),
                Target(HOME, "2001:db8::1", 5061, "tls"),
                Target(HOME, "192.0.2.2", 5062, "tls"),
            ],
        )

    def test_without_srv_the_address_at_the_default_port(self) -> None:
        locator, _, _ = locator_for(a(HOME, "192.0.2.9"))
        self.assertEqual(self.locate(locator), [Target(HOME, "192.0.2.9", 5061, "tls")])

    def test_unknown_name_fails_with_home_server_not_found(self) -> None:
        locator, _, _ = locator_for()
        failure = self.failureResultOf(locator.locate("nowhere.example.com"), HomeServerNotFound)
        self.assertIn("nowhere.example.com", str(failure.value))

    def test_srv_target_without_address_is_not_found(self) -> None:
        locator, _, _ = locator_for(srv(f"_sips._tcp.{HOME}", "ghost.example.com", 5061))
        self.failureResultOf(locator.locate(HOME), HomeServerNotFound)

    def test_answers_are_reused_until_their_ttl_expires(self) -> None:
        locator, authority, clock = locator_for(
            srv(f"_sips._tcp.{HOME}", "a.example.com", 5061),
            a("a.example.com", "192.0.2.1"),
            negative_ttl=3600,  # only the records' own TTLs (60 s) expire here
        )
        self.locate(locator)
        asked = len(authority.queries)
        clock.advance(59)
        self.locate(locator)
        self.assertEqual(len(authority.queries), asked)
        clock.advance(1)
        self.locate(locator)
        again = authority.queries[asked:]
        self.assertIn((f"_sips._tcp.{HOME}", 33), again)
        self.assertIn(("a.example.com", 1), again)
        self.assertNotIn((HOME, 35), again)  # the missing NAPTR is still known missing

    def test_negative_answers_are_kept_too(self) -> None:
        locator, authority, clock = locator_for(a(HOME, "192.0.2.9", ttl=3600), negative_ttl=30)
        self.locate(locator)
        asked = len(authority.queries)
        # No NAPTR (NODATA, kept for the SOA's negative TTL) and no SRV name (NXDOMAIN
        # without an SOA here, kept for negative_ttl).
        clock.advance(29)
        self.locate(locator)
        self.assertEqual(len(authority.queries), asked)
        clock.advance(1)
        self.locate(locator)
        self.assertGreater(len(authority.queries), asked)
        self.assertNotIn((HOME, 1), authority.queries[asked:])  # the A record is still fresh


def test_cache_forgets_zero_ttl_and_the_least_recently_used() -> None:
    cache: TtlCache[str, int] = TtlCache(Clock(), max_entries=2)
    cache.put("zero", 1, 0)
    assert cache.get("zero") is None
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1
    cache.put("c", 3, 10)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_unknown_transport_is_refused() -> None:
    authority = ZoneAuthority(Zone("example.com", (soa(),)))
    with pytest.raises(ValueError, match="sctp"):
        Locator(authority, Clock(), transports=("sctp",))
