"""NTLMv2 key derivation: NT hash, NTOWFv2, the NTLMv2 response check, KEY_EXCH and the
sign/seal keys ([MS-NLMP] §3.3.2, §3.4.5).

Only what an NTLMv2 acceptor with Extended Session Security needs: NTLMv1, LM and sealing
without ESS are refused earlier (pidgin-sipe and Lync clients speak NTLMv2 only).
"""

from __future__ import annotations

import hashlib
import hmac

from attrs import frozen
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher

from homeredirect.auth.ntlm.md4 import md4
from homeredirect.auth.ntlm.messages import NegotiateFlags

__all__ = [
    "SessionKeys",
    "exported_session_key",
    "hmac_md5",
    "nt_hash",
    "ntlmv2_session_base_key",
    "ntowfv2",
    "rc4",
    "session_keys",
]

_CLIENT_SIGN = b"session key to client-to-server signing key magic constant\0"
_SERVER_SIGN = b"session key to server-to-client signing key magic constant\0"
_CLIENT_SEAL = b"session key to client-to-server sealing key magic constant\0"
_SERVER_SEAL = b"session key to server-to-client sealing key magic constant\0"


def hmac_md5(key: bytes, data: bytes) -> bytes:
    """HMAC_MD5 ([MS-NLMP] §6)."""
    return hmac.new(key, data, hashlib.md5).digest()


def rc4(key: bytes, data: bytes) -> bytes:
    """RC4K: a fresh RC4 keystream over `data` ([MS-NLMP] §6)."""
    encryptor = Cipher(ARC4(key), mode=None).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def nt_hash(password: str) -> bytes:
    """NTOWFv1's MD4(UNICODE(password)), the secret an NT-hash credentials file stores
    ([MS-NLMP] §3.3.1)."""
    return md4(password.encode("utf-16-le"))


def ntowfv2(nthash: bytes, user: str, domain: str) -> bytes:
    """NTOWFv2 = HMAC_MD5(MD4(UNICODE(password)), UNICODE(Uppercase(user) + domain))
    ([MS-NLMP] §3.3.2); `domain` keeps the case the client sent."""
    return hmac_md5(nthash, (user.upper() + domain).encode("utf-16-le"))


def ntlmv2_session_base_key(
    nthash: bytes, user: str, domain: str, server_challenge: bytes, nt_response: bytes
) -> bytes | None:
    """Check an NTLMv2 NtChallengeResponse ([MS-NLMP] §3.3.2, §3.2.5.1.2): NTProofStr =
    HMAC_MD5(NTOWFv2, ServerChallenge ‖ temp) must equal its first 16 bytes. Return the
    SessionBaseKey HMAC_MD5(NTOWFv2, NTProofStr), or None when the proof is wrong.

    The comparison takes constant time; the caller checks that the response is NTLMv2.
    """
    key = ntowfv2(nthash, user, domain)
    proof, temp = nt_response[:16], nt_response[16:]
    if not hmac.compare_digest(proof, hmac_md5(key, server_challenge + temp)):
        return None
    return hmac_md5(key, proof)


def exported_session_key(
    flags: NegotiateFlags, session_base_key: bytes, encrypted_random_session_key: bytes
) -> bytes:
    """The ExportedSessionKey ([MS-NLMP] §3.2.5.1.2): for NTLMv2 the KeyExchangeKey is the
    SessionBaseKey (§3.4.5.1); with KEY_EXCH the client's random key is RC4K-unwrapped."""
    if flags & NegotiateFlags.KEY_EXCH:
        return rc4(session_base_key, encrypted_random_session_key)
    return session_base_key


@frozen
class SessionKeys:
    """The four keys of an established context ([MS-NLMP] §3.4.5.2, §3.4.5.3)."""

    client_sign: bytes
    client_seal: bytes
    server_sign: bytes
    server_seal: bytes


def _seal_base(flags: NegotiateFlags, key: bytes) -> bytes:
    """SEALKEY's key truncation with ESS ([MS-NLMP] §3.4.5.3)."""
    if flags & NegotiateFlags.KEY_128:
        return key
    if flags & NegotiateFlags.KEY_56:
        return key[:7]
    return key[:5]


def session_keys(flags: NegotiateFlags, exported: bytes) -> SessionKeys:
    """SIGNKEY and SEALKEY for both directions with Extended Session Security
    ([MS-NLMP] §3.4.5.2-3); the acceptor refuses contexts without ESS."""
    seal = _seal_base(flags, exported)
    return SessionKeys(
        client_sign=hashlib.md5(exported + _CLIENT_SIGN).digest(),
        client_seal=hashlib.md5(seal + _CLIENT_SEAL).digest(),
        server_sign=hashlib.md5(exported + _SERVER_SIGN).digest(),
        server_seal=hashlib.md5(seal + _SERVER_SEAL).digest(),
    )
