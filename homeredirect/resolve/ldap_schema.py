"""Where a directory keeps a user's home server: the Active Directory and generic presets.

Pure: which filter finds a user, which attributes to read, and what the values read mean.
`homeredirect.resolve.ldap_source` does the I/O.

Active Directory (Lync / Skype for Business schema): a user, or a contact (common area
phones and application endpoints are contacts), is found by `msRTCSIP-PrimaryUserAddress`
equal to `sip:<aor>`, must have `msRTCSIP-UserEnabled` TRUE, and `msRTCSIP-PrimaryHomeServer`
names the home: a DN-syntax attribute whose value is the pool's service object,
`CN=LC Services,CN=Microsoft,CN=<pool>,...`; the FQDN is in `dNSHostName` on that object or
an ancestor. Deployments that store an FQDN instead are served too.

Generic: an operator's filter template and the attribute holding the home (an FQDN, or a
DN resolved the same way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ldap.dn
from attrs import frozen

from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.hostnames import normalize_hostname
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment
from homeredirect.resolve.ldap_filter import FilterTemplate

__all__ = [
    "AD_FILTER",
    "DirectorySchema",
    "HomeValue",
    "first_value",
    "normalize_dn",
    "parent_dn",
    "parse_home_value",
    "schema_for",
]

AD_ADDRESS = "msRTCSIP-PrimaryUserAddress"
AD_ENABLED = "msRTCSIP-UserEnabled"
AD_HOME = "msRTCSIP-PrimaryHomeServer"
AD_FILTER = f"(&(|(objectClass=user)(objectClass=contact))({AD_ADDRESS}=sip:{{aor}}))"
"""Users and contacts by their SIP address, as Lync's own lookups do."""

Entry = tuple[str, Mapping[str, Sequence[bytes]]]
"""A search result entry as python-ldap returns it: DN and attribute values."""


@frozen
class DirectorySchema:
    """What to search for and what to read. `enabled_attribute` (AD only) must be TRUE;
    `writes_dn`: `move` writes the pool's DN (AD, where the attribute has DN syntax) rather
    than the FQDN (generic)."""

    user_filter: FilterTemplate
    home_attribute: str
    enabled_attribute: str | None
    pool_fqdn_attribute: str
    writes_dn: bool

    @property
    def attributes(self) -> list[str]:
        """The attributes a lookup reads."""
        names = [self.home_attribute]
        if self.enabled_attribute is not None:
            names.append(self.enabled_attribute)
        found = self.user_filter.aor_attribute()
        if found is not None:
            names.append(found[0])
        return names

    def enabled(self, entry: Entry) -> bool:
        """True unless the preset has an enabled flag that is not TRUE (RFC 4517 §3.3.3
        Boolean: `TRUE` or `FALSE`; a missing flag is not enabled, as in Lync)."""
        if self.enabled_attribute is None:
            return True
        return first_value(entry, self.enabled_attribute) == "TRUE"

    def home_value(self, entry: Entry) -> str | None:
        return first_value(entry, self.home_attribute)

    def aor_of(self, entry: Entry) -> AddressOfRecord | None:
        """The AOR an entry is found by, for export; None if it has none usable."""
        found = self.user_filter.aor_attribute()
        if found is None:
            return None
        attribute, prefix = found
        value = first_value(entry, attribute)
        if value is None or not value.lower().startswith(prefix.lower()):
            return None
        try:
            return AddressOfRecord.parse(value[len(prefix) :])
        except ValueError:
            return None


def _get(entry: Entry, attribute: str) -> Sequence[bytes]:
    """Attribute values; attribute names compare case-insensitively (RFC 4512 §2.5)."""
    attributes = entry[1]
    values = attributes.get(attribute)
    if values is not None:
        return values
    wanted = attribute.lower()
    for name, found in attributes.items():
        if name.lower() == wanted:
            return found
    return ()


def first_value(entry: Entry, attribute: str) -> str | None:
    values = _get(entry, attribute)
    if not values:
        return None
    try:
        return values[0].decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


def schema_for(config: LdapAssignmentsConfig) -> DirectorySchema:
    """The schema mapping `config` selects (its validation guarantees the generic keys)."""
    if config.preset == "ad":
        return DirectorySchema(
            user_filter=FilterTemplate(AD_FILTER),
            home_attribute=AD_HOME,
            enabled_attribute=AD_ENABLED,
            pool_fqdn_attribute=config.pool_fqdn_attribute,
            writes_dn=True,
        )
    assert config.filter is not None and config.home_attribute is not None
    return DirectorySchema(
        user_filter=FilterTemplate(config.filter),
        home_attribute=config.home_attribute,
        enabled_attribute=None,
        pool_fqdn_attribute=config.pool_fqdn_attribute,
        writes_dn=False,
    )


@frozen
class HomeValue:
    """A home attribute's value understood: an assignment, or a DN to resolve (`dn` is
    normalised: a cache key), or neither (`assignment` and `dn` None: bad data)."""

    assignment: Assignment | None = None
    dn: str | None = None


def parse_home_value(value: str) -> HomeValue:
    """An FQDN is the home as is; a DN (it has `=`) names a pool object to resolve;
    anything else is bad data."""
    if "=" in value:
        dn = normalize_dn(value)
        return HomeValue(dn=dn) if dn is not None else HomeValue()
    try:
        return HomeValue(assignment=Assignment(normalize_hostname(value)))
    except ValueError:
        return HomeValue()


def _split_dn(dn: str) -> list[list[tuple[str, str, int]]] | None:
    try:
        parts: list[list[tuple[str, str, int]]] = ldap.dn.str2dn(dn)
    except Exception:  # python-ldap raises DECODING_ERROR, or ValueError for odd input
        return None
    return parts or None


def normalize_dn(dn: str) -> str | None:
    """`dn` in one spelling (RFC 4514 string, attribute types and values lowercased), as a
    cache key; None if it is not a DN. DN comparison in AD is case-insensitive."""
    parts = _split_dn(dn)
    if parts is None:
        return None
    lowered = [
        [(kind.lower(), value.lower(), flags) for kind, value, flags in rdn] for rdn in parts
    ]
    text: str = ldap.dn.dn2str(lowered)
    return text


def parent_dn(dn: str) -> str | None:
    """The DN one level up, None at the top."""
    parts = _split_dn(dn)
    if parts is None or len(parts) < 2:
        return None
    text: str = ldap.dn.dn2str(parts[1:])
    return text
