"""The frozen, validated configuration of a homeredirect server.

Each class is one TOML table; its field names are the TOML keys, and its docstring is the
reference for them. Values are checked when built (STYLE b.4) and a bad one raises
`InvalidField` naming the key, so code that receives a `Config` never re-checks it, and the
loader (`homeredirect.config.load`) only adds the file name and table to the message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import MappingProxyType
from typing import Any

from attrs import Attribute, Factory, field, frozen

from homeredirect.config.assignments import (
    ASSIGNMENT_BACKENDS,
    AssignmentsConfig,
    CacheConfig,
    FileAssignmentsConfig,
    LdapAssignmentsConfig,
    RedisAssignmentsConfig,
    SqlAssignmentsConfig,
)
from homeredirect.config.auth import AuthConfig
from homeredirect.config.dns import DnsConfig
from homeredirect.config.edge import EdgeConfig
from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import (
    BOOLEAN,
    FILE,
    PATH,
    Domains,
    Expect,
    integer,
    is_header_text,
    is_host_text,
    is_hostname_text,
    lower,
    lower_optional,
    one_of,
    optional,
    to_domains,
    to_host,
    to_path,
    to_seconds,
)
from homeredirect.config.locator import LOCATE_METHODS, LocatorConfig
from homeredirect.config.proxy import ProxyConfig
from homeredirect.config.registrar import LocationConfig, RegistrarConfig
from homeredirect.config.tls_client import TlsClientConfig

__all__ = [
    "ASSIGNMENT_BACKENDS",
    "BUILTIN_POLICIES",
    "DEFAULT_USER_AGENT",
    "AssignmentsConfig",
    "AuthConfig",
    "CacheConfig",
    "Config",
    "DnsConfig",
    "EdgeConfig",
    "FileAssignmentsConfig",
    "HomeServer",
    "LdapAssignmentsConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LocationConfig",
    "LocatorConfig",
    "PolicyConfig",
    "ProxyConfig",
    "RedisAssignmentsConfig",
    "RegistrarConfig",
    "Role",
    "ServerConfig",
    "SqlAssignmentsConfig",
    "TlsClientConfig",
    "Transport",
    "default_policy",
    "default_port",
]


def _default_user_agent() -> str:
    try:
        return f"homeredirect/{version('homeredirect')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "homeredirect"


DEFAULT_USER_AGENT = _default_user_agent()
"""`[server].user_agent` when not configured: `homeredirect/<installed version>`."""

BUILTIN_POLICIES = ("via-count", "always-redirect", "always-proxy", "edge-trust")
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


def default_policy(role: Role | str) -> str:
    """`[policy].name` when the file does not set it: an edge proxies every request
    (`always-proxy`); directors and home servers count Vias (`via-count`)."""
    return "always-proxy" if role == Role.EDGE else "via-count"


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


_TRANSPORT_EXPECTED = one_of(*Transport)


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

    role: Role = field(default=Role.DIRECTOR, converter=_to_role, validator=one_of(*Role))
    fqdn: str = field(converter=lower, validator=Expect("a hostname", is_hostname_text))
    domains: tuple[str, ...] = field(converter=to_domains, validator=Domains())
    unknown_domain_status: int = field(default=404, validator=one_of(404, 403))
    retry_after: int = field(default=30, validator=integer(0, 86_400))
    user_agent: str = field(
        default=DEFAULT_USER_AGENT,
        validator=Expect("printable ASCII text without surrounding spaces", is_header_text),
    )


# The peers a listener or a director trusts, by the names in their certificates.
_PEER_NAMES = Expect(
    "an array of hostnames",
    lambda value: isinstance(value, tuple) and all(map(is_hostname_text, value)),
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
    - `require_client_certificate` (tls only, default false; needs `ca`): refuse a peer
      that presents no certificate signed by `ca`, for listeners only servers connect to.
    - `allowed_peers` (tls only; needs `require_client_certificate`): the FQDNs of the
      servers allowed to connect; a peer whose certificate names none of them (dNSName
      SANs, RFC 5922 §7.1) is disconnected after the handshake. The name that matched is
      the flow's verified `peer_identity`, which policies may trust.

    Relative paths are resolved against the configuration file's directory. Setting a TLS
    key on a udp or tcp listener is an error, as it is almost certainly a mistake.
    """

    transport: Transport = field(converter=_to_transport, validator=_TRANSPORT_EXPECTED)
    host: str = field(
        default="127.0.0.1",
        converter=to_host,
        validator=Expect("an IPv4 or IPv6 address or a hostname", is_host_text),
    )
    port: int = field(validator=integer(0, 65_535))
    certificate: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    private_key: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    ca: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    request_client_certificate: bool = field(default=False, validator=BOOLEAN)
    require_client_certificate: bool = field(default=False, validator=BOOLEAN)
    allowed_peers: tuple[str, ...] = field(
        default=(),
        converter=to_domains,
        validator=_PEER_NAMES,
    )

    @port.default
    def _port_for_transport(self) -> int:
        return default_port(self.transport)

    def __attrs_post_init__(self) -> None:
        if self.transport is Transport.TLS:
            for name in ("certificate", "private_key"):
                if getattr(self, name) is None:
                    raise InvalidField(name, 'a file path (required on a "tls" listener)', None)
            if self.require_client_certificate and self.ca is None:
                raise InvalidField(
                    "ca", "a file path (required with require_client_certificate = true)", None
                )
            if self.allowed_peers and not self.require_client_certificate:
                raise InvalidField(
                    "require_client_certificate",
                    "true (allowed_peers needs verified client certificates)",
                    False,
                )
            return
        for name in (
            "certificate",
            "private_key",
            "ca",
            "request_client_certificate",
            "require_client_certificate",
            "allowed_peers",
        ):
            value = getattr(self, name)
            if value is not None and value is not False and value != ():
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

    max_message_size: int = field(default=65_536, validator=integer(1))
    max_connections: int = field(default=10_000, validator=integer(1))
    idle_timeout: float = field(
        default=300.0,
        converter=to_seconds,
        validator=Expect(
            "a positive number of seconds",
            lambda value: isinstance(value, float) and value > 0 and math.isfinite(value),
        ),
    )
    udp_receive_buffer: int = field(default=4_194_304, validator=integer(1))
    udp_send_buffer: int = field(default=4_194_304, validator=integer(1))


LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@frozen(kw_only=True)
class LogConfig:
    """`[log]`: what is logged.

    - `level`: the lowest level written: "debug", "info" (default), "warn", "error" or
      "critical". At "info" every routing decision is one event (AOR, decision, target,
      latency); a director answering thousands of REGISTERs a second may prefer "warn",
      as formatting each event as text costs more CPU than routing the request does.
    """

    level: str = field(default="info", validator=one_of(*LOG_LEVELS))


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_DEFAULT_REASONS = {301: "Redirect request to Home Server", 302: "Moved Temporarily"}


@frozen(kw_only=True)
class PolicyConfig:
    """`[policy]`: how the director decides between redirecting and proxying.

    - `name`: `"via-count"`, `"always-redirect"`, `"always-proxy"`, `"edge-trust"`, or the
      import path `"package.module:Class"` of an `IRoutingPolicy` provider; the path is
      checked for syntax here and imported when the service is built. When the key is not
      written, the role decides (`default_policy`): `"always-proxy"` for `role = "edge"`,
      `"via-count"` otherwise; writing `name = "via-count"` on an edge is kept as written.
    - `trusted_edges`: the FQDNs of the edge servers whose `ms-edge-proxy-message-trust`
      header ([MS-SIPRE] §2.2.15) is believed, when the request arrives from them over TLS
      with a verified certificate naming them (the flow's `peer_identity`). The header is
      removed from every other request, whatever the policy, so that a client cannot add
      it. Required (non-empty) by `"edge-trust"`, which proxies requests so marked and
      redirects every other REGISTER whatever its Via count.
    - `redirect_status`: 301 (default) or 302, the redirect sent to a REGISTER
      (RFC 3261 §21.3.2, §21.3.3).
    - `redirect_reason`: the reason phrase; default `"Redirect request to Home Server"` for
      301 and `"Moved Temporarily"` for 302.
    """

    name: str = field(
        default="via-count",
        validator=Expect(
            'one of "via-count", "always-redirect", "always-proxy", "edge-trust" '
            'or an import path "package.module:Class"',
            lambda value: (
                isinstance(value, str)
                and (value in BUILTIN_POLICIES or _IMPORT_PATH.fullmatch(value) is not None)
            ),
        ),
    )
    redirect_status: int = field(default=301, validator=one_of(301, 302))
    redirect_reason: str = field(
        validator=Expect("printable ASCII text without surrounding spaces", is_header_text)
    )
    trusted_edges: tuple[str, ...] = field(
        default=(),
        converter=to_domains,
        validator=_PEER_NAMES,
    )

    @redirect_reason.default
    def _reason_for_status(self) -> str:
        return _DEFAULT_REASONS.get(self.redirect_status, "")  # else its validator fails

    @property
    def is_builtin(self) -> bool:
        """Whether `name` is a built-in policy rather than an import path."""
        return self.name in BUILTIN_POLICIES

    def __attrs_post_init__(self) -> None:
        if self.name == "edge-trust" and not self.trusted_edges:
            raise InvalidField(
                "trusted_edges", 'a non-empty array of edge FQDNs (name = "edge-trust")', ()
            )


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
    - `locate` (optional): `"static"` (the keys above) or `"dns"` (NAPTR, SRV and A/AAAA
      records of the FQDN, RFC 3263; `host` and `port` are then unused); default
      `[locator].default`. Either way, the backup's targets follow this one's.
    """

    fqdn: str = field(converter=lower, validator=Expect("a hostname", is_hostname_text))
    transport: Transport = field(
        default=Transport.TLS, converter=_to_transport, validator=_TRANSPORT_EXPECTED
    )
    host: str = field(
        converter=to_host, validator=Expect("an IPv4 or IPv6 address or a hostname", is_host_text)
    )
    port: int = field(validator=integer(1, 65_535))
    backup: str | None = field(
        default=None,
        converter=lower_optional,
        validator=Expect("a hostname", optional(is_hostname_text)),
    )
    locate: str | None = field(
        default=None, validator=Expect('"static" or "dns"', optional(LOCATE_METHODS.__contains__))
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
    otherwise) and for an edge without `[edge] next_hop`, and may be None for other roles.
    `edge` is only for `role = "edge"`. `policy` defaults to the role's
    (`default_policy`). `home_servers` is keyed by lowercased FQDN.
    """

    server: ServerConfig
    listeners: tuple[ListenerConfig, ...] = field(
        converter=_to_listeners, validator=Expect("at least one listener", bool)
    )
    limits: LimitsConfig = field(factory=LimitsConfig)
    log: LogConfig = field(factory=LogConfig)
    assignments: AssignmentsConfig | None = None
    policy: PolicyConfig = field(
        default=Factory(
            lambda self: PolicyConfig(name=default_policy(self.server.role)), takes_self=True
        )
    )
    cache: CacheConfig = field(factory=CacheConfig)
    location: LocationConfig = field(factory=LocationConfig)
    registrar: RegistrarConfig = field(factory=RegistrarConfig)
    proxy: ProxyConfig = field(factory=ProxyConfig)
    dns: DnsConfig | None = None
    auth: AuthConfig | None = None
    locator: LocatorConfig = field(factory=LocatorConfig)
    tls_client: TlsClientConfig | None = None
    edge: EdgeConfig | None = None
    home_servers: Mapping[str, HomeServer] = field(
        factory=dict,
        converter=_freeze_home_servers,
        validator=_home_servers_keyed_by_fqdn,
        hash=False,
    )

    def __attrs_post_init__(self) -> None:
        if self.assignments is None and self.server.role is Role.DIRECTOR:
            raise InvalidField("assignments", 'an assignments source for role "director"', None)
        auth = self.auth
        if auth is not None and "digest" in auth.schemes and auth.digest_source == "ldap":
            if not isinstance(self.assignments, LdapAssignmentsConfig):
                backend = None if self.assignments is None else self.assignments.backend
                expected = 'backend = "ldap" (the directory [auth] digest_source = "ldap" reads)'
                raise InvalidField("assignments", expected, backend)
        self._check_edge()
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

    def _check_edge(self) -> None:
        """`[edge]` belongs to an edge, which needs somewhere to send requests: a next hop
        (not itself) or assignments naming home servers."""
        if self.server.role is not Role.EDGE:
            if self.edge is not None:
                raise InvalidField("edge", 'no [edge] table unless role = "edge"', "a table")
            return
        hop = None if self.edge is None else self.edge.next_hop_target
        if hop is None:
            if self.assignments is None:
                raise InvalidField(
                    "assignments",
                    'an assignments source for role "edge" without [edge] next_hop',
                    None,
                )
        elif self.assignments is not None:
            # It would be silently unused: the next hop gets every request.
            raise InvalidField(
                "assignments", "no [assignments] table with [edge] next_hop", "a table"
            )
        elif hop.fqdn == self.server.fqdn:
            assert self.edge is not None
            raise InvalidField(
                "edge.next_hop", "another server than [server].fqdn", self.edge.next_hop
            )

    def home_server(self, fqdn: str) -> HomeServer:
        """Return how to reach the home server `fqdn`: its table, or the defaults.

        Assignments may name home servers that have no table; they are reached over TLS on
        5061 at their FQDN. Raise `InvalidField` if `fqdn` is not a hostname.
        """
        key = fqdn.lower()
        configured = self.home_servers.get(key)
        return configured if configured is not None else HomeServer(fqdn=key)
