"""The pieces of the SIP layer one at a time: URIs, header values, limits, framing.

uri.py (escapes, hosts, ports), headers.py (Via with RFC 3581 rport, CSeq,
name-addr and addr-spec, Contact) and the parsers' limits: the size limit on
datagrams and streams, keep-alive pings, and the framing errors that end a
stream.
"""

from __future__ import annotations

import pytest

from homeredirect.sip.errors import (
    MAX_REASON_LENGTH,
    MessageTooLarge,
    SipParseError,
    VersionNotSupported,
)
from homeredirect.sip.headers import (
    CSeq,
    parse_contacts,
    parse_cseq,
    parse_expires,
    parse_name_addr,
    parse_via,
    split_list,
)
from homeredirect.sip.message import Request, Response
from homeredirect.sip.parser import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Event,
    KeepAlivePing,
    MessageReceived,
    MessageRejected,
    StreamParser,
    parse_datagram,
)
from homeredirect.sip.uri import (
    AbsoluteUri,
    SipUri,
    TelUri,
    parse_host,
    parse_uri,
    split_hostport,
    unescape,
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: 1-123@127.0.0.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:alice@127.0.0.1:5061>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _with(old: bytes, new: bytes, data: bytes = REGISTER) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def _received(data: bytes) -> Request:
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived), event
    assert isinstance(event.message, Request)
    return event.message


def _rejected(data: bytes) -> MessageRejected:
    event = parse_datagram(data)
    assert isinstance(event, MessageRejected), event
    return event


def _body(size: int) -> bytes:
    """REGISTER carrying a body of *size* octets."""
    return _with(b"Content-Length: 0\r\n\r\n", b"Content-Length: %d\r\n\r\n" % size) + b"x" * size


# -- unescape (RFC 3261 §19.1.2, §19.1.4) -------------------------------------


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("alice", "alice"),
        ("%61lice", "alice"),
        ("I%20have%20spaces", "I have spaces"),
        ("%c3%a9t%C3%A9", "été"),
        ("null-%00-null", "null-\x00-null"),
        ("value%25%34%31", "value%41"),  # decoded once, never twice (RFC 4475 §3.1.1.3)
        ("%Z%45", "%ZE"),  # '%' not followed by two hex digits stays as it is
        ("50%", "50%"),
    ],
)
def test_unescape_decodes_each_escape_once(escaped: str, text: str) -> None:
    assert unescape(escaped) == text


def test_unescape_keeps_octets_that_are_not_utf8_recoverable() -> None:
    assert unescape("%FF%FE").encode("utf-8", "surrogateescape") == b"\xff\xfe"


# -- hosts and ports (RFC 3261 §25.1 hostport) ----------------------------------


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.Com", "example.com"),
        ("a-b.example.com", "a-b.example.com"),
        ("1a.example.com", "1a.example.com"),
        ("example.com.", "example.com."),
        ("localhost", "localhost"),
        ("192.0.2.1", "192.0.2.1"),
        ("255.255.255.255", "255.255.255.255"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("[::1]", "[::1]"),
        ("[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]"),
    ],
)
def test_good_hosts_are_lowercased(text: str, host: str) -> None:
    assert parse_host(text) == host


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-example.com",
        "example-.com",
        "a..example.com",
        "a_b.example.com",
        "exa mple.com",
        "ex@mple.com",
        "example.123",
        "1.2.3",
        "256.1.1.1",
        "1.2.3.4.5",
        "[2001:db8::1",
        "[2001:db8:::1]",
        "[fe80::1%eth0]",
        "[192.0.2.1]",
        "[]",
        "2001:db8::1",
    ],
)
def test_bad_hosts_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_host(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", ("example.com", None)),
        ("example.com:5060", ("example.com", 5060)),
        ("192.0.2.1:1", ("192.0.2.1", 1)),
        ("[2001:db8::1]:65535", ("[2001:db8::1]", 65535)),
        ("[2001:db8::1]", ("[2001:db8::1]", None)),
    ],
)
def test_hostport_splits_host_and_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_hostport(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "example.com:0",
        "example.com:65536",
        "example.com:99999999999",
        "example.com:",
        "example.com:-1",
        "example.com:50a",
        "example.com:\u0665\u0660",  # Arabic-Indic digits are digits to str.isdigit
        "[2001:db8::1]:0",
    ],
)
def test_ports_out_of_range_or_not_digits_are_refused(text: str) -> None:
    with pytest.raises(SipParseError, match="port"):
        split_hostport(text)


