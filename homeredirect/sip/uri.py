"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), parsed once into values.

Components are kept exactly as they appear on the wire (still %-escaped), so
that a URI we forward or echo is byte-for-byte the one we received; `unescape`
gives the decoded form where a comparison needs it (RFC 3261 §19.1.4).
"""

from __future__ import annotations

import ipaddress
import re

from attrs import frozen

from homeredirect.sip.errors import SipParseError

# The character runs below are possessive (``[...]*+``): none of their characters
# can also follow them, so giving some back never helps a match, and Python's
# backtracking engine is spared trying it (RFC 4475 §3.1.1.7 has long runs).  Only
# single character classes are possessive, never a group: CPython before 3.11.5
# (Debian's 3.11.2) mismatches possessive groups (gh-106052), and
# ``(?:;name(?:=value)?)*+`` took the lone ';' of ``sip:a;`` as a parameter.  A
# repeated group here starts with a character that no run takes ('%' of an escape,
# ';' of a parameter), so a plain greedy group gives back each of them at most once.
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"


def _escaped_run(chars: str) -> str:
    """``*( [chars] / escaped )``, RFC 3261 §25.1, as runs of *chars* between escapes.

    Spelt ``(?:[chars]+|escaped)*``, a run could be split into iterations in many
    ways, which a failing match tries one after another (exponential time); here
    every string has one split.
    """
    return rf"[{chars}]*+(?:{_ESCAPED}[{chars}]*+)*"


def _escaped_run_1(chars: str) -> str:
    """``1*( [chars] / escaped )``: one character or escape, then `_escaped_run`."""
    return rf"(?:[{chars}]|{_ESCAPED}){_escaped_run(chars)}"


#: RFC 3261 §25.1 user: unreserved, escaped and user-unreserved characters.
SIP_USER = _escaped_run_1(rf"{_UNRESERVED}&=+$,;?/")
#: RFC 3261 §25.1 paramchar, for uri-parameter names and values.
SIP_PARAMCHARS = _escaped_run_1(rf"{_UNRESERVED}\[\]/:&+$")
#: RFC 3261 §25.1 uri-parameters, each ``;pname[=pvalue]`` with a non-empty pname.
SIP_URI_PARAMS = rf"(?:;{SIP_PARAMCHARS}(?:={SIP_PARAMCHARS})?)*"
_USER_RE = re.compile(SIP_USER)
_PASSWORD_RE = re.compile(_escaped_run(rf"{_UNRESERVED}&=+$,"))
_PARAMCHAR_RE = re.compile(SIP_PARAMCHARS)
_HEADERS_RE = re.compile(_escaped_run(rf"{_UNRESERVED}\[\]/?:+$=&"))
#: RFC 3261 §25.1 hostname: the top label starts with a letter, so that an
#: all-numeric name is an IPv4 address and nothing else.  A label, alphanum
#: ``*( alphanum / "-" ) alphanum`` or a single alphanum, is written as runs of
#: alphanums joined by runs of '-', the runs possessive: a run is followed by a
#: character of another kind, so giving characters back cannot help, and the
#: engine no longer tries it at each label's end.  (Only character runs are
#: possessive: CPython 3.11.2 mismatches ``(?:-++[A-Za-z0-9]++)*+`` here.)
HOSTNAME = r"(?:[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*\.)*[A-Za-z][A-Za-z0-9]*+(?:-++[A-Za-z0-9]++)*\.?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
#: hostname / IPv4address, IPv4 tried first: it fails at once on a name, while
#: the hostname pattern backtracks through every label of an address.
HOST_NAME_OR_IPV4 = rf"(?:{IPV4}|{HOSTNAME})"
_HOSTNAME_RE = re.compile(HOSTNAME)
_IPV4_RE = re.compile(IPV4)
_DOTTED_DIGITS_RE = re.compile(r"[0-9.]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_ABSOLUTE_REST_RE = re.compile(r"[^\s<>\"]+")
_TEL_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()pPwW]+")
_UNESCAPE_RE = re.compile(rb"%([0-9A-Fa-f]{2})")
#: The common shape of a SIP URI (no password, IPv6 or headers), matched in one
#: call; anything else takes the general path of `parse_uri`.
_SIP_URI_FAST_RE = re.compile(
    rf"(sips?):(?:({SIP_USER})@)?({HOST_NAME_OR_IPV4})(?::([0-9]{{1,5}}))?"
    rf"({SIP_URI_PARAMS})"
)

Params = tuple[tuple[str, str | None], ...]


def unescape(text: str) -> str:
    """Decode %HH escapes (RFC 3261 §19.1.2) as UTF-8, keeping odd bytes recoverable."""
    if "%" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    decoded = _UNESCAPE_RE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return decoded.decode("utf-8", "surrogateescape")


#: Digit strings this short are read by ``int()`` at once: the common Content-Length,
#: CSeq and Max-Forwards values skip stripping zeros and measuring *maximum*.
_SHORT_DIGITS = 18


def bounded_int(text: str, maximum: int) -> int | None:
    """The value of the ASCII digit string *text*, or None if it is not one or exceeds *maximum*.

    The length is checked before ``int()`` sees the text: ``int()`` raises
    ValueError on more than 4300 digits (CVE-2020-10735), and a peer chooses how
    many digits a CSeq or a Content-Length has.
    """
    if not (text.isdigit() and text.isascii()):
        return None
    if len(text) <= _SHORT_DIGITS:
        value = int(text)
        return value if value <= maximum else None
    significant = text.lstrip("0")
    if len(significant) > len(str(maximum)):
        return None
    value = int(significant) if significant else 0
    return value if value <= maximum else None


def parse_host(text: str) -> str:
    """Validate a host (hostname, IPv4address or IPv6reference) and return it lowercased."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"unterminated IPv6 reference {text!r}")
        if "%" in text:
            # ipaddress accepts RFC 4007 zone ids; RFC 3261 §25.1 IPv6reference does not.
            raise SipParseError(f"bad IPv6 reference {text!r}")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise SipParseError(f"bad IPv6 reference {text!r}") from None
        return text.lower()
    if _IPV4_RE.fullmatch(text):
        return text
    if _DOTTED_DIGITS_RE.fullmatch(text):
        raise SipParseError(f"bad IPv4 address {text!r}")
    if not _HOSTNAME_RE.fullmatch(text):
        raise SipParseError(f"bad host {text!r}")
    return text.lower()


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split and validate ``host[:port]`` (RFC 3261 §25.1 hostport)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    port: int | None = None
    if port_text is not None:
        port = bounded_int(port_text, 65535)
        if not port:
            raise SipParseError(f"bad port in {text!r}")
    return parse_host(host), port


