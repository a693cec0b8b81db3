"""RFC 4515 escaping, filter templates, home values and the GSSAPI set-up, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment
from homeredirect.resolve.ldap_filter import (
    FilterTemplate,
    InvalidAddress,
    checked_parts,
    escape_filter_value,
)
from homeredirect.resolve.ldap_pool import ConnectionSettings, use_keytab
from homeredirect.resolve.ldap_schema import (
    AD_FILTER,
    HomeValue,
    normalize_dn,
    parent_dn,
    parse_home_value,
    schema_for,
)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("alice", "alice"),
        ("*", "\\2a"),
        ("(", "\\28"),
        (")", "\\29"),
        ("\\", "\\5c"),
        ("\x00", "\\00"),
        ("a*b(c)d\\e\x00", "a\\2ab\\28c\\29d\\5ce\\00"),
        ("\n\x7f", "\\0a\\7f"),
        ("jürgen", "jürgen"),  # UTF-8 stays as it is (RFC 4515 §3)
    ],
)
def test_special_characters_are_escaped_as_hex_pairs(value: str, escaped: str) -> None:
    assert escape_filter_value(value) == escaped


@given(st.text())
def test_escaped_values_hold_no_filter_metacharacters(value: str) -> None:
    escaped = escape_filter_value(value)
    assert not set(escaped) & set("*()\x00")
    # Every backslash starts an escape of two hex digits.
    parts = escaped.split("\\")[1:]
    assert all(len(part) >= 2 and int(part[:2], 16) >= 0 for part in parts)


def test_ad_template_puts_the_escaped_aor_after_sip() -> None:
    rendered = FilterTemplate(AD_FILTER).render(AddressOfRecord("*", "Example.COM"))
    assert rendered == (
        "(&(|(objectClass=user)(objectClass=contact))"
        "(msRTCSIP-PrimaryUserAddress=sip:\\2a@example.com))"
    )


def test_template_fills_user_and_domain_and_leaves_other_braces() -> None:
    template = FilterTemplate("(&(uid={user})(dc={domain})(x={other}))")
    assert template.render(AddressOfRecord("a)b", "example.com")) == (
        "(&(uid=a\\29b)(dc=example.com)(x={other}))"
    )


def test_match_all_turns_placeholders_into_wildcards() -> None:
    assert FilterTemplate("(mail={aor})").match_all() == "(mail=*)"


@pytest.mark.parametrize(
    ("template", "found"),
    [
        ("(mail={aor})", ("mail", "")),
        (AD_FILTER, ("msRTCSIP-PrimaryUserAddress", "sip:")),
        ("(&(uid={user})(dc={domain}))", None),
    ],
)
def test_aor_attribute_is_read_from_the_template(
    template: str, found: tuple[str, str] | None
) -> None:
    assert FilterTemplate(template).aor_attribute() == found


@pytest.mark.parametrize("user", ["al\x00ice", "a b", "x" * 257, "a@b", ""])
def test_invalid_user_parts_never_make_a_filter(user: str) -> None:
    forged = AddressOfRecord("alice", "example.com")
    object.__setattr__(forged, "user", user)
    with pytest.raises(InvalidAddress):
        FilterTemplate("(mail={aor})").render(forged)


def test_invalid_host_never_makes_a_filter() -> None:
    forged = AddressOfRecord("alice", "example.com")
    object.__setattr__(forged, "host", "exa*mple.com")
    with pytest.raises(InvalidAddress):
        checked_parts(forged)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Pool1.Example.com", HomeValue(assignment=Assignment("pool1.example.com"))),
        (
            "CN=LC Services,CN=Microsoft,CN=1:1,CN=Pools,DC=Example,DC=com",
            HomeValue(dn="cn=lc services,cn=microsoft,cn=1:1,cn=pools,dc=example,dc=com"),
        ),
        ("not a host!", HomeValue()),
        ("CN=,=broken", HomeValue()),
        ("", HomeValue()),
    ],
)
def test_home_values_are_an_fqdn_a_dn_or_bad(value: str, expected: HomeValue) -> None:
    assert parse_home_value(value) == expected


def test_dn_helpers_normalise_and_climb() -> None:
    assert normalize_dn("CN=A,DC=Example") == normalize_dn("cn=a, dc=example") == "cn=a,dc=example"
    assert parent_dn("CN=LC Services,CN=Microsoft,CN=p") == "CN=Microsoft,CN=p"
    assert parent_dn("CN=p") is None


def ldap_config(**keys: object) -> LdapAssignmentsConfig:
    settings: dict[str, object] = {
        "uris": ["ldap://dc1.example.com"],
        "base_dn": "dc=example,dc=com",
    }
    return LdapAssignmentsConfig(**(settings | keys))  # type: ignore[arg-type]


def test_ad_preset_reads_the_lync_attributes() -> None:
    schema = schema_for(ldap_config())
    assert schema.attributes == [
        "msRTCSIP-PrimaryHomeServer",
        "msRTCSIP-UserEnabled",
        "msRTCSIP-PrimaryUserAddress",
    ]
    entry = ("cn=a", {"msrtcsip-userenabled": [b"TRUE"]})  # names compare case-insensitively
    assert schema.enabled(entry)
    assert not schema.enabled(("cn=a", {"msRTCSIP-UserEnabled": [b"FALSE"]}))
    assert not schema.enabled(("cn=a", {}))
    assert schema.writes_dn


def test_generic_preset_has_no_enabled_flag_and_writes_fqdns() -> None:
    schema = schema_for(
        ldap_config(preset="generic", filter="(mail={aor})", home_attribute="sipHomeServer")
    )
    assert schema.enabled(("cn=a", {}))
    assert not schema.writes_dn
    assert schema.aor_of(("cn=a", {"mail": [b"Bob@Example.com"]})) == AddressOfRecord(
        "Bob", "example.com"
    )


def test_keytab_is_given_to_kerberos_through_the_environment() -> None:
    environ: dict[str, str] = {}
    use_keytab("/etc/homeredirect/director.keytab", environ)
    assert environ == {
        "KRB5_CLIENT_KTNAME": "/etc/homeredirect/director.keytab",
        "KRB5CCNAME": "MEMORY:homeredirect-ldap",
    }
    environ = {"KRB5CCNAME": "FILE:/tmp/mine"}
    use_keytab("/k", environ)
    assert environ["KRB5CCNAME"] == "FILE:/tmp/mine"


def test_connection_settings_know_when_tls_is_in_use(tmp_path: Path) -> None:
    keytab = tmp_path / "k.keytab"
    keytab.write_bytes(b"")
    settings = ConnectionSettings.from_config(
        ldap_config(sasl_mechanism="GSSAPI", keytab=keytab, starttls=True)
    )
    assert settings.sasl_gssapi and settings.uses_tls
    assert not ConnectionSettings.from_config(ldap_config()).uses_tls
    ldaps = ldap_config(uris=["ldaps://dc1.example.com"])
    assert ConnectionSettings.from_config(ldaps).uses_tls
