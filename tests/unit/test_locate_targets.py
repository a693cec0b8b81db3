"""`HomeServerTargets.locate`: the failover list a proxy walks, static entries and DNS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config
from homeredirect.config.schema import Config
from homeredirect.director.targets import HomeServerTargets
from homeredirect.locate.interfaces import ILocator
from homeredirect.locate.rfc3263 import HomeServerNotFound, LocatorUnavailable
from homeredirect.locate.target import Target


def config(home_servers: dict[str, Any], locator: dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {
        "server": {"role": "home", "fqdn": "home9.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp", "port": 0}],
        "home_servers": home_servers,
    }
    if locator is not None:
        data["locator"] = locator
    return parse_config(data, "home.toml", Path("/nonexistent"))


@implementer(ILocator)
class TableLocator:
    """Answers from a dict: a list of targets, or an exception to fail with."""

    def __init__(self, table: dict[str, list[Target] | Exception]) -> None:
        self.table = table
        self.asked: list[str] = []

    def locate(self, fqdn: str) -> Deferred[list[Target]]:
        self.asked.append(fqdn)
        answer = self.table.get(fqdn, HomeServerNotFound(fqdn, "not in the table"))
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)


A = Target("home1.example.com", "192.0.2.1", 5061, "tls")
B = Target("home1.example.com", "192.0.2.2", 5061, "tls")


class LocateTests(SynchronousTestCase):
    def test_static_entry_then_backup(self) -> None:
        targets = HomeServerTargets(
            config(
                {
                    "home1.example.com": {"host": "192.0.2.1", "backup": "home2.example.com"},
                    "home2.example.com": {"host": "192.0.2.2", "port": 5062},
                }
            )
        )
        verifyObject(ILocator, targets)
        self.assertEqual(
            self.successResultOf(targets.locate("home1.example.com")),
            [A, Target("home2.example.com", "192.0.2.2", 5062, "tls")],
        )

    def test_static_targets_are_the_same_fresh_list_every_time(self) -> None:
        homes = {
            "home1.example.com": {"host": "192.0.2.1", "backup": "home2.example.com"},
            "home2.example.com": {"host": "192.0.2.2", "port": 5062},
        }
        targets = HomeServerTargets(config(homes))
        first = self.successResultOf(targets.locate("home1.example.com"))
        first.append(B)  # the caller's to keep: nothing cached changes
        second = self.successResultOf(targets.locate("home1.example.com"))
        self.assertEqual(second, [A, Target("home2.example.com", "192.0.2.2", 5062, "tls")])
        self.assertIsNot(first, second)

    def test_a_static_home_with_a_dns_backup_asks_dns_every_time(self) -> None:
        # Only all-static lists are kept; DNS answers expire by their TTL (locate.cache).
        dns = TableLocator({"home2.example.com": [B]})
        homes = {
            "home1.example.com": {"host": "192.0.2.1", "backup": "home2.example.com"},
            "home2.example.com": {"locate": "dns"},
        }
        targets = HomeServerTargets(config(homes), dns)
        for _ in range(2):
            self.assertEqual(self.successResultOf(targets.locate("home1.example.com")), [A, B])
        self.assertEqual(dns.asked, ["home2.example.com"] * 2)

    def test_dns_entry_uses_the_locator(self) -> None:
        dns = TableLocator({"home1.example.com": [A, B]})
        targets = HomeServerTargets(config({"home1.example.com": {"locate": "dns"}}), dns)
        self.assertEqual(self.successResultOf(targets.locate("home1.example.com")), [A, B])
        self.assertEqual(self.successResultOf(targets.locate("home1.example.com")), [A, B])
        self.assertEqual(dns.asked, ["home1.example.com"] * 2)

    def test_default_dns_applies_to_home_servers_without_a_table(self) -> None:
        dns = TableLocator({"home5.example.com": [A]})
        targets = HomeServerTargets(config({}, {"default": "dns"}), dns)
        self.assertEqual(self.successResultOf(targets.locate("home5.example.com")), [A])

    def test_failed_primary_still_gives_the_backup(self) -> None:
        dns = TableLocator({"home1.example.com": LocatorUnavailable("home1.example.com", "x")})
        homes = {
            "home1.example.com": {"locate": "dns", "backup": "home2.example.com"},
            "home2.example.com": {"host": "192.0.2.2"},
        }
        targets = HomeServerTargets(config(homes), dns)
        located = self.successResultOf(targets.locate("home1.example.com"))
        self.assertEqual([t.fqdn for t in located], ["home2.example.com"])

    def test_nothing_located_fails_with_the_primarys_error(self) -> None:
        dns = TableLocator({})
        targets = HomeServerTargets(config({"home1.example.com": {"locate": "dns"}}), dns)
        self.failureResultOf(targets.locate("home1.example.com"), HomeServerNotFound)


def test_locator_and_tls_client_tables_are_read(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "me.pem").write_text("")
    (tmp_path / "me.key").write_text("")
    data: dict[str, Any] = {
        "server": {"role": "home", "fqdn": "home9.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp", "port": 0}],
        "locator": {"nameservers": ["127.0.0.1:5353", "::1", "[::1]:53"], "transports": ["tls"]},
        "tls_client": {"ca": "ca.pem", "certificate": "me.pem", "private_key": "me.key"},
    }
    loaded = parse_config(data, "home.toml", tmp_path)
    assert loaded.locator.nameservers == (("127.0.0.1", 5353), ("::1", 53), ("::1", 53))
    assert loaded.locator.transports == ("tls",)
    assert loaded.tls_client is not None and loaded.tls_client.ca == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    ("table", "value", "message"),
    [
        ("locator", {"nameservers": ["dns.example.com"]}, "[locator].nameservers[1]: expected"),
        ("locator", {"transports": ["sctp"]}, "[locator].transports[1]: expected"),
        ("locator", {"default": "ldap"}, "[locator].default: expected"),
        ("tls_client", {"certificate": "me.pem"}, "[tls_client].private_key: expected"),
    ],
)
def test_bad_locator_and_tls_client_keys_are_named(
    tmp_path: Path, table: str, value: dict[str, Any], message: str
) -> None:
    (tmp_path / "me.pem").write_text("")
    data: dict[str, Any] = {
        "server": {"role": "home", "fqdn": "home9.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp", "port": 0}],
        table: value,
    }
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "home.toml", tmp_path)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ({"require_client_certificate": True}, "[[listen]][1].ca: expected"),
        ({"allowed_peers": ["edge.example.com"]}, "require_client_certificate: expected true"),
        ({"transport": "tcp", "allowed_peers": ["a.example.com"]}, "allowed_peers: expected"),
    ],
)
def test_client_certificate_rules_of_listeners(
    tmp_path: Path, listen: dict[str, Any], message: str
) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    listener = {"transport": "tls", "port": 0, "certificate": "cert.pem", "private_key": "key.pem"}
    if listen.get("transport") == "tcp":
        listener = {"port": 0}
    data: dict[str, Any] = {
        "server": {"role": "home", "fqdn": "home9.example.com", "domains": ["example.com"]},
        "listen": [listener | listen],
    }
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "home.toml", tmp_path)
    assert message in str(raised.value)
