"""The directory service's records as a pure function of the configuration, and the zone
file text that `homeredirect zone` prints for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.names import dns
from twisted.names.authority import BindAuthority

from homeredirect.config.load import parse_config
from homeredirect.config.schema import Config
from homeredirect.dns.records import (
    SOA_EXPIRE,
    SOA_REFRESH,
    SOA_RETRY,
    AddressRecord,
    CannotPublish,
    NaptrRecord,
    NsRecord,
    SoaRecord,
    SrvRecord,
    Zone,
    zone_of,
    zones_for,
)
from homeredirect.dns.zonefile import render_zones

LISTENERS = [
    {"transport": "udp", "port": 5170},
    {"transport": "tcp", "port": 5170},
    {"transport": "tls", "port": 5171, "certificate": "cert.pem", "private_key": "cert.pem"},
]


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    (tmp_path / "assignments.csv").write_text("user,home_server\n")
    (tmp_path / "cert.pem").write_text("")
    return tmp_path


def config(base_dir: Path, **tables: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": LISTENERS,
        "assignments": {"path": "assignments.csv"},
        "dns": {},
    }
    data.update(tables)
    return parse_config(data, "director.toml", base_dir)


def records(zone: Zone, kind: type[Any], name: str | None = None) -> list[Any]:
    return [r for r in zone.records if isinstance(r, kind) and (name is None or r.name == name)]


def srv_targets(zone: Zone, name: str) -> list[tuple[int, int, int, str]]:
    return [(r.priority, r.weight, r.port, r.target) for r in records(zone, SrvRecord, name)]


def test_default_publishes_this_server_as_its_listeners_offer_it(base_dir: Path) -> None:
    (zone,) = zones_for(config(base_dir))
    assert zone.origin == "example.com"
    tls = [(10, 100, 5171, "director.example.com")]
    tcp_udp = [(10, 100, 5170, "director.example.com")]
    assert srv_targets(zone, "_sipinternaltls._tcp.example.com") == tls
    assert srv_targets(zone, "_sip._tls.example.com") == tls
    assert srv_targets(zone, "_sips._tcp.example.com") == tls
    assert srv_targets(zone, "_sipinternal._tcp.example.com") == tcp_udp
    assert srv_targets(zone, "_sip._tcp.example.com") == tcp_udp
    assert srv_targets(zone, "_sip._udp.example.com") == tcp_udp
    assert records(zone, AddressRecord) == [
        AddressRecord(name="director.example.com", ttl=300, address="127.0.0.1")
    ]


def test_srv_names_are_in_the_order_clients_ask_them(base_dir: Path) -> None:
    (zone,) = zones_for(config(base_dir))
    names = list(dict.fromkeys(r.name for r in records(zone, SrvRecord)))
    assert names == [
        "_sipinternaltls._tcp.example.com",
        "_sipinternal._tcp.example.com",
        "_sip._tls.example.com",
        "_sips._tcp.example.com",
        "_sip._tcp.example.com",
        "_sip._udp.example.com",
    ]


def test_naptr_prefers_sips_then_tcp_then_udp(base_dir: Path) -> None:
    (zone,) = zones_for(config(base_dir))
    naptrs = records(zone, NaptrRecord, "example.com")
    assert [
        (r.order, r.preference, r.flags, r.service, r.regexp, r.replacement) for r in naptrs
    ] == [
        (50, 50, "s", "SIPS+D2T", "", "_sips._tcp.example.com"),
        (90, 50, "s", "SIP+D2T", "", "_sip._tcp.example.com"),
        (100, 50, "s", "SIP+D2U", "", "_sip._udp.example.com"),
    ]


def test_only_offered_transports_get_records(base_dir: Path) -> None:
    (zone,) = zones_for(config(base_dir, listen=[{"transport": "udp", "port": 5170}]))
    assert [r.service for r in records(zone, NaptrRecord)] == ["SIP+D2U"]
    assert {r.name for r in records(zone, SrvRecord)} == {"_sip._udp.example.com"}


def test_zone_opens_with_soa_and_ns(base_dir: Path) -> None:
    dns_table = {
        "ttl": 60,
        "serial": 7,
        "hostmaster": "noc@example.net",
        "nameserver": "ns.example.net",
    }
    (zone,) = zones_for(config(base_dir, dns=dns_table))
    assert zone.records[:2] == (
        SoaRecord(
            name="example.com",
            ttl=60,
            mname="ns.example.net",
            rname="noc.example.net",
            serial=7,
            refresh=SOA_REFRESH,
            retry=SOA_RETRY,
            expire=SOA_EXPIRE,
            minimum=60,
        ),
        NsRecord(name="example.com", ttl=60, target="ns.example.net"),
    )
    assert zone.soa is zone.records[0]


def test_each_domain_is_its_own_zone_with_default_hostmaster(base_dir: Path) -> None:
    server = {"fqdn": "director.example.com", "domains": ["example.com", "example.org"]}
    com, org = zones_for(config(base_dir, server=server))
    assert (com.origin, com.soa.rname) == ("example.com", "hostmaster.example.com")
    assert (org.origin, org.soa.rname) == ("example.org", "hostmaster.example.org")
    assert srv_targets(org, "_sip._tls.example.org") == [(10, 100, 5171, "director.example.com")]
    # The director's address belongs in its own zone only.
    assert records(org, AddressRecord) == []


def test_configured_servers_are_listed_by_priority_with_both_address_families(
    base_dir: Path,
) -> None:
    servers = [
        {"fqdn": "backup.example.com", "addresses": ["192.0.2.2"], "priority": 20, "weight": 0},
        {
            "fqdn": "director.example.com",
            "addresses": ["192.0.2.1", "2001:db8::1"],
            "transports": {"tls": 443, "tcp": 5060},
            "priority": 10,
            "weight": 50,
        },
    ]
    (zone,) = zones_for(config(base_dir, dns={"servers": servers}))
    assert srv_targets(zone, "_sipinternaltls._tcp.example.com") == [
        (10, 50, 443, "director.example.com"),
        (20, 0, 5061, "backup.example.com"),
    ]
    assert srv_targets(zone, "_sip._tcp.example.com") == [(10, 50, 5060, "director.example.com")]
    assert [(r.name, r.type, r.address) for r in records(zone, AddressRecord)] == [
        ("backup.example.com", "A", "192.0.2.2"),
        ("director.example.com", "A", "192.0.2.1"),
        ("director.example.com", "AAAA", "2001:db8::1"),
    ]


def test_home_servers_with_an_address_get_a_record(base_dir: Path) -> None:
    homes = {
        "home1.example.com": {"host": "127.0.0.1", "port": 5173},
        "home2.example.com": {"host": "::1"},
        "home3.example.com": {"host": "home3.internal.example.net"},
        "home4.example.net": {"host": "192.0.2.4"},
    }
    (zone,) = zones_for(config(base_dir, home_servers=homes))
    assert [(r.name, r.address) for r in records(zone, AddressRecord)] == [
        ("director.example.com", "127.0.0.1"),
        ("home1.example.com", "127.0.0.1"),
        ("home2.example.com", "::1"),
    ]


def test_server_outside_our_zones_is_a_target_without_addresses(base_dir: Path) -> None:
    servers = [{"fqdn": "sip.example.net"}]
    (zone,) = zones_for(config(base_dir, dns={"servers": servers, "nameserver": "ns.example.net"}))
    assert srv_targets(zone, "_sip._tls.example.com") == [(10, 100, 5061, "sip.example.net")]
    assert records(zone, AddressRecord) == []


def test_nameserver_inside_the_zone_gets_the_dns_host_address(base_dir: Path) -> None:
    dns_table = {"nameserver": "ns.example.com", "host": "192.0.2.53"}
    (zone,) = zones_for(config(base_dir, dns=dns_table))
    assert AddressRecord(name="ns.example.com", ttl=300, address="192.0.2.53") in zone.records


@pytest.mark.parametrize(
    ("tables", "location", "problem"),
    [
        (
            {"listen": [{"transport": "udp", "port": 0}]},
            "[[listen]][1].port",
            "a fixed port to publish in DNS, or [[dns.servers]] entries",
        ),
        (
            {"listen": [{"transport": "udp", "host": "0.0.0.0", "port": 5170}]},
            "[[listen]]",
            "a host that is an IP address clients can reach",
        ),
        (
            {"dns": {"servers": [{"fqdn": "sip.example.com"}]}},
            "[[dns.servers]][1].addresses",
            "at least one IPv4 or IPv6 address: sip.example.com is inside the zone example.com",
        ),
        (
            {"dns": {"servers": [{"fqdn": "sip.example.net", "addresses": ["192.0.2.1"]}]}},
            "[[dns.servers]][1].addresses",
            "no addresses for sip.example.net, which is inside none of [server].domains",
        ),
        (
            {"dns": {"nameserver": "ns.example.com", "host": "::"}},
            "[dns].nameserver",
            "a name server whose address is known: ns.example.com is inside the zone",
        ),
    ],
)
def test_tables_that_cannot_be_published_together_name_the_key(
    base_dir: Path, tables: dict[str, Any], location: str, problem: str
) -> None:
    with pytest.raises(CannotPublish) as caught:
        zones_for(config(base_dir, **tables))
    assert caught.value.location == location
    assert caught.value.problem.startswith("expected " + problem)


def test_zone_of_picks_the_most_specific_domain() -> None:
    domains = ["example.com", "eu.example.com"]
    assert zone_of("sip.eu.example.com", domains) == "eu.example.com"
    assert zone_of("example.com", domains) == "example.com"
    assert zone_of("badexample.com", domains) is None


def bind_records(text: str, directory: Path) -> dict[bytes, list[Any]]:
    """Parse zone text with twisted.names's BIND loader; NAPTR strings keep their quotes."""
    path = directory / "zone"
    path.write_text(text)
    return BindAuthority(str(path)).records  # type: ignore[no-any-return]


