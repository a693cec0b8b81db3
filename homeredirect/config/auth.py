"""`[auth]`: authenticating clients before anything about them is revealed or acted on."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from attrs import field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import (
    BOOLEAN,
    FILE,
    PATH,
    SECONDS,
    Expect,
    integer,
    is_header_text,
    is_hostname_text,
    lower_optional,
    one_of,
    optional,
    to_domains,
    to_path,
    to_seconds,
    to_strings,
)

__all__ = ["AVAILABLE_SCHEMES", "DIGEST_ALGORITHMS", "AuthConfig"]

AVAILABLE_SCHEMES = ("digest", "ntlm", "kerberos")
"""Schemes this version can run."""
PLANNED_SCHEMES: tuple[str, ...] = ()
DIGEST_ALGORITHMS = ("SHA-512-256", "SHA-256", "MD5")
NTLM_BACKENDS = ("file", "winbind")
DIGEST_SOURCES = ("file", "ldap")
_PASSWORD_ATTRIBUTES = frozenset({"userpassword", "unicodepwd", "authpassword"})
"""Attributes holding passwords (RFC 4519, AD, RFC 3112): never an H(A1) source."""
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+")
DEFAULT_NTLM_AUTH = ("/usr/bin/ntlm_auth",)


def _is_command(value: object) -> bool:
    """A non-empty array of non-empty strings without NUL (an argv)."""
    return (
        isinstance(value, tuple)
        and len(value) > 0
        and all(isinstance(arg, str) and arg and "\0" not in arg for arg in value)
    )


class _Subset(Expect):
    """A non-empty array of distinct values from `options`, naming the bad element."""

    def __init__(self, options: tuple[str, ...], planned: tuple[str, ...] = ()) -> None:
        shown = ", ".join(f'"{option}"' for option in options)
        super().__init__(f"a non-empty array of {shown}", lambda value: True)
        self._options = options
        self._planned = planned

    def __call__(self, instance: object, attribute: Any, value: Any) -> None:
        if not isinstance(value, tuple) or not value:
            raise InvalidField(attribute.name, self.expected, value)
        for number, item in enumerate(value, 1):
            where = f"{attribute.name}[{number}]"
            if item in self._planned:
                raise InvalidField(where, 'a scheme this version supports ("digest", "ntlm")', item)
            if item not in self._options or value.index(item) != number - 1:
                raise InvalidField(where, f"one of {', '.join(self._options)}, once", item)


def _is_netbios_name(value: object) -> bool:
    """1 to 15 characters, none of those Windows refuses in NetBIOS domain names."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 15
        and value.isascii()
        and value.isprintable()
        and not any(c in value for c in '\\/:*?"<>| .')
    )