def test_junk_after_an_ipv6_reference_is_refused() -> None:
    with pytest.raises(SipParseError, match="IPv6"):
        split_hostport("[2001:db8::1]5060")


@pytest.mark.parametrize("port", [b"0", b"65536", b"100000"])
def test_bad_ports_are_refused_in_every_header(port: bytes) -> None:
    for header in (b"Contact: <sip:alice@127.0.0.1:5061>", b"Via: SIP/2.0/UDP 127.0.0.1:5061"):
        event = _rejected(_with(header, header.replace(b"5061", port)))
        assert "port" in event.error.reason
    event = _rejected(
        _with(b"REGISTER sip:example.com ", b"REGISTER sip:example.com:" + port + b" ")
    )
    assert "Request-URI" in event.error.reason


# -- URIs (RFC 3261 §19.1, RFC 3966) ----------------------------------------------


def test_sip_uri_components_are_kept_as_written_but_host_and_scheme_lowercased() -> None:
    uri = parse_uri("SIPS:Alice%20B:secret@Example.COM:5061;transport=TCP;lr?Subject=hi")
    assert uri == SipUri(
        scheme="sips",
        host="example.com",
        user="Alice%20B",
        password="secret",
        port=5061,
        params=(("transport", "TCP"), ("lr", None)),
        headers="Subject=hi",
    )
    assert isinstance(uri, SipUri)
    assert uri.transport == "tcp"
    assert uri.param("LR") == ""
    assert str(uri) == "sips:Alice%20B:secret@example.com:5061;transport=TCP;lr?Subject=hi"


def test_fast_and_general_uri_paths_agree() -> None:
    # The first takes the one-regex path, the second (a password) the general one.
    fast = parse_uri("sip:alice@[2001:db8::1]:5060;lr")
    general = parse_uri("sip:alice:@[2001:db8::1]:5060;lr")
    assert isinstance(fast, SipUri) and isinstance(general, SipUri)
    assert (fast.host, fast.port, fast.params) == (general.host, general.port, general.params)
    assert parse_uri("sip:alice@example.com;lr") == parse_uri("sip:alice@EXAMPLE.com;lr")


def test_tel_and_other_schemes() -> None:
    assert parse_uri("tel:+1-201-555-0123;phone-context=example.com") == TelUri(
        "+1-201-555-0123", (("phone-context", "example.com"),)
    )
    assert parse_uri("urn:service:sos") == AbsoluteUri("urn", "service:sos")


@pytest.mark.parametrize(
    "text",
    [
        "alice@example.com",
        "sip:",
        "sip:@example.com",
        "sip:alice@",
        "sip:al ice@example.com",
        "sip:alice@example.com;=x",
        "sip:alice@example.com;a=b=c",
        "sip:alice@example.com?Sub ject=x",
        "tel:xyz",
        "1sip:alice@example.com",
        "mailto:<x>",
    ],
)
def test_bad_uris_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# -- Via (RFC 3261 §20.42, RFC 3581) --------------------------------------------


def test_via_with_rport_flag() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "192.0.2.1",
        5060,
        "z9hG4bK776",
    )
    assert via.rport == ""
    assert via.received is None
    assert via.sent_by == "192.0.2.1:5060"


def test_via_with_received_and_filled_in_rport() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776;received=192.0.2.9;rport=5062")
    assert (via.received, via.rport) == ("192.0.2.9", "5062")
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776;received=192.0.2.9;rport=5062"


@pytest.mark.parametrize("address", ["2001:db8::9", "[2001:db8::9]"])
def test_via_received_may_be_ipv6(address: str) -> None:
    via = parse_via(f"SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK1;received={address}")
    assert (via.host, via.port, via.received) == ("[2001:db8::1]", 5060, address)


