"""SIP requests and responses as immutable values (RFC 3261 §7).

Header fields keep their text exactly as received (after unfolding, RFC 3261
§7.3.1), in order, so that forwarding and echoing them is verbatim; the fields
that routing needs are parsed on first access into the typed values of
`homeredirect.sip.headers` and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

from attrs import frozen

from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import (
    ContactList,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    parse_contacts,
    parse_cseq,
    parse_expires,
    parse_name_addr,
    parse_small_int,
    parse_via,
    split_list,
)
from homeredirect.sip.uri import Uri

Field = tuple[str, str]

_KEYS: dict[str, str] = {}


def _key(name: str) -> str:
    """The index key of header *name* (canonical, lowercase), remembered: code asks by a
    few literal names, many times per message."""
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) < 1024:  # names from the network must not grow it without bound
            _KEYS[name] = key
    return key


class Headers:
    """An ordered, immutable multimap of header fields with case-insensitive names.

    Names are stored in their canonical long form (compact forms expanded,
    RFC 3261 §7.3.3); values are stored as text, one entry per header line.
    """

    __slots__ = ("_built_index", "_fields")

    def __init__(self, fields: Iterable[Field] = ()) -> None:
        self._fields = tuple((canonical_name(name), value) for name, value in fields)
        self._built_index: dict[str, list[str]] | None = None

    @property
    def _index(self) -> dict[str, list[str]]:
        """Values by lowercase name; built on first lookup, since a response we
        generate is only ever serialized (iterated), never looked up."""
        index = self._built_index
        if index is None:
            index = self._built_index = self._build_index(self._fields)
        return index

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
        headers._built_index = index
        return headers

    def get(self, name: str) -> str | None:
        """The first value of *name*, or None."""
        values = self._index.get(_key(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every line's value of *name*, in order (not split at commas)."""
        return list(self._index.get(_key(name), ()))

    def get_list(self, name: str) -> list[str]:
        """The elements of a comma-separated list header across all its lines (§7.3.1)."""
        values = self._index.get(_key(name), ())
        return [item for value in values for item in split_list(value)]

    def count(self, name: str) -> int:
        return len(self._index.get(_key(name), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._index

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
        """Build from fields already in canonical form; the index waits until needed."""
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._built_index = None
        return headers


def _single(headers: Headers, name: str, key: str) -> str:
    """The one value of header *name* (index *key*), or SipParseError."""
    values = headers._index.get(key)
    if not values:
        raise SipParseError(f"missing {name} header")
    if len(values) > 1:
        raise SipParseError(f"more than one {name} header")
    return values[0]


_T = TypeVar("_T")


class _ParsedOnce(Generic[_T]):
    """A field parsed on first access and then kept in the instance dict.

    `functools.cached_property` without the lock that Python 3.11 takes on every
    first access: the parser reads five or six of these per message, on the
    path that the ~40 us per request budget is spent on.
    """

    def __init__(self, parse: Callable[[Any], _T]) -> None:
        self._parse = parse
        self._name = parse.__name__
        self.__doc__ = parse.__doc__

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> _ParsedOnce[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> _T: ...

    def __get__(self, instance: object | None, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        value = self._parse(instance)
        # A non-data descriptor: once the value is in the instance dict, attribute
        # lookup finds it there and this method is not called again.
        instance.__dict__[self._name] = value
        return value


class _CommonFields:
    """Typed accessors shared by requests and responses (RFC 3261 §8.1.1).

    Not slotted: `_ParsedOnce` keeps each parsed value in the instance dict,
    so a field is parsed at most once however often routing asks for it.  The
    parser reads each one that can fail before it hands a message out, so the
    accessors of a received message do not raise.
    """

    headers: Headers

    @_ParsedOnce
    def vias(self) -> tuple[Via, ...]:
        values = self.headers._index.get("via")
        if not values:
            raise SipParseError("missing Via header")
        return tuple([parse_via(item) for value in values for item in split_list(value, "Via")])

    @_ParsedOnce
    def from_addr(self) -> NameAddr:
        return parse_name_addr(_single(self.headers, "From", "from"), "From")

    @_ParsedOnce
    def to_addr(self) -> NameAddr:
        return parse_name_addr(_single(self.headers, "To", "to"), "To")

    @_ParsedOnce
    def call_id(self) -> str:
        value = _single(self.headers, "Call-ID", "call-id")
        if not value or " " in value or "\t" in value:
            raise SipParseError(f"bad Call-ID {value!r}")
        return value

    @_ParsedOnce
    def cseq(self) -> CSeq:
        return parse_cseq(_single(self.headers, "CSeq", "cseq"))

    @_ParsedOnce
    def expires(self) -> int | None:
        """The Expires header's seconds, or None without one.

        A malformed value, a value past 2**32 - 1 (RFC 4475 §3.1.2.4) or a
        repeated field means 3600 (RFC 3261 §20.19): it never makes a message
        malformed.
        """
        values = self.headers._index.get("expires")
        if values is None:
            return None
        return parse_expires(values[0] if len(values) == 1 else "")

    @_ParsedOnce
    def contacts(self) -> ContactList:
        """Every Contact value (RFC 3261 §20.10), or "*"; an empty list without any."""
        values = self.headers._index.get("contact")
        return parse_contacts(values) if values is not None else []


@frozen(eq=False, slots=False)
class Request(_CommonFields):
    """A SIP request (RFC 3261 §7.1)."""

    method: str
    uri: Uri
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    @_ParsedOnce
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 §20.22: 0 to 255), or None without one."""
        values = self.headers._index.get("max-forwards")
        if values is None:
            return None
        if len(values) > 1:
            raise SipParseError("more than one Max-Forwards header")
        return parse_small_int(values[0], "Max-Forwards", 255)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return False
        mine = (self.method, str(self.uri), self.headers, self.body, self.version)
        return mine == (other.method, str(other.uri), other.headers, other.body, other.version)

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
        if not isinstance(other, Response):
            return False
        mine = (self.status, self.reason, self.headers, self.body, self.version)
        return mine == (other.status, other.reason, other.headers, other.body, other.version)

    def __hash__(self) -> int:
        return hash((self.status, self.reason, self.headers, self.body))


Message = Request | Response
