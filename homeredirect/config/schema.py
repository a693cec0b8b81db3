"""The frozen, validated configuration of a homeredirect server.

Each class is one TOML table; its field names are the TOML keys, and its docstring is the
reference for them. Values are checked when built (STYLE b.4) and a bad one raises
`InvalidField` naming the key, so code that receives a `Config` never re-checks it, and the
loader (`homeredirect.config.load`) only adds the file name and table to the message.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias

from attrs import Attribute, field, frozen

from homeredirect.config.errors import InvalidField, describe_value
from homeredirect.hostnames import is_hostname, normalize_host

__all__ = [
    "ASSIGNMENT_BACKENDS",
    "BUILTIN_POLICIES",
    "DEFAULT_USER_AGENT",
    "AssignmentsConfig",
    "Config",
    "FileAssignmentsConfig",
    "HomeServer",
    "LimitsConfig",
    "ListenerConfig",
    "PolicyConfig",
    "Role",
    "ServerConfig",
    "Transport",
    "default_port",
]


def _default_user_agent() -> str:
    try:
        return f"homeredirect/{version('homeredirect')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "homeredirect"


DEFAULT_USER_AGENT = _default_user_agent()
"""`[server].user_agent` when not configured: `homeredirect/<installed version>`."""

BUILTIN_POLICIES = ("via-count", "always-redirect", "always-proxy")
"""The `[policy].name` values that need no import path."""


class Role(StrEnum):
    """What this server is in the deployment (`[server].role`)."""

    DIRECTOR = "director"
    HOME = "home"
    EDGE = "edge"


class Transport(StrEnum):
    """A SIP transport (RFC 3261 §18); TLS is SIP over TLS over TCP (RFC 3261 §26.2)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


def default_port(transport: Transport) -> int:
    """The port a SIP URI without one implies: 5061 for TLS, 5060 otherwise (RFC 3261 §19.1.2)."""
    return 5061 if transport is Transport.TLS else 5060


class _Expect:
    """An attrs validator that raises `InvalidField` saying what the field expects.

    `expected` is also what the loader prints when a required key is missing, so each
    field states its rule once.
    """

    def __init__(self, expected: str, check: Callable[[Any], bool]) -> None:
        self.expected = expected
        self._check = check

    def __call__(self, instance: object, attribute: Attribute[Any], value: Any) -> None:
        if not self._check(value):
            raise InvalidField(attribute.name, self.expected, value)


def _integer(low: int, high: int | None = None) -> _Expect:
    """Accept an integer (not a boolean) from `low` to `high` inclusive, or at least `low`."""
    if high is not None:
        expected = f"an integer from {low} to {high}"
    else:
        expected = "a positive integer" if low == 1 else f"an integer of at least {low}"
    return _Expect(
        expected,
        lambda value: (
            isinstance(value, int)
            and not isinstance(value, bool)
            and low <= value
            and (high is None or value <= high)
        ),
    )


def _one_of(*options: object) -> _Expect:
    """Accept exactly one of `options`, of the same type (so `true` is not 1)."""
    shown = ", ".join(describe_value(option) for option in options)
    return _Expect(
        f"one of {shown}",
        lambda value: (
            not isinstance(value, bool)
            and any(type(value) is type(option) and value == option for option in options)
        ),
    )


def _is_hostname(value: object) -> bool:
    return isinstance(value, str) and is_hostname(value)


