"""The SIP patterns accept what the RFC 3261 §25.1 grammar accepts on CPython 3.11.2.

CPython before 3.11.5 mismatches possessive *groups* (gh-106052): the fast URI
pattern's ``(?:;name(?:=value)?)*+`` took a lone trailing ';' as a parameter, so
``sip:a;`` was accepted with an empty-named parameter, which the general path
rejects.  The patterns now make only single character classes possessive; these
tests compare each with a plain reference written one character or escape per
iteration (no possessive quantifier, no nested runs), and keep possessive groups
and atomic groups out of every module-level pattern.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import homeredirect
from homeredirect.sip import headers, uri
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import check_name_addr, parse_name_addr
from homeredirect.sip.uri import IPV4, SipUri, parse_uri

_ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+"
_PARAMCHARS = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+"
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*"
_HEADERS = rf"(?:[{_UNRESERVED}\[\]/?:+$=&]|{_ESCAPED})*"
_HOSTNAME = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?"
)
_URI_PARAMS = rf"(?:;{_PARAMCHARS}(?:={_PARAMCHARS})?)*"
_SIP_URI = rf"(sips?):(?:({_USER})@)?((?:{IPV4}|{_HOSTNAME}))(?::([0-9]{{1,5}}))?({_URI_PARAMS})"
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_NAME_ADDR = (
    rf"(\"(?:[^\"\\\r\n]|\\[^\r\n])*\"|{_TOKEN}(?: {_TOKEN})*)? ?"
    rf"<{_SIP_URI}>((?:;{_TOKEN}(?:={_TOKEN})?)*)"
)

#: (pattern in use, plain reference, pieces that strings are drawn from); the
#: strings of the last two start with one of `_PREFIXES`, so that most are near misses.
_CASES = {
    "user": (
        uri.SIP_USER,
        _USER,
        [*"aZ09-_.!~*'()&=+$,;?/@: #", "%41", "%4", "%", "%zz", "%a1", "%4g"],
    ),
    "paramchars": (uri.SIP_PARAMCHARS, _PARAMCHARS, [*"aZ09-_.[]/:&+$=;@>#", "%41", "%4", "%"]),
    "password": (uri._PASSWORD_RE.pattern, _PASSWORD, [*"aZ09-_.&=+$,;@:#", "%41", "%4", "%"]),
    "headers": (uri._HEADERS_RE.pattern, _HEADERS, [*"aZ09-_.[]/?:+$=&;@#", "%41", "%4", "%"]),
    "hostname": (uri.HOSTNAME, _HOSTNAME, [*"aZ09-.x_:"]),
    "sip uri": (
        uri._SIP_URI_FAST_RE.pattern,
        _SIP_URI,
        [*"ab-.@;=_:9", "sip:", "sips:", "%41", "%4", "%", ":5060", ";lr", "=1", "192.0.2.1", "b."],
    ),
    "name-addr": (
        headers._NAME_ADDR_FAST_RE.pattern,
        _NAME_ADDR,
        [*'"\\a <>@-.;=\r', '\\"', "<sip:", "<sips:", "%41", "%4", ";lr", "b.c", ":5", ";tag=1"],
    ),
}

_PREFIXES = {
    "sip uri": ["", "sip:a", "sips:b.c", "sip:u@192.0.2.1", "sip:%41@h:5060;lr"],
    "name-addr": ["", "<sip:a", '"x" <sip:u@b.c', '"a\\"b" <sips:h', "B <sip:h;lr"],
}


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, str, str]:
    name = draw(st.sampled_from(sorted(_CASES)))
    pattern, reference, pieces = _CASES[name]
    prefix = draw(st.sampled_from(_PREFIXES.get(name, [""])))
    text = prefix + "".join(draw(st.lists(st.sampled_from(pieces), max_size=16)))
    return pattern, reference, text


@settings(max_examples=3000)
@given(_cases())
def test_patterns_match_what_the_plain_grammar_matches(case: tuple[str, str, str]) -> None:
    pattern, reference, text = case
    used = re.fullmatch(pattern, text)
    plain = re.fullmatch(reference, text)
    assert (used is None) == (plain is None)
    if used is not None and plain is not None:
        assert used.groups() == plain.groups()


@pytest.mark.parametrize(
    "text",
    ["sip:a;", "sips:a;", "sip:a.b;lr;", "sip:u@192.0.2.1:5060;transport=udp;", "sip:a;lr;;"],
)
def test_a_uri_with_an_empty_parameter_is_rejected(text: str) -> None:
    with pytest.raises(SipParseError, match="bad URI parameter"):
        parse_uri(text)


@pytest.mark.parametrize("value", ["<sip:a;>", '"Bob" <sip:b.example;lr;>;tag=1'])
def test_a_name_addr_with_an_empty_uri_parameter_is_rejected(value: str) -> None:
    with pytest.raises(SipParseError, match="bad URI parameter"):
        check_name_addr(value, "To")
    with pytest.raises(SipParseError, match="bad URI parameter"):
        parse_name_addr(value, "To")


@pytest.mark.parametrize(
    ("text", "user", "params"),
    [
        ("sip:a.b;lr", None, (("lr", None),)),
        ("sip:%41l%69ce@a.b;x=%41;y", "%41l%69ce", (("x", "%41"), ("y", None))),
        ("sip:+1555;x=1@192.0.2.1;user=phone", "+1555;x=1", (("user", "phone"),)),
    ],
)
def test_well_formed_uris_keep_their_parts(
    text: str, user: str | None, params: tuple[tuple[str, str | None], ...]
) -> None:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipUri)
    assert (parsed.user, parsed.params) == (user, params)


@pytest.mark.parametrize(
    ("value", "display"), [('"a\\"b" <sip:a>', '"a\\"b"'), ('"a\\\\" <sip:a>', '"a\\\\"')]
)
def test_quoted_pairs_in_display_names(value: str, display: str) -> None:
    match = headers._NAME_ADDR_FAST_RE.fullmatch(value)
    assert match is not None
    assert match.group(1) == display
    assert headers._NAME_ADDR_FAST_RE.fullmatch('"a\\" <sip:a>') is None


_POSSESSIVE_GROUP = re.compile(r"\)(?:[*+?]|\{[0-9,]*\})\+|\(\?>")


def test_no_pattern_has_a_possessive_or_atomic_group() -> None:
    """Single character classes may be possessive; groups may not (gh-106052)."""
    offenders = []
    for module_info in pkgutil.walk_packages(homeredirect.__path__, "homeredirect."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                if _POSSESSIVE_GROUP.search(value.pattern):
                    offenders.append(f"{module_info.name}.{name}")
    assert offenders == []
