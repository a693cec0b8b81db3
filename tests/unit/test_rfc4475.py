"""The parser against the RFC 4475 torture-test messages in tests/data/rfc4475.

Every message is read as a UDP datagram (`parse_datagram`) and as a stream
(`StreamParser`, whole, one byte at a time and in random pieces).  What each one
must give follows the RFC's text for that message (quoted in the manifest's
``fault`` and ``behaviour``):

- 3.1.1 (valid): a `MessageReceived`, with the awkward values read right;
- 3.1.2 (invalid): a `MessageRejected` whose reason names the fault, with the
  status a server answers a request with (505 for SIP/7.0, else 400) and
  ``is_request`` False for the two responses, which are dropped (RFC 3261
  §18.1.2); baddate is the exception: a Date that nothing reads is ignored;
- 3.2 to 3.4 (semantic): a `MessageReceived` for a later layer to judge, except
  where the RFC's answer is a plain 400 for fields that every message must have
  well-formed and once (insuf, multi01) or a framing error (mcl01).
"""

from __future__ import annotations

import random
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from homeredirect.sip.headers import NameAddr, parse_expires, split_list
from homeredirect.sip.message import Message, Request, Response
from homeredirect.sip.parser import (
    Event,
    KeepAlivePing,
    MessageReceived,
    MessageRejected,
    StreamParser,
    parse_datagram,
)
from homeredirect.sip.uri import AbsoluteUri, SipUri, unescape

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
ENTRIES: dict[str, dict[str, Any]] = tomllib.loads((DATA / "manifest.toml").read_text("utf-8"))
NAMES = sorted(ENTRIES)
VALID = [name for name in NAMES if ENTRIES[name]["expect"] == "valid"]
INVALID = [name for name in NAMES if ENTRIES[name]["expect"] == "invalid"]
SEMANTIC = [name for name in NAMES if ENTRIES[name]["expect"] == "semantic"]


