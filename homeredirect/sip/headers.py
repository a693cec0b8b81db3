"""Typed values of the header fields that routing depends on (RFC 3261 §20, §25.1).

Headers are kept as text in `Headers`; the values here are parsed from that text
once, when first needed, and are immutable.  Each parser raises SipParseError
with a reason that names the header, so that a 400 tells the peer what was wrong.
"""

from __future__ import annotations

import ipaddress
import re

from attrs import frozen

from homeredirect.sip.errors import SipParseError
from homeredirect.sip.uri import (
    HOST_NAME_OR_IPV4,
    IPV4,
    SIP_URI_PARAMS,
    SIP_USER,
    Params,
    SipUri,
    Uri,
    bounded_int,
    parse_uri,
    split_hostport,
    split_simple_params,
)

TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
#: A generic-param value that is not a quoted-string: token / host (RFC 3261 §25.1).
_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
_LWS = " \t"
#: delta-seconds is 1*DIGIT, but Expires and the Contact expires parameter lie
#: between 0 and 2**32 - 1; a malformed value SHOULD be taken as 3600 (RFC 3261
#: §20.19, §20.10), not refused.
MAX_DELTA_SECONDS = 2**32 - 1
DEFAULT_EXPIRES = 3600
#: RFC 3261 §8.1.1.5 and §20.16: a CSeq number is a 32-bit unsigned integer.  Only
#: the *first* number of a dialog must be below 2**31; later ones may climb to
#: 2**32 - 1 (§12.2.1.1), so a receiver accepts the whole unsigned range.
MAX_CSEQ = 2**32 - 1

#: RFC 3261 §7.3.3 and later RFCs: compact form -> canonical long name.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# fmt: off
_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version", "Organization", "Path",
    "Priority", "Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization",
    "Proxy-Require", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "Server", "Service-Route",
    "Session-Expires", "Subject", "Supported", "Timestamp", "To", "Unsupported", "User-Agent",
    "Via", "Warning", "WWW-Authenticate",
)
# fmt: on

#: lowercase name (long or compact) -> canonical spelling used when we serialize.
CANONICAL_NAMES: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}
CANONICAL_NAMES.update(COMPACT_FORMS)


def canonical_name(name: str) -> str:
    """The long, conventionally capitalised form of a header name (compact forms expanded)."""
    return CANONICAL_NAMES.get(name.lower(), name)


def _scan_quoted(text: str, start: int, header: str | None = None) -> int:
    """Index just after the quoted-string that opens at *start* (RFC 3261 §25.1)."""
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise SipParseError(f"{_prefix(header)}unterminated quoted string in {text!r}")


def _prefix(header: str | None) -> str:
    return f"{header}: " if header else ""


def split_list(value: str, header: str | None = None) -> list[str]:
    """Split a comma-separated header value (RFC 3261 §7.3.1), not inside quotes or <>.

    *header* names the field in error reasons.
    """
    if "," not in value:
        stripped = value.strip(_LWS)
        return [stripped] if stripped else []
    if '"' not in value and "<" not in value:
        # Nothing can hide a comma (a list of Vias): every comma separates, as the scan
        # below would find, at the cost of one split instead of a loop per character.
        items = [item.strip(_LWS) for item in value.split(",")]
    else:
        items = _scan_list(value, header)
    if any(not item for item in items):
        raise SipParseError(f"{_prefix(header)}empty element in list {value!r}")
    return items


def _scan_list(value: str, header: str | None) -> list[str]:
    """The elements of *value*, split at commas outside quoted strings and <>."""
    items: list[str] = []
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == '"':
            i = _scan_quoted(value, i, header)
            continue
        if ch == "<":
            end = value.find(">", i)
            if end < 0:
                raise SipParseError(f"{_prefix(header)}unterminated <...> in {value!r}")
            i = end + 1
            continue
        if ch == ",":
            items.append(value[start:i].strip(_LWS))
            start = i + 1
        i += 1
    items.append(value[start:].strip(_LWS))
    return items