def test_via_with_lws_everywhere_takes_the_general_path() -> None:
    via = parse_via("sip / 2.0 / udp  Host.Example.COM : 5060 ; branch = z9hG4bK1 ; rport")
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "UDP",
        "host.example.com",
        5060,
    )
    assert (via.branch, via.rport) == ("z9hG4bK1", "")


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received=example.com", "received"),
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received", "received"),
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received=300.1.1.1", "received"),
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport=0", "rport"),
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport=65536", "rport"),
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport=abc", "rport"),
        ("SIP/2.0/UDP 192.0.2.1;branch", "branch"),
        ('SIP/2.0/UDP 192.0.2.1;branch="z9hG4bK1"', "branch"),
        ("SIP/2.0/UDP 192.0.2.1:0;branch=z9hG4bK1", "port"),
        ("SIP/2.0/UDP bad_host;branch=z9hG4bK1", "host"),
        ("SIP/2.0/UDP;branch=z9hG4bK1", "Via"),
        ("SIP/2.0/UDP 192.0.2.1;;branch=z9hG4bK1", "parameter"),
    ],
)
def test_bad_via_values_are_refused(value: str, word: str) -> None:
    with pytest.raises(SipParseError, match=word):
        parse_via(value)


def test_via_errors_name_the_via_header() -> None:
    event = _rejected(_with(b";rport\r\n", b";rport,\r\n"))
    assert event.error.reason.startswith("Via:")


# -- CSeq (RFC 3261 §20.16) --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cseq"),
    [
        ("1 INVITE", CSeq(1, "INVITE")),
        ("0 REGISTER", CSeq(0, "REGISTER")),
        ("0009 INVITE", CSeq(9, "INVITE")),
        ("1\t  BYE", CSeq(1, "BYE")),
        # Only the first number of a dialog must be below 2**31 (§8.1.1.5); later
        # ones may climb to 2**32 - 1 (§12.2.1.1).
        (f"{2**31} INFO", CSeq(2**31, "INFO")),
        (f"{2**32 - 1} INFO", CSeq(2**32 - 1, "INFO")),
    ],
)
def test_cseq_numbers_are_32_bit_unsigned(value: str, cseq: CSeq) -> None:
    assert parse_cseq(value) == cseq


@pytest.mark.parametrize(
    "value",
    [
        f"{2**32} INFO",
        "-1 INVITE",
        "1",
        "INVITE",
        "1 INVITE extra",
        "\u0661 INVITE",
        "1 IN/VITE",
        "",
    ],
)
def test_bad_cseq_values_are_refused(value: str) -> None:
    with pytest.raises(SipParseError, match="CSeq"):
        parse_cseq(value)


def test_cseq_beyond_32_bits_rejects_the_message() -> None:
    event = _rejected(_with(b"CSeq: 1 ", b"CSeq: %d " % 2**32))
    assert "CSeq" in event.error.reason
    assert event.error.status == 400
    assert isinstance(
        parse_datagram(_with(b"CSeq: 1 ", b"CSeq: %d " % (2**32 - 1))), MessageReceived
    )


# -- name-addr and addr-spec (RFC 3261 §20.10, §20.20, §20.39) ----------------------


def test_addr_spec_params_belong_to_the_header() -> None:
    addr = parse_name_addr("sip:alice@example.com;transport=tcp;tag=1", "To")
    assert isinstance(addr.uri, SipUri)
    assert addr.uri.params == ()
    assert addr.params == (("transport", "tcp"), ("tag", "1"))


def test_name_addr_params_inside_brackets_belong_to_the_uri() -> None:
    addr = parse_name_addr("<sip:alice@example.com;transport=tcp>;tag=1", "To")
    assert isinstance(addr.uri, SipUri)
    assert addr.uri.params == (("transport", "tcp"),)
    assert addr.params == (("tag", "1"),)
    assert addr.tag == "1"


def test_addr_spec_ends_at_the_first_semicolon() -> None:
    # Without <> the URI ends at the first ';' whatever follows (§20), so a user
    # part holding ';' needs the name-addr form.
    with pytest.raises(SipParseError, match="host"):
        parse_name_addr("sip:+1555;phone-context=x@example.com", "To")
    addr = parse_name_addr("<sip:+1555;phone-context=x@example.com>", "To")
    assert isinstance(addr.uri, SipUri)
    assert addr.uri.user == "+1555;phone-context=x"