def _is_service_principal(value: object) -> bool:
    """`service/host` with an optional `@REALM`: printable ASCII, no spaces."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        return False
    name, _, realm = value.partition("@")
    service, slash, host = name.partition("/")
    return bool(service and slash and host) and " " not in value and "@" not in realm


def _is_peer_names(value: object) -> bool:
    return value is None or (
        isinstance(value, tuple) and all(is_hostname_text(name) for name in value)
    )


def _to_realm_map(value: object) -> object:
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    return value  # the validator rejects it


class _RealmMap(Expect):
    """A table of Kerberos realm = SIP domain, naming the bad entry."""

    def __init__(self) -> None:
        super().__init__('a table of "REALM" = "sip-domain"', lambda value: True)

    def __call__(self, instance: object, attribute: Any, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise InvalidField(attribute.name, self.expected, value)
        for realm, domain in value.items():
            if not is_header_text(realm) or " " in realm or "@" in realm:
                raise InvalidField(f'{attribute.name}."{realm}"', "a Kerberos realm name", realm)
            if not is_hostname_text(domain):
                raise InvalidField(f'{attribute.name}."{realm}"', "a SIP domain name", domain)


class _Ha1Attributes(Expect):
    """A table of Digest algorithm = LDAP attribute holding H(A1), naming the bad entry."""

    def __init__(self) -> None:
        super().__init__('a table of "MD5"/"SHA-256"/"SHA-512-256" = "attribute"', bool)

    def __call__(self, instance: object, attribute: Any, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise InvalidField(attribute.name, self.expected, value)
        for algorithm, name in value.items():
            where = f'{attribute.name}."{algorithm}"'
            if algorithm not in DIGEST_ALGORITHMS:
                raise InvalidField(where, f"one of {', '.join(DIGEST_ALGORITHMS)}", algorithm)
            if not isinstance(name, str) or _ATTRIBUTE_NAME.fullmatch(name) is None:
                raise InvalidField(where, "an LDAP attribute name", name)
            if name.lower() in _PASSWORD_ATTRIBUTES:
                raise InvalidField(where, "an attribute holding H(A1), not a password", name)


@frozen(kw_only=True)
class AuthConfig:
    """`[auth]`: who must prove who they are (RFC 3261 §22).

    - `required`: true challenges every REGISTER and every request routed to a user before
      the directory is asked; false (default) checks credentials a client offers for our
      realm but lets requests without any through.
    - `realm` (required): the Digest realm, usually the SIP domain. A Digest username
      `alice` in realm `example.com` and `alice@example.com` name the same account.
    - `schemes`: `["digest"]` (default), `"ntlm"` ([MS-SIPAE] NTLM, as Microsoft clients
      and pidgin-sipe speak it), `"kerberos"` ([MS-SIPAE] Kerberos with a keytab), or
      several, each challenged in the order given.
    - `credentials` (required for digest from a file, the file must exist): CSV
      `user,password`, or `user,ha1_md5,ha1_sha256,ha1_sha512_256` with hashes of
      `user-part:realm:password`.
    - `digest_source`: where Digest secrets come from: `"file"` (default, `credentials`)
      or `"ldap"`: the `[assignments]` LDAP directory (which must be `backend = "ldap"`),
      the user found as for assignments, H(A1) values read from `ha1_attributes`.
    - `ha1_attributes` (required for the ldap source): a table algorithm = attribute,
      e.g. `{ MD5 = "sipHA1", "SHA-256" = "sipHA1Sha256" }`; every offered algorithm
      needs one; password attributes (`userPassword`, `unicodePwd`) are refused.
    - `digest_cache_ttl`: seconds an LDAP answer (unknown users too) is reused (default 30).
    - `algorithms`: Digest algorithms offered, strongest first (default
      `["SHA-512-256", "SHA-256", "MD5"]`, RFC 8760).
    - `nonce_secret_file`: a file of at least 16 bytes shared by directors that must accept
      each other's nonces; default a random secret per process.
    - `nonce_lifetime`: seconds a nonce is valid before `stale=true` (default 300).
    - `max_failures`, `failure_window`: after this many failures within the window (seconds)
      from one address or against one user, answer 403 until it passes (10 and 60).
    - `ntlm_backend`: where NTLM responses are checked: `"file"` (default, NT hashes from
      `ntlm_credentials`) or `"winbind"` (at the Active Directory domain controllers,
      through Samba's `ntlm_auth`; the host must be joined to the domain, winbindd running).
    - `ntlm_credentials` (required for the file backend, the file must exist): CSV
      `user,nt_hash` (the MD4 of the UTF-16LE password, 32 hex digits) or `user,password`;
      `user` is the AOR.
    - `ntlm_auth` (winbind): the helper's command line as an array (default
      `["/usr/bin/ntlm_auth"]`; `--helper-protocol=ntlm-server-1` is appended), e.g. with
      `"--configfile=/etc/samba/smb.conf"`; a bare program name is looked up in PATH.
    - `ntlm_auth_helpers` (winbind): helper processes kept running (default 2).
    - `ntlm_auth_timeout` (winbind): seconds a logon may wait for the domain controller's
      verdict before it fails (default 5).
    - `targetname` (required for ntlm): this server's FQDN, the NTLM `targetname`.
    - `ntlm_domain`: the NetBIOS domain whose users (`DOMAIN\\alice`) are `alice@realm`
      (default: the realm's first label, upper-cased).
    - `sipae_version`: the [MS-SIPAE] protocol version offered, 3 or 4 (default 4).
    - `max_security_associations`, `security_association_lifetime`: how many NTLM
      security associations are kept (default 10000, the oldest dropped) and for how long
      (seconds, default 28800).
    - `service_principal` (kerberos; default `sip/<targetname>`): the SIP service's
      Kerberos principal, `sip/director.example.com` or with `@REALM`; without a realm the
      default realm of krb5.conf applies. It is also the Kerberos `targetname`.
    - `keytab` (kerberos, the file must exist): the service principal's keys; default the
      system's (`KRB5_KTNAME`, else /etc/krb5.keytab).
    - `kerberos_realms`: a table `"REALM" = "sip-domain"`: principals `alice@REALM`
      authenticate as `alice@sip-domain`. Without an entry, principals of the service's
      own realm are `alice@<realm above>` and those of other realms are refused.
    - `trusted_peers`: the FQDNs of the servers (directors, edges) whose
      `P-Asserted-Identity` is believed (RFC 3325): a request carrying one from a flow whose
      verified TLS identity (mutual TLS, the flow's `peer_identity`) is listed counts as
      authenticated as that identity, without a challenge; the header (and
      `P-Preferred-Identity`) is removed from every other request before it is read.
      Default: the `allowed_peers` of the TLS listeners; `[]` trusts no one.
    """

    required: bool = field(default=False, validator=BOOLEAN)
    realm: str = field(
        validator=Expect("printable ASCII text without surrounding spaces", is_header_text)
    )
    schemes: tuple[str, ...] = field(
        default=("digest",),
        converter=to_strings,
        validator=_Subset(AVAILABLE_SCHEMES, PLANNED_SCHEMES),
    )
    credentials: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    digest_source: str = field(default="file", validator=one_of(*DIGEST_SOURCES))
    ha1_attributes: Mapping[str, str] = field(
        factory=dict, converter=_to_realm_map, validator=_Ha1Attributes()
    )
    digest_cache_ttl: float = field(default=30.0, converter=to_seconds, validator=SECONDS)
    algorithms: tuple[str, ...] = field(
        default=DIGEST_ALGORITHMS, converter=to_strings, validator=_Subset(DIGEST_ALGORITHMS)
    )
    nonce_secret_file: Path | None = field(
        default=None, converter=to_path, validator=PATH, metadata=FILE
    )
    nonce_lifetime: float = field(default=300.0, converter=to_seconds, validator=SECONDS)
    max_failures: int = field(default=10, validator=integer(1))
    failure_window: float = field(default=60.0, converter=to_seconds, validator=SECONDS)
    ntlm_backend: str = field(default="file", validator=one_of(*NTLM_BACKENDS))
    ntlm_credentials: Path | None = field(
        default=None, converter=to_path, validator=PATH, metadata=FILE
    )
    ntlm_auth: tuple[str, ...] = field(
        default=DEFAULT_NTLM_AUTH,
        converter=to_strings,
        validator=Expect('a command line such as ["/usr/bin/ntlm_auth"]', _is_command),
    )
    ntlm_auth_helpers: int = field(default=2, validator=integer(1, 64))
    ntlm_auth_timeout: float = field(default=5.0, converter=to_seconds, validator=SECONDS)
    targetname: str | None = field(
        default=None,
        converter=lower_optional,
        validator=Expect("a host name", optional(is_hostname_text)),
    )
    ntlm_domain: str | None = field(
        default=None,
        validator=Expect("a NetBIOS domain name", optional(_is_netbios_name)),
    )
    sipae_version: int = field(default=4, validator=one_of(3, 4))
    max_security_associations: int = field(default=10_000, validator=integer(1))
    security_association_lifetime: float = field(
        default=28_800.0, converter=to_seconds, validator=SECONDS
    )
    service_principal: str | None = field(
        default=None,
        validator=Expect(
            'a Kerberos principal such as "sip/host.example.com"', optional(_is_service_principal)
        ),
    )
    keytab: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    kerberos_realms: Mapping[str, str] = field(
        factory=dict, converter=_to_realm_map, validator=_RealmMap()
    )
    trusted_peers: tuple[str, ...] | None = field(
        default=None,
        converter=to_domains,
        validator=Expect("an array of hostnames", _is_peer_names),
    )

    def __attrs_post_init__(self) -> None:
        if "digest" in self.schemes:
            self._check_digest_source()
        if "ntlm" in self.schemes:
            if self.ntlm_backend == "file" and self.ntlm_credentials is None:
                raise InvalidField(
                    "ntlm_credentials", 'a file path (required for the "file" ntlm_backend)', None
                )
            if self.targetname is None:
                raise InvalidField("targetname", 'a host name (required for "ntlm")', None)
        if "kerberos" in self.schemes and self.kerberos_principal is None:
            raise InvalidField(
                "service_principal",
                'a principal (required for "kerberos" without targetname)',
                None,
            )

    def _check_digest_source(self) -> None:
        if self.digest_source == "file":
            if self.credentials is None:
                raise InvalidField("credentials", 'a file path (required for "digest")', None)
            if self.ha1_attributes:
                expected = 'nothing with digest_source = "file" (only "ldap" takes it)'
                raise InvalidField("ha1_attributes", expected, dict(self.ha1_attributes))
            return
        if self.credentials is not None:
            expected = 'nothing with digest_source = "ldap" (secrets come from the directory)'
            raise InvalidField("credentials", expected, str(self.credentials))
        if not self.ha1_attributes:
            expected = 'a table such as { MD5 = "sipHA1" } (required with digest_source = "ldap")'
            raise InvalidField("ha1_attributes", expected, None)
        missing = [name for name in self.algorithms if name not in self.ha1_attributes]
        if missing:
            covered = ", ".join(f'"{name}"' for name in self.ha1_attributes)
            raise InvalidField(
                "algorithms",
                f"only algorithms ha1_attributes has an attribute for ({covered})",
                list(self.algorithms),
            )

    @property
    def kerberos_principal(self) -> str | None:
        """`service_principal`, else `sip/<targetname>` ([MS-SIPAE] §4.2)."""
        if self.service_principal is not None:
            return self.service_principal
        return None if self.targetname is None else f"sip/{self.targetname}"

    @property
    def netbios_domain(self) -> str:
        """`ntlm_domain`, or the realm's first label upper-cased (at most 15 characters)."""
        if self.ntlm_domain is not None:
            return self.ntlm_domain
        return self.realm.split(".", 1)[0].upper()[:15]
