"""NTLM messages as bytes: build the CHALLENGE, parse the AUTHENTICATE ([MS-NLMP] §2.2).

Parsing is strict, since the bytes come from an unauthenticated peer: every payload field
must lie inside the message and after the fixed header, strings must decode, and the
NTLMv2 client challenge must be complete with its AV pairs terminated. Any fault raises
`NtlmMessageError` naming it; nothing else escapes.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from types import MappingProxyType

from attrs import field, frozen

__all__ = [
    "AUTHENTICATE",
    "CHALLENGE",
    "NEGOTIATE",
    "AuthenticateMessage",
    "AvId",
    "ChallengeMessage",
    "ClientChallenge",
    "NegotiateFlags",
    "NtlmMessageError",
    "message_type",
    "parse_authenticate",
    "parse_client_challenge",
]

SIGNATURE = b"NTLMSSP\0"
NEGOTIATE = 1
CHALLENGE = 2
AUTHENTICATE = 3
_AUTHENTICATE_HEADER = 64
_MIC_OFFSET = 72
_MIC_LENGTH = 16
_NTLMV1_RESPONSE_LENGTH = 24
_CLIENT_CHALLENGE_FIXED = 28  # §2.2.2.7 up to AvPairs
MAX_MESSAGE = 64 * 1024
"""Larger than any AUTHENTICATE (its AV pairs echo our TargetInfo); more is refused."""


class NtlmMessageError(ValueError):
    """A token that is not a well-formed NTLM message of the expected type."""


class NegotiateFlags(enum.IntFlag):
    """NEGOTIATE flags ([MS-NLMP] §2.2.2.5), named without the NTLMSSP_ prefix."""

    UNICODE = 0x00000001
    OEM = 0x00000002
    REQUEST_TARGET = 0x00000004
    SIGN = 0x00000010
    SEAL = 0x00000020
    DATAGRAM = 0x00000040
    LM_KEY = 0x00000080
    NTLM = 0x00000200
    ANONYMOUS = 0x00000800
    OEM_DOMAIN_SUPPLIED = 0x00001000
    OEM_WORKSTATION_SUPPLIED = 0x00002000
    ALWAYS_SIGN = 0x00008000
    TARGET_TYPE_DOMAIN = 0x00010000
    TARGET_TYPE_SERVER = 0x00020000
    EXTENDED_SESSIONSECURITY = 0x00080000
    IDENTIFY = 0x00100000
    REQUEST_NON_NT_SESSION_KEY = 0x00400000
    TARGET_INFO = 0x00800000
    VERSION = 0x02000000
    KEY_128 = 0x20000000
    KEY_EXCH = 0x40000000
    KEY_56 = 0x80000000


class AvId(enum.IntEnum):
    """AV_PAIR identifiers ([MS-NLMP] §2.2.2.1)."""

    EOL = 0
    NB_COMPUTER_NAME = 1
    NB_DOMAIN_NAME = 2
    DNS_COMPUTER_NAME = 3
    DNS_DOMAIN_NAME = 4
    DNS_TREE_NAME = 5
    FLAGS = 6
    TIMESTAMP = 7
    SINGLE_HOST = 8
    TARGET_NAME = 9
    CHANNEL_BINDINGS = 10


MSV_AV_FLAG_MIC_PRESENT = 0x00000002
"""MsvAvFlags bit: the AUTHENTICATE carries a MIC ([MS-NLMP] §2.2.2.1)."""

_VERSION = bytes([10, 0]) + struct.pack("<H", 20348) + b"\0\0\0" + bytes([15])
"""VERSION ([MS-NLMP] §2.2.2.10): 10.0.20348, NTLMSSP_REVISION_W2K3 (15). Informational only."""


def message_type(token: bytes) -> int:
    """The MessageType of an NTLM message; raise `NtlmMessageError` if it is not one."""
    if len(token) < 12 or token[:8] != SIGNATURE:
        raise NtlmMessageError("not an NTLMSSP message")
    return int(struct.unpack_from("<I", token, 8)[0])


def av_pair(avid: AvId, value: bytes) -> bytes:
    return struct.pack("<HH", avid, len(value)) + value


@frozen
class ChallengeMessage:
    """A CHALLENGE_MESSAGE ([MS-NLMP] §2.2.1.2) the server sends first in connection-less
    mode (§3.2.5.2). `target_info` is the encoded AV pair list, MsvAvEOL included."""

    flags: NegotiateFlags
    server_challenge: bytes = field()
    target_name: str
    target_info: bytes

    @server_challenge.validator
    def _eight_bytes(self, attribute: object, value: bytes) -> None:
        if len(value) != 8:
            raise ValueError("ServerChallenge is 8 bytes")

    def encode(self) -> bytes:
        """The message bytes: fixed header, Version, then TargetName and TargetInfo."""
        name = self.target_name.encode("utf-16-le")
        header = 56
        return (
            SIGNATURE
            + struct.pack("<I", CHALLENGE)
            + struct.pack("<HHI", len(name), len(name), header)
            + struct.pack("<I", self.flags)
            + self.server_challenge
            + b"\0" * 8
            + struct.pack("<HHI", len(self.target_info), len(self.target_info), header + len(name))
            + _VERSION
            + name
            + self.target_info
        )


@frozen
class AuthenticateMessage:
    """The parts of an AUTHENTICATE_MESSAGE ([MS-NLMP] §2.2.1.3) an acceptor uses.

    `raw` is the message as received and `mic_offset` where its MIC is, so that the MIC
    can be checked over the message with the MIC field zeroed (§3.2.5.1.2).
    """

    flags: NegotiateFlags
    lm_response: bytes
    nt_response: bytes
    domain: str
    user: str
    workstation: str
    encrypted_random_session_key: bytes
    raw: bytes
    mic_offset: int | None

    @property
    def is_ntlmv2(self) -> bool:
        return len(self.nt_response) > _NTLMV1_RESPONSE_LENGTH

    @property
    def mic(self) -> bytes | None:
        if self.mic_offset is None:
            return None
        return self.raw[self.mic_offset : self.mic_offset + _MIC_LENGTH]

    def without_mic(self) -> bytes:
        """The message with its MIC field zeroed, as the MIC is computed over it."""
        if self.mic_offset is None:
            return self.raw
        end = self.mic_offset + _MIC_LENGTH
        return self.raw[: self.mic_offset] + b"\0" * _MIC_LENGTH + self.raw[end:]


def _field(token: bytes, offset: int, name: str) -> bytes:
    """A payload field from its (Len, MaxLen, BufferOffset) descriptor ([MS-NLMP] §2.2.1.3)."""
    length, _max_length, start = struct.unpack_from("<HHI", token, offset)
    if length == 0:
        return b""
    if start < _AUTHENTICATE_HEADER or start + length > len(token):
        raise NtlmMessageError(f"{name} lies outside the message")
    return token[start : start + length]


def _text(data: bytes, unicode: bool, name: str) -> str:
    try:
        return data.decode("utf-16-le") if unicode else data.decode("ascii")
    except UnicodeDecodeError:
        raise NtlmMessageError(f"{name} is not valid text") from None


def parse_authenticate(token: bytes) -> AuthenticateMessage:
    """Parse an AUTHENTICATE_MESSAGE; raise `NtlmMessageError` for anything malformed."""
    if len(token) > MAX_MESSAGE:
        raise NtlmMessageError("message too large")
    kind = message_type(token)
    if kind != AUTHENTICATE:
        raise NtlmMessageError(f"expected an AUTHENTICATE message, got type {kind}")
    if len(token) < _AUTHENTICATE_HEADER:
        raise NtlmMessageError("AUTHENTICATE shorter than its header")
    flags = NegotiateFlags(struct.unpack_from("<I", token, 60)[0])
    unicode = bool(flags & NegotiateFlags.UNICODE)
    nt_response = _field(token, 20, "NtChallengeResponse")
    mic_offset = None
    if len(nt_response) > _NTLMV1_RESPONSE_LENGTH:
        blob = parse_client_challenge(nt_response[16:])
        av_flags = blob.av_pairs.get(AvId.FLAGS)
        if av_flags is not None and len(av_flags) == 4:
            if struct.unpack("<I", av_flags)[0] & MSV_AV_FLAG_MIC_PRESENT:
                if len(token) < _MIC_OFFSET + _MIC_LENGTH:
                    raise NtlmMessageError("MIC announced but missing")
                mic_offset = _MIC_OFFSET
    return AuthenticateMessage(
        flags=flags,
        lm_response=_field(token, 12, "LmChallengeResponse"),
        nt_response=nt_response,
        domain=_text(_field(token, 28, "DomainName"), unicode, "DomainName"),
        user=_text(_field(token, 36, "UserName"), unicode, "UserName"),
        workstation=_text(_field(token, 44, "Workstation"), unicode, "Workstation"),
        encrypted_random_session_key=_field(token, 52, "EncryptedRandomSessionKey"),
        raw=token,
        mic_offset=mic_offset,
    )


def _freeze(pairs: Mapping[int, bytes]) -> Mapping[int, bytes]:
    return MappingProxyType(dict(pairs))


@frozen
class ClientChallenge:
    """NTLMv2_CLIENT_CHALLENGE ([MS-NLMP] §2.2.2.7): the client's timestamp (FILETIME,
    100 ns since 1601) and its AV pairs by AvId (the first of each)."""

    timestamp: int
    challenge_from_client: bytes
    av_pairs: Mapping[int, bytes] = field(converter=_freeze)


def parse_client_challenge(blob: bytes) -> ClientChallenge:
    """Parse the NTLMv2 client challenge that follows NTProofStr in an NtChallengeResponse."""
    if len(blob) < _CLIENT_CHALLENGE_FIXED + 4:
        raise NtlmMessageError("NTLMv2 client challenge too short")
    if blob[0] != 1 or blob[1] != 1:
        raise NtlmMessageError("unknown NTLMv2 client challenge version")
    timestamp = int(struct.unpack_from("<Q", blob, 8)[0])
    pairs: dict[int, bytes] = {}
    position = _CLIENT_CHALLENGE_FIXED
    while True:
        if position + 4 > len(blob):
            raise NtlmMessageError("AV pairs not terminated")
        avid, length = struct.unpack_from("<HH", blob, position)
        position += 4
        if avid == AvId.EOL:
            break
        if position + length > len(blob):
            raise NtlmMessageError("AV pair runs past the response")
        pairs.setdefault(avid, blob[position : position + length])
        position += length
    return ClientChallenge(timestamp, blob[16:24], pairs)