@pytest.mark.parametrize(
    ("value", "display"),
    [
        ('"Alice \\"Al\\" Smith" <sip:alice@example.com>', '"Alice \\"Al\\" Smith"'),
        ('"" <sip:alice@example.com>', '""'),
        ("Alice Smith <sip:alice@example.com>", "Alice Smith"),
        ("Alice   Smith<sip:alice@example.com>", "Alice Smith"),
        ("<sip:alice@example.com>", None),
    ],
)
def test_display_names_quoted_and_token(value: str, display: str | None) -> None:
    assert parse_name_addr(value, "From").display_name == display


def test_quoted_header_parameter_may_hold_angle_brackets() -> None:
    addr = parse_name_addr('sip:alice@example.com;note="<sip:x@y>"', "To")
    assert str(addr.uri) == "sip:alice@example.com"
    assert addr.param("note") == '"<sip:x@y>"'


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("sip:alice@example.com?Subject=x", "<>"),
        ('"Alice <sip:alice@example.com>', "quoted"),
        ("Bell, Alexander <sip:a@example.com>", "display name"),
        ("< sip:alice@example.com >", "whitespace"),
        ("<sip:alice@example.com", "unterminated"),
        ("<sip:alice@example.com> junk", "junk"),
        ("<sip:alice@example.com>;;", "parameter"),
        ('"Alice" sip:alice@example.com', "<URI>"),
    ],
)
def test_bad_name_addrs_are_refused_naming_the_header(value: str, word: str) -> None:
    with pytest.raises(SipParseError) as raised:
        parse_name_addr(value, "To")
    assert "To" in raised.value.reason
    assert word in raised.value.reason


def test_contact_star_and_lists() -> None:
    assert parse_contacts(["*"]) == "*"
    contacts = parse_contacts(
        ['<sip:a@192.0.2.1>;q=0.7;expires=60, "B" <sip:b@192.0.2.2>', "sip:c@h;q=1"]
    )
    assert isinstance(contacts, list)
    assert [(c.param("q"), c.param("expires")) for c in contacts] == [
        ("0.7", "60"),
        (None, None),
        ("1", None),
    ]


def test_contacts_as_user_agents_send_them() -> None:
    contacts = parse_contacts(
        [
            "<sip:alice@192.0.2.1:5060;ob>;reg-id=1;"
            '+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"',
            '<sip:alice@[2001:db8::1]:5061;transport=tls>;methods="INVITE, MESSAGE";expires=600',
            '"Alice" <sip:alice@192.0.2.1>;+g.oma.sip-im;q=0.5',
        ]
    )
    assert isinstance(contacts, list)
    assert contacts[0].param("+sip.instance") == '"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"'
    assert isinstance(contacts[1].uri, SipUri) and contacts[1].uri.transport == "tls"
    assert contacts[1].param("methods") == '"INVITE, MESSAGE"'
    assert parse_expires(contacts[1].param("expires")) == 600
    assert contacts[2].param("+g.oma.sip-im") == ""


@pytest.mark.parametrize(
    ("values", "word"),
    [
        (["*, <sip:a@example.com>"], "only"),
        (["<sip:a@example.com>;q=1.5"], "q"),
        (["<sip:a@example.com>;q=0.1234"], "q"),
        (["<sip:a@example.com>;q"], "q"),
        (["<sip:a@example.com>,"], "empty"),
    ],
)
def test_bad_contacts_are_refused(values: list[str], word: str) -> None:
    with pytest.raises(SipParseError, match=word):
        parse_contacts(values)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0),
        ("3600", 3600),
        (" 60 ", 60),
        (str(2**32 - 1), 2**32 - 1),
        # RFC 3261 §20.19, §20.10: a malformed value SHOULD be taken as 3600.
        (str(2**32), 3600),
        ("1" + "0" * 5000, 3600),
        ("Thu, 01 Dec 2040 16:00:00 GMT", 3600),
        ("-1", 3600),
        ("", 3600),
    ],
)
def test_expires_values_out_of_range_or_malformed_mean_3600(
    value: str | None, seconds: int | None
) -> None:
    assert parse_expires(value) == seconds


