"""The client side of Digest (RFC 7616 §3.4): answer a challenge with credentials.

Used by `homeredirect.tools.register --password` and by the tests, which must talk to
the server the way a SIP phone would.
"""

from __future__ import annotations

import os

from homeredirect.auth.digest import DigestAlgorithm, expected_response, ha1_for
from homeredirect.sip.credentials import AuthValue, format_auth_value

__all__ = ["answer_challenge"]


def answer_challenge(
    challenge: AuthValue,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """An `Authorization` value answering a Digest `challenge` with qop=auth.

    Raise `ValueError` for a challenge we cannot answer (unknown algorithm, no nonce).
    """
    algorithm = DigestAlgorithm.named(challenge.get("algorithm"))
    nonce = challenge.get("nonce")
    realm = challenge.get("realm")
    if algorithm is None or nonce is None or realm is None:
        raise ValueError(f"cannot answer this challenge: {dict(challenge.params)}")
    cnonce = cnonce if cnonce is not None else os.urandom(12).hex()
    count = f"{nc:08x}"
    response = expected_response(
        algorithm,
        ha1_for(algorithm, username, realm, password),
        method=method,
        uri=uri,
        nonce=nonce,
        qop="auth",
        nc=count,
        cnonce=cnonce,
    )
    params = [
        ("username", username, True),
        ("realm", realm, True),
        ("nonce", nonce, True),
        ("uri", uri, True),
        ("response", response, True),
        ("algorithm", algorithm.value, False),
        ("qop", "auth", False),
        ("nc", count, False),
        ("cnonce", cnonce, True),
    ]
    opaque = challenge.get("opaque")
    if opaque is not None:
        params.append(("opaque", opaque, True))
    return format_auth_value("Digest", params)
