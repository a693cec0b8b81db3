"""AddressOfRecord and Assignment: the keys and answers of assignment lookups."""

from __future__ import annotations

import pytest

from homeredirect.resolve.interfaces import AddressOfRecord, Assignment


@pytest.mark.parametrize(
    "text", ["sip:alice@example.com", "sips:alice@example.com", "alice@example.com"]
)
def test_parse_accepts_uri_or_bare_forms(text: str) -> None:
    assert AddressOfRecord.parse(text) == AddressOfRecord(user="alice", host="example.com")


def test_scheme_is_case_insensitive() -> None:
    assert AddressOfRecord.parse("SIP:alice@example.com").user == "alice"


def test_host_is_lowercased_but_user_is_not() -> None:
    aor = AddressOfRecord.parse("sip:Alice@Example.COM")
    assert (aor.user, aor.host) == ("Alice", "example.com")
    assert aor != AddressOfRecord.parse("alice@example.com")


def test_str_is_user_at_host() -> None:
    assert str(AddressOfRecord.parse("sips:Bob@EXAMPLE.com")) == "Bob@example.com"


def test_ip_hosts_are_accepted() -> None:
    assert str(AddressOfRecord.parse("sip:alice@[2001:DB8::1]")) == "alice@[2001:db8::1]"
    assert str(AddressOfRecord.parse("alice@192.0.2.1")) == "alice@192.0.2.1"


def test_telephone_number_users_are_accepted() -> None:
    aor = AddressOfRecord.parse("sip:+15551234567;phone-context=example.com@example.com")
    assert aor.user == "+15551234567;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice",
        "@example.com",
        "alice@",
        "sip:@example.com",
        "alice @example.com",
        "alice@example .com",
        " alice@example.com",
        "alice@example.com\n",
        "alice@bob@example.com",
        "alice:secret@example.com",
        "alice@exa_mple.com",
        "<sip:alice@example.com>",
    ],
)
def test_parse_rejects_malformed_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        AddressOfRecord.parse(text)


@pytest.mark.parametrize(("user", "host"), [("", "example.com"), ("a b", "example.com")])
def test_constructor_validates_user(user: str, host: str) -> None:
    with pytest.raises(ValueError):
        AddressOfRecord(user=user, host=host)


def test_constructor_validates_host() -> None:
    with pytest.raises(ValueError):
        AddressOfRecord(user="alice", host="")


def test_assignment_fqdn_is_lowercased() -> None:
    assert Assignment("Home1.Example.com").home_server == "home1.example.com"


@pytest.mark.parametrize("fqdn", ["", "home 1", "192.0.2.1", "home1.example.com."])
def test_assignment_requires_a_hostname(fqdn: str) -> None:
    with pytest.raises(ValueError):
        Assignment(fqdn)