@pytest.mark.parametrize(
    ("expires", "seconds"),
    [(b"Expires: 0", 0), (b"Expires: %d" % 2**32, 3600), (b"Expires: 1\r\nExpires: 2", 3600)],
)
def test_expires_header_never_rejects_a_message(expires: bytes, seconds: int) -> None:
    assert _received(_with(b"Expires: 3600", expires)).expires == seconds


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y>, <sip:z@w;lr>;n="1,2" , c') == [
        '"a, b" <sip:x@y>',
        '<sip:z@w;lr>;n="1,2"',
        "c",
    ]
    assert split_list("  ") == []
    with pytest.raises(SipParseError, match="Route: unterminated"):
        split_list("<sip:x@y, sip:z@w", "Route")


# -- numbers a peer makes as long as it likes ----------------------------------------


@pytest.mark.parametrize(
    ("old", "word"),
    [
        (b"CSeq: 1 ", "CSeq"),
        (b"Max-Forwards: 70", "Max-Forwards"),
        (b"Content-Length: 0", "Content-Length"),
        (b"127.0.0.1:5061;branch", "port"),
        (b";rport\r\n", "rport"),
    ],
)
def test_numbers_of_thousands_of_digits_are_refused_not_crashed_on(old: bytes, word: str) -> None:
    # int() raises ValueError past 4300 digits (CVE-2020-10735).
    digits = b"1" * 5000
    new = {
        b"CSeq: 1 ": b"CSeq: " + digits + b" ",
        b"Max-Forwards: 70": b"Max-Forwards: " + digits,
        b"Content-Length: 0": b"Content-Length: " + digits,
        b"127.0.0.1:5061;branch": b"127.0.0.1:" + digits + b";branch",
        b";rport\r\n": b";rport=" + digits + b"\r\n",
    }[old]
    event = _rejected(_with(old, new))
    assert word in event.error.reason
    assert len(event.error.reason) <= MAX_REASON_LENGTH
    (stream_event,) = StreamParser(max_message_size=100_000).feed(_with(old, new))
    assert isinstance(stream_event, MessageRejected)


def test_sip_version_with_thousands_of_digits_is_refused() -> None:
    event = _rejected(_with(b" SIP/2.0\r\n", b" SIP/" + b"2" * 5000 + b".0\r\n"))
    assert "SIP-Version" in event.error.reason


# -- whole messages: field checks made by the parser ---------------------------------


def test_typical_register_reads_every_field() -> None:
    message = _received(REGISTER)
    assert (message.max_forwards, message.expires) == (70, 3600)
    assert message.vias[0].rport == ""
    contacts = message.contacts
    assert isinstance(contacts, list) and str(contacts[0].uri) == "sip:alice@127.0.0.1:5061"
    assert message.vias is message.vias  # parsed once, then kept


