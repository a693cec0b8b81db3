"""Read a TOML configuration file into a validated `Config`.

The value types in `homeredirect.config.schema` know what each key accepts; this module
knows the file: it walks the tables, rejects keys it does not know (a typo must not silently
leave a default in force), resolves relative paths against the file's directory, checks that
referenced files exist, and turns every problem into one `ConfigError` naming the file and
the key path.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
from attrs import NOTHING, AttrsInstance, frozen

from homeredirect.config.dns import DnsServer
from homeredirect.config.edge import EdgeConfig
from homeredirect.config.errors import ConfigError, InvalidField, describe_value
from homeredirect.config.locator import LocatorConfig
from homeredirect.config.schema import (
    ASSIGNMENT_BACKENDS,
    AssignmentsConfig,
    AuthConfig,
    CacheConfig,
    Config,
    DnsConfig,
    HomeServer,
    LimitsConfig,
    ListenerConfig,
    LocationConfig,
    LogConfig,
    PolicyConfig,
    ProxyConfig,
    RegistrarConfig,
    ServerConfig,
    TlsClientConfig,
    default_policy,
)
from homeredirect.hostnames import is_hostname

__all__ = ["load_config", "parse_config"]

_T = TypeVar("_T", bound=AttrsInstance)

# Top-level TOML keys and how they are written.
_TABLES = {
    "server": "[server]",
    "listen": "[[listen]]",
    "limits": "[limits]",
    "log": "[log]",
    "assignments": "[assignments]",
    "policy": "[policy]",
    "cache": "[cache]",
    "location": "[location]",
    "registrar": "[registrar]",
    "proxy": "[proxy]",
    "dns": "[dns]",
    "auth": "[auth]",
    "locator": "[locator]",
    "tls_client": "[tls_client]",
    "edge": "[edge]",
    "home_servers": "[home_servers]",
}
# Where each Config field is written in the file, for messages: each field comes from the
# table of its name, but for `listeners` (the [[listen]] tables); `edge.next_hop` is checked
# by Config itself, against the listeners.
_LOCATIONS = {
    **{name: written for name, written in _TABLES.items() if name != "listen"},
    "listeners": _TABLES["listen"],
    "edge.next_hop": "[edge].next_hop",
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(
    r"(?P<message>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)"
)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate the configuration file at `path`.

    Start-up calls this before the reactor runs, so it reads synchronously. Relative paths
    in the file are resolved against the file's directory. Raise `ConfigError` for an
    unreadable file, invalid TOML (naming the line) or any invalid value.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = tomllib.load(file)
    except OSError as e:
        raise ConfigError(source, None, f"cannot read the file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(source, None, f"expected UTF-8 text, got byte offset {e.start}") from e
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(source, e) from e
    return parse_config(data, source, Path(source).absolute().parent)


def parse_config(data: Mapping[str, Any], source: str, base_dir: Path) -> Config:
    """Validate `data`, as `tomllib` returns it, into a `Config`.

    `source` names the file in error messages; relative paths resolve against `base_dir`.
    Raise `ConfigError`.
    """
    return _Reader(source, base_dir).config(data)


def _syntax_error(source: str, error: tomllib.TOMLDecodeError) -> ConfigError:
    """Name the line and column that `tomllib` puts at the end of its message."""
    match = _TOML_POSITION.fullmatch(str(error))
    if match is None:
        return ConfigError(source, None, f"invalid TOML: {error}")
    if match["line"] is None:
        location = "end of file"
    else:
        location = f"line {match['line']}, column {match['column']}"
    return ConfigError(source, location, f"invalid TOML: {match['message']}")


def _key(name: str) -> str:
    """Write a key as TOML would: bare if it can be, else quoted (`"home1.example.com"`)."""
    return name if _BARE_KEY.fullmatch(name) else describe_value(name)


def _unknown_key_problem(name: str, known: Collection[str], shown: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {describe_value(close[0])}?)" if close else ""
    return f"unknown key; expected one of {', '.join(shown)}{hint}"


def _dotted_name(name: str, table: Mapping[str, Any]) -> str:
    """Rebuild `home1.example.com` from the nested tables an unquoted dotted key makes."""
    parts = [name]
    while len(table) == 1:
        ((key, value),) = table.items()
        if not isinstance(value, Mapping):
            break
        parts.append(key)
        table = value
    return ".".join(parts)


@frozen
class _Reader:
    """Walks one file's tables; `source` and `base_dir` are what every message and path need."""

    source: str
    base_dir: Path

    def error(self, location: str | None, problem: str) -> ConfigError:
        return ConfigError(self.source, location, problem)

    def config(self, data: Mapping[str, Any]) -> Config:
        for name, value in data.items():
            if name not in _TABLES:
                if isinstance(value, Mapping):
                    location = f"[{_key(name)}]"
                elif isinstance(value, list):
                    location = f"[[{_key(name)}]]"
                else:
                    location = _key(name)
                raise self.error(location, _unknown_key_problem(name, _TABLES, _TABLES.values()))
        server = self.table(data, "server")
        if server is None:
            raise self.error("[server]", "expected a [server] table, but there is none")
        listens = self.array_of_tables(data, "listen")
        if not listens:
            problem = "expected at least one [[listen]] table, but there is none"
            raise self.error("[[listen]]", problem)
        assignments = self.table(data, "assignments")
        dns = self.table(data, "dns")
        auth = self.table(data, "auth")
        tls_client = self.table(data, "tls_client")
        edge = self.table(data, "edge")
        server_config = self.build(ServerConfig, server, "[server]")
        # A [policy] without `name` gets the role's default (an edge proxies everything).
        policy = {"name": default_policy(server_config.role), **(self.table(data, "policy") or {})}
        listeners = [
            self.build(ListenerConfig, listen, f"[[listen]][{number}]")
            for number, listen in enumerate(listens, 1)
        ]
        try:
            return Config(
                server=server_config,
                listeners=tuple(listeners),
                limits=self.build(LimitsConfig, self.table(data, "limits") or {}, "[limits]"),
                log=self.build(LogConfig, self.table(data, "log") or {}, "[log]"),
                assignments=None if assignments is None else self.assignments(assignments),
                policy=self.build(PolicyConfig, policy, "[policy]"),
                cache=self.build(CacheConfig, self.table(data, "cache") or {}, "[cache]"),
                location=self.build(
                    LocationConfig, self.table(data, "location") or {}, "[location]"
                ),
                registrar=self.build(
                    RegistrarConfig, self.table(data, "registrar") or {}, "[registrar]"
                ),
                proxy=self.build(ProxyConfig, self.table(data, "proxy") or {}, "[proxy]"),
                dns=None if dns is None else self.dns(dns),
                auth=None if auth is None else self.build(AuthConfig, auth, "[auth]"),
                locator=self.build(LocatorConfig, self.table(data, "locator") or {}, "[locator]"),
                tls_client=None
                if tls_client is None
                else self.build(TlsClientConfig, tls_client, "[tls_client]"),
                edge=None if edge is None else self.build(EdgeConfig, edge, "[edge]"),
                home_servers=self.home_servers(self.table(data, "home_servers") or {}),
            )
        except InvalidField as e:
            name, bracket, rest = e.field.partition("[")
            raise self.error(_LOCATIONS[name] + bracket + rest, e.problem) from None

    def table(self, data: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
        value = data.get(name)
        if value is None or isinstance(value, Mapping):
            return value
        raise self.error(_TABLES[name], f"expected a table, got {describe_value(value)}")

    def array_of_tables(self, data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
        value = data.get(name, [])
        if not isinstance(value, list):
            shown = describe_value(value)
            problem = f"expected an array of tables, written [[{name}]], got {shown}"
            raise self.error(_TABLES[name], problem)
        for number, item in enumerate(value, 1):
            if not isinstance(item, Mapping):
                problem = f"expected a table, got {describe_value(item)}"
                raise self.error(f"{_TABLES[name]}[{number}]", problem)
        return value

    def assignments(self, table: Mapping[str, Any]) -> AssignmentsConfig:
        """The `backend` key picks the value type that validates the rest of the table."""
        backend = table.get("backend", "file")
        chosen = ASSIGNMENT_BACKENDS.get(backend) if isinstance(backend, str) else None
        if chosen is None:
            backends = ", ".join(describe_value(name) for name in ASSIGNMENT_BACKENDS)
            problem = f"expected one of {backends}, got {describe_value(backend)}"
            raise self.error("[assignments].backend", problem)
        rest = {key: value for key, value in table.items() if key != "backend"}
        return self.build(chosen, rest, "[assignments]", also_known=("backend",))

    def dns(self, table: Mapping[str, Any]) -> DnsConfig:
        """`[dns]`, whose `[[dns.servers]]` entries are tables of their own, counted from 1."""
        entries = table.get("servers", [])
        if not isinstance(entries, list):
            shown = describe_value(entries)
            problem = f"expected an array of tables, written [[dns.servers]], got {shown}"
            raise self.error("[[dns.servers]]", problem)
        servers = []
        for number, entry in enumerate(entries, 1):
            location = f"[[dns.servers]][{number}]"
            if not isinstance(entry, Mapping):
                raise self.error(location, f"expected a table, got {describe_value(entry)}")
            servers.append(self.build(DnsServer, entry, location))
        rest = {key: value for key, value in table.items() if key != "servers"}
        return self.build(DnsConfig, rest, "[dns]", also_known=("servers",), servers=servers)

    def home_servers(self, table: Mapping[str, Any]) -> dict[str, HomeServer]:
        """Key each `[home_servers."<fqdn>"]` table by its lowercased FQDN."""
        homes: dict[str, HomeServer] = {}
        for name, entry in table.items():
            location = f"[home_servers.{_key(name)}]"
            if not is_hostname(name):
                problem = f"expected the home server's FQDN as the table name, got {_key(name)}"
                raise self.error(location, problem)
            if not isinstance(entry, Mapping):
                raise self.error(location, f"expected a table, got {describe_value(entry)}")
            fqdn = name.lower()
            if fqdn in homes:
                problem = f"expected each home server once, but {fqdn} is already configured"
                raise self.error(location, problem)
            for key, value in entry.items():
                if isinstance(value, Mapping):
                    dotted = _dotted_name(name, entry)
                    problem = (
                        "expected a key of the home server, got a table; an FQDN with dots "
                        f'must be quoted: [home_servers."{dotted}"]'
                    )
                    raise self.error(f"{location}.{_key(key)}", problem)
            homes[fqdn] = self.build(HomeServer, entry, location, fqdn=fqdn)
        return homes

    def build(
        self,
        cls: type[_T],
        table: Mapping[str, Any],
        location: str,
        also_known: Collection[str] = (),
        **given: Any,
    ) -> _T:
        """Build `cls` from `table`, whose keys are its field names.

        `given` supplies fields that are not keys (a home server's FQDN is its table name);
        `also_known` names keys the caller has already read.
        """
        fields = {a.name: a for a in attrs.fields(cls) if a.init and a.name not in given}
        known = [*also_known, *fields]
        for name in table:
            if name not in fields:
                problem = _unknown_key_problem(name, known, [describe_value(k) for k in known])
                raise self.error(f"{location}.{_key(name)}", problem)
        for name, attribute in fields.items():
            if attribute.default is NOTHING and name not in table:
                expected = getattr(attribute.validator, "expected", "a value")
                problem = f"expected {expected}, but the key is missing"
                raise self.error(f"{location}.{name}", problem)
        files = [name for name, attribute in fields.items() if attribute.metadata.get("file")]
        paths = [name for name, attribute in fields.items() if attribute.metadata.get("path")]
        values = dict(table)
        for name in (*files, *paths):
            if isinstance(values.get(name), str):
                values[name] = self.base_dir / values[name]
        for name in paths:
            default = fields[name].default
            if name not in values and isinstance(default, Path) and not default.is_absolute():
                values[name] = self.base_dir / default  # a default path is beside the file
        try:
            built = cls(**given, **values)
        except InvalidField as e:
            raise self.error(f"{location}.{e.field}", e.problem) from None
        for name in files:
            path = getattr(built, name)
            if path is not None and not path.is_file():
                written = describe_value(table[name])
                resolved = "" if str(path) == table[name] else f" (resolved to {path})"
                problem = f"expected an existing file, got {written}{resolved}"
                raise self.error(f"{location}.{name}", problem)
        return built
