"""`[assignments] backend = "ldap"`: defaults, and one precise error per bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config
from homeredirect.config.schema import Config, LdapAssignmentsConfig

SOURCE = "director.toml"
LDAP = {"backend": "ldap", "uris": ["ldap://127.0.0.1:3890"], "base_dn": "dc=example,dc=com"}


def config_with(base_dir: Path, **keys: Any) -> Config:
    data = {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp"}],
        "assignments": LDAP | keys,
    }
    return parse_config(data, SOURCE, base_dir)


def ldap_config(base_dir: Path, **keys: Any) -> LdapAssignmentsConfig:
    assignments = config_with(base_dir, **keys).assignments
    assert isinstance(assignments, LdapAssignmentsConfig)
    return assignments


def error_for(base_dir: Path, **keys: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        config_with(base_dir, **keys)
    return str(caught.value)


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    for name in ("ca.pem", "director.keytab"):
        (tmp_path / name).write_text("")
    return tmp_path


def test_ldap_defaults_are_the_documented_ones(base_dir: Path) -> None:
    config = ldap_config(base_dir)
    assert config.uris == ("ldap://127.0.0.1:3890",)
    assert (config.preset, config.pool_fqdn_attribute) == ("ad", "dNSHostName")
    assert (config.timeout, config.page_size, config.pool_size) == (5.0, 500, 4)
    assert (config.size_limit, config.pool_base_dn) == (0, None)
    assert (config.reconnect_backoff, config.reconnect_backoff_max) == (0.5, 30.0)
    assert (config.starttls, config.ca, config.bind_dn, config.sasl_mechanism) == (
        False,
        None,
        None,
        None,
    )


def test_ldap_new_keys_are_read(base_dir: Path) -> None:
    config = ldap_config(
        base_dir,
        size_limit=20000,
        reconnect_backoff=1,
        reconnect_backoff_max=60,
        pool_base_dn="CN=Pools,CN=RTC Service,CN=Services,CN=Configuration,dc=example,dc=com",
        ca="ca.pem",
        starttls=True,
    )
    assert config.size_limit == 20000
    assert (config.reconnect_backoff, config.reconnect_backoff_max) == (1.0, 60.0)
    assert config.pool_base_dn is not None and config.pool_base_dn.startswith("CN=Pools")
    assert config.ca == base_dir / "ca.pem"


def test_ldap_gssapi_with_keytab_is_accepted(base_dir: Path) -> None:
    config = ldap_config(base_dir, sasl_mechanism="GSSAPI", keytab="director.keytab")
    assert config.keytab == base_dir / "director.keytab"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"size_limit": -1},
            "[assignments].size_limit: expected an integer of at least 0, got -1",
        ),
        (
            {"reconnect_backoff": 0},
            "[assignments].reconnect_backoff: expected a positive number of seconds, got 0",
        ),
        (
            {"reconnect_backoff": 5, "reconnect_backoff_max": 1},
            "[assignments].reconnect_backoff_max: expected at least reconnect_backoff (5), got 1.0",
        ),
        (
            {"uris": ["ldaps://dc1.example.com"], "starttls": True},
            "[assignments].starttls: expected false with an ldaps:// URI (already TLS), got true",
        ),
        (
            {"keytab": "director.keytab"},
            '[assignments].keytab: expected nothing without sasl_mechanism = "GSSAPI", got "',
        ),
        (
            {"pool_base_dn": ""},
            '[assignments].pool_base_dn: expected a distinguished name, got ""',
        ),
        (
            {"uris": ["http://dc1"]},
            '[assignments].uris[1]: expected an ldap://, ldaps:// or ldapi:// URI, got "http://dc1"',
        ),
        (
            {"preset": "generic", "home_attribute": "sipHomeServer"},
            '[assignments].filter: expected a value (required with preset = "generic")',
        ),
        (
            {"sasl_mechanism": "PLAIN"},
            '[assignments].sasl_mechanism: expected "GSSAPI", got "PLAIN"',
        ),
    ],
)
def test_ldap_bad_key_is_named_with_what_was_expected(
    base_dir: Path, keys: dict[str, Any], message: str
) -> None:
    assert f"{SOURCE}: {message}" in error_for(base_dir, **keys)
