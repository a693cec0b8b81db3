"""Messages survive serialize -> parse, on datagrams and on streams cut anywhere.

Hypothesis builds requests and responses from typed values (URIs with users that
need escaping, IPv6 hosts, parameters with and without values, quoted and token
display names, Via stacks with branch/received/rport, several Contact values,
bodies), writes them to the wire with `serialize` and reads them back.  The
tests after those pin down the reading rules that serialize never produces:
compact names, case, folding and comma lists (RFC 3261 §7.3).
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeredirect.sip.headers import NameAddr, Via, parse_contacts
from homeredirect.sip.message import Headers, Message, Request, Response
from homeredirect.sip.parser import (
    Event,
    MessageReceived,
    StreamParser,
    parse_datagram,
)
from homeredirect.sip.serialize import serialize
from homeredirect.sip.uri import SipUri, TelUri, Uri, unescape

# -- building blocks ----------------------------------------------------------

_USER_SAFE = string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"
_TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
_PARAM_CHARS = string.ascii_lowercase + string.digits + "-_.!~*'()"


def escape_user(raw: str) -> str:
    """%-escape what RFC 3261 §25.1 does not allow as is in a user part."""
    return "".join(
        ch if ch in _USER_SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in raw
    )


raw_users = st.text(
    alphabet=st.sampled_from(list('abcXYZ019 @:%<>"#;?/&=+$,~é€\x00')), min_size=1, max_size=12
)
labels = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,6}[a-z0-9])?", fullmatch=True)
top_labels = st.from_regex(r"[a-z]([a-z0-9\-]{0,6}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(
    lambda front, top: ".".join([*front, top]), st.lists(labels, max_size=2), top_labels
)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_addresses = st.ip_addresses(v=6).map(lambda a: ipaddress.IPv6Address(a).compressed)
hosts = st.one_of(hostnames, ipv4_hosts, ipv6_addresses.map(lambda a: f"[{a}]"))
ports = st.none() | st.integers(1, 65535)
param_names = st.text(alphabet=_PARAM_CHARS, min_size=1, max_size=8)
param_values = st.lists(st.sampled_from([*_PARAM_CHARS, "%41", "%2C"]), min_size=1, max_size=8).map(
    "".join
)
uri_params = st.lists(st.tuples(param_names, st.none() | param_values), max_size=3).map(tuple)
header_param_names = st.text(
    alphabet=string.ascii_lowercase + "0123456789-.!%*_+`'~", min_size=1, max_size=8
)
tokens = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=10)


@st.composite
def sip_uris(draw: st.DrawFn, with_headers: bool = False) -> SipUri:
    user = draw(st.none() | raw_users.map(escape_user))
    password = None
    if user is not None and draw(st.booleans()):
        password = draw(st.text(alphabet=string.ascii_letters + "&=+$,", max_size=6))
    headers = None
    if with_headers and draw(st.booleans()):
        headers = draw(
            st.sampled_from(["Route=%3Csip:p.example.com%3E", "Subject=hi&Priority=urgent"])
        )
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        host=draw(hosts),
        user=user,
        password=password,
        port=draw(ports),
        params=draw(uri_params),
        headers=headers,
    )


tel_uris = st.builds(
    TelUri,
    st.from_regex(r"\+[0-9]{1,3}(-[0-9]{2,4}){1,3}", fullmatch=True),
    st.lists(st.tuples(param_names, st.none() | param_values), max_size=2).map(tuple),
)
request_uris = st.one_of(sip_uris(), tel_uris)

quoted_display_names = st.lists(
    st.one_of(
        st.sampled_from(list("abc XYZ,;<>@:é€")),
        st.sampled_from(['\\"', "\\\\", "\\a", "\\\x00"]),
    ),
    max_size=8,
).map(lambda parts: '"' + "".join(parts) + '"')
token_display_names = st.lists(tokens, min_size=1, max_size=3).map(" ".join)
display_names = st.none() | quoted_display_names | token_display_names
header_params = st.lists(
    st.tuples(
        header_param_names,
        st.none() | tokens | st.sampled_from(['"a, b; c"', '"<sip:x@y>"', '"\\"q\\""']),
    ),
    max_size=3,
).map(tuple)


@dataclass(frozen=True)
class Addr:
    """A NameAddr and the text it is written as (name-addr or addr-spec form)."""

    value: NameAddr
    text: str


def _params_text(params: tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


@st.composite
def addrs(draw: st.DrawFn, uris: st.SearchStrategy[Uri], params: st.SearchStrategy[object]) -> Addr:
    uri = draw(uris)
    display = draw(display_names)
    header_params_ = draw(params)
    assert isinstance(header_params_, tuple)
    value = NameAddr(uri, display, header_params_)
    # RFC 3261 §20.10: the addr-spec form only without a display name and when
    # the URI holds no ',', ';' or '?'.
    if display is None and not any(c in str(uri) for c in ",;?") and draw(st.booleans()):
        return Addr(value, f"{uri}{_params_text(header_params_)}")
    shown = f"{display} " if display is not None else ""
    return Addr(value, f"{shown}<{uri}>{_params_text(header_params_)}")


qvalues = st.sampled_from(["0", "0.5", "0.123", "1", "1.0", "1.000"])
contact_params = st.lists(
    st.one_of(
        st.tuples(st.just("q"), qvalues),
        st.tuples(st.just("expires"), st.integers(0, 2**32 - 1).map(str)),
        st.tuples(
            header_param_names.filter(lambda n: n not in ("q", "expires")), st.none() | tokens
        ),
    ),
    max_size=3,
).map(tuple)
rport = st.one_of(
    st.just(()),
    st.just((("rport", None),)),
    st.integers(1, 65535).map(lambda p: (("rport", str(p)),)),
)
received = st.one_of(
    st.just(()),
    ipv4_hosts.map(lambda a: (("received", a),)),
    ipv6_addresses.map(lambda a: (("received", a),)),
)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = (("branch", "z9hG4bK" + draw(tokens)), *draw(received), *draw(rport))
    if draw(st.booleans()):
        name = draw(header_param_names.filter(lambda n: n not in ("branch", "received", "rport")))
        params += ((name, draw(st.none() | tokens)),)
    return Via(
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])),
        host=draw(hosts),
        port=draw(ports),
        params=params,
    )


def _lines(draw: st.DrawFn, name: str, values: list[str]) -> list[tuple[str, str]]:
    """Spread *values* over header lines, several to a line joined by commas."""
    lines: list[tuple[str, str]] = []
    i = 0
    while i < len(values):
        take = draw(st.integers(1, len(values) - i))
        lines.append((name, ", ".join(values[i : i + take])))
        i += take
    return lines


@dataclass(frozen=True)
class Built:
    """A message and the typed values it was built from."""

    message: Message
    vias: tuple[Via, ...]
    from_addr: NameAddr
    to_addr: NameAddr
    contacts: list[NameAddr] | str


call_ids = st.builds(
    lambda word, host: word if host is None else f"{word}@{host}",
    st.text(
        alphabet=string.ascii_letters + string.digits + "-.!%*_+`'~()<>:\\\"/[]?{}",
        min_size=1,
        max_size=16,
    ),
    st.none() | hostnames,
)
extension_values = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20
).map(lambda v: v.strip(" \t"))
methods = st.one_of(
    st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "ACK", "CANCEL"]), tokens
)


@st.composite
def messages(draw: st.DrawFn, requests: bool) -> Built:
    via_values = draw(st.lists(vias(), min_size=1, max_size=4))
    from_addr = draw(addrs(st.one_of(sip_uris(), tel_uris), header_params))
    to_addr = draw(addrs(st.one_of(sip_uris(), tel_uris), header_params))
    contacts: list[NameAddr] | str
    # Groups of lines: their order is free, the order within a group is not.
    groups: list[list[tuple[str, str]]] = []
    groups.append(_lines(draw, "Via", [str(v) for v in via_values]))
    groups += [[("From", from_addr.text)], [("To", to_addr.text)], [("Call-ID", draw(call_ids))]]
    method = draw(methods)
    groups.append([("CSeq", f"{draw(st.integers(0, 2**32 - 1))} {method}")])
    if draw(st.booleans()):
        contacts = "*"
        groups.append([("Contact", "*")])
    else:
        contact_addrs = draw(
            st.lists(addrs(sip_uris(with_headers=True), contact_params), max_size=3)
        )
        contacts = [a.value for a in contact_addrs]
        groups.append(_lines(draw, "Contact", [a.text for a in contact_addrs]))
    if requests and draw(st.booleans()):
        groups.append([("Max-Forwards", str(draw(st.integers(0, 255))))])
    if draw(st.booleans()):
        groups.append([("Expires", str(draw(st.integers(0, 2**32 - 1))))])
    extensions = st.tuples(tokens.map(lambda t: f"X-{t}"), extension_values)
    groups += [[field] for field in draw(st.lists(extensions, max_size=3))]
    fields = [field for group in draw(st.permutations(groups)) for field in group]
    body = draw(st.binary(max_size=64))
    fields.append(("Content-Length", str(len(body))))
    message: Message
    if requests:
        message = Request(method, draw(request_uris), Headers(fields), body)
    else:
        reason = draw(extension_values)
        message = Response(draw(st.integers(100, 699)), reason, Headers(fields), body)
    return Built(message, tuple(via_values), from_addr.value, to_addr.value, contacts)


any_messages = st.one_of(messages(requests=True), messages(requests=False))


def _received(event: Event | None) -> Message:
    assert isinstance(event, MessageReceived), event
    return event.message


# -- properties ---------------------------------------------------------------


@given(messages(requests=True))
def test_request_survives_serialize_and_parse(built: Built) -> None:
    parsed = _received(parse_datagram(serialize(built.message)))
    assert parsed == built.message
    assert isinstance(parsed, Request) and isinstance(built.message, Request)
    assert parsed.uri == built.message.uri
    assert parsed.vias == built.vias
    assert parsed.from_addr == built.from_addr
    assert parsed.to_addr == built.to_addr
    assert parsed.contacts == built.contacts


@given(messages(requests=False))
def test_response_survives_serialize_and_parse(built: Built) -> None:
    parsed = _received(parse_datagram(serialize(built.message)))
    assert parsed == built.message
    assert parsed.vias == built.vias
    assert (parsed.from_addr, parsed.to_addr) == (built.from_addr, built.to_addr)


@given(sip_uris())
def test_escaped_users_unescape_to_what_was_escaped(uri: SipUri) -> None:
    built = Request("OPTIONS", uri, Headers(_FIXED_FIELDS))
    parsed = _received(parse_datagram(serialize(built)))
    assert isinstance(parsed, Request) and isinstance(parsed.uri, SipUri)
    assert parsed.uri == uri
    if uri.user is not None:
        assert parsed.uri.user is not None
        assert unescape(parsed.uri.user) == unescape(uri.user)


@settings(max_examples=50)
@given(any_messages, st.data())
def test_stream_reads_a_message_split_anywhere(built: Built, data: st.DataObject) -> None:
    wire = serialize(built.message)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    parser = StreamParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    assert [_received(e) for e in events] == [built.message]


@settings(max_examples=25)
@given(st.lists(any_messages, min_size=1, max_size=4), st.data())
def test_stream_reads_back_to_back_messages_split_anywhere(
    builts: list[Built], data: st.DataObject
) -> None:
    wire = b"".join(serialize(b.message) for b in builts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    parser = StreamParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    assert [_received(e) for e in events] == [b.message for b in builts]


_FIXED_FIELDS = (
    ("Via", "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK-x;rport"),
    ("From", '"Alice, A." <sip:alice@example.com>;tag=1'),
    ("To", "sip:bob@example.com"),
    ("Call-ID", "c1@example.com"),
    ("CSeq", "7 OPTIONS"),
    ("Content-Length", "0"),
)
SMALL = Request(
    "OPTIONS",
    SipUri("sip", "example.com", "bob"),
    Headers((*_FIXED_FIELDS[:-1], ("Content-Length", "5"))),
    b"a\r\n\r\n"[:5],
)


def test_stream_reads_a_small_message_cut_at_every_offset() -> None:
    wire = serialize(SMALL)
    for offset in range(len(wire) + 1):
        parser = StreamParser()
        events = parser.feed(wire[:offset]) + parser.feed(wire[offset:])
        assert [_received(e) for e in events] == [SMALL], offset


def test_stream_reads_two_small_messages_cut_at_every_pair_of_offsets() -> None:
    wire = serialize(SMALL) * 2
    for first in range(0, len(wire) + 1, 7):
        for second in range(first, len(wire) + 1, 5):
            parser = StreamParser()
            events = (
                parser.feed(wire[:first])
                + parser.feed(wire[first:second])
                + parser.feed(wire[second:])
            )
            assert [_received(e) for e in events] == [SMALL, SMALL], (first, second)


# -- reading rules: compact forms, case, folding, comma lists -------------------

_HEAD = (
    "OPTIONS sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\n"
    "From: <sip:alice@example.com>;tag=1\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 OPTIONS\r\n"
)


def _parse(extra: str, head: str = _HEAD) -> Request:
    message = _received(parse_datagram((head + extra + "Content-Length: 0\r\n\r\n").encode()))
    assert isinstance(message, Request)
    return message


COMPACT = {
    "a": ("Accept-Contact", "*;audio"),
    "b": ("Referred-By", "<sip:carol@example.com>"),
    "c": ("Content-Type", "application/sdp"),
    "d": ("Request-Disposition", "proxy"),
    "e": ("Content-Encoding", "gzip"),
    "f": ("From", "<sip:alice@example.com>;tag=1"),
    "i": ("Call-ID", "c1"),
    "j": ("Reject-Contact", "*;video"),
    "k": ("Supported", "path"),
    "l": ("Content-Length", "0"),
    "m": ("Contact", "<sip:alice@192.0.2.1>"),
    "o": ("Event", "presence"),
    "r": ("Refer-To", "<sip:dave@example.com>"),
    "s": ("Subject", "lunch"),
    "t": ("To", "<sip:bob@example.com>"),
    "u": ("Allow-Events", "presence"),
    "v": ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1"),
    "x": ("Session-Expires", "1800"),
    "y": ("Identity", '"abc"'),
}


@pytest.mark.parametrize("compact", sorted(COMPACT))
@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_compact_form_is_read_as_the_long_name(compact: str, case: object) -> None:
    assert callable(case)
    long_name, value = COMPACT[compact]
    lines = [
        line for line in _HEAD.split("\r\n")[1:] if line and not line.startswith(long_name + ":")
    ]
    head = "OPTIONS sip:bob@example.com SIP/2.0\r\n" + "".join(f"{line}\r\n" for line in lines)
    data = (head + f"{case(compact)}: {value}\r\n").encode()
    if compact != "l":
        data += b"Content-Length: 0\r\n"
    message = _received(parse_datagram(data + b"\r\n"))
    assert (long_name, value) in list(message.headers)
    assert compact not in [name for name, _ in message.headers]
    assert message.headers.get(compact) == value
    assert message.headers.get(long_name.upper()) == value


@pytest.mark.parametrize("spelling", ["Via", "via", "VIA", "vIa", "v", "V"])
def test_header_names_are_case_insensitive(spelling: str) -> None:
    head = _HEAD.replace("Via:", f"{spelling}:")
    message = _parse("", head)
    assert message.vias[0].branch == "z9hG4bK-1"
    assert next(iter(message.headers)) == ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1")


def test_unknown_header_names_keep_their_spelling_and_match_any_case() -> None:
    message = _parse("x-Custom-THING: 1\r\n")
    assert ("x-Custom-THING", "1") in list(message.headers)
    assert message.headers.get("X-CUSTOM-thing") == "1"


def test_folded_lines_are_joined_with_one_space() -> None:
    message = _parse(
        "Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\n"
        "Contact:\r\n <sip:alice@192.0.2.1>\r\n  ;expires=60\r\n"
    )
    assert (
        message.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    )
    contacts = parse_contacts(message.headers.get_all("Contact"))
    assert isinstance(contacts, list)
    assert [c.param("expires") for c in contacts] == ["60"]


def test_folding_inside_a_via_list() -> None:
    head = _HEAD.replace(
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\n",
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1,\r\n"
        " SIP/2.0/TCP [2001:db8::1]:5070\r\n\t;branch=z9hG4bK-2\r\n",
    )
    message = _parse("", head)
    assert [(v.host, v.port, v.branch) for v in message.vias] == [
        ("192.0.2.1", None, "z9hG4bK-1"),
        ("[2001:db8::1]", 5070, "z9hG4bK-2"),
    ]


def test_commas_inside_quotes_and_angle_brackets_do_not_split() -> None:
    message = _parse(
        'Contact: "Doe, John" <sip:john@192.0.2.2>;note="a, b", <sip:x@192.0.2.3;lr>\r\n'
        "Contact: sip:y@192.0.2.4;q=0.1\r\n"
        "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>\r\n"
    )
    contacts = message.contacts
    assert isinstance(contacts, list)
    assert [c.display_name for c in contacts] == ['"Doe, John"', None, None]
    assert contacts[0].param("note") == '"a, b"'
    assert [str(c.uri) for c in contacts] == [
        "sip:john@192.0.2.2",
        "sip:x@192.0.2.3;lr",
        "sip:y@192.0.2.4",
    ]
    assert contacts[2].param("q") == "0.1"
    assert message.headers.get_list("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]


def test_several_via_lines_and_comma_lists_make_one_stack() -> None:
    head = _HEAD.replace(
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\n",
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK-1,"
        " SIP/2.0/UDP b.example.com;branch=z9hG4bK-2\r\n"
        "v: SIP/2.0/UDP c.example.com;branch=z9hG4bK-3\r\n",
    )
    message = _parse("", head)
    assert [v.host for v in message.vias] == ["a.example.com", "b.example.com", "c.example.com"]