def parse_params(text: str, where: str) -> Params:
    """Parse ``*( SEMI generic-param )`` (RFC 3261 §25.1); *text* starts after a ';'.

    Values may be tokens, hosts or quoted strings; quoted values keep their quotes.
    """
    params: list[tuple[str, str | None]] = []
    i = 0
    n = len(text)
    while True:
        end = i
        while end < n and text[end] not in ';"':
            end += 1
        if end < n and text[end] == '"':
            end = _scan_quoted(text, end, where)
            while end < n and text[end] in _LWS:
                end += 1
            if end < n and text[end] != ";":
                raise SipParseError(f"junk after quoted parameter value in {where}")
        item = text[i:end]
        name, sep, value = item.partition("=")
        name = name.strip(_LWS)
        if not TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter {item.strip(_LWS)!r} in {where}")
        if sep:
            value = value.strip(_LWS)
            if not value or (not value.startswith('"') and not _PARAM_VALUE_RE.fullmatch(value)):
                raise SipParseError(f"bad value for parameter {name!r} in {where}")
            params.append((name, value))
        else:
            params.append((name, None))
        if end >= n:
            return tuple(params)
        i = end + 1


def param_value(params: Params, name: str) -> str | None:
    """The value of header parameter *name* ("" for a flag; None if absent); case-insensitive."""
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return "" if value is None else value
    return None


def _format_params(params: Params) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


@frozen
class Via:
    """One Via field value (RFC 3261 §20.42, with rport from RFC 3581)."""

    transport: str
    host: str
    port: int | None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return param_value(self.params, "branch")

    @property
    def received(self) -> str | None:
        return param_value(self.params, "received")

    @property
    def rport(self) -> str | None:
        """The empty string when the client asked for rport (RFC 3581 §4), the port, or None."""
        return param_value(self.params, "rport")

    @property
    def maddr(self) -> str | None:
        return param_value(self.params, "maddr")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{_format_params(self.params)}"


_VIA_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+([^; \t]+(?:[ \t]*:[ \t]*[0-9]+)?)[ \t]*(?:;(.*))?",
    re.S,
)


_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_IPV4_RE = re.compile(IPV4)
_SIMPLE_PARAMS = rf"(?:;{_TOKEN}(?:={_TOKEN})?)*"
#: The common shape of a Via, with no LWS, IPv6 or quoted values: matched in one
#: call; anything else takes the general path below.  The commonest parameters of
#: all, a branch alone or followed by an empty rport (RFC 3581 §4), are read by the
#: first alternative: a token branch and a flag rport need no further check.  Its
#: branch run is possessive (no ';' can be given back into it), so that any other
#: parameters after it fail over to the second alternative at once.
_VIA_FAST_RE = re.compile(
    rf"SIP/2\.0/({_TOKEN}) ({HOST_NAME_OR_IPV4})(?::([0-9]{{1,5}}))?"
    rf"(?:;branch=({_TOKEN}+)(;rport)?|({_SIMPLE_PARAMS}))"
)


def parse_via(value: str) -> Via:
    """Parse one via-parm (RFC 3261 §25.1), tolerating LWS around '/', ':' and ';'.

    received must be an IP address and rport empty or a port (RFC 3581 §4).
    """
    fast = _VIA_FAST_RE.fullmatch(value)
    if fast is not None:
        transport, host, port_text, branch, rport, params_text = fast.groups()
        port = int(port_text) if port_text else None
        if port is None or 0 < port < 65536:
            params: Params
            if branch is not None:
                params = (("branch", branch), ("rport", None)) if rport else (("branch", branch),)
            else:
                params = split_simple_params(params_text) if params_text else ()
                if params:
                    _check_via_params(params)
            return Via(transport.upper(), host.lower(), port, params)
    match = _VIA_RE.fullmatch(value.strip(_LWS))
    if match is None:
        raise SipParseError(f"bad Via {value!r}")
    name, version, transport, hostport, params_text = match.groups()
    hostport = re.sub(r"[ \t]+", "", hostport)
    try:
        host, port = split_hostport(hostport)
    except SipParseError as error:
        raise SipParseError(f"bad Via sent-by: {error.reason}") from None
    parsed_params = parse_params(params_text, "Via") if params_text is not None else ()
    _check_via_params(parsed_params)
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=parsed_params,
        protocol=f"{name.upper()}/{version}",
    )