def _is_host(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        normalize_host(value)
    except ValueError:
        return False
    return True


def _is_header_text(value: object) -> bool:
    """Non-empty text that can go in a header value as is: no control characters, no
    leading or trailing space, so it cannot split or fold the header (RFC 3261 §7.3.1)."""
    return (
        isinstance(value, str)
        and value != ""
        and value == value.strip()
        and value.isprintable()
        and value.isascii()
    )


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _lower(value: str) -> str:
    """Lowercase a hostname; leave anything else for the validator to reject."""
    return value.lower() if isinstance(value, str) else value


def _lower_optional(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def _to_host(value: str) -> str:
    """Canonicalise a hostname or IP literal; leave anything else for the validator."""
    try:
        return normalize_host(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _to_role(value: Role | str) -> Role | str:
    try:
        return Role(value)
    except ValueError:
        return value


def _to_transport(value: Transport | str) -> Transport | str:
    try:
        return Transport(value)
    except ValueError:
        return value


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    return Path(value) if isinstance(value, str | os.PathLike) else value


def _to_seconds(value: float) -> float:
    """TOML `300` is an integer; a timeout is a float either way."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return float(value) if is_int else value


def _to_domains(value: Iterable[str]) -> tuple[str, ...]:
    """Lowercase and de-duplicate domains, keeping the order they were written in."""
    if not isinstance(value, list | tuple):
        return value  # type: ignore[return-value]  # the validator rejects it
    return tuple(dict.fromkeys(_lower(domain) for domain in value))


_TRANSPORT_EXPECTED = _one_of(*Transport)
_PATH = _Expect("a file path", _optional(lambda value: isinstance(value, Path)))
_FILE = {"file": True}
"""Field metadata: the loader resolves the path against the config file's directory and
checks that the file exists (an operator wants to hear about a missing certificate at start-up,
not at the first TLS handshake)."""


class _Domains(_Expect):
    """Accept a non-empty array of hostnames, naming the first bad element (counted from 1)."""

    def __init__(self) -> None:
        super().__init__("a non-empty array of domain names", lambda value: True)

    def __call__(self, instance: object, attribute: Attribute[Any], value: Any) -> None:
        if not isinstance(value, tuple) or not value:
            raise InvalidField(attribute.name, self.expected, value)
        for number, domain in enumerate(value, 1):
            if not _is_hostname(domain):
                raise InvalidField(f"{attribute.name}[{number}]", "a domain name", domain)


@frozen(kw_only=True)
class ServerConfig:
    """`[server]`: who this server is and which requests it answers.

    - `role`: `"director"` (default) answers REGISTER by redirecting or proxying to the
      user's home server; `"home"` and `"edge"` are the other deployment roles.
    - `fqdn` (required): this server's own hostname, used in Via and Record-Route.
    - `domains` (required, non-empty): the SIP domains served; lowercased, since hosts
      compare case-insensitively (RFC 3261 §19.1.4).
    - `unknown_domain_status`: 404 (default) or 403, the answer to a request for a domain
      not in `domains`; 403 avoids telling a scanner which domains exist.
    - `retry_after`: seconds sent in Retry-After with 503 when the assignment directory
      cannot answer (RFC 3261 §21.5.4), default 30.
    - `user_agent`: the User-Agent and Server header text, default `homeredirect/<version>`.
    """

    role: Role = field(default=Role.DIRECTOR, converter=_to_role, validator=_one_of(*Role))
    fqdn: str = field(converter=_lower, validator=_Expect("a hostname", _is_hostname))
    domains: tuple[str, ...] = field(converter=_to_domains, validator=_Domains())
    unknown_domain_status: int = field(default=404, validator=_one_of(404, 403))
    retry_after: int = field(default=30, validator=_integer(0, 86_400))
    user_agent: str = field(
        default=DEFAULT_USER_AGENT,
        validator=_Expect("printable ASCII text without surrounding spaces", _is_header_text),
    )


@frozen(kw_only=True)
class ListenerConfig:
    """`[[listen]]`: one socket to accept SIP on; at least one is required.

    - `transport` (required): `"udp"`, `"tcp"` or `"tls"`.
    - `host`: the address to bind, an IPv4 or IPv6 literal or a hostname; default
      `"127.0.0.1"` so that a fresh install is not reachable from the network.
    - `port`: default 5060 for udp and tcp, 5061 for tls (RFC 3261 §19.1.2); 0 binds any
      free port, for tests.
    - `certificate`, `private_key` (required for tls, files must exist): PEM files; the
      certificate file may hold the chain, leaf first.
    - `ca` (tls only, optional): PEM file of CAs trusted to sign client certificates.
    - `request_client_certificate` (tls only, default false): ask the peer for a
      certificate, as home servers authenticating to the director do (RFC 5923 §5).

    Relative paths are resolved against the configuration file's directory. Setting a TLS
    key on a udp or tcp listener is an error, as it is almost certainly a mistake.
    """

    transport: Transport = field(converter=_to_transport, validator=_TRANSPORT_EXPECTED)
    host: str = field(
        default="127.0.0.1",
        converter=_to_host,
        validator=_Expect("an IPv4 or IPv6 address or a hostname", _is_host),
    )
    port: int = field(validator=_integer(0, 65_535))
    certificate: Path | None = field(
        default=None, converter=_to_path, validator=_PATH, metadata=_FILE
    )
    private_key: Path | None = field(
        default=None, converter=_to_path, validator=_PATH, metadata=_FILE
    )
    ca: Path | None = field(default=None, converter=_to_path, validator=_PATH, metadata=_FILE)
    request_client_certificate: bool = field(
        default=False, validator=_Expect("true or false", lambda value: isinstance(value, bool))
    )

    @port.default
    def _port_for_transport(self) -> int:
        return default_port(self.transport)

    def __attrs_post_init__(self) -> None:
        if self.transport is Transport.TLS:
            for name in ("certificate", "private_key"):
                if getattr(self, name) is None:
                    raise InvalidField(name, 'a file path (required on a "tls" listener)', None)
            return
        for name in ("certificate", "private_key", "ca", "request_client_certificate"):
            value = getattr(self, name)
            if value is not None and value is not False:
                expected = f'nothing on a "{self.transport}" listener (only "tls" takes it)'
                raise InvalidField(name, expected, value)


@frozen(kw_only=True)
class LimitsConfig:
    """`[limits]`: resource bounds, so one peer or a flood cannot exhaust the server.

    - `max_message_size`: largest SIP message accepted, in bytes (default 65536); larger
      ones are rejected with 513 (RFC 3261 §21.5.11).
    - `max_connections`: most simultaneous TCP/TLS connections (default 10000).
    - `idle_timeout`: seconds after which an idle TCP/TLS connection is closed (default 300).
    - `udp_receive_buffer`, `udp_send_buffer`: socket buffer sizes in bytes (default
      4194304); production SIP servers size these in megabytes so bursts are not dropped.
    """

    max_message_size: int = field(default=65_536, validator=_integer(1))
    max_connections: int = field(default=10_000, validator=_integer(1))
    idle_timeout: float = field(
        default=300.0,
        converter=_to_seconds,
        validator=_Expect(
            "a positive number of seconds",
            lambda value: isinstance(value, float) and value > 0 and math.isfinite(value),
        ),
    )
    udp_receive_buffer: int = field(default=4_194_304, validator=_integer(1))
    udp_send_buffer: int = field(default=4_194_304, validator=_integer(1))


LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@frozen(kw_only=True)
class LogConfig:
    """`[log]`: what is logged.

    - `level`: the lowest level written: "debug", "info" (default), "warn", "error" or
      "critical". At "info" every routing decision is one event (AOR, decision, target,
      latency); a director answering thousands of REGISTERs a second may prefer "warn",
      as formatting each event as text costs more CPU than routing the request does.
    """

    level: str = field(default="info", validator=_one_of(*LOG_LEVELS))


@frozen(kw_only=True)
class FileAssignmentsConfig:
    """`[assignments]` with `backend = "file"`: user to home server assignments in a CSV file.

    - `path` (required, the file must exist): a CSV file with the header
      `user,home_server`, read by `homeredirect.resolve.file_source`.
    """

    backend: ClassVar[str] = "file"

    path: Path = field(
        converter=_to_path,
        validator=_Expect("a file path", lambda value: isinstance(value, Path)),
        metadata=_FILE,
    )


AssignmentsConfig: TypeAlias = FileAssignmentsConfig
"""Any `[assignments]` table; a union as directory backends (LDAP, SQL, Redis) are added."""

ASSIGNMENT_BACKENDS: Mapping[str, type[AssignmentsConfig]] = MappingProxyType(
    {backend.backend: backend for backend in (FileAssignmentsConfig,)}
)
"""`[assignments].backend` values and the table each selects; `"file"` is the default."""


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_DEFAULT_REASONS = {301: "Redirect request to Home Server", 302: "Moved Temporarily"}


@frozen(kw_only=True)
class PolicyConfig:
    """`[policy]`: how the director decides between redirecting and proxying.

    - `name`: `"via-count"` (default), `"always-redirect"`, `"always-proxy"`, or the import
      path `"package.module:Class"` of an `IRoutingPolicy` provider; the path is checked for
      syntax here and imported when the service is built.
    - `redirect_status`: 301 (default) or 302, the redirect sent to a REGISTER
      (RFC 3261 §21.3.2, §21.3.3).
    - `redirect_reason`: the reason phrase; default `"Redirect request to Home Server"` for
      301 and `"Moved Temporarily"` for 302.
    """

    name: str = field(
        default="via-count",
        validator=_Expect(
            'one of "via-count", "always-redirect", "always-proxy" '
            'or an import path "package.module:Class"',
            lambda value: (
                isinstance(value, str)
                and (value in BUILTIN_POLICIES or _IMPORT_PATH.fullmatch(value) is not None)
            ),
        ),
    )
    redirect_status: int = field(default=301, validator=_one_of(301, 302))
    redirect_reason: str = field(
        validator=_Expect("printable ASCII text without surrounding spaces", _is_header_text)
    )

    @redirect_reason.default
    def _reason_for_status(self) -> str:
        return _DEFAULT_REASONS.get(self.redirect_status, "")  # else its validator fails

    @property
    def is_builtin(self) -> bool:
        """Whether `name` is a built-in policy rather than an import path."""
        return self.name in BUILTIN_POLICIES


@frozen(kw_only=True)
class HomeServer:
    """`[home_servers."<fqdn>"]`: how to reach a home server named in assignments.

    The table name is the home server's FQDN, lowercased. A home server that is assigned
    users but has no table gets the defaults (see `Config.home_server`).

    - `host`: the address to send to, a hostname or IP literal; default the FQDN itself.
    - `port`: default 5061 for tls, else 5060 (RFC 3261 §19.1.2).
    - `transport`: `"tls"` (default), `"tcp"` or `"udp"`.
    - `backup` (optional): the FQDN of the home server that takes over this one's users
      when it is down; its own `[home_servers]` table, if any, says how to reach it.
    """

    fqdn: str = field(converter=_lower, validator=_Expect("a hostname", _is_hostname))
    transport: Transport = field(
        default=Transport.TLS, converter=_to_transport, validator=_TRANSPORT_EXPECTED
    )
    host: str = field(
        converter=_to_host, validator=_Expect("an IPv4 or IPv6 address or a hostname", _is_host)
    )
    port: int = field(validator=_integer(1, 65_535))
    backup: str | None = field(
        default=None,
        converter=_lower_optional,
        validator=_Expect("a hostname", _optional(_is_hostname)),
    )

    @host.default
    def _host_is_fqdn(self) -> str:
        return self.fqdn

    @port.default
    def _port_for_transport(self) -> int:
        return default_port(self.transport)

    def __attrs_post_init__(self) -> None:
        if self.backup == self.fqdn:
            raise InvalidField("backup", "the FQDN of another home server", self.backup)


def _to_listeners(value: Iterable[ListenerConfig]) -> tuple[ListenerConfig, ...]:
    return tuple(value)


def _freeze_home_servers(value: Mapping[str, HomeServer]) -> Mapping[str, HomeServer]:
    return MappingProxyType(dict(value))


def _home_servers_keyed_by_fqdn(
    instance: object, attribute: Attribute[Any], value: Mapping[str, HomeServer]
) -> None:
    for key, home in value.items():
        if not isinstance(home, HomeServer) or key != home.fqdn:
            raise InvalidField(f"{attribute.name}[{key!r}]", f"the home server {key!r}", home)


@frozen(kw_only=True)
class Config:
    """A whole configuration file; see each table's class for its keys.

    `assignments` is required when the role is director (it has nothing to direct by
    otherwise) and may be None for other roles. `home_servers` is keyed by lowercased FQDN.
    """

    server: ServerConfig
    listeners: tuple[ListenerConfig, ...] = field(
        converter=_to_listeners, validator=_Expect("at least one listener", bool)
    )
    limits: LimitsConfig = field(factory=LimitsConfig)
    log: LogConfig = field(factory=LogConfig)
    assignments: AssignmentsConfig | None = None
    policy: PolicyConfig = field(factory=PolicyConfig)
    home_servers: Mapping[str, HomeServer] = field(
        factory=dict,
        converter=_freeze_home_servers,
        validator=_home_servers_keyed_by_fqdn,
        hash=False,
    )

    def __attrs_post_init__(self) -> None:
        if self.assignments is None and self.server.role is Role.DIRECTOR:
            raise InvalidField("assignments", 'an assignments source for role "director"', None)
        # TCP and TLS both bind a TCP socket, so they collide with each other; port 0 never does.
        seen: dict[tuple[bool, str, int], int] = {}
        for number, listener in enumerate(self.listeners, 1):
            socket = (listener.transport is Transport.UDP, listener.host, listener.port)
            if listener.port != 0 and socket in seen:
                raise InvalidField(
                    f"listeners[{number}]",
                    f"an address not already bound by listener {seen[socket]}",
                    f"{listener.transport} {listener.host} port {listener.port}",
                )
            seen.setdefault(socket, number)

    def home_server(self, fqdn: str) -> HomeServer:
        """Return how to reach the home server `fqdn`: its table, or the defaults.

        Assignments may name home servers that have no table; they are reached over TLS on
        5061 at their FQDN. Raise `InvalidField` if `fqdn` is not a hostname.
        """
        key = fqdn.lower()
        configured = self.home_servers.get(key)
        return configured if configured is not None else HomeServer(fqdn=key)
