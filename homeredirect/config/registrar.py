"""`[location]` and `[registrar]`: the home server's registrar and where bindings live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import (
    OUTPUT_PATH,
    PATH,
    REDIS_URL,
    SECONDS,
    Expect,
    integer,
    is_text,
    one_of,
    to_path,
    to_seconds,
    to_strings,
)
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.uri import SipUri, parse_uri

__all__ = ["LOCATION_BACKENDS", "LocationConfig", "RegistrarConfig"]

LOCATION_BACKENDS = ("memory", "sqlite", "redis")


@frozen(kw_only=True)
class LocationConfig:
    """`[location]`: the location service, where the registrar keeps bindings.

    - `backend`: `"sqlite"` (default; bindings survive a restart), `"memory"` (lost on
      restart, for tests and throwaway setups) or `"redis"` (shared by a pool of home
      servers).
    - `path`: the SQLite file (default `"bindings.sqlite"` beside the config file),
      created on first start.
    - `url`: the Redis server (default `"redis://127.0.0.1:6379/0"`).
    - `key_prefix`: prefix of the Redis keys (default `"homeredirect:location:"`).
    """

    backend: str = field(default="sqlite", validator=one_of(*LOCATION_BACKENDS))
    path: Path = field(
        default=Path("bindings.sqlite"), converter=to_path, validator=PATH, metadata=OUTPUT_PATH
    )
    url: str = field(default="redis://127.0.0.1:6379/0", validator=REDIS_URL)
    key_prefix: str = field(
        default="homeredirect:location:", validator=Expect("non-empty text", is_text)
    )


def _check_routes(instance: object, attribute: Any, value: tuple[str, ...]) -> None:
    if not isinstance(value, tuple):
        raise InvalidField(attribute.name, "an array of SIP URIs", value)
    for number, text in enumerate(value, 1):
        try:
            ok = isinstance(text, str) and isinstance(parse_uri(text), SipUri)
        except SipParseError:
            ok = False
        if not ok:
            raise InvalidField(f"{attribute.name}[{number}]", "a sip: or sips: URI", text)


@frozen(kw_only=True)
class RegistrarConfig:
    """`[registrar]`: how the home server's registrar grants bindings (RFC 3261 §10.3).

    - `min_expires`: shortest registration accepted, seconds (default 60); shorter ones get
      423 Interval Too Brief with Min-Expires.
    - `max_expires`: longest granted (default 7200); longer requests are shortened.
    - `default_expires`: granted when the client names none (default 3600).
    - `service_route`: SIP URIs returned in Service-Route (RFC 3608), default none.
    - `purge_interval`: seconds between sweeps that drop expired bindings (default 30).
    """

    min_expires: int = field(default=60, validator=integer(1, 2**31 - 1))
    max_expires: int = field(default=7200, validator=integer(1, 2**31 - 1))
    default_expires: int = field(default=3600, validator=integer(1, 2**31 - 1))
    service_route: tuple[str, ...] = field(
        default=(), converter=to_strings, validator=_check_routes
    )
    purge_interval: float = field(default=30.0, converter=to_seconds, validator=SECONDS)

    def __attrs_post_init__(self) -> None:
        if self.max_expires < self.min_expires:
            raise InvalidField(
                "max_expires", f"at least min_expires ({self.min_expires})", self.max_expires
            )
        if not self.min_expires <= self.default_expires <= self.max_expires:
            expected = f"from min_expires ({self.min_expires}) to max_expires ({self.max_expires})"
            raise InvalidField("default_expires", expected, self.default_expires)
