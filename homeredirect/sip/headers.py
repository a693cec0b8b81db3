"""Typed values of the header fields that routing depends on (RFC 3261 §20, §25.1).

Headers are kept as text in `Headers`; the values here are parsed from that text
once, when first needed, and are immutable.  Each parser raises SipParseError
with a reason that names the header, so that a 400 tells the peer what was wrong.
"""

from __future__ import annotations

import re
from typing import Union

from attrs import frozen

from homeredirect.sip.errors import SipParseError
from homeredirect.sip.uri import (
    HOSTNAME,
    IPV4,
    SIP_USER,
    Params,
    SipUri,
    Uri,
    parse_uri,
    split_hostport,
)

TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_LWS = " \t"

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

#: lowercase name (long or compact) -> canonical spelling used when we serialize.
CANONICAL_NAMES: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}
CANONICAL_NAMES.update(COMPACT_FORMS)


def canonical_name(name: str) -> str:
    """The long, conventionally capitalised form of a header name (compact forms expanded)."""
    return CANONICAL_NAMES.get(name.lower(), name)


def _scan_quoted(text: str, start: int) -> int:
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
    raise SipParseError(f"unterminated quoted string in {text!r}")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 §7.3.1), not inside quotes or <>."""
    if "," not in value:
        stripped = value.strip(_LWS)
        return [stripped] if stripped else []
    items: list[str] = []
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == '"':
            i = _scan_quoted(value, i)
            continue
        if ch == "<":
            end = value.find(">", i)
            if end < 0:
                raise SipParseError(f"unterminated <...> in {value!r}")
            i = end + 1
            continue
        if ch == ",":
            items.append(value[start:i].strip(_LWS))
            start = i + 1
        i += 1
    items.append(value[start:].strip(_LWS))
    if any(not item for item in items):
        raise SipParseError(f"empty element in list {value!r}")
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
            end = _scan_quoted(text, end)
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
            if not value or (
                not value.startswith('"') and not re.fullmatch(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+", value)
            ):
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
        """"" when the client asked for rport (RFC 3581 §4), the filled-in port, or None."""
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
_HOSTNAME = rf"(?:{HOSTNAME}|{IPV4})"
_SIMPLE_PARAMS = rf"(?:;{_TOKEN}(?:={_TOKEN})?)*"
#: The common shape of a Via, with no LWS, IPv6 or quoted values: matched in one
#: call; anything else takes the general path below.
_VIA_FAST_RE = re.compile(rf"SIP/2\.0/({_TOKEN}) ({_HOSTNAME})(?::([0-9]{{1,5}}))?({_SIMPLE_PARAMS})")


def _simple_params(text: str) -> Params:
    """Split params already checked against _SIMPLE_PARAMS (text starts with ';')."""
    params: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, sep, value = item.partition("=")
        params.append((name, value if sep else None))
    return tuple(params)


def parse_via(value: str) -> Via:
    """Parse one via-parm (RFC 3261 §25.1), tolerating LWS around '/', ':' and ';'."""
    fast = _VIA_FAST_RE.fullmatch(value)
    if fast is not None:
        transport, host, port_text, params_text = fast.groups()
        port = int(port_text) if port_text else None
        if port is None or 0 < port < 65536:
            return Via(
                transport.upper(),
                host.lower(),
                port,
                _simple_params(params_text) if params_text else (),
            )
    match = _VIA_RE.fullmatch(value.strip(_LWS))
    if match is None:
        raise SipParseError(f"bad Via {value!r}")
    name, version, transport, hostport, params = match.groups()
    hostport = re.sub(r"[ \t]+", "", hostport)
    try:
        host, port = split_hostport(hostport)
    except SipParseError as error:
        raise SipParseError(f"bad Via sent-by: {error.reason}") from None
    parsed_params = parse_params(params, "Via") if params is not None else ()
    branch = param_value(parsed_params, "branch")
    if branch is not None and not TOKEN_RE.fullmatch(branch):
        raise SipParseError(f"bad Via branch {branch!r}")
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=parsed_params,
        protocol=f"{name.upper()}/{version}",
    )


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


_URI_PARAMCHARS = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+"
#: The common shape of From/To/Contact: an optional quoted or token display name
#: and a sip/sips URI with plain parameters in angle brackets.
_NAME_ADDR_FAST_RE = re.compile(
    rf"(\"(?:[^\"\\\r\n]|\\[^\r\n])*\"|{_TOKEN}(?: {_TOKEN})*)? ?"
    rf"<(sips?):(?:({SIP_USER})@)?({_HOSTNAME})(?::([0-9]{{1,5}}))?"
    rf"((?:;{_URI_PARAMCHARS}(?:={_URI_PARAMCHARS})?)*)>({_SIMPLE_PARAMS})"
)


def parse_name_addr(value: str, header: str) -> NameAddr:
    """Parse ``( name-addr / addr-spec ) *( SEMI param )`` (RFC 3261 §20.10, §20.20, §20.39).

    Without angle brackets the URI ends at the first ';', and what follows are
    header parameters (RFC 3261 §20).
    """
    fast = _NAME_ADDR_FAST_RE.fullmatch(value)
    if fast is not None:
        display, scheme, user, host, port_text, uri_params, params = fast.groups()
        port = int(port_text) if port_text else None
        if port is None or 0 < port < 65536:
            uri = SipUri(
                scheme,
                host.lower(),
                user,
                None,
                port,
                _simple_params(uri_params) if uri_params else (),
            )
            return NameAddr(uri, display, _simple_params(params) if params else ())
    text = value.strip(_LWS)
    display: str | None = None
    if text.startswith('"'):
        end = _scan_quoted(text, 0)
        display = text[:end]
        text = text[end:].lstrip(_LWS)
        if not text.startswith("<"):
            raise SipParseError(f"{header}: quoted display name not followed by <URI>")
    lt = text.find("<")
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
        rest = text[gt + 1 :].lstrip(_LWS)
    else:
        uri_text, semi, rest_ = text.partition(";")
        uri_text = uri_text.rstrip(_LWS)
        rest = ";" + rest_ if semi else ""
        if any(c in uri_text for c in " \t,?"):
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
    """CSeq (RFC 3261 §20.16): a sequence number below 2**31 and a method."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
        raise SipParseError(f"bad CSeq {value!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise SipParseError(f"CSeq number {parts[0]} is not below 2**31")
    if not TOKEN_RE.fullmatch(parts[1]):
        raise SipParseError(f"bad CSeq method {parts[1]!r}")
    return CSeq(number, parts[1])


def parse_small_int(value: str, header: str, maximum: int) -> int:
    """Parse a 1*DIGIT header value bounded by *maximum* (Max-Forwards, Expires...)."""
    text = value.strip(_LWS)
    if not text.isdigit() or not text.isascii():
        raise SipParseError(f"bad {header} {value!r}")
    number = int(text)
    if number > maximum:
        raise SipParseError(f"{header} {text} out of range")
    return number


Star = str
ContactList = Union[list[NameAddr], Star]


def parse_contacts(values: list[str]) -> ContactList:
    """Parse Contact values (RFC 3261 §20.10): a list of name-addrs, or the lone ``*``."""
    items = [item for value in values for item in split_list(value)]
    if items == ["*"]:
        return "*"
    return [parse_name_addr(item, "Contact") for item in items]


def sip_uri_of(addr: NameAddr, header: str) -> SipUri:
    """The SIP URI of *addr*, or SipParseError if it has another scheme."""
    if not isinstance(addr.uri, SipUri):
        raise SipParseError(f"{header} URI is not a SIP URI")
    return addr.uri
