"""`[assignments]` and `[cache]`: where user-to-home-server assignments come from.

`[assignments].backend` picks one of the value types below (`ASSIGNMENT_BACKENDS`); the
loader validates the rest of the table with it. `[cache]` bounds what the directory
backends (LDAP, SQL, Redis) keep in memory and how long they serve it through an outage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias

from attrs import field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import (
    BOOLEAN,
    FILE,
    OUTPUT_PATH,
    PATH,
    REDIS_URL,
    SECONDS,
    Expect,
    integer,
    is_text,
    one_of,
    optional,
    to_path,
    to_seconds,
    to_strings,
)

__all__ = [
    "ASSIGNMENT_BACKENDS",
    "AssignmentsConfig",
    "CacheConfig",
    "FileAssignmentsConfig",
    "LdapAssignmentsConfig",
    "RedisAssignmentsConfig",
    "SqlAssignmentsConfig",
]

_REQUIRED_PATH = Expect("a file path", lambda value: isinstance(value, Path))
_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LDAP_URI = re.compile(r"(?:ldaps?|ldapi)://\S*", re.IGNORECASE)


@frozen(kw_only=True)
class FileAssignmentsConfig:
    """`[assignments]` with `backend = "file"`: user to home server assignments in a CSV file.

    - `path` (required, the file must exist): a CSV file with the header
      `user,home_server`, read by `homeredirect.resolve.file_source`.
    """

    backend: ClassVar[str] = "file"

    path: Path = field(converter=to_path, validator=_REQUIRED_PATH, metadata=FILE)


@frozen(kw_only=True)
class SqlAssignmentsConfig:
    """`[assignments]` with `backend = "sql"`: an SQLite table `user -> home_server`.

    - `path` (required): the SQLite database file; created with the table if missing, so
      that `homeredirect assignments import` can fill a new one. Several directors may
      share one file.
    - `table`: the table name, default `"assignments"`, with the columns
      `user TEXT PRIMARY KEY, home_server TEXT`.
    """

    backend: ClassVar[str] = "sql"

    path: Path = field(converter=to_path, validator=_REQUIRED_PATH, metadata=OUTPUT_PATH)
    table: str = field(
        default="assignments",
        validator=Expect(
            "an SQL identifier (letters, digits, _)",
            lambda value: isinstance(value, str) and _SQL_NAME.fullmatch(value) is not None,
        ),
    )


@frozen(kw_only=True)
class RedisAssignmentsConfig:
    """`[assignments]` with `backend = "redis"`: one string key per user.

    - `url`: the Redis server, default `"redis://127.0.0.1:6379/0"`.
    - `key_prefix`: default `"homeredirect:assignment:"`; the key of `alice@example.com`
      is the prefix followed by the AOR, and its value is the home server's FQDN.
    """

    backend: ClassVar[str] = "redis"

    url: str = field(default="redis://127.0.0.1:6379/0", validator=REDIS_URL)
    key_prefix: str = field(
        default="homeredirect:assignment:", validator=Expect("non-empty text", is_text)
    )


def _check_uris(instance: object, attribute: Any, value: tuple[str, ...]) -> None:
    expected = 'a non-empty array of LDAP URIs such as "ldap://dc1.example.com"'
    if not isinstance(value, tuple) or not value:
        raise InvalidField(attribute.name, expected, value)
    for number, uri in enumerate(value, 1):
        if not isinstance(uri, str) or _LDAP_URI.fullmatch(uri) is None:
            raise InvalidField(
                f"{attribute.name}[{number}]", "an ldap://, ldaps:// or ldapi:// URI", uri
            )


@frozen(kw_only=True)
class LdapAssignmentsConfig:
    """`[assignments]` with `backend = "ldap"`: Active Directory or any LDAP server.

    - `uris` (required): servers tried in order, `ldap://`, `ldaps://` or `ldapi://`.
    - `base_dn` (required): where user searches start.
    - `bind_dn`, `bind_password`: a simple bind; both or neither. Without them and without
      `sasl_mechanism`, the search is anonymous.
    - `sasl_mechanism`: `"GSSAPI"` to bind with Kerberos, using `keytab` (a file) for the
      credentials.
    - `preset`: `"ad"` (default) finds the user by `msRTCSIP-PrimaryUserAddress` =
      `sip:<aor>`, requires `msRTCSIP-UserEnabled` TRUE and reads
      `msRTCSIP-PrimaryHomeServer` (an FQDN, or a pool DN resolved to the FQDN in
      `pool_fqdn_attribute`); `"generic"` uses `filter` and `home_attribute`.
    - `filter`: generic preset only (required there): an LDAP filter with `{aor}` where the
      escaped AOR goes (RFC 4515), e.g. `"(mail={aor})"`; `{user}` and `{domain}` also work.
    - `home_attribute`: generic preset only (required there): the attribute holding the FQDN.
    - `pool_fqdn_attribute`: default `"dNSHostName"`.
    - `pool_base_dn`: AD preset, where `homeredirect assignments move` looks for the pool
      object carrying the new home's FQDN (default `base_dn`; in Lync the pools are under
      `CN=Pools,CN=RTC Service,CN=Services,CN=Configuration,...`).
    - `starttls` (default false; not with an `ldaps://` URI), `ca` (a PEM file): TLS to the
      server, its certificate verified against `ca` (else the system's trust store).
    - `timeout`: seconds per query, also the connect timeout (default 5); `page_size`:
      results per page of a paged search (RFC 2696; default 500, at most AD's 1000 is wise);
      `pool_size`: connections, and threads that use them (default 4).
    - `size_limit`: most entries an export reads (default 0: no limit).
    - `reconnect_backoff`, `reconnect_backoff_max`: after no server could be reached, the
      first wait before trying again (default 0.5 s), doubled per failure up to the maximum
      (default 30 s); meanwhile lookups fail at once (503, or the cache's stale answer).
    """

    backend: ClassVar[str] = "ldap"

    uris: tuple[str, ...] = field(converter=to_strings, validator=_check_uris)
    base_dn: str = field(validator=Expect("a distinguished name", is_text))
    bind_dn: str | None = field(
        default=None, validator=Expect("a distinguished name", optional(is_text))
    )
    bind_password: str | None = field(
        default=None, validator=Expect("text", optional(lambda v: isinstance(v, str)))
    )
    sasl_mechanism: str | None = field(
        default=None, validator=Expect('"GSSAPI"', optional(lambda v: v == "GSSAPI"))
    )
    keytab: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    preset: str = field(default="ad", validator=one_of("ad", "generic"))
    filter: str | None = field(
        default=None,
        validator=Expect(
            'an LDAP filter in parentheses containing "{aor}", "{user}" or "{domain}"',
            optional(
                lambda v: (
                    isinstance(v, str)
                    and v.startswith("(")
                    and v.endswith(")")
                    and any(key in v for key in ("{aor}", "{user}", "{domain}"))
                )
            ),
        ),
    )
    home_attribute: str | None = field(
        default=None, validator=Expect("an attribute name", optional(is_text))
    )
    pool_fqdn_attribute: str = field(
        default="dNSHostName", validator=Expect("an attribute name", is_text)
    )
    starttls: bool = field(default=False, validator=BOOLEAN)
    ca: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    timeout: float = field(default=5.0, converter=to_seconds, validator=SECONDS)
    page_size: int = field(default=500, validator=integer(1, 100_000))
    pool_size: int = field(default=4, validator=integer(1, 64))
    pool_base_dn: str | None = field(
        default=None, validator=Expect("a distinguished name", optional(is_text))
    )
    size_limit: int = field(default=0, validator=integer(0))
    reconnect_backoff: float = field(default=0.5, converter=to_seconds, validator=SECONDS)
    reconnect_backoff_max: float = field(default=30.0, converter=to_seconds, validator=SECONDS)

    def __attrs_post_init__(self) -> None:
        if self.starttls and any(uri.lower().startswith("ldaps://") for uri in self.uris):
            raise InvalidField("starttls", "false with an ldaps:// URI (already TLS)", True)
        if self.keytab is not None and self.sasl_mechanism is None:
            expected = 'nothing without sasl_mechanism = "GSSAPI"'
            raise InvalidField("keytab", expected, str(self.keytab))
        if self.reconnect_backoff_max < self.reconnect_backoff:
            raise InvalidField(
                "reconnect_backoff_max",
                f"at least reconnect_backoff ({self.reconnect_backoff:g})",
                self.reconnect_backoff_max,
            )
        if (self.bind_dn is None) != (self.bind_password is None):
            missing = "bind_password" if self.bind_password is None else "bind_dn"
            raise InvalidField(missing, "a value (bind_dn and bind_password go together)", None)
        if self.sasl_mechanism is not None and self.bind_dn is not None:
            raise InvalidField(
                "sasl_mechanism", "no bind_dn alongside a SASL bind", self.sasl_mechanism
            )
        if self.preset == "generic":
            for name in ("filter", "home_attribute"):
                if getattr(self, name) is None:
                    raise InvalidField(name, 'a value (required with preset = "generic")', None)
        else:
            for name in ("filter", "home_attribute"):
                if getattr(self, name) is not None:
                    raise InvalidField(
                        name,
                        'nothing with preset = "ad" (only "generic" takes it)',
                        getattr(self, name),
                    )


AssignmentsConfig: TypeAlias = (
    FileAssignmentsConfig | SqlAssignmentsConfig | RedisAssignmentsConfig | LdapAssignmentsConfig
)
"""Any `[assignments]` table."""

ASSIGNMENT_BACKENDS: Mapping[str, type[AssignmentsConfig]] = MappingProxyType(
    {
        backend.backend: backend
        for backend in (
            FileAssignmentsConfig,
            SqlAssignmentsConfig,
            RedisAssignmentsConfig,
            LdapAssignmentsConfig,
        )
    }
)
"""`[assignments].backend` values and the table each selects; `"file"` is the default."""


@frozen(kw_only=True)
class CacheConfig:
    """`[cache]`: the assignment cache in front of the LDAP, SQL and Redis backends.

    - `ttl`: seconds a found assignment is served without asking again (default 300).
    - `negative_ttl`: seconds an unknown user stays unknown (default 30).
    - `stale_ttl`: seconds past `ttl` an answer is still served while the directory is
      down (default 3600); after that the director answers 503 with Retry-After.
    - `max_entries`: most AORs kept, least recently used dropped first (default 1000000).
    - `refresh_ahead`: seconds before expiry at which a lookup also refreshes the entry in
      the background, so that busy users never wait for the directory (default 30).
    """

    ttl: float = field(default=300.0, converter=to_seconds, validator=SECONDS)
    negative_ttl: float = field(default=30.0, converter=to_seconds, validator=SECONDS)
    stale_ttl: float = field(default=3600.0, converter=to_seconds, validator=SECONDS)
    max_entries: int = field(default=1_000_000, validator=integer(1))
    refresh_ahead: float = field(default=30.0, converter=to_seconds, validator=SECONDS)