@pytest.mark.parametrize(
    ("old", "new", "word"),
    [
        (b"Max-Forwards: 70", b"Max-Forwards: 256", "Max-Forwards"),
        (b"Max-Forwards: 70", b"Max-Forwards: -1", "Max-Forwards"),
        (b"Call-ID: 1-123@127.0.0.1", b"Call-ID: a b", "Call-ID"),
        (b"To: <sip:alice@example.com>\r\n", b"", "missing To"),
        (b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n", b"", "missing Via"),
        (b"Contact: <sip:alice@127.0.0.1:5061>", b"Contact: <sip:alice@127.0.0.1:5061>;q=2", "q"),
        (b"REGISTER sip:example.com SIP", b"REGISTER sip:example.com?Route=x SIP", "Request-URI"),
        (b"REGISTER sip:example.com SIP", b"REGISTER sip:exa%mple.com SIP", "Request-URI"),
        (b"REGISTER sip:example.com", b"REG/STER sip:example.com", "method"),
        (b"From: <sip", b"Fr om: <sip", "header line"),
        (b"From: <sip", b"From <sip", "header line"),
        (b"Call-ID: 1-123@127.0.0.1\r\n", b"Call-ID: 1-123@127.0.0.1\nX-A: b\r\n", "header line"),
        (b"Call-ID: 1-123@127.0.0.1\r\n", b"Call-ID: 1-123\r@127.0.0.1\r\n", "header line"),
    ],
)
def test_bad_fields_reject_the_request_with_400(old: bytes, new: bytes, word: str) -> None:
    event = _rejected(_with(old, new))
    assert word in event.error.reason
    assert event.error.status == 400
    assert event.is_request
    assert event.method == _with(old, new).split(b" ", 1)[0].decode()


def test_other_sip_version_is_505() -> None:
    event = _rejected(_with(b" SIP/2.0\r\n", b" SIP/3.0\r\n"))
    assert isinstance(event.error, VersionNotSupported)
    assert event.error.status == 505
    assert event.is_request


def test_sip_version_is_case_insensitive() -> None:
    assert _received(_with(b" SIP/2.0\r\n", b" sip/2.0\r\n")).version == "sip/2.0"


def test_response_whose_reason_ends_like_a_request_line_is_a_response() -> None:
    data = _with(b"REGISTER sip:example.com SIP/2.0", b"SIP/2.0 200 Upgrade to SIP/2.0")
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived)
    assert isinstance(event.message, Response)
    assert event.message.reason == "Upgrade to SIP/2.0"


@pytest.mark.parametrize("status", [b"99", b"700", b"2000", b"\xd9\xa2\xd9\xa0\xd9\xa0", b"abc"])
def test_bad_status_codes_are_dropped(status: bytes) -> None:
    event = _rejected(_with(b"REGISTER sip:example.com SIP/2.0", b"SIP/2.0 " + status + b" OK"))
    assert "status code" in event.error.reason
    assert not event.is_request


def test_garbage_is_not_taken_for_a_request() -> None:
    event = _rejected(b"hello\r\n\r\n")
    assert not event.is_request


def test_datagram_without_the_empty_line_is_rejected() -> None:
    event = _rejected(REGISTER[:-2])
    assert "empty line" in event.error.reason
    assert event.is_request


def test_datagram_body_is_cut_at_content_length_and_rest_discarded() -> None:
    message = _received(
        _with(b"Content-Length: 0\r\n\r\n", b"Content-Length: 3\r\n\r\n") + b"abcdef"
    )
    assert message.body == b"abc"


def test_datagram_without_content_length_takes_the_rest_as_body() -> None:
    message = _received(_with(b"Content-Length: 0\r\n", b"") + b"abc")
    assert message.body == b"abc"


def test_datagram_leading_crlfs_are_ignored_and_a_bare_ping_is_nothing() -> None:
    assert isinstance(parse_datagram(b"\r\n\r\n" + REGISTER), MessageReceived)
    assert parse_datagram(b"\r\n\r\n") is None
    assert parse_datagram(b"") is None


# -- the size limit (RFC 3261 §21.5.14 513 Message Too Large) ------------------------


def _body_of_total(total: int) -> bytes:
    """REGISTER with a body that makes the message exactly *total* octets long."""
    size = total - len(_body(0))
    return _body(size - (len(_body(size)) - total))


def test_default_size_limit_is_64_kib() -> None:
    assert DEFAULT_MAX_MESSAGE_SIZE == 65_536
    just_fits = _body_of_total(DEFAULT_MAX_MESSAGE_SIZE)
    assert len(just_fits) == DEFAULT_MAX_MESSAGE_SIZE
    assert isinstance(parse_datagram(just_fits), MessageReceived)
    (event,) = StreamParser().feed(just_fits)
    assert isinstance(event, MessageReceived)


def test_datagram_over_the_limit_is_513() -> None:
    too_big = _body_of_total(DEFAULT_MAX_MESSAGE_SIZE + 1)
    assert len(too_big) == DEFAULT_MAX_MESSAGE_SIZE + 1
    event = _rejected(too_big)
    assert isinstance(event.error, MessageTooLarge)
    assert event.error.status == 513
    assert (event.is_request, event.method) == (True, "REGISTER")
    assert "Via" in event.headers