def _check_via_params(params: Params) -> None:
    """RFC 3261 §20.42 via-branch (token), via-received (IP address) and RFC 3581 rport."""
    for name, value in params:
        key = name.lower()
        if key == "branch":
            if value is None or not TOKEN_RE.fullmatch(value):
                raise SipParseError(f"bad Via branch {value!r}")
        elif key == "received":
            if value is None or not _is_ip_address(value):
                raise SipParseError(f"bad Via received {value!r}: not an IP address")
        elif key == "rport" and value is not None:
            if not bounded_int(value, 65535):
                raise SipParseError(f"bad Via rport {value!r}")


def _is_ip_address(text: str) -> bool:
    """IPv4address / IPv6address, bracketed or not (RFC 3261 §25.1; RFC 5118 §4.5)."""
    if _IPV4_RE.fullmatch(text):
        return True
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" not in text or "%" in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@frozen
class NameAddr:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route..."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return param_value(self.params, "tag")

    def param(self, name: str) -> str | None:
        return param_value(self.params, name)

    def __str__(self) -> str:
        display = f"{self.display_name} " if self.display_name else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


#: The common shape of From/To/Contact: an optional quoted or token display name
#: and a sip/sips URI with plain parameters in angle brackets.  The quoted string
#: (RFC 3261 §25.1) is runs of plain characters between quoted-pairs, its runs alone
#: possessive (see `homeredirect.sip.uri` on CPython 3.11.2 and possessive groups).
_NAME_ADDR_FAST_RE = re.compile(
    rf"(\"[^\"\\\r\n]*+(?:\\[^\r\n][^\"\\\r\n]*+)*\"|{_TOKEN}(?: {_TOKEN})*)? ?"
    rf"<(sips?):(?:({SIP_USER})@)?({HOST_NAME_OR_IPV4})(?::([0-9]{{1,5}}))?"
    rf"({SIP_URI_PARAMS})>({_SIMPLE_PARAMS})"
)


def check_name_addr(value: str, header: str) -> None:
    """Raise SipParseError unless *value* is one valid name-addr or addr-spec.

    The common shape is checked by one regex match and nothing is built; the
    parser uses this for fields that routing may never read (From, Contact), so
    that their objects are made only on access.
    """
    fast = _NAME_ADDR_FAST_RE.fullmatch(value)
    if fast is None or (fast.group(5) is not None and not 0 < int(fast.group(5)) < 65536):
        parse_name_addr(value, header)


def parse_name_addr(value: str, header: str) -> NameAddr:
    """Parse ``( name-addr / addr-spec ) *( SEMI param )`` (RFC 3261 §20.10, §20.20, §20.39).

    Without angle brackets the URI ends at the first ';', and what follows are
    header parameters (RFC 3261 §20); such an addr-spec must not hold a ',' or
    '?' (§20.10: those need the name-addr form).
    """
    fast = _NAME_ADDR_FAST_RE.fullmatch(value)
    if fast is not None:
        fast_display, scheme, user, host, port_text, uri_params, params = fast.groups()
        fast_port = int(port_text) if port_text else None
        if fast_port is None or 0 < fast_port < 65536:
            sip_uri = SipUri(
                scheme,
                host.lower(),
                user,
                None,
                fast_port,
                split_simple_params(uri_params) if uri_params else (),
            )
            return NameAddr(sip_uri, fast_display, split_simple_params(params) if params else ())
    text = value.strip(_LWS)
    display: str | None = None
    if text.startswith('"'):
        end = _scan_quoted(text, 0, header)
        display = text[:end]
        text = text[end:].lstrip(_LWS)
        if not text.startswith("<"):
            raise SipParseError(f"{header}: quoted display name not followed by <URI>")
    # A '<' opens a name-addr only before any ';' or '"': after them it is inside
    # a header parameter of an addr-spec (``sip:a@b;note="<x>"``).
    lt = text.find("<")
    if lt > 0 and (";" in text[:lt] or '"' in text[:lt]):
        lt = -1
    if lt >= 0:
        if lt > 0:
            tokens = text[:lt].split()
            if not all(TOKEN_RE.fullmatch(t) for t in tokens):
                raise SipParseError(f"{header}: bad display name {text[:lt].strip()!r}")
            display = " ".join(tokens)
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"{header}: unterminated <URI>")
        uri_text = text[lt + 1 : gt]
        if uri_text != uri_text.strip(_LWS):
            raise SipParseError(f"{header}: whitespace inside <{uri_text}>")
        rest = text[gt + 1 :].lstrip(_LWS)
    else:
        uri_text, semi, rest_ = text.partition(";")
        uri_text = uri_text.rstrip(_LWS)
        rest = ";" + rest_ if semi else ""
        if "?" in uri_text or "," in uri_text:
            raise SipParseError(
                f"{header}: a URI with '?' or ',' must be enclosed in <> ({uri_text!r})"
            )
        if " " in uri_text or "\t" in uri_text:
            raise SipParseError(f"{header}: bad URI {uri_text!r}")
    try:
        uri = parse_uri(uri_text)
    except SipParseError as error:
        raise SipParseError(f"{header}: {error.reason}") from None
    if rest and not rest.startswith(";"):
        raise SipParseError(f"{header}: junk after URI: {rest!r}")
    params = parse_params(rest[1:], header) if rest else ()
    return NameAddr(uri=uri, display_name=display, params=params)


