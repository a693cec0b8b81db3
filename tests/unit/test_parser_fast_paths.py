"""The parser's fast paths agree with the general ones they stand in for.

`_split_fields` (split and partition) must read every header block it accepts
exactly as `_match_fields` (the line regex) does, and decline every
block that has a fault; the first alternative of `_VIA_FAST_RE` (a branch,
perhaps an empty rport) must give the Via that the general path gives; the
possessive `HOSTNAME` pattern must accept what the plain one did; and
`bounded_int`'s short-string shortcut must give what stripping zeros gave.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import Via, parse_via
from homeredirect.sip.parser import (
    MessageReceived,
    MessageRejected,
    _indexed,
    _match_fields,
    _read_head,
    _split_fields,
    parse_datagram,
)
from homeredirect.sip.uri import HOSTNAME, bounded_int

# --- header block splitting (RFC 3261 §7.3.1) -----------------------------------------

_NAME_PIECES = ["Via", "v", "VIA", "Call-ID", "To", "X-Custom", "Na me", "", "a@b", "CSeq "]
_VALUE_PIECES = ["", " ", "\t", "x", " SIP/2.0/UDP h", "a:b", "\r", "\n", "\r\n", "\r\n ", "  "]


@st.composite
def blocks(draw: st.DrawFn) -> str:
    """Header blocks of lines that are mostly well formed, with faults mixed in."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(_NAME_PIECES) | st.text("aZ-.!:\t ", max_size=4))
        separator = draw(st.sampled_from([":", ": ", " :", ":\t", "", "::"]))
        value = "".join(draw(st.lists(st.sampled_from(_VALUE_PIECES), max_size=3)))
        lines.append(f"{name}{separator}{value}\r\n")
    return "".join(lines)


@given(blocks(), st.booleans())
def test_fast_field_reading_agrees_with_the_checked_reading(block: str, trailing: bool) -> None:
    fast = _split_fields(block)
    pairs, error = _match_fields(block)
    if fast is not None:
        assert error is None
        assert fast == pairs
        assert _indexed(fast, trailing) == _indexed(pairs, trailing)


_GOOD_LINES = st.tuples(
    st.sampled_from(["Via", "v", "Max-Forwards", "x-Thing", "CSEQ", "call-id"]),
    st.sampled_from([":", ": ", ":\t ", ":  "]),
    st.text(string.ascii_letters + string.digits + ' ;=<>@:"/.\t', max_size=20),
)


@given(st.lists(_GOOD_LINES, max_size=6), st.booleans())
def test_well_formed_blocks_take_the_fast_path(
    lines: list[tuple[str, str, str]], trailing: bool
) -> None:
    block = "".join(f"{name}{colon}{value}\r\n" for name, colon, value in lines)
    fast = _split_fields(block)
    assert fast is not None
    pairs, error = _match_fields(block)
    assert error is None and fast == pairs
    assert _indexed(fast, trailing) == _indexed(pairs, trailing)


@pytest.mark.parametrize(
    "block",
    [
        "Via : SIP/2.0/UDP h\r\n",  # LWS before the colon: well formed, checked path
        "Via\t: SIP/2.0/UDP h\r\n",
        "Via: a\nTo: b\r\n",  # bare LF
        "Via: a\rTo: b\r\n",  # bare CR
        "Via: a\r\n\r\nTo: b\r\n",  # empty line
        "No colon here\r\n",
        ": no name\r\n",
        "a@b: bad name\r\n",
    ],
)
def test_blocks_the_fast_path_declines(block: str) -> None:
    assert _split_fields(block) is None


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("Subject:\r\n", [("Subject", "")]),
        ("Subject:   x  \r\n", [("Subject", "x")]),  # trailing LWS stripped
        ("Subject:\tx\t\r\n", [("Subject", "x")]),
        ("Subject: a\r\n b\r\n\tc\r\n", [("Subject", "a b c")]),  # folded
        ("subject : a\r\n", [("Subject", "a")]),  # checked path
        ("i: 1@h\r\nl: 0\r\n", [("Call-ID", "1@h"), ("Content-Length", "0")]),
        ("X-A: 1\r\nx-a: 2\r\n", [("X-A", "1"), ("x-a", "2")]),
    ],
)
def test_read_head_fields(text: str, fields: list[tuple[str, str]]) -> None:
    data = f"OPTIONS sip:h SIP/2.0\r\n{text}\r\n".encode()
    head = _read_head(data, len(data) - 4)
    assert head.error is None
    assert list(head.headers) == fields


def test_bad_line_is_reported_with_the_readable_fields() -> None:
    data = (
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\nBad line\r\n"
        b"Call-ID: 1@h\r\n\r\n"
    )
    event = parse_datagram(data)
    assert isinstance(event, MessageRejected)
    assert event.error.reason == "bad header line 'Bad line'"
    assert event.headers.get("Call-ID") == "1@h"
    assert event.is_request and event.method == "OPTIONS"


# --- Via: the branch/rport shape against the general path (RFC 3261 §20.42) -------------

_HOSTS = st.sampled_from(
    ["192.0.2.1", "127.0.0.1", "Host.Example.COM", "a-b.example.com.", "h", "[2001:db8::1]"]
)
_BRANCHES = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=12)
_PARAMS = st.sampled_from(
    [
        "",
        ";rport",
        ";rport=5060",
        ";received=192.0.2.9",
        ";received=[2001:db8::9]",
        ";maddr=224.0.0.1;ttl=16",
        ";lr",
        ";RPORT",
        ";x=y;rport",
    ]
)


