"""Validators and converters shared by the configuration's value types.

Each validator knows what it expects, in words: `InvalidField` carries that text, and the
loader prints it when a required key is missing, so each field states its rule once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import Attribute

from homeredirect.config.errors import InvalidField, describe_value
from homeredirect.hostnames import is_hostname, normalize_host


class Expect:
    """An attrs validator that raises `InvalidField` saying what the field expects.

    `expected` is also what the loader prints when a required key is missing, so each
    field states its rule once.
    """

    def __init__(self, expected: str, check: Callable[[Any], bool]) -> None:
        self.expected = expected
        self._check = check

    def __call__(self, instance: object, attribute: Attribute[Any], value: Any) -> None:
        if not self._check(value):
            raise InvalidField(attribute.name, self.expected, value)


def integer(low: int, high: int | None = None) -> Expect:
    """Accept an integer (not a boolean) from `low` to `high` inclusive, or at least `low`."""
    if high is not None:
        expected = f"an integer from {low} to {high}"
    else:
        expected = "a positive integer" if low == 1 else f"an integer of at least {low}"
    return Expect(
        expected,
        lambda value: (
            isinstance(value, int)
            and not isinstance(value, bool)
            and low <= value
            and (high is None or value <= high)
        ),
    )


def one_of(*options: object) -> Expect:
    """Accept exactly one of `options`, of the same type (so `true` is not 1)."""
    shown = ", ".join(describe_value(option) for option in options)
    return Expect(
        f"one of {shown}",
        lambda value: (
            not isinstance(value, bool)
            and any(type(value) is type(option) and value == option for option in options)
        ),
    )


def is_hostname_text(value: object) -> bool:
    return isinstance(value, str) and is_hostname(value)


def is_host_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        normalize_host(value)
    except ValueError:
        return False
    return True


def is_header_text(value: object) -> bool:
    """Non-empty text that can go in a header value as is: no control characters, no
    leading or trailing space, so it cannot split or fold the header (RFC 3261 §7.3.1)."""
    return (
        isinstance(value, str)
        and value != ""
        and value == value.strip()
        and value.isprintable()
        and value.isascii()
    )


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def lower(value: str) -> str:
    """Lowercase a hostname; leave anything else for the validator to reject."""
    return value.lower() if isinstance(value, str) else value


def lower_optional(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def to_host(value: str) -> str:
    """Canonicalise a hostname or IP literal; leave anything else for the validator."""
    try:
        return normalize_host(value) if isinstance(value, str) else value
    except ValueError:
        return value


def to_path(value: str | os.PathLike[str] | None) -> Path | None:
    return Path(value) if isinstance(value, str | os.PathLike) else value


def to_seconds(value: float) -> float:
    """TOML `300` is an integer; a timeout is a float either way."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return float(value) if is_int else value


def to_strings(value: Iterable[str]) -> tuple[str, ...]:
    """An array of strings as a tuple, and one string alone as an array of one (`uris =
    "ldap://dc1"` names one server); leave anything else for the validator to reject."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        return value  # type: ignore[return-value]  # the validator rejects it
    return tuple(value)


def to_domains(value: Iterable[str]) -> tuple[str, ...]:
    """Lowercase and de-duplicate domains (or host names), keeping the order they were
    written in."""
    if not isinstance(value, list | tuple):
        return value  # type: ignore[return-value]  # the validator rejects it
    return tuple(dict.fromkeys(lower(domain) for domain in value))


PATH = Expect("a file path", optional(lambda value: isinstance(value, Path)))
FILE = {"file": True}
"""Field metadata: the loader resolves the path against the config file's directory and
checks that the file exists (an operator wants to hear about a missing certificate at start-up,
not at the first TLS handshake)."""


class Domains(Expect):
    """Accept a non-empty array of hostnames, naming the first bad element (counted from 1)."""

    def __init__(self) -> None:
        super().__init__("a non-empty array of domain names", lambda value: True)

    def __call__(self, instance: object, attribute: Attribute[Any], value: Any) -> None:
        if not isinstance(value, tuple) or not value:
            raise InvalidField(attribute.name, self.expected, value)
        for number, domain in enumerate(value, 1):
            if not is_hostname_text(domain):
                raise InvalidField(f"{attribute.name}[{number}]", "a domain name", domain)


OUTPUT_PATH = {"path": True}
"""Field metadata: the loader resolves the path against the config file's directory but does
not require the file to exist (a database the server creates on first start)."""

BOOLEAN = Expect("true or false", lambda value: isinstance(value, bool))

SECONDS = Expect(
    "a positive number of seconds",
    lambda value: isinstance(value, float) and value > 0 and math.isfinite(value),
)


def is_text(value: object) -> bool:
    """Non-empty printable text."""
    return isinstance(value, str) and value != "" and value.isprintable()


def is_redis_url(value: object) -> bool:
    """`redis://[:password@]host[:port][/db]` or `rediss://...` (TLS) or `unix:///path`."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme == "unix":
        return parts.path.startswith("/")
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return False
    db = parts.path.lstrip("/")
    return (port is None or 0 < port < 65_536) and (db == "" or db.isdigit())


REDIS_URL = Expect('a Redis URL such as "redis://127.0.0.1:6379/0"', is_redis_url)