def test_datagram_limit_is_configurable() -> None:
    assert isinstance(parse_datagram(REGISTER, max_message_size=len(REGISTER)), MessageReceived)
    event = _rejected_with_limit(REGISTER, len(REGISTER) - 1)
    assert event.error.status == 513


def _rejected_with_limit(data: bytes, limit: int) -> MessageRejected:
    event = parse_datagram(data, max_message_size=limit)
    assert isinstance(event, MessageRejected)
    return event


def test_stream_message_over_the_limit_is_513_and_fatal() -> None:
    parser = StreamParser(max_message_size=1000)
    (event,) = parser.feed(_body(2000)[:600])
    assert isinstance(event, MessageRejected)
    assert isinstance(event.error, MessageTooLarge) and event.error.status == 513
    assert event.fatal and event.is_request
    assert parser.feed(REGISTER) == []


def test_stream_header_section_over_the_limit_is_513_and_fatal() -> None:
    parser = StreamParser(max_message_size=1000)
    head = REGISTER[:-2] + b"X-Padding: " + b"p" * 2000
    events = parser.feed(head)
    (event,) = events
    assert isinstance(event, MessageRejected)
    assert event.error.status == 513 and event.fatal
    assert "header fields" in event.error.reason


# -- keep-alive pings (RFC 5626 §3.5.1) -----------------------------------------------


def _feed(parser: StreamParser, *chunks: bytes) -> list[Event]:
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_double_crlf_is_a_ping() -> None:
    assert StreamParser().feed(b"\r\n\r\n") == [KeepAlivePing()]


def test_ping_split_across_reads() -> None:
    parser = StreamParser()
    assert parser.feed(b"\r\n") == []
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\n") == [KeepAlivePing()]


def test_pings_between_messages() -> None:
    events = _feed(StreamParser(), b"\r\n\r\n" + REGISTER + b"\r\n\r\n\r\n\r\n" + REGISTER)
    kinds = [type(e) for e in events]
    assert kinds == [KeepAlivePing, MessageReceived, KeepAlivePing, KeepAlivePing, MessageReceived]


def test_single_crlf_before_a_message_is_ignored() -> None:
    events = _feed(StreamParser(), b"\r\n", REGISTER)
    assert [type(e) for e in events] == [MessageReceived]


# -- framing errors end the stream (RFC 3261 §18.3, RFC 4475 §3.1.2.3, §3.3.9) ------


@pytest.mark.parametrize(
    "length", [b"Content-Length: abc", b"Content-Length: -1", b"Content-Length: 0\r\nl: 0"]
)
def test_bad_content_length_is_fatal_on_a_stream(length: bytes) -> None:
    parser = StreamParser()
    (event,) = parser.feed(_with(b"Content-Length: 0", length))
    assert isinstance(event, MessageRejected)
    assert event.fatal
    assert "Content-Length" in event.error.reason
    assert event.is_request and event.error.status == 400
    assert parser.feed(REGISTER) == []


def test_bad_content_length_is_not_fatal_in_a_datagram() -> None:
    event = _rejected(_with(b"Content-Length: 0", b"Content-Length: abc"))
    assert not event.fatal


def test_other_faults_leave_the_stream_framed() -> None:
    parser = StreamParser()
    bad = _with(b"From: <sip", b"Fr om: <sip")
    first, second = _feed(parser, bad + REGISTER)
    assert isinstance(first, MessageRejected) and not first.fatal
    assert isinstance(second, MessageReceived)


def test_bad_header_line_without_content_length_is_not_fatal() -> None:
    bad = _with(b"Content-Length: 0\r\n", b"", _with(b"From: <sip", b"Fr om: <sip"))
    first, second = _feed(StreamParser(), bad + REGISTER)
    assert isinstance(first, MessageRejected) and not first.fatal
    assert isinstance(second, MessageReceived)


def test_stream_waits_for_a_body_that_has_not_arrived() -> None:
    parser = StreamParser()
    data = _body(10)
    assert parser.feed(data[:-1]) == []
    (event,) = parser.feed(data[-1:])
    assert isinstance(event, MessageReceived) and event.message.body == b"x" * 10
