"""Loading director.toml: defaults, path resolution and one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import load_config, parse_config
from homeredirect.config.schema import (
    DEFAULT_USER_AGENT,
    Config,
    FileAssignmentsConfig,
    HomeServer,
    Role,
    Transport,
)

SOURCE = "director.toml"


def minimal(**tables: Any) -> dict[str, Any]:
    """The smallest valid director configuration, with `tables` replacing or adding tables."""
    data: dict[str, Any] = {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp"}],
        "assignments": {"path": "assignments.csv"},
    }
    data.update(tables)
    return data


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    for name in ("assignments.csv", "server.pem", "server.key", "ca.pem"):
        (tmp_path / name).write_text("")
    return tmp_path


def parse(data: dict[str, Any], base_dir: Path) -> Config:
    return parse_config(data, SOURCE, base_dir)


def error_for(data: dict[str, Any], base_dir: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data, base_dir)
    return str(caught.value)


TLS = {"transport": "tls", "certificate": "server.pem", "private_key": "server.key"}


def test_minimal_config_gets_documented_defaults(base_dir: Path) -> None:
    config = parse(minimal(), base_dir)
    assert config.server.role is Role.DIRECTOR
    assert config.server.unknown_domain_status == 404
    assert config.server.retry_after == 30
    assert config.server.user_agent == DEFAULT_USER_AGENT
    assert DEFAULT_USER_AGENT.startswith("homeredirect/")
    (listener,) = config.listeners
    assert (listener.transport, listener.host, listener.port) == (Transport.UDP, "127.0.0.1", 5060)
    assert config.limits.max_message_size == 65536
    assert config.limits.max_connections == 10000
    assert config.limits.idle_timeout == 300.0
    assert config.limits.udp_receive_buffer == config.limits.udp_send_buffer == 4194304
    assert config.policy.name == "via-count"
    assert config.policy.redirect_status == 301
    assert config.policy.redirect_reason == "Redirect request to Home Server"
    assert dict(config.home_servers) == {}


def test_tls_listener_defaults_to_port_5061(base_dir: Path) -> None:
    config = parse(minimal(listen=[TLS]), base_dir)
    assert config.listeners[0].port == 5061


def test_relative_paths_resolve_against_the_config_directory(base_dir: Path) -> None:
    config = parse(minimal(listen=[{**TLS, "ca": "ca.pem"}]), base_dir)
    listener = config.listeners[0]
    assert listener.certificate == base_dir / "server.pem"
    assert listener.private_key == base_dir / "server.key"
    assert listener.ca == base_dir / "ca.pem"
    assert config.assignments == FileAssignmentsConfig(path=base_dir / "assignments.csv")


def test_absolute_paths_are_kept(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "users.csv"
    elsewhere.write_text("")
    config = parse(minimal(assignments={"path": str(elsewhere)}), base_dir)
    assert config.assignments is not None
    assert config.assignments.path == elsewhere


def test_domains_and_fqdns_are_lowercased(base_dir: Path) -> None:
    server = {"fqdn": "Director.Example.COM", "domains": ["Example.COM", "example.com"]}
    homes = {"Home1.Example.com": {"backup": "HOME2.example.com"}}
    config = parse(minimal(server=server, home_servers=homes), base_dir)
    assert config.server.fqdn == "director.example.com"
    assert config.server.domains == ("example.com",)
    assert list(config.home_servers) == ["home1.example.com"]
    assert config.home_servers["home1.example.com"].backup == "home2.example.com"


def test_home_server_defaults_follow_transport(base_dir: Path) -> None:
    homes = {"home1.example.com": {}, "home2.example.com": {"transport": "udp", "host": "::1"}}
    config = parse(minimal(home_servers=homes), base_dir)
    assert config.home_servers["home1.example.com"] == HomeServer(
        fqdn="home1.example.com", host="home1.example.com", port=5061, transport=Transport.TLS
    )
    home2 = config.home_servers["home2.example.com"]
    assert (home2.host, home2.port, home2.transport) == ("::1", 5060, Transport.UDP)


def test_302_gets_its_own_default_reason(base_dir: Path) -> None:
    config = parse(minimal(policy={"redirect_status": 302}), base_dir)
    assert config.policy.redirect_reason == "Moved Temporarily"


def test_policy_accepts_an_import_path(base_dir: Path) -> None:
    config = parse(minimal(policy={"name": "mycompany.routing:StickyPolicy"}), base_dir)
    assert config.policy.name == "mycompany.routing:StickyPolicy"
    assert not config.policy.is_builtin


def test_integer_idle_timeout_becomes_seconds(base_dir: Path) -> None:
    config = parse(minimal(limits={"idle_timeout": 30}), base_dir)
    assert config.limits.idle_timeout == 30.0
    assert isinstance(config.limits.idle_timeout, float)


def test_port_zero_is_allowed_for_tests(base_dir: Path) -> None:
    config = parse(minimal(listen=[{"transport": "tcp", "port": 0}]), base_dir)
    assert config.listeners[0].port == 0


def test_home_role_needs_no_assignments(base_dir: Path) -> None:
    data = minimal(server={"role": "home", "fqdn": "home1.example.com", "domains": ["example.com"]})
    del data["assignments"]
    assert parse(data, base_dir).assignments is None


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (
            {"listen": [{"transport": "udp"}, {"transport": "tcp", "port": "abc"}]},
            'director.toml: [[listen]][2].port: expected an integer from 0 to 65535, got "abc"',
        ),
        (
            {"listen": [{"transport": "udp", "port": 70000}]},
            "director.toml: [[listen]][1].port: expected an integer from 0 to 65535, got 70000",
        ),
        (
            {"server": {"role": "proxy", "fqdn": "d.example.com", "domains": ["example.com"]}},
            'director.toml: [server].role: expected one of "director", "home", "edge", got "proxy"',
        ),
        (
            {"server": {"domains": ["example.com"]}},
            "director.toml: [server].fqdn: expected a hostname, but the key is missing",
        ),
        (
            {"server": {"fqdn": "director example.com", "domains": ["example.com"]}},
            'director.toml: [server].fqdn: expected a hostname, got "director example.com"',
        ),
        (
            {"server": {"fqdn": "d.example.com", "domains": []}},
            "director.toml: [server].domains: expected a non-empty array of domain names, got []",
        ),
        (
            {"server": {"fqdn": "d.example.com", "domains": ["example.com", "bad_domain"]}},
            'director.toml: [server].domains[2]: expected a domain name, got "bad_domain"',
        ),
        (
            {"server": {"fqdn": "d.example.com", "domains": "example.com"}},
            "director.toml: [server].domains: expected a non-empty array of domain names, "
            'got "example.com"',
        ),
        (
            {
                "server": {
                    "fqdn": "d.example.com",
                    "domains": ["example.com"],
                    "unknown_domain_status": 500,
                }
            },
            "director.toml: [server].unknown_domain_status: expected one of 404, 403, got 500",
        ),
        (
            {"server": {"fqdn": "d.example.com", "domains": ["example.com"], "retry_after": -1}},
            "director.toml: [server].retry_after: expected an integer from 0 to 86400, got -1",
        ),
        (
            {
                "server": {
                    "fqdn": "d.example.com",
                    "domains": ["example.com"],
                    "user_agent": "x\r\nVia: evil",
                }
            },
            "director.toml: [server].user_agent: expected printable ASCII text without "
            'surrounding spaces, got "x\\r\\nVia: evil"',
        ),
        (
            {"listen": [{"transport": "sctp"}]},
            'director.toml: [[listen]][1].transport: expected one of "udp", "tcp", "tls", '
            'got "sctp"',
        ),
        (
            {"listen": [{"port": 5060}]},
            "director.toml: [[listen]][1].transport: expected one of "
            '"udp", "tcp", "tls", but the key is missing',
        ),
        (
            {"listen": [{"transport": "udp", "host": "not a host"}]},
            "director.toml: [[listen]][1].host: expected an IPv4 or IPv6 address or a hostname, "
            'got "not a host"',
        ),
        (
            {"listen": [{"transport": "tls", "private_key": "server.key"}]},
            'director.toml: [[listen]][1].certificate: expected a file path (required on a "tls" '
            "listener), got nothing",
        ),
        (
            {"listen": [{"transport": "tcp", "request_client_certificate": True}]},
            "director.toml: [[listen]][1].request_client_certificate: expected nothing on a "
            '"tcp" listener (only "tls" takes it), got true',
        ),
        (
            {"listen": [{**TLS, "request_client_certificate": "yes"}]},
            "director.toml: [[listen]][1].request_client_certificate: expected true or false, "
            'got "yes"',
        ),
        (
            {"listen": [{**TLS, "certificate": 5}]},
            "director.toml: [[listen]][1].certificate: expected a file path, got 5",
        ),
        (
            {"listen": []},
            "director.toml: [[listen]]: expected at least one [[listen]] table, but there is none",
        ),
        (
            {"listen": {"transport": "udp"}},
            "director.toml: [[listen]]: expected an array of tables, written [[listen]], "
            "got a table",
        ),
        (
            {"listen": [{"transport": "udp", "port": 5070}, {"transport": "udp", "port": 5070}]},
            "director.toml: [[listen]][2]: expected an address not already bound by listener 1, "
            'got "udp 127.0.0.1 port 5070"',
        ),
        (
            {"listen": [{"transport": "tcp", "port": 5070}, {**TLS, "port": 5070}]},
            "director.toml: [[listen]][2]: expected an address not already bound by listener 1, "
            'got "tls 127.0.0.1 port 5070"',
        ),
        (
            {"limits": {"max_connections": 0}},
            "director.toml: [limits].max_connections: expected a positive integer, got 0",
        ),
        (
            {"limits": {"max_message_size": True}},
            "director.toml: [limits].max_message_size: expected a positive integer, got true",
        ),
        (
            {"limits": {"idle_timeout": "5m"}},
            'director.toml: [limits].idle_timeout: expected a positive number of seconds, got "5m"',
        ),
        (
            {"limits": {"idle_timeout": float("inf")}},
            "director.toml: [limits].idle_timeout: expected a positive number of seconds, got inf",
        ),
        (
            {"assignments": {"backend": "mongodb", "path": "x"}},
            'director.toml: [assignments].backend: expected one of "file", "sql", "redis", '
            '"ldap", got "mongodb"',
        ),
        (
            {"assignments": {}},
            "director.toml: [assignments].path: expected a file path, but the key is missing",
        ),
        (
            {"policy": {"name": "viacount"}},
            'director.toml: [policy].name: expected one of "via-count", "always-redirect", '
            '"always-proxy", "edge-trust" or an import path "package.module:Class", '
            'got "viacount"',
        ),
        (
            {"policy": {"redirect_status": 303}},
            "director.toml: [policy].redirect_status: expected one of 301, 302, got 303",
        ),
        (
            {"home_servers": {"home1.example.com": {"port": 0}}},
            'director.toml: [home_servers."home1.example.com"].port: expected an integer '
            "from 1 to 65535, got 0",
        ),
        (
            {"home_servers": {"home1.example.com": {"backup": "home1.example.com"}}},
            'director.toml: [home_servers."home1.example.com"].backup: expected the FQDN of '
            'another home server, got "home1.example.com"',
        ),
        (
            {"home_servers": {"home 1": {}}},
            'director.toml: [home_servers."home 1"]: expected the home server\'s FQDN as the '
            'table name, got "home 1"',
        ),
        (
            {"home_servers": {"home1.example.com": {}, "HOME1.example.com": {}}},
            'director.toml: [home_servers."HOME1.example.com"]: expected each home server once, '
            "but home1.example.com is already configured",
        ),
        (
            {"home_servers": {"home1.example.com": "tls"}},
            'director.toml: [home_servers."home1.example.com"]: expected a table, got "tls"',
        ),
        (
            {"server": "director"},
            'director.toml: [server]: expected a table, got "director"',
        ),
    ],
)
def test_invalid_values_name_file_key_and_expectation(
    base_dir: Path, tables: dict[str, Any], message: str
) -> None:
    assert error_for(minimal(**tables), base_dir) == message


def auth(**keys: Any) -> dict[str, Any]:
    """A valid Digest `[auth]` table with `keys` replacing or adding keys."""
    return {"realm": "example.com", "credentials": "users.csv", **keys}


def test_valid_auth_table_loads_with_its_values(base_dir: Path) -> None:
    (base_dir / "users.csv").write_text("")
    (base_dir / "nonce.secret").write_text("")
    table = auth(nonce_secret_file="nonce.secret", max_failures=3, failure_window=30)
    loaded = parse(minimal(auth=table | {"required": True}), base_dir).auth
    assert loaded is not None
    assert loaded.nonce_secret_file == base_dir / "nonce.secret"
    assert (loaded.max_failures, loaded.failure_window, loaded.required) == (3, 30.0, True)
    assert (loaded.realm, loaded.schemes) == ("example.com", ("digest",))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            auth(max_failures=0),
            "director.toml: [auth].max_failures: expected a positive integer, got 0",
        ),
        (
            auth(max_failures="ten"),
            'director.toml: [auth].max_failures: expected a positive integer, got "ten"',
        ),
        (
            auth(failure_window=-0.5),
            "director.toml: [auth].failure_window: expected a positive number of seconds, got -0.5",
        ),
        (
            auth(required="yes"),
            'director.toml: [auth].required: expected true or false, got "yes"',
        ),
        (
            auth(required=1),
            "director.toml: [auth].required: expected true or false, got 1",
        ),
        (
            auth(realm=""),
            "director.toml: [auth].realm: expected printable ASCII text without surrounding "
            'spaces, got ""',
        ),
        (
            auth(schemes=["digest", "basic"]),
            "director.toml: [auth].schemes[2]: expected one of digest, ntlm, kerberos, once, "
            'got "basic"',
        ),
    ],
)
def test_invalid_auth_values_name_file_key_and_expectation(
    base_dir: Path, table: dict[str, Any], message: str
) -> None:
    (base_dir / "users.csv").write_text("")
    assert error_for(minimal(auth=table), base_dir) == message


def test_missing_nonce_secret_file_names_the_key_and_the_resolved_path(base_dir: Path) -> None:
    (base_dir / "users.csv").write_text("")
    config_file = base_dir / "director.toml"
    config_file.write_text(
        '[server]\nfqdn = "director.example.com"\ndomains = ["example.com"]\n'
        '[[listen]]\ntransport = "udp"\n[assignments]\npath = "assignments.csv"\n'
        '[auth]\nrealm = "example.com"\ncredentials = "users.csv"\n'
        'nonce_secret_file = "secrets/nonce.key"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value) == (
        f'{config_file}: [auth].nonce_secret_file: expected an existing file, got "secrets/'
        f'nonce.key" (resolved to {base_dir / "secrets/nonce.key"})'
    )


def test_missing_server_table_is_an_error(base_dir: Path) -> None:
    data = minimal()
    del data["server"]
    assert error_for(data, base_dir) == (
        "director.toml: [server]: expected a [server] table, but there is none"
    )


def test_director_without_assignments_is_an_error(base_dir: Path) -> None:
    data = minimal()
    del data["assignments"]
    assert error_for(data, base_dir) == (
        'director.toml: [assignments]: expected an assignments source for role "director", '
        "got nothing"
    )


def test_unknown_key_is_named_with_a_suggestion(base_dir: Path) -> None:
    data = minimal(server={"fqdn": "d.example.com", "domains": ["example.com"], "rol": "home"})
    assert error_for(data, base_dir) == (
        'director.toml: [server].rol: unknown key; expected one of "role", "fqdn", "domains", '
        '"unknown_domain_status", "retry_after", "user_agent" (did you mean "role"?)'
    )


def test_unknown_key_is_reported_before_the_missing_key_it_misspells(base_dir: Path) -> None:
    data = minimal(server={"fqnd": "d.example.com", "domains": ["example.com"]})
    assert error_for(data, base_dir).startswith(
        "director.toml: [server].fqnd: unknown key; expected one of"
    )


def test_unknown_table_is_named(base_dir: Path) -> None:
    data = minimal(limit={"max_connections": 5})
    assert error_for(data, base_dir) == (
        "director.toml: [limit]: unknown key; expected one of [server], [[listen]], [limits], "
        "[log], [assignments], [policy], [cache], [location], [registrar], [proxy], [dns], "
        '[auth], [locator], [tls_client], [edge], [home_servers] (did you mean "limits"?)'
    )


def test_unknown_assignments_key_lists_backend_as_known(base_dir: Path) -> None:
    data = minimal(assignments={"path": "assignments.csv", "pth": "x"})
    assert error_for(data, base_dir) == (
        'director.toml: [assignments].pth: unknown key; expected one of "backend", "path" '
        '(did you mean "path"?)'
    )


def test_unquoted_dotted_home_server_name_gets_a_hint(base_dir: Path) -> None:
    # What TOML makes of [home_servers.home1.example.com] port = 5062
    data = minimal(home_servers={"home1": {"example": {"com": {"port": 5062}}}})
    assert error_for(data, base_dir) == (
        "director.toml: [home_servers.home1].example: expected a key of the home server, got a "
        'table; an FQDN with dots must be quoted: [home_servers."home1.example.com"]'
    )


def test_missing_certificate_file_names_the_resolved_path(base_dir: Path) -> None:
    data = minimal(listen=[{**TLS, "certificate": "../run/server.pem"}])
    resolved = base_dir / "../run/server.pem"
    assert error_for(data, base_dir) == (
        'director.toml: [[listen]][1].certificate: expected an existing file, got "../run/'
        f'server.pem" (resolved to {resolved})'
    )


def test_missing_assignments_file_is_an_error(base_dir: Path) -> None:
    (base_dir / "assignments.csv").unlink()
    assert error_for(minimal(), base_dir).startswith(
        'director.toml: [assignments].path: expected an existing file, got "assignments.csv"'
    )


def test_load_config_reads_a_file_relative_to_its_directory(base_dir: Path) -> None:
    config_file = base_dir / "director.toml"
    config_file.write_text(
        '[server]\nfqdn = "director.example.com"\ndomains = ["example.com"]\n'
        '[[listen]]\ntransport = "tls"\ncertificate = "server.pem"\nprivate_key = "server.key"\n'
        '[assignments]\npath = "assignments.csv"\n'
    )
    config = load_config(config_file)
    assert config.listeners[0].certificate == base_dir / "server.pem"


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    config_file = tmp_path / "director.toml"
    config_file.write_text('[server]\nfqdn = "a"\nfqdn = "b"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value) == (
        f"{config_file}: line 3, column 11: invalid TOML: Cannot overwrite a value"
    )


def test_toml_error_at_end_of_file_says_so(tmp_path: Path) -> None:
    config_file = tmp_path / "director.toml"
    config_file.write_text("[server]\nfqdn = ")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value) == f"{config_file}: end of file: invalid TOML: Invalid value"


def test_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml")
    assert str(caught.value) == (
        f"{tmp_path / 'missing.toml'}: cannot read the file: No such file or directory"
    )


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    config_file = tmp_path / "director.toml"
    config_file.write_bytes(b'[server]\nfqdn = "\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value) == f"{config_file}: expected UTF-8 text, got byte offset 17"