def split_simple_params(text: str) -> Params:
    """Split ``;name[=value]`` parameters that a fast pattern already checked."""
    params: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, sep, value = item.partition("=")
        params.append((name, value if sep else None))
    return tuple(params)


def _parse_uri_params(text: str) -> Params:
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not _PARAMCHAR_RE.fullmatch(name) or (sep and not _PARAMCHAR_RE.fullmatch(value)):
            raise SipParseError(f"bad URI parameter {item!r}")
        params.append((name, value if sep else None))
    return tuple(params)


def _param_lookup(params: Params, name: str) -> str | None:
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return value if value is not None else ""
    return None


@frozen
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1), components still escaped."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: str | None = None

    def param(self, name: str) -> str | None:
        """The value of URI parameter *name* ("" for a flag), or None if absent."""
        return _param_lookup(self.params, name)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += [":", self.password]
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += [":", str(self.port)]
        for name, value in self.params:
            parts += [";", name] if value is None else [";", name, "=", value]
        if self.headers is not None:
            parts += ["?", self.headers]
        return "".join(parts)


@frozen
class TelUri:
    """A ``tel:`` URI (RFC 3966), as a Request-URI or in To/From."""

    number: str
    params: Params = ()

    scheme = "tel"

    def param(self, name: str) -> str | None:
        return _param_lookup(self.params, name)

    def __str__(self) -> str:
        rest = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self.params)
        return f"tel:{self.number}{rest}"


@frozen
class AbsoluteUri:
    """Any other absolute URI (RFC 3261 §25.1 absoluteURI): syntactically fine,
    though a server may answer 416 Unsupported URI Scheme (§8.2.2.1)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI as it appears in a Request-URI or between angle brackets.

    Raises SipParseError naming the fault.
    """
    fast = _SIP_URI_FAST_RE.fullmatch(text)
    if fast is not None:
        scheme, user, host, port_text, params = fast.groups()
        port = int(port_text) if port_text else None
        if port is None or 0 < port < 65536:
            uri_params = split_simple_params(params) if params else ()
            return SipUri(scheme, host.lower(), user, None, port, uri_params)
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise SipParseError(f"bad URI {text!r}")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return _parse_sip_uri(lowered, rest, text)
    if lowered == "tel":
        number, _, params = rest.partition(";")
        if not _TEL_RE.fullmatch(number):
            raise SipParseError(f"bad tel URI {text!r}")
        return TelUri(number, _parse_uri_params(params) if params else ())
    if not _ABSOLUTE_REST_RE.fullmatch(rest):
        raise SipParseError(f"bad URI {text!r}")
    return AbsoluteUri(lowered, rest)


def _parse_sip_uri(scheme: str, rest: str, text: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, password_ = userinfo.partition(":")
        if not _USER_RE.fullmatch(user):
            raise SipParseError(f"bad user part in URI {text!r}")
        if colon:
            if not _PASSWORD_RE.fullmatch(password_):
                raise SipParseError(f"bad password in URI {text!r}")
            password = password_
    headers: str | None = None
    query = rest.find("?")
    if query >= 0:
        rest, headers = rest[:query], rest[query + 1 :]
        if not _HEADERS_RE.fullmatch(headers):
            raise SipParseError(f"bad headers in URI {text!r}")
    hostport, semi, params = rest.partition(";")
    if not hostport:
        raise SipParseError(f"URI without host {text!r}")
    try:
        host, port = split_hostport(hostport)
    except SipParseError as error:
        raise SipParseError(f"{error.reason} in URI {text!r}") from None
    return SipUri(
        scheme=scheme,
        host=host,
        user=user,
        password=password,
        port=port,
        params=_parse_uri_params(params) if semi else (),
        headers=headers,
    )