def _data(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def _received(name: str) -> Message:
    event = parse_datagram(_data(name))
    assert isinstance(event, MessageReceived), event
    return event.message


def _request(name: str) -> Request:
    message = _received(name)
    assert isinstance(message, Request)
    return message


def _response(name: str) -> Response:
    message = _received(name)
    assert isinstance(message, Response)
    return message


def _rejected(name: str) -> MessageRejected:
    event = parse_datagram(_data(name))
    assert isinstance(event, MessageRejected), event
    return event


def _contacts(message: Message) -> list[NameAddr]:
    contacts = message.contacts
    assert isinstance(contacts, list)
    return contacts


# -- 3.1.2: what each invalid message is rejected for --------------------------

#: name -> (words the reason must contain, status, is_request).  A request is
#: answered with the status; a response (is_request False) is dropped.
REJECTIONS: dict[str, tuple[tuple[str, ...], int, bool]] = {
    # 3.1.2.1: ";;,;,," in Via (and ";;;;" in Contact): 400.
    "badinv01": (("Via", "empty"), 400, True),
    # 3.1.2.2: Content-Length 9999, far more than the datagram holds.
    "clerr": (("Content-Length",), 400, True),
    # 3.1.2.3: Content-Length -999.
    "ncl": (("Content-Length", "-999"), 400, True),
    # 3.1.2.4: the RFC's reason for the 400 is the CSeq (Max-Forwards 300 and the
    # expiries are out of range too; see the tests of each alone below).
    "scalar02": (("CSeq", "32 bits"), 400, True),
    # 3.1.2.5: a response: CSeq beyond 32 bits (and Retry-After, Warning 1812).
    "scalarlg": (("CSeq",), 400, False),
    # 3.1.2.6: To display name with no closing quote.
    "quotbal": (("To", "quoted"), 400, True),
    # 3.1.2.7: INVITE <sip:user@example.com> SIP/2.0.
    "ltgtruri": (("Request-URI", "<>"), 400, True),
    # 3.1.2.8: "sip:user@example.com; lr".
    "lwsruri": (("Request-URI", "whitespace"), 400, True),
    # 3.1.2.9: two SP between the Request-Line elements.
    "lwsstart": (("Request-Line", "SP"), 400, True),
    # 3.1.2.10: two SP after SIP/2.0.
    "trws": (("Request-Line", "SP"), 400, True),
    # 3.1.2.11: ?Route=... in the Request-URI: never forwarded, so rejected.
    "escruri": (("Request-URI", "headers"), 400, True),
    # 3.1.2.13: Contact addr-spec with '?': must be in <>.
    "regbadct": (("Contact", "<>"), 400, True),
    # 3.1.2.14: "< sip:t.watson@example.org >".
    "badaspec": (("To", "whitespace"), 400, True),
    # 3.1.2.15: unquoted "Bell, Alexander" (the file also lacks the empty line;
    # the reason names the fault the RFC is about).
    "baddn": (("From", "display name"), 400, True),
    # 3.1.2.16: SIP/7.0 -> 505 Version Not Supported.
    "badvers": (("SIP-Version", "SIP/7.0"), 505, True),
    # 3.1.2.17: OPTIONS with CSeq ... INVITE.
    "mismatch01": (("CSeq", "OPTIONS"), 400, True),
    # 3.1.2.18: the RFC prefers 501 for an unknown method whose CSeq does not
    # match, and allows 400: the parser cannot know which methods a server
    # implements, so it answers 400.
    "mismatch02": (("CSeq", "NEWMETHOD"), 400, True),
    # 3.1.2.19: a response with Status-Code 4294967301: dropped.
    "bigcode": (("status code",), 400, False),
}

#: 3.1.2 messages that parse: RFC 4475 §3.1.2.12 rejects a bad Date "only if the
#: Date matters to processing"; a director never reads Date, so it is ignored.
INVALID_BUT_IGNORED = {"baddate"}

#: Semantic messages that the parser rejects, with the RFC's own answer.
SEMANTIC_REJECTIONS: dict[str, tuple[tuple[str, ...], int, bool]] = {
    # 3.3.1: no Call-ID, From or To: "ideally respond 400 Bad Request".
    "insuf": (("missing",), 400, True),
    # 3.3.8: several Call-ID, To, From, Max-Forwards, CSeq: "respond 400".
    "multi01": (("more than one",), 400, True),
    # 3.3.9: conflicting Content-Length: a framing error.
    "mcl01": (("Content-Length",), 400, True),
}


def test_every_message_has_an_expected_datagram_outcome() -> None:
    decided = set(VALID) | set(REJECTIONS) | INVALID_BUT_IGNORED | set(SEMANTIC)
    assert decided == set(NAMES)
    assert set(REJECTIONS) | INVALID_BUT_IGNORED == set(INVALID)
    assert set(SEMANTIC_REJECTIONS) <= set(SEMANTIC)


@pytest.mark.parametrize("name", VALID)
def test_valid_message_is_received(name: str) -> None:
    _received(name)


@pytest.mark.parametrize("name", sorted(REJECTIONS) + sorted(SEMANTIC_REJECTIONS))
def test_malformed_message_is_rejected_naming_the_fault(name: str) -> None:
    words, status, is_request = {**REJECTIONS, **SEMANTIC_REJECTIONS}[name]
    event = _rejected(name)
    for word in words:
        assert word in event.error.reason, (word, event.error.reason)
    assert event.error.status == status
    assert event.is_request is is_request
    assert event.fatal is False
    if is_request:
        # Enough of the header fields was read to answer with (RFC 3261 §8.2).
        assert event.method is not None
        assert "Via" in event.headers


@pytest.mark.parametrize("name", sorted(set(SEMANTIC) - set(SEMANTIC_REJECTIONS)))
def test_semantic_message_parses_for_a_later_layer(name: str) -> None:
    _received(name)


def test_baddate_is_received_with_its_date_untouched() -> None:
    message = _request("baddate")
    assert message.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


# -- 3.1.1: the values a valid message carries -------------------------------


def test_wsinv_unfolds_and_reads_lws_everywhere() -> None:
    message = _request("wsinv")
    assert message.method == "INVITE"
    assert isinstance(message.uri, SipUri)
    assert message.uri.params == (("unknownparam", None),)
    assert message.to_addr.tag == "1918181833n"
    assert str(message.to_addr.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert message.from_addr.display_name == '"J Rosenberg \\\\\\""'
    assert message.from_addr.tag == "98asjd8"
    assert message.max_forwards == 68
    assert (message.cseq.number, message.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in message.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.headers.get("Subject") == ""
    assert message.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = _contacts(message)
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert len(message.body) == 150


def test_intmeth_reads_every_token_character_and_odd_quoted_pairs() -> None:
    message = _request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.method == method
    assert message.cseq.method == method
    assert isinstance(message.uri, SipUri)
    assert message.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert message.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert message.uri.host == "example.com"
    display = message.to_addr.display_name
    assert display is not None and "\x00" in display and "\x07" in display and "\x7f" in display
    assert message.from_addr.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_addr.param("fromParam''~+*_!.-%") == '"работающий"'
    assert message.vias[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_keeps_escapes_and_unescapes_once() -> None:
    message = _request("esc01")
    assert isinstance(message.uri, SipUri)
    assert message.uri.user == "sips%3Auser%40example.com"
    assert unescape(message.uri.user) == "sips:user@example.com"
    assert message.uri.host == "example.net"
    to_uri = message.to_addr.uri
    assert isinstance(to_uri, SipUri) and to_uri.user is not None
    assert unescape(to_uri.user) == "user"
    from_uri = message.from_addr.uri
    assert isinstance(from_uri, SipUri) and from_uri.user is not None
    assert unescape(from_uri.user) == "I have spaces"
    (contact,) = _contacts(message)
    assert isinstance(contact.uri, SipUri) and contact.uri.user is not None
    assert unescape(contact.uri.user) == "caller"
    assert [(unescape(n), unescape(v or "")) for n, v in contact.uri.params] == [
        ("lr", ""),
        ("name", "value%41"),
    ]


def test_escnull_keeps_escaped_nulls_whole() -> None:
    message = _request("escnull")
    to_uri = message.to_addr.uri
    assert isinstance(to_uri, SipUri) and to_uri.user is not None
    assert unescape(to_uri.user) == "null-\x00-null"
    users = [c.uri.user for c in _contacts(message) if isinstance(c.uri, SipUri)]
    assert users == ["%00", "%00%00"]
    assert [unescape(u or "") for u in users] == ["\x00", "\x00\x00"]


def test_esc02_percent_is_not_an_escape_in_method_or_header_names() -> None:
    message = _request("esc02")
    assert message.method == "RE%47IST%45R"
    assert message.method != "REGISTER"
    assert message.to_addr.display_name == '"%Z%45"'
    assert message.vias[0].branch == "z9hG4bK209%fzsnel234"
    hosts = [c.uri.host for c in _contacts(message) if isinstance(c.uri, SipUri)]
    assert hosts == ["host1.example.com", "host3.example.com"]
    assert message.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_may_touch_the_angle_bracket() -> None:
    message = _request("lwsdisp")
    assert message.from_addr.display_name == "caller"
    assert str(message.from_addr.uri) == "sip:caller@example.com"


def test_longreq_reads_every_long_value() -> None:
    data = _data("longreq")
    message = _request("longreq")
    via_lines = re.findall(rb"^(?:via|v)[ \t]*:", data, re.IGNORECASE | re.MULTILINE)
    assert len(via_lines) == 34
    assert message.headers.count("Via") == 34
    assert len(message.vias) == 34
    assert message.vias[-1].received == "192.0.2.5"
    assert message.vias[-1].branch is not None and len(message.vias[-1].branch) > 200
    assert len(message.headers) == 43
    assert message.to_addr.display_name is not None and len(message.to_addr.display_name) == 105
    assert isinstance(message.to_addr.uri, SipUri) and message.to_addr.uri.port == 6000
    assert message.from_addr.tag is not None and len(message.from_addr.tag) == 155
    assert len(message.call_id) == 141
    long_name = "Unknown-" + "Long" * 20 + "-Name"
    value = message.headers.get(long_name)
    assert value is not None and len(value) == 306
    assert len(message.body) == 150


def test_dblreq_reads_only_the_first_request_of_the_datagram() -> None:
    message = _request("dblreq")
    assert message.method == "REGISTER"
    assert message.body == b""
    assert all("INVITE" not in value for _, value in message.headers)


def test_semiuri_user_part_holds_semicolons() -> None:
    message = _request("semiuri")
    assert isinstance(message.uri, SipUri)
    assert message.uri.user == "user;par=u%40example.net"
    assert unescape(message.uri.user) == "user;par=u@example.net"
    assert message.uri.host == "example.com"
    assert message.uri.params == ()
    assert message.headers.get_list("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_reads_unknown_transports() -> None:
    message = _request("transports")
    assert [v.transport for v in message.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert message.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_body_is_framed_by_content_length() -> None:
    message = _request("mpart01")
    assert len(message.body) == 553
    assert b"\x00" in message.body
    assert message.headers.get("Content-Type") == "multipart/mixed;boundary=7a9cbec02ceef655"


def test_unreason_keeps_an_unusual_reason_phrase() -> None:
    message = _response("unreason")
    assert message.status == 200
    assert message.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def test_noreason_has_an_empty_reason_phrase() -> None:
    message = _response("noreason")
    assert (message.status, message.reason) == (100, "")


# -- 3.1.2.4 scalar02: each out-of-range value on its own ---------------------


def _scalar02_with_cseq_1() -> bytes:
    data = _data("scalar02")
    assert b"CSeq: 36893488147419103232 REGISTER" in data
    return data.replace(b"CSeq: 36893488147419103232 REGISTER", b"CSeq: 1 REGISTER")


def test_scalar02_without_the_cseq_fault_is_rejected_for_max_forwards() -> None:
    # RFC 4475 lets an element ignore a Max-Forwards of 300; RFC 3261 §20.22
    # bounds it by 255, and a proxy must not guess how many hops are left.
    event = parse_datagram(_scalar02_with_cseq_1())
    assert isinstance(event, MessageRejected)
    assert "Max-Forwards" in event.error.reason
    assert event.error.status == 400


def test_scalar02_expiries_beyond_32_bits_mean_3600() -> None:
    # RFC 3261 §20.19 and §20.10: a malformed Expires or expires parameter SHOULD
    # be taken as 3600; RFC 4475 §3.1.2.4 agrees ("treat them as if they
    # contained the default values").  They do not make the message malformed.
    data = _scalar02_with_cseq_1().replace(b"Max-Forwards: 300", b"Max-Forwards: 70")
    message = _request_from(data)
    assert (message.headers.get("Expires") or "").startswith("10000000000")
    assert message.expires == 3600
    (contact,) = _contacts(message)
    assert contact.param("expires") == "280297596632815"
    assert parse_expires(contact.param("expires")) == 3600


def _request_from(data: bytes) -> Request:
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived), event
    assert isinstance(event.message, Request)
    return event.message


# -- the stream parser --------------------------------------------------------


def _feed(chunks: list[bytes]) -> list[Event]:
    parser = StreamParser()
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def _byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _random_pieces(data: bytes, seed: str) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), k=min(12, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _outcome(event: Event) -> tuple[object, ...]:
    """What an event means, without the stream-only *fatal* flag."""
    if isinstance(event, MessageReceived):
        return ("received", event.message)
    if isinstance(event, MessageRejected):
        return ("rejected", event.error.reason, event.error.status, event.is_request, event.method)
    return ("ping",)


def _summary(events: list[Event]) -> list[tuple[object, ...]]:
    """Events made comparable (errors compare by identity), *fatal* included."""
    return [(*_outcome(e), getattr(e, "fatal", False)) for e in events]


#: Messages whose stream outcome differs from the datagram one (RFC 3261 §18.3:
#: a stream is framed by Content-Length, a datagram by its own end).
STREAM_DIFFERS = {"dblreq", "clerr", "baddn", "inv2543"}
#: Framing errors: on a stream the connection cannot go on (RFC 4475 §3.1.2.3, §3.3.9).
STREAM_FATAL = {"ncl", "mcl01"}


@pytest.mark.parametrize("name", NAMES)
def test_stream_gives_the_same_events_whatever_the_pieces(name: str) -> None:
    data = _data(name)
    whole = _summary(_feed([data]))
    assert _summary(_feed(_byte_by_byte(data))) == whole
    for round_ in range(3):
        assert _summary(_feed(_random_pieces(data, f"{name}-{round_}"))) == whole


@pytest.mark.parametrize("name", sorted(set(NAMES) - STREAM_DIFFERS))
def test_stream_agrees_with_the_datagram_parser(name: str) -> None:
    datagram = parse_datagram(_data(name))
    assert datagram is not None
    events = _feed([_data(name)])
    assert [_outcome(e) for e in events] == [_outcome(datagram)]
    (event,) = events
    assert getattr(event, "fatal", False) is (name in STREAM_FATAL)


def test_stream_stops_after_a_framing_error() -> None:
    parser = StreamParser()
    (event,) = parser.feed(_data("ncl"))
    assert isinstance(event, MessageRejected) and event.fatal
    assert parser.feed(_data("lwsdisp")) == []


def test_stream_dblreq_frames_both_requests_and_rejects_the_leftover_octet() -> None:
    # Over a stream the INVITE is a message of its own; its SDP is one octet longer
    # than its Content-Length, and that "C" + CRLFCRLF is not a message.
    register, invite, leftover = _feed([_data("dblreq")])
    datagram = parse_datagram(_data("dblreq"))
    assert isinstance(datagram, MessageReceived)
    assert isinstance(register, MessageReceived) and register.message == datagram.message
    assert isinstance(invite, MessageReceived)
    assert isinstance(invite.message, Request) and invite.message.method == "INVITE"
    assert len(invite.message.body) == 150
    assert isinstance(leftover, MessageRejected)
    assert (leftover.is_request, leftover.fatal) == (False, False)


def test_stream_clerr_waits_for_the_rest_of_the_body() -> None:
    # RFC 4475 §3.1.2.2: over a stream, wait for more data (the transport closes
    # the connection if none comes in reasonable time).
    parser = StreamParser()
    assert parser.feed(_data("clerr")) == []
    assert parser.feed(b"x" * 100) == []


def test_stream_baddn_is_rejected_once_its_header_section_ends() -> None:
    # The file stops after its last header line; on a stream the message is
    # complete only when the empty line comes.
    parser = StreamParser()
    assert parser.feed(_data("baddn")) == []
    events = parser.feed(b"\r\n")
    datagram = parse_datagram(_data("baddn"))
    assert datagram is not None
    assert [_outcome(e) for e in events] == [_outcome(datagram)]


def test_stream_inv2543_without_content_length_has_no_body() -> None:
    # RFC 3261 §18.3 requires Content-Length on a stream; without it the message
    # is taken to end with its header section, and the SDP waits as the start of
    # a next message that never completes.
    datagram = parse_datagram(_data("inv2543"))
    assert isinstance(datagram, MessageReceived)
    assert len(datagram.message.body) > 0
    (event,) = _feed([_data("inv2543")])
    assert isinstance(event, MessageReceived)
    assert event.message.body == b""
    assert event.message.headers == datagram.message.headers


def test_stream_reads_the_corpus_back_to_back_with_pings_between() -> None:
    names = [n for n in NAMES if n not in STREAM_DIFFERS | STREAM_FATAL]
    stream = b"\r\n\r\n".join(_data(n) for n in names)
    events = _feed(_random_pieces(stream, "corpus"))
    messages = [e for e in events if not isinstance(e, KeepAlivePing)]
    expected = [parse_datagram(_data(n)) for n in names]
    assert [_outcome(e) for e in messages] == [_outcome(e) for e in expected if e is not None]
    assert sum(isinstance(e, KeepAlivePing) for e in events) == len(names) - 1


# -- 3.3: what later layers read is there --------------------------------------


def test_cparam01_addr_spec_params_belong_to_the_contact() -> None:
    (contact,) = _contacts(_request("cparam01"))
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == ()
    assert contact.params == (("unknownparam", None),)


def test_cparam02_name_addr_params_belong_to_the_uri() -> None:
    (contact,) = _contacts(_request("cparam02"))
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == (("unknownparam", None),)
    assert contact.params == ()


def test_regescrt_keeps_the_escaped_route_in_the_contact_uri() -> None:
    (contact,) = _contacts(_request("regescrt"))
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_unknown_schemes_parse_as_absolute_uris() -> None:
    assert isinstance(_request("unkscm").uri, AbsoluteUri)
    assert str(_request("novelsc").uri) == "soap.beep://192.0.2.103:3002"
    message = _request("unksm2")
    assert (message.to_addr.uri.scheme, message.from_addr.uri.scheme) == ("isbn", "http")
    (contact,) = _contacts(message)
    assert str(contact.uri) == "name:John_Smith"


def test_badbranch_bare_magic_cookie_parses() -> None:
    assert _request("badbranch").vias[0].branch == "z9hG4bK"


def test_zeromf_max_forwards_zero_parses() -> None:
    assert _request("zeromf").max_forwards == 0


def test_bcast_broadcast_via_parses() -> None:
    assert [v.host for v in _response("bcast").vias] == ["192.0.2.198", "255.255.255.255"]


def test_inv2543_datagram_body_is_the_rest_of_the_datagram() -> None:
    message = _request("inv2543")
    assert message.vias[0].branch is None
    assert message.from_addr.tag is None
    assert message.max_forwards is None
    assert message.body.startswith(b"v=0\r\n")
    assert message.body == _data("inv2543").split(b"\r\n\r\n", 1)[1]


def test_bext01_option_tags_are_readable() -> None:
    message = _request("bext01")
    tags = [t for v in message.headers.get_all("Require") for t in split_list(v)]
    assert tags


def test_bext01_options_with_unknown_required_extensions_gets_420() -> None:
    """RFC 4475 §3.3.5: a UAS answers 420 Bad Extension naming both options."""
    from homeredirect.director.core import DirectorCore
    from tests.unit.fakes import RecordingFlow, TableResolver
    from tests.unit.test_director_core import make_core

    # The director answers as a UAS when it redirects the user (one Via): 302 or 420.
    core, _ = make_core(resolver=TableResolver({"user@example.com": "home1.example.com"}))
    assert isinstance(core, DirectorCore)
    event = parse_datagram((DATA / "bext01.dat").read_bytes())
    assert isinstance(event, MessageReceived)
    flow = RecordingFlow()
    core.message_received(event.message, flow)
    (response,) = flow.messages()
    assert response.status == 420
    assert response.headers.get("Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"
