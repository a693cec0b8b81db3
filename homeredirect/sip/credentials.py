"""Authorization and challenge header values: `scheme param=value, param="quoted"`.

RFC 3261 §25.1 (`credentials`, `challenge`) with the auth-param grammar of RFC 7235 §2.1,
shared by Digest (RFC 3261 §22.4, RFC 7616) and Microsoft's NTLM and Kerberos schemes
([MS-SIPAE] §2.2), whose parameters (`gssapi-data`, `targetname`, `opaque`) use the same
syntax. Parsing is strict: a header that does not follow the grammar raises
`SipParseError` naming it, so that a server answers 400 rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from attrs import field, frozen

from homeredirect.sip.errors import SipParseError

__all__ = ["AuthValue", "format_auth_value", "parse_auth_value", "quote"]

_TOKEN = r"[A-Za-z0-9!%'*+\-.^_`|~]+"
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")
_PARAM = re.compile(
    rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x7f])*)\"|({_TOKEN}))\s*"
)
_UNESCAPE = re.compile(r"\\(.)")
# The same grammar for the fast path: one match checks the whole value, one findall picks
# out the name=value pairs. Every repetition is followed by a character it cannot take, so
# a failing match gives up after one step back per character, and the check starts right
# after the scheme, where nothing before it can be matched another way (linear time for
# hostile values; no possessive quantifiers, which CPython 3.11 gets wrong before `\Z`).
_QCHARS = r'[^"\\\x00-\x08\x0a-\x1f\x7f]*'
_QUOTED = rf'"{_QCHARS}(?:\\[\x00-\x7f]{_QCHARS})*"'
_ANY_PARAM = rf"\s*{_TOKEN}\s*=\s*(?:{_QUOTED}|{_TOKEN})\s*"
_WELL_FORMED = re.compile(rf"\s*({_TOKEN})(?=\s)(?={_ANY_PARAM}(?:,{_ANY_PARAM})*\Z)")
_PAIR = re.compile(rf"({_TOKEN})\s*=\s*({_QUOTED}|{_TOKEN})")
_FAST_PATH_LIMIT = 1024
"""Longer values (Kerberos and NTLM tokens, garbage) are parsed parameter by parameter,
which stops at the first fault: the whole-value check would read all of it first."""
MAX_PARAMS = 32
"""More parameters than any scheme defines: a header with more is refused, so a peer cannot
make us build large dictionaries."""


def _freeze(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@frozen
class AuthValue:
    """One parsed `Authorization`/`Proxy-Authorization` (or challenge) value.

    `scheme` is as written (schemes compare case-insensitively: use `scheme_is`);
    parameter names are lowercased (RFC 7235 §2.1) and values unquoted.
    """

    scheme: str
    params: Mapping[str, str] = field(converter=_freeze)

    def scheme_is(self, name: str) -> bool:
        return self.scheme.lower() == name.lower()

    def get(self, name: str) -> str | None:
        return self.params.get(name)


def parse_auth_value(value: str, header: str = "Authorization") -> AuthValue:
    """Parse `scheme param=value, ...`; raise `SipParseError` naming `header`.

    A parameter given twice is an error (RFC 7616 §3.4: each at most once), as is an empty
    parameter list.

    Every Digest answer is parsed (each authenticated REGISTER), so a well-formed value
    takes two regular-expression calls and one comprehension; anything else is parsed
    again parameter by parameter, to name what is wrong.
    """
    match = _WELL_FORMED.match(value) if len(value) <= _FAST_PATH_LIMIT else None
    if match is not None:
        pairs = _PAIR.findall(value, match.end())
        params = {name.lower(): raw[1:-1] if raw[0] == '"' else raw for name, raw in pairs}
        if len(params) == len(pairs) <= MAX_PARAMS:
            if "\\" in value:  # only quoted values can hold a backslash (a quoted-pair)
                params = {name: _UNESCAPE.sub(r"\1", raw) for name, raw in params.items()}
            return AuthValue(match[1], params)
    return _parse_param_by_param(value, header)


def _parse_param_by_param(value: str, header: str) -> AuthValue:
    """`parse_auth_value` one parameter at a time, naming the first fault."""
    match = _SCHEME.match(value)
    if match is None:
        raise SipParseError(f"{header}: expected an authentication scheme")
    scheme = match[1]
    params: dict[str, str] = {}
    position = match.end()
    while True:
        param = _PARAM.match(value, position)
        if param is None:
            raise SipParseError(f"{header}: malformed parameter at offset {position}")
        name = param[1].lower()
        if name in params:
            raise SipParseError(f"{header}: parameter {name!r} given twice")
        if len(params) >= MAX_PARAMS:
            raise SipParseError(f"{header}: more than {MAX_PARAMS} parameters")
        quoted = param[2]
        if quoted is None:
            params[name] = param[3]
        else:
            params[name] = _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        position = param.end()
        if position == len(value):
            break
        if value[position] != ",":
            raise SipParseError(f"{header}: expected ',' at offset {position}")
        position += 1
    return AuthValue(scheme, params)


def quote(text: str) -> str:
    """A quoted-string holding `text` (RFC 3261 §25.1), escaping `"` and `\\`."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_auth_value(scheme: str, params: list[tuple[str, str, bool]]) -> str:
    """`scheme name="value", name=token`: `params` are (name, value, quoted) in order,
    since clients such as Microsoft's expect the order their documents show."""
    rendered = ", ".join(
        f"{name}={quote(value) if quoted else value}" for name, value, quoted in params
    )
    return f"{scheme} {rendered}"