def canonical(record: Any) -> tuple[Any, ...]:
    """A twisted.names record as comparable values: unquoted strings, names without dots."""
    values = []
    for attribute in record.compareAttributes:
        value = getattr(record, attribute)
        if isinstance(value, dns.Name | dns.Charstr):
            value = value.name if isinstance(value, dns.Name) else value.string
        if isinstance(value, bytes):
            value = value.strip(b'"').rstrip(b".").lower()
        values.append(value)
    return (record.TYPE, *values)


def test_rendered_zone_loads_back_as_the_same_records(base_dir: Path, tmp_path: Path) -> None:
    from homeredirect.dns.server import ZoneAuthority

    server = {"fqdn": "director.example.com", "domains": ["example.com", "example.org"]}
    homes = {"home1.example.com": {"host": "::1"}}
    zones = zones_for(config(base_dir, server=server, home_servers=homes))
    text = render_zones(zones, "heading line\n\nafter a blank")
    assert text.startswith("; heading line\n;\n; after a blank\n\n$ORIGIN example.com.\n$TTL 300\n")
    parsed = bind_records(text, tmp_path)
    expected: dict[bytes, list[Any]] = {}
    for zone in zones:
        for name, payloads in ZoneAuthority(zone).records.items():
            expected.setdefault(name, []).extend(payloads)
    assert {n: sorted(map(canonical, rs)) for n, rs in parsed.items()} == {
        n: sorted(map(canonical, rs)) for n, rs in expected.items()
    }
    assert len(parsed) == 16  # two apexes, twelve SRV names, director and home1


def test_zone_authority_provides_iresolver(base_dir: Path) -> None:
    from twisted.internet.interfaces import IResolver
    from zope.interface.verify import verifyObject

    from homeredirect.dns.server import ZoneAuthority

    (zone,) = zones_for(config(base_dir))
    assert verifyObject(IResolver, ZoneAuthority(zone))
