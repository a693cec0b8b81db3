"""`[auth]`: authenticating clients before anything about them is revealed or acted on."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attrs import field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import (
    BOOLEAN,
    FILE,
    PATH,
    SECONDS,
    Expect,
    integer,
    is_header_text,
    to_path,
    to_seconds,
)

__all__ = ["AVAILABLE_SCHEMES", "DIGEST_ALGORITHMS", "AuthConfig"]

AVAILABLE_SCHEMES = ("digest",)
"""Schemes this version can run; NTLM and Kerberos ([MS-SIPAE]) are planned."""
PLANNED_SCHEMES = ("ntlm", "kerberos")
DIGEST_ALGORITHMS = ("SHA-512-256", "SHA-256", "MD5")


def _to_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        return value  # type: ignore[return-value]  # the validator rejects it
    return tuple(value)


class _Subset(Expect):
    """A non-empty array of distinct values from `options`, naming the bad element."""

    def __init__(self, options: tuple[str, ...], planned: tuple[str, ...] = ()) -> None:
        shown = ", ".join(f'"{option}"' for option in options)
        super().__init__(f"a non-empty array of {shown}", lambda value: True)
        self._options = options
        self._planned = planned

    def __call__(self, instance: object, attribute: Any, value: Any) -> None:
        if not isinstance(value, tuple) or not value:
            raise InvalidField(attribute.name, self.expected, value)
        for number, item in enumerate(value, 1):
            where = f"{attribute.name}[{number}]"
            if item in self._planned:
                raise InvalidField(where, 'a scheme this version supports (only "digest")', item)
            if item not in self._options or value.index(item) != number - 1:
                raise InvalidField(where, f"one of {', '.join(self._options)}, once", item)


@frozen(kw_only=True)
class AuthConfig:
    """`[auth]`: who must prove who they are (RFC 3261 §22).

    - `required`: true challenges every REGISTER and every request routed to a user before
      the directory is asked; false (default) checks credentials a client offers for our
      realm but lets requests without any through.
    - `realm` (required): the Digest realm, usually the SIP domain. A Digest username
      `alice` in realm `example.com` and `alice@example.com` name the same account.
    - `schemes`: `["digest"]` (default). NTLM and Kerberos are not available yet.
    - `credentials` (required for digest, the file must exist): CSV `user,password`, or
      `user,ha1_md5,ha1_sha256,ha1_sha512_256` with hashes of `user-part:realm:password`.
    - `algorithms`: Digest algorithms offered, strongest first (default
      `["SHA-512-256", "SHA-256", "MD5"]`, RFC 8760).
    - `nonce_secret_file`: a file of at least 16 bytes shared by directors that must accept
      each other's nonces; default a random secret per process.
    - `nonce_lifetime`: seconds a nonce is valid before `stale=true` (default 300).
    - `max_failures`, `failure_window`: after this many failures within the window (seconds)
      from one address or against one user, answer 403 until it passes (10 and 60).
    """

    required: bool = field(default=False, validator=BOOLEAN)
    realm: str = field(
        validator=Expect("printable ASCII text without surrounding spaces", is_header_text)
    )
    schemes: tuple[str, ...] = field(
        default=("digest",),
        converter=_to_tuple,
        validator=_Subset(AVAILABLE_SCHEMES, PLANNED_SCHEMES),
    )
    credentials: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    algorithms: tuple[str, ...] = field(
        default=DIGEST_ALGORITHMS, converter=_to_tuple, validator=_Subset(DIGEST_ALGORITHMS)
    )
    nonce_secret_file: Path | None = field(
        default=None, converter=to_path, validator=PATH, metadata=FILE
    )
    nonce_lifetime: float = field(default=300.0, converter=to_seconds, validator=SECONDS)
    max_failures: int = field(default=10, validator=integer(1))
    failure_window: float = field(default=60.0, converter=to_seconds, validator=SECONDS)

    def __attrs_post_init__(self) -> None:
        if "digest" in self.schemes and self.credentials is None:
            raise InvalidField("credentials", 'a file path (required for "digest")', None)
