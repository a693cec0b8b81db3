"""`[dns]` and `[[dns.servers]]`: defaults, and one-line errors naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeredirect.config.dns import DnsConfig, DnsServer
from homeredirect.config.errors import ConfigError
from homeredirect.config.load import load_config, parse_config
from homeredirect.config.schema import Config

SOURCE = "director.toml"


def with_dns(dns: Any) -> dict[str, Any]:
    return {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp", "port": 5170}],
        "assignments": {"path": "assignments.csv"},
        "dns": dns,
    }


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    (tmp_path / "assignments.csv").write_text("user,home_server\n")
    return tmp_path


def parse(dns: Any, base_dir: Path) -> Config:
    return parse_config(with_dns(dns), SOURCE, base_dir)


def error_for(dns: Any, base_dir: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(dns, base_dir)
    return str(caught.value)


def test_empty_dns_table_gets_documented_defaults(base_dir: Path) -> None:
    assert parse({}, base_dir).dns == DnsConfig(
        host="127.0.0.1", port=5353, ttl=300, nameserver=None, hostmaster=None, serial=1
    )


def test_config_without_dns_table_has_none(base_dir: Path) -> None:
    data = with_dns({})
    del data["dns"]
    assert parse_config(data, SOURCE, base_dir).dns is None


def test_server_entry_gets_tls_on_5061_and_srv_defaults(base_dir: Path) -> None:
    config = parse({"servers": [{"fqdn": "Director.Example.com"}]}, base_dir)
    assert config.dns is not None
    (server,) = config.dns.servers
    assert server.fqdn == "director.example.com"
    assert dict(server.transports) == {"tls": 5061}
    assert (server.addresses, server.priority, server.weight) == ((), 10, 100)


def test_server_addresses_are_canonical_and_deduplicated(base_dir: Path) -> None:
    config = parse(
        {"servers": [{"fqdn": "d.example.com", "addresses": ["::0:1", "::1", "192.0.2.1"]}]},
        base_dir,
    )
    assert config.dns is not None
    assert config.dns.servers[0].addresses == ("::1", "192.0.2.1")


def test_dns_section_is_read_from_a_toml_file(tmp_path: Path) -> None:
    (tmp_path / "assignments.csv").write_text("user,home_server\n")
    path = tmp_path / "director.toml"
    path.write_text(
        """
[server]
fqdn = "director.example.com"
domains = ["example.com"]
[[listen]]
transport = "udp"
[assignments]
path = "assignments.csv"
[dns]
port = 5176
hostmaster = "noc@example.com"
[[dns.servers]]
fqdn = "director.example.com"
addresses = ["127.0.0.1"]
transports = { tls = 5171, udp = 5170 }
priority = 5
"""
    )
    dns = load_config(path).dns
    assert dns is not None
    assert (dns.port, dns.hostmaster) == (5176, "noc@example.com")
    assert dns.servers == (
        DnsServer(
            fqdn="director.example.com",
            addresses=("127.0.0.1",),
            transports={"tls": 5171, "udp": 5170},
            priority=5,
        ),
    )


@pytest.mark.parametrize(
    ("dns", "message"),
    [
        ({"port": 70000}, "[dns].port: expected an integer from 0 to 65535, got 70000"),
        ({"ttl": -1}, "[dns].ttl: expected an integer from 0 to 2147483647, got -1"),
        ({"nameserver": "ns_1"}, '[dns].nameserver: expected a hostname, got "ns_1"'),
        (
            {"hostmaster": "a.b@example.com"},
            '[dns].hostmaster: expected a mailbox such as "hostmaster@example.com", '
            'got "a.b@example.com"',
        ),
        ({"serial": 0}, "[dns].serial: expected an integer from 1 to 4294967295, got 0"),
        (
            {"servrs": []},
            '[dns].servrs: unknown key; expected one of "servers", "host", "port", "ttl", '
            '"nameserver", "hostmaster", "serial" (did you mean "servers"?)',
        ),
        (
            {"servers": {"fqdn": "d.example.com"}},
            "[[dns.servers]]: expected an array of tables, written [[dns.servers]], got a table",
        ),
        (
            {"servers": ["d.example.com"]},
            '[[dns.servers]][1]: expected a table, got "d.example.com"',
        ),
        ({"servers": [{}]}, "[[dns.servers]][1].fqdn: expected a hostname, but the key is missing"),
        (
            {
                "servers": [
                    {"fqdn": "a.example.com"},
                    {"fqdn": "b.example.com", "addresses": ["1.2.3"]},
                ]
            },
            '[[dns.servers]][2].addresses[1]: expected an IPv4 or IPv6 address, got "1.2.3"',
        ),
        (
            {"servers": [{"fqdn": "d.example.com", "addresses": "127.0.0.1"}]},
            "[[dns.servers]][1].addresses: expected an array of IPv4 or IPv6 addresses, "
            'got "127.0.0.1"',
        ),
        (
            {"servers": [{"fqdn": "d.example.com", "transports": {"sctp": 5060}}]},
            '[[dns.servers]][1].transports.sctp: expected a key "tls", "tcp" or "udp", got "sctp"',
        ),
        (
            {"servers": [{"fqdn": "d.example.com", "transports": {"tls": 0}}]},
            "[[dns.servers]][1].transports.tls: expected a port from 1 to 65535, got 0",
        ),
        (
            {"servers": [{"fqdn": "d.example.com", "transports": {}}]},
            "[[dns.servers]][1].transports: expected a table of ports by transport, "
            "such as { tls = 5061, tcp = 5060 }, got a table",
        ),
        (
            {"servers": [{"fqdn": "d.example.com", "priority": 65536}]},
            "[[dns.servers]][1].priority: expected an integer from 0 to 65535, got 65536",
        ),
        (
            {"servers": [{"fqdn": "d.example.com", "wieght": 1}]},
            '[[dns.servers]][1].wieght: unknown key; expected one of "fqdn", "addresses", '
            '"transports", "priority", "weight" (did you mean "weight"?)',
        ),
    ],
)
def test_invalid_dns_value_is_reported_with_file_and_key(
    dns: dict[str, Any], message: str, base_dir: Path
) -> None:
    assert error_for(dns, base_dir) == f"{SOURCE}: {message}"
