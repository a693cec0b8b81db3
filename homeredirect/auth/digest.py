"""Digest computations for SIP (RFC 3261 §22.4, RFC 7616 §3.4, RFC 8760).

Pure functions over strings: which hash an algorithm name means, H(A1) from a password,
and the expected `response` for a request. `qop=auth` only: SIP user agents do not use
`auth-int` in practice, and a server that offered it would have to hash bodies.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from enum import Enum

__all__ = ["DigestAlgorithm", "expected_response", "ha1_for", "responses_match"]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


class DigestAlgorithm(Enum):
    """The algorithms of RFC 8760 §2 (SIP) / RFC 7616 §3.2, strongest first.

    The value is the token as written in `algorithm=`; `MD5` is what RFC 3261 clients
    assume when the parameter is absent.
    """

    SHA_512_256 = "SHA-512-256"
    SHA_256 = "SHA-256"
    MD5 = "MD5"

    @property
    def hash(self) -> Callable[[bytes], str]:
        return _HASHES[self]

    @classmethod
    def named(cls, token: str | None) -> DigestAlgorithm | None:
        """The algorithm `algorithm=token` names (case-insensitive; absent means MD5),
        or None for one we do not support (the `-sess` variants among them)."""
        if token is None:
            return cls.MD5
        return _BY_TOKEN.get(token.upper())


_HASHES = {
    DigestAlgorithm.SHA_512_256: _sha512_256,
    DigestAlgorithm.SHA_256: _sha256,
    DigestAlgorithm.MD5: _md5,
}
_BY_TOKEN = {algorithm.value.upper(): algorithm for algorithm in DigestAlgorithm}


def ha1_for(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """H(A1) = H(username ":" realm ":" password) (RFC 7616 §3.4.2), what a credentials
    file stores instead of the password."""
    return algorithm.hash(f"{username}:{realm}:{password}".encode())


def expected_response(
    algorithm: DigestAlgorithm,
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    """The `response` a client that knows the password sends (RFC 7616 §3.4.1).

    With `qop=auth`: H(H(A1):nonce:nc:cnonce:qop:H(A2)); without qop (RFC 2069, which
    RFC 3261 §22.4 still allows): H(H(A1):nonce:H(A2)); A2 is `method:uri`.
    """
    ha2 = algorithm.hash(f"{method}:{uri}".encode())
    if qop is None:
        return algorithm.hash(f"{ha1}:{nonce}:{ha2}".encode())
    return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def responses_match(expected: str, given: str) -> bool:
    """Compare in constant time, ignoring hex case (clients differ)."""
    return hmac.compare_digest(expected.lower().encode(), given.lower().encode())
