"""Hostname and IP literal checks shared by configuration and assignment data."""

from __future__ import annotations

import pytest

from homeredirect.hostnames import (
    is_hostname,
    is_ip_address,
    normalize_host,
    normalize_hostname,
    normalize_uri_host,
)


@pytest.mark.parametrize(
    "name",
    ["localhost", "example.com", "home1.example.com", "a-b.c0.example", "X.Example.COM", "a" * 63],
)
def test_valid_hostnames_are_accepted(name: str) -> None:
    assert is_hostname(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "192.0.2.1",  # an IPv4 literal: the top label must start with a letter
        "example.com.",
        "-a.example.com",
        "a-.example.com",
        "a..example.com",
        "under_score.example.com",
        "white space.example.com",
        "a" * 64 + ".com",
        ("a" * 62 + ".") * 4 + "com",  # 255 octets
        "exämple.com",
        "example.123",
    ],
)
def test_invalid_hostnames_are_rejected(name: str) -> None:
    assert not is_hostname(name)


def test_hostname_is_normalised_to_lowercase() -> None:
    assert normalize_hostname("Home1.Example.COM") == "home1.example.com"


def test_normalize_hostname_rejects_ip_literals() -> None:
    with pytest.raises(ValueError):
        normalize_hostname("127.0.0.1")


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "2001:db8::1", "fe80::1%eth0"])
def test_ip_addresses_are_recognised(address: str) -> None:
    assert is_ip_address(address)


@pytest.mark.parametrize("address", ["[::1]", "256.0.0.1", "localhost", "1.2.3"])
def test_non_ip_addresses_are_not(address: str) -> None:
    assert not is_ip_address(address)


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Sip.Example.com", "sip.example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("[2001:DB8:0::1]", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
    ],
)
def test_bind_and_dial_hosts_are_canonicalised(given: str, normal: str) -> None:
    assert normalize_host(given) == normal


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Example.COM", "example.com"),
        ("192.0.2.1", "192.0.2.1"),
        ("[2001:DB8:0::1]", "[2001:db8::1]"),
    ],
)
def test_uri_hosts_are_canonicalised_for_comparison(given: str, normal: str) -> None:
    assert normalize_uri_host(given) == normal


@pytest.mark.parametrize("host", ["2001:db8::1", "[192.0.2.1]", "exa mple.com", ""])
def test_bad_uri_hosts_are_rejected(host: str) -> None:
    with pytest.raises(ValueError):
        normalize_uri_host(host)
