"""NTLM message signatures with an explicit sequence number ([MS-NLMP] §3.4.4.2, §3.4.3).

In connection-less mode the application supplies SeqNum and the RC4 handle is
re-initialised for every message, keyed with MD5(SealingKey ‖ SeqNum) (§3.4.4.2, "if
NTLMSSP_NEGOTIATE_DATAGRAM"); [MS-SIPAE] always passes 100 (pidgin-sipe and Office
Communications Server alike), carrying its own counters (`cnum`, `snum`) in the signed text.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from homeredirect.auth.ntlm.keys import hmac_md5, rc4
from homeredirect.auth.ntlm.messages import NegotiateFlags

__all__ = ["SIGNATURE_LENGTH", "mac", "verify_mac"]

SIGNATURE_LENGTH = 16
_VERSION = struct.pack("<I", 1)


def mac(
    flags: NegotiateFlags, sign_key: bytes, seal_key: bytes, sequence: int, message: bytes
) -> bytes:
    """NTLMSSP_MESSAGE_SIGNATURE with Extended Session Security ([MS-NLMP] §2.2.2.9.1,
    §3.4.4.2): Version 1 ‖ Checksum ‖ SeqNum, where Checksum is HMAC_MD5(SigningKey,
    SeqNum ‖ message)[0:8], RC4-encrypted when KEY_EXCH was negotiated."""
    seq = struct.pack("<I", sequence)
    checksum = hmac_md5(sign_key, seq + message)[:8]
    if flags & NegotiateFlags.KEY_EXCH:
        key = hashlib.md5(seal_key + seq).digest() if flags & NegotiateFlags.DATAGRAM else seal_key
        checksum = rc4(key, checksum)
    return _VERSION + checksum + seq


def verify_mac(
    flags: NegotiateFlags,
    sign_key: bytes,
    seal_key: bytes,
    sequence: int,
    message: bytes,
    signature: bytes,
) -> bool:
    """Whether `signature` is ours for `message` at `sequence` (constant-time compare)."""
    expected = mac(flags, sign_key, seal_key, sequence, message)
    return hmac.compare_digest(expected, signature)
