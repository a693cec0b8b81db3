"""MD4 (RFC 1320), needed only to turn a password into an NT hash ([MS-NLMP] §3.3.1 NTOWF).

OpenSSL 3 keeps MD4 in its legacy provider, which is not loaded by default, and
`cryptography` offers none; NTLM still needs it. It runs once per account when the
credentials file is read, so it is written for clarity, not speed.
"""

from __future__ import annotations

import struct

__all__ = ["md4"]

_MASK = 0xFFFFFFFF
_ROUND2 = 0x5A827999
_ROUND3 = 0x6ED9EBA1


def _rotl(value: int, shift: int) -> int:
    value &= _MASK
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _pad(data: bytes) -> bytes:
    """RFC 1320 §3.1-3.2: a 1 bit, zeros to 56 mod 64 bytes, the bit length little-endian."""
    bit_length = (8 * len(data)) & 0xFFFFFFFFFFFFFFFF
    return data + b"\x80" + b"\0" * ((55 - len(data)) % 64) + struct.pack("<Q", bit_length)


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of `data` (RFC 1320 §3.4-3.5)."""
    a0, b0, c0, d0 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    padded = _pad(data)
    for offset in range(0, len(padded), 64):
        x = struct.unpack_from("<16I", padded, offset)
        a, b, c, d = a0, b0, c0, d0
        for i in (0, 4, 8, 12):  # round 1: F(x, y, z) = xy v not(x)z
            a = _rotl(a + ((b & c) | (~b & d)) + x[i], 3)
            d = _rotl(d + ((a & b) | (~a & c)) + x[i + 1], 7)
            c = _rotl(c + ((d & a) | (~d & b)) + x[i + 2], 11)
            b = _rotl(b + ((c & d) | (~c & a)) + x[i + 3], 19)
        for i in (0, 1, 2, 3):  # round 2: G(x, y, z) = xy v xz v yz
            a = _rotl(a + ((b & c) | (b & d) | (c & d)) + x[i] + _ROUND2, 3)
            d = _rotl(d + ((a & b) | (a & c) | (b & c)) + x[i + 4] + _ROUND2, 5)
            c = _rotl(c + ((d & a) | (d & b) | (a & b)) + x[i + 8] + _ROUND2, 9)
            b = _rotl(b + ((c & d) | (c & a) | (d & a)) + x[i + 12] + _ROUND2, 13)
        for i in (0, 2, 1, 3):  # round 3: H(x, y, z) = x xor y xor z
            a = _rotl(a + (b ^ c ^ d) + x[i] + _ROUND3, 3)
            d = _rotl(d + (a ^ b ^ c) + x[i + 8] + _ROUND3, 9)
            c = _rotl(c + (d ^ a ^ b) + x[i + 4] + _ROUND3, 11)
            b = _rotl(b + (c ^ d ^ a) + x[i + 12] + _ROUND3, 15)
        a0, b0 = (a0 + a) & _MASK, (b0 + b) & _MASK
        c0, d0 = (c0 + c) & _MASK, (d0 + d) & _MASK
    return struct.pack("<4I", a0, b0, c0, d0)
