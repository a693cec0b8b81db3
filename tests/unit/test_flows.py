"""Via annotation and response routing (RFC 3261 §18.2.1, §18.2.2; RFC 3581)."""

from __future__ import annotations

import pytest

from homeredirect.sip.headers import parse_via
from homeredirect.transport.flows import annotate_via, reply_address, response_destination


@pytest.mark.parametrize(
    ("via", "source", "expected"),
    [
        # sent-by equals the source and no rport: unchanged, byte for byte.
        ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", ("192.0.2.1", 5060), None),
        # a host name, or another address, in sent-by: received is added (§18.2.1).
        (
            "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1",
            ("192.0.2.1", 5060),
            "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # rport asked for: filled with the source port, and received added even
        # when it equals sent-by (RFC 3581 §4).
        (
            "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1",
            ("192.0.2.1", 40000),
            "SIP/2.0/UDP 192.0.2.1:5060;rport=40000;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # IPv6: the reference in sent-by compares with the bare source address.
        ("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1", ("2001:db8::1", 5060), None),
    ],
)
def test_annotate_via(via: str, source: tuple[str, int], expected: str | None) -> None:
    assert annotate_via(via, parse_via(via), source) == (expected or via)


def test_a_param_named_like_rport_is_not_filled() -> None:
    via = "SIP/2.0/UDP 192.0.2.1:5060;rportx;branch=z9hG4bK1"
    assert annotate_via(via, parse_via(via), ("192.0.2.1", 5060)) == via


@pytest.mark.parametrize(
    ("via", "source", "expected"),
    [
        ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1", ("192.0.2.1", 40000), ("192.0.2.1", 5070)),
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", ("192.0.2.1", 40000), ("192.0.2.1", 5060)),
        (
            "SIP/2.0/UDP 192.0.2.1:5070;rport;branch=z9hG4bK1",
            ("198.51.100.9", 40000),
            ("198.51.100.9", 40000),
        ),
        (
            "SIP/2.0/UDP pc.example.com:5070;branch=z9hG4bK1",
            ("198.51.100.9", 40000),
            ("198.51.100.9", 5070),
        ),
        (  # maddr is not honoured: it would let a client aim our responses elsewhere
            "SIP/2.0/UDP 192.0.2.1;maddr=198.51.100.77;branch=z9hG4bK1",
            ("192.0.2.1", 1),
            ("192.0.2.1", 5060),
        ),
    ],
)
def test_reply_address_of_a_request_just_received(
    via: str, source: tuple[str, int], expected: tuple[str, int]
) -> None:
    assert reply_address(parse_via(via), source, "UDP") == expected


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        (
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport=40000;received=198.51.100.9",
            ("198.51.100.9", 40000),
        ),
        (
            "SIP/2.0/UDP pc.example.com:5070;branch=z9hG4bK1;received=198.51.100.9",
            ("198.51.100.9", 5070),
        ),
        ("SIP/2.0/TLS pc.example.com;branch=z9hG4bK1", ("pc.example.com", 5061)),
    ],
)
def test_response_destination_of_an_annotated_via(via: str, expected: tuple[str, int]) -> None:
    parsed = parse_via(via)
    assert response_destination(parsed, ("203.0.113.1", 1), parsed.transport) == expected