@frozen
class CSeq:
    """CSeq (RFC 3261 §20.16): a 32-bit unsigned sequence number and a method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ_RE = re.compile(rf"([0-9]+)[ \t]+({_TOKEN})")


def parse_cseq(value: str) -> CSeq:
    """Parse ``1*DIGIT LWS Method`` with the number at most 2**32 - 1 (RFC 3261 §20.16)."""
    match = _CSEQ_RE.fullmatch(value)
    if match is None:
        raise SipParseError(f"bad CSeq {value!r}")
    number_text, method = match.groups()
    number = bounded_int(number_text, MAX_CSEQ)
    if number is None:
        raise SipParseError(f"CSeq number {number_text[:40]} does not fit in 32 bits")
    return CSeq(number, method)


def parse_small_int(value: str, header: str, maximum: int) -> int:
    """Parse a 1*DIGIT header value bounded by *maximum* (Max-Forwards...)."""
    text = value.strip(_LWS)
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"bad {header} {value!r}")
    number = bounded_int(text, maximum)
    if number is None:
        raise SipParseError(f"{header} {text[:40]} out of range")
    return number


def parse_expires(value: str | None) -> int | None:
    """The seconds of an Expires value or Contact expires parameter; None without one.

    A malformed or out-of-range value means 3600 (RFC 3261 §20.19, §20.10;
    RFC 4475 §3.1.2.4), so it never makes a message malformed.
    """
    if value is None:
        return None
    seconds = bounded_int(value.strip(_LWS), MAX_DELTA_SECONDS)
    return DEFAULT_EXPIRES if seconds is None else seconds


Star = str
ContactList = list[NameAddr] | Star
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def check_contacts(values: list[str]) -> None:
    """Raise SipParseError unless *values* are valid Contact values; the common
    single name-addr without a q parameter is checked by one regex match."""
    for value in values:
        fast = _NAME_ADDR_FAST_RE.fullmatch(value)
        if (
            fast is None
            or (fast.group(5) is not None and not 0 < int(fast.group(5)) < 65536)
            or "q=" in value.lower()
        ):
            parse_contacts(values)
            return


def parse_contacts(values: list[str]) -> ContactList:
    """Parse Contact values (RFC 3261 §20.10): a list of name-addrs, or the lone ``*``.

    q must be a qvalue (§25.1); the expires parameter is read with
    `parse_expires`, which takes a malformed value as 3600.
    """
    items = [item for value in values for item in split_list(value, "Contact")]
    if items == ["*"]:
        return "*"
    if "*" in items:
        raise SipParseError("Contact: '*' must be the only Contact value")
    contacts = [parse_name_addr(item, "Contact") for item in items]
    for contact in contacts:
        for name, param in contact.params:
            key = name.lower()
            if key == "q" and (param is None or not _QVALUE_RE.fullmatch(param)):
                raise SipParseError(f"Contact: bad q value {param!r}")
    return contacts


def sip_uri_of(addr: NameAddr, header: str) -> SipUri:
    """The SIP URI of *addr*, or SipParseError if it has another scheme."""
    if not isinstance(addr.uri, SipUri):
        raise SipParseError(f"{header} URI is not a SIP URI")
    return addr.uri