@given(
    st.sampled_from(["UDP", "udp", "TcP", "TLS", "SCTP", "WS"]),
    _HOSTS,
    st.sampled_from(["", ":5060", ":1", ":65535"]),
    _BRANCHES,
    _PARAMS,
)
def test_fast_via_agrees_with_the_general_path(
    transport: str, host: str, port: str, branch: str, params: str
) -> None:
    text = f"SIP/2.0/{transport} {host}{port};branch={branch}{params}"
    # LWS around the slashes is legal (RFC 3261 §25.1 SLASH) and only the general path
    # reads it.
    general = text.replace("/", " / ", 2)
    assert parse_via(text) == parse_via(general)


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("SIP/2.0/UDP h;branch=z9hG4bK-1", (("branch", "z9hG4bK-1"),)),
        ("SIP/2.0/UDP h;branch=z9hG4bK-1;rport", (("branch", "z9hG4bK-1"), ("rport", None))),
        ("SIP/2.0/UDP h;branch=z;rport=1", (("branch", "z"), ("rport", "1"))),
        ("SIP/2.0/UDP h;branch=z;rport;lr", (("branch", "z"), ("rport", None), ("lr", None))),
        ("SIP/2.0/UDP h;rport;branch=z", (("rport", None), ("branch", "z"))),
        ("SIP/2.0/UDP h;BRANCH=z", (("BRANCH", "z"),)),
        ("SIP/2.0/UDP h;branch=z;received=192.0.2.1", (("branch", "z"), ("received", "192.0.2.1"))),
    ],
)
def test_via_params(text: str, params: tuple[tuple[str, str | None], ...]) -> None:
    via = parse_via(text)
    assert via == Via("UDP", "h", None, params)
    assert parse_via(text.replace("/", " / ", 2)) == via


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SIP/2.0/UDP h;branch", "bad Via branch None"),
        ("SIP/2.0/UDP h;branch=", None),
        ("SIP/2.0/UDP h;branch=a b", None),
        ("SIP/2.0/UDP h;branch=z;rport=0", "bad Via rport '0'"),
        ("SIP/2.0/UDP h;branch=z;rport=65536", "bad Via rport '65536'"),
        ("SIP/2.0/UDP h;branch=z;received=h2", "bad Via received 'h2': not an IP address"),
        ("SIP/2.0/UDP h;branch=z;received", "bad Via received None: not an IP address"),
        ("SIP/2.0/UDP h:0;branch=z", None),
        ("SIP/2.0/UDP example-.com;branch=z", None),
    ],
)
def test_bad_vias_are_refused_by_both_paths(text: str, reason: str | None) -> None:
    with pytest.raises(SipParseError) as fast:
        parse_via(text)
    with pytest.raises(SipParseError) as general:
        parse_via(text.replace("/", " / ", 2))
    if reason is not None:
        assert fast.value.reason == general.value.reason == reason


def test_proxied_response_vias() -> None:
    data = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-hr-0f.2e;rport\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-7-0\r\n"
        b"Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKedge7;received=192.0.2.1\r\n"
        b"From: <sip:u@example.com>;tag=1\r\nTo: <sip:u@example.com>;tag=2\r\n"
        b"Call-ID: 7@h\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived)
    assert [str(via) for via in event.message.vias] == [
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-hr-0f.2e;rport",
        "SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-7-0",
        "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKedge7;received=192.0.2.1",
    ]


# --- host names and numbers ---------------------------------------------------------------

#: `HOSTNAME` as it was before its runs became possessive: the reference.
_PLAIN_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?"
    r"(?::([0-9]+))?(;[a-z]+)?"
)
_HOSTNAME_IN_CONTEXT = re.compile(rf"{HOSTNAME}(?::([0-9]+))?(;[a-z]+)?")


@given(st.text("aZ09-.:;x", max_size=14))
def test_possessive_hostname_matches_what_the_plain_one_did(text: str) -> None:
    plain = _PLAIN_HOSTNAME.fullmatch(text)
    possessive = _HOSTNAME_IN_CONTEXT.fullmatch(text)
    assert (plain is None) == (possessive is None)
    if plain is not None and possessive is not None:
        assert plain.groups() == possessive.groups()


@pytest.mark.parametrize(
    "text", ["example-.com", "-a.com", "a--b.c-d.example", "a.b-", "x.1a", "1a.b", "a..b", "a.b.."]
)
def test_hostname_edge_cases(text: str) -> None:
    assert (_PLAIN_HOSTNAME.fullmatch(text) is None) == (re.fullmatch(HOSTNAME, text) is None)


def _bounded_int_reference(text: str, maximum: int) -> int | None:
    """bounded_int as it was: strip zeros, compare lengths, then int()."""
    if not (text.isdigit() and text.isascii()):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(maximum)):
        return None
    value = int(significant) if significant else 0
    return value if value <= maximum else None


@given(
    st.text("0123456789", max_size=40) | st.text("0 1+-_٣", max_size=6),
    st.sampled_from([0, 255, 65535, 2**31 - 1, 2**32 - 1, 2**63 - 1]),
)
def test_bounded_int_agrees_with_the_reference(text: str, maximum: int) -> None:
    assert bounded_int(text, maximum) == _bounded_int_reference(text, maximum)


@pytest.mark.parametrize(
    ("text", "maximum", "value"),
    [
        ("0" * 30 + "70", 255, 70),
        ("9" * 18, 2**63 - 1, 10**18 - 1),
        ("9" * 19, 2**63 - 1, None),
        ("000000000000000000256", 255, None),
        ("1" * 5000, 2**63 - 1, None),
    ],
)
def test_bounded_int_lengths(text: str, maximum: int, value: int | None) -> None:
    assert bounded_int(text, maximum) == value
