"""The configuration value types check themselves when built, for callers that skip the loader."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from homeredirect.config.errors import InvalidField, describe_value
from homeredirect.config.schema import (
    Config,
    FileAssignmentsConfig,
    HomeServer,
    ListenerConfig,
    PolicyConfig,
    ServerConfig,
    Transport,
    default_port,
)


def config(**home_servers: HomeServer) -> Config:
    return Config(
        server=ServerConfig(fqdn="director.example.com", domains=["example.com"]),
        listeners=[ListenerConfig(transport="udp")],
        assignments=FileAssignmentsConfig(path=Path("assignments.csv")),
        home_servers={home.fqdn: home for home in home_servers.values()},
    )


def test_home_server_returns_the_configured_entry() -> None:
    home1 = HomeServer(fqdn="home1.example.com", host="192.0.2.1", backup="home2.example.com")
    assert config(home1=home1).home_server("home1.example.com") is home1


def test_home_server_lookup_ignores_case() -> None:
    home1 = HomeServer(fqdn="home1.example.com", port=5062)
    assert config(home1=home1).home_server("HOME1.Example.com") is home1


def test_unconfigured_home_server_gets_tls_5061_at_its_fqdn() -> None:
    assert config().home_server("Home9.example.com") == HomeServer(
        fqdn="home9.example.com",
        host="home9.example.com",
        port=5061,
        transport=Transport.TLS,
        backup=None,
    )


def test_home_server_with_a_bad_fqdn_is_refused() -> None:
    with pytest.raises(InvalidField) as caught:
        config().home_server("not a host")
    assert str(caught.value) == 'fqdn: expected a hostname, got "not a host"'


def test_backup_is_looked_up_like_any_home_server() -> None:
    home1 = HomeServer(fqdn="home1.example.com", backup="home2.example.com")
    loaded = config(home1=home1)
    backup = loaded.home_server(loaded.home_server("home1.example.com").backup or "")
    assert (backup.fqdn, backup.port) == ("home2.example.com", 5061)


def test_config_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config().server = config().server  # type: ignore[misc]
    with pytest.raises(TypeError):
        config().home_servers["x"] = HomeServer(fqdn="x")  # type: ignore[index]


def test_config_is_hashable_without_its_home_servers() -> None:
    assert hash(config()) == hash(config())


def test_home_servers_must_be_keyed_by_their_fqdn() -> None:
    with pytest.raises(InvalidField):
        Config(
            server=ServerConfig(fqdn="director.example.com", domains=["example.com"]),
            listeners=[ListenerConfig(transport="udp")],
            assignments=FileAssignmentsConfig(path=Path("a.csv")),
            home_servers={"home2.example.com": HomeServer(fqdn="home1.example.com")},
        )


def test_listener_host_is_canonicalised() -> None:
    assert ListenerConfig(transport="udp", host="[::1]").host == "::1"
    assert ListenerConfig(transport="udp", host="Sip.Example.COM").host == "sip.example.com"


def test_transport_may_be_given_as_enum_or_text() -> None:
    assert ListenerConfig(transport=Transport.TCP) == ListenerConfig(transport="tcp")


@pytest.mark.parametrize(("transport", "port"), [("udp", 5060), ("tcp", 5060), ("tls", 5061)])
def test_default_port_follows_rfc_3261(transport: str, port: int) -> None:
    assert default_port(Transport(transport)) == port


def test_policy_reason_is_kept_when_given() -> None:
    policy = PolicyConfig(redirect_status=302, redirect_reason="Go Home")
    assert policy.redirect_reason == "Go Home"


def test_invalid_field_reads_as_key_and_expectation() -> None:
    error = InvalidField("port", "an integer from 0 to 65535", "abc")
    assert str(error) == 'port: expected an integer from 0 to 65535, got "abc"'
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("abc", '"abc"'),
        (5, "5"),
        (1.5, "1.5"),
        (True, "true"),
        (None, "nothing"),
        ({"a": 1}, "a table"),
        (["a", 1], '["a", 1]'),
        (Transport.TLS, '"tls"'),
        ("x" * 100, '"' + "x" * 56 + "..."),
        (list(range(100)), "an array"),
    ],
)
def test_values_are_described_as_toml_would_write_them(value: object, shown: str) -> None:
    assert describe_value(value) == shown
