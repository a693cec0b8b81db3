"""SIP requests and responses as immutable values (RFC 3261 §7).

Header fields keep their text exactly as received (after unfolding, RFC 3261
§7.3.1), in order, so that forwarding and echoing them is verbatim; the fields
that routing needs are parsed on first access into the typed values of
`homeredirect.sip.headers` and cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Union

from attrs import frozen

from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_small_int,
    parse_via,
    split_list,
)
from homeredirect.sip.uri import Uri

Field = tuple[str, str]


class Headers:
    """An ordered, immutable multimap of header fields with case-insensitive names.

    Names are stored in their canonical long form (compact forms expanded,
    RFC 3261 §7.3.3); values are stored as text, one entry per header line.
    """

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: Iterable[Field] = ()) -> None:
        canonical = tuple((canonical_name(name), value) for name, value in fields)
        self._fields = canonical
        self._index = self._build_index(canonical)

    @staticmethod
    def _build_index(fields: tuple[Field, ...]) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for name, value in fields:
            key = name.lower()
            values = index.get(key)
            if values is None:
                index[key] = [value]
            else:
                values.append(value)
        return index

    @classmethod
    def _trusted(cls, fields: tuple[Field, ...], index: dict[str, list[str]]) -> Headers:
        """Build from fields whose names the parser already canonicalised."""
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._index = index
        return headers

    def get(self, name: str) -> str | None:
        """The first value of *name*, or None."""
        values = self._index.get(canonical_name(name).lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every line's value of *name*, in order (not split at commas)."""
        return list(self._index.get(canonical_name(name).lower(), ()))

    def get_list(self, name: str) -> list[str]:
        """The elements of a comma-separated list header across all its lines (§7.3.1)."""
        return [item for value in self._index.get(canonical_name(name).lower(), ()) for item in split_list(value)]

    def count(self, name: str) -> int:
        return len(self._index.get(canonical_name(name).lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_name(name).lower() in self._index

    def __iter__(self) -> Iterator[Field]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"

    def prepended(self, name: str, value: str) -> Headers:
        """A copy with *name: value* placed before every other field (a new top Via)."""
        return Headers._trusted_copy(((canonical_name(name), value), *self._fields))

    def appended(self, name: str, value: str) -> Headers:
        return Headers._trusted_copy((*self._fields, (canonical_name(name), value)))

    def without(self, name: str) -> Headers:
        key = canonical_name(name).lower()
        return Headers._trusted_copy(tuple(f for f in self._fields if f[0].lower() != key))

    def replaced(self, name: str, value: str) -> Headers:
        """A copy where *name* has the single value *value*, at its first position (or appended)."""
        key = canonical_name(name).lower()
        fields: list[Field] = []
        placed = False
        for existing in self._fields:
            if existing[0].lower() == key:
                if not placed:
                    fields.append((canonical_name(name), value))
                    placed = True
            else:
                fields.append(existing)
        if not placed:
            fields.append((canonical_name(name), value))
        return Headers._trusted_copy(tuple(fields))

    @classmethod
    def _trusted_copy(cls, fields: tuple[Field, ...]) -> Headers:
        return cls._trusted(fields, cls._build_index(fields))


def _single(headers: Headers, name: str) -> str:
    values = headers._index.get(name.lower())
    if not values:
        raise SipParseError(f"missing {name} header")
    if len(values) > 1:
        raise SipParseError(f"more than one {name} header")
    return values[0]


class _CommonFields:
    """Typed accessors shared by requests and responses (RFC 3261 §8.1.1).

    Not slotted: `cached_property` keeps each parsed value in the instance dict,
    so a field is parsed at most once however often routing asks for it.
    """

    headers: Headers

    @cached_property
    def vias(self) -> tuple[Via, ...]:
        values = self.headers.get_list("Via")
        if not values:
            raise SipParseError("missing Via header")
        return tuple(parse_via(v) for v in values)

    @cached_property
    def from_addr(self) -> NameAddr:
        return parse_name_addr(_single(self.headers, "From"), "From")

    @cached_property
    def to_addr(self) -> NameAddr:
        return parse_name_addr(_single(self.headers, "To"), "To")

    @cached_property
    def call_id(self) -> str:
        value = _single(self.headers, "Call-ID")
        if not value or any(c in value for c in " \t"):
            raise SipParseError(f"bad Call-ID {value!r}")
        return value

    @cached_property
    def cseq(self) -> CSeq:
        return parse_cseq(_single(self.headers, "CSeq"))


@frozen(eq=False, slots=False)
class Request(_CommonFields):
    """A SIP request (RFC 3261 §7.1)."""

    method: str
    uri: Uri
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    @cached_property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        if self.headers.count("Max-Forwards") > 1:
            raise SipParseError("more than one Max-Forwards header")
        return parse_small_int(value, "Max-Forwards", 255)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Request)
            and (self.method, str(self.uri), self.headers, self.body, self.version)
            == (other.method, str(other.uri), other.headers, other.body, other.version)
        )

    def __hash__(self) -> int:
        return hash((self.method, str(self.uri), self.headers, self.body))


@frozen(eq=False, slots=False)
class Response(_CommonFields):
    """A SIP response (RFC 3261 §7.2)."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Response)
            and (self.status, self.reason, self.headers, self.body, self.version)
            == (other.status, other.reason, other.headers, other.body, other.version)
        )

    def __hash__(self) -> int:
        return hash((self.status, self.reason, self.headers, self.body))


Message = Union[Request, Response]
