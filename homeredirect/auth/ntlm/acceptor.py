"""The connection-less NTLMv2 acceptor ([MS-NLMP] §3.2.5.2, §3.2.5.1.2).

In connection-less mode there is no NEGOTIATE: the server starts by sending a CHALLENGE
(`NtlmAcceptor.challenge`), and the client's AUTHENTICATE completes the context
(`NtlmAcceptor.accept`). The CHALLENGE carries the flags pidgin-sipe insists on for SIP
(SIGN, DATAGRAM, IDENTIFY, KEY_EXCH besides UNICODE, NTLM, ALWAYS_SIGN, ESS, TARGET_INFO)
and is the same for every client, so nothing about a user shapes it. Whether the NTLMv2
response is right is up to an `INtlmResponseChecker`; key exchange, the optional MIC and
the signing keys are done here.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from attrs import frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime

from homeredirect.auth.ntlm.interfaces import INtlmResponseChecker, NtlmLogon, VerifiedLogon
from homeredirect.auth.ntlm.keys import (
    SessionKeys,
    exported_session_key,
    hmac_md5,
    session_keys,
)
from homeredirect.auth.ntlm.messages import (
    AuthenticateMessage,
    AvId,
    ChallengeMessage,
    NegotiateFlags,
    av_pair,
    parse_client_challenge,
)
from homeredirect.auth.ntlm.signing import mac, verify_mac
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["EstablishedContext", "NtlmAcceptor", "PendingContext", "ServerNames"]

F = NegotiateFlags
CHALLENGE_FLAGS = (
    F.UNICODE
    | F.REQUEST_TARGET
    | F.SIGN
    | F.DATAGRAM
    | F.NTLM
    | F.ALWAYS_SIGN
    | F.TARGET_TYPE_DOMAIN
    | F.EXTENDED_SESSIONSECURITY
    | F.IDENTIFY
    | F.TARGET_INFO
    | F.VERSION
    | F.KEY_128
    | F.KEY_EXCH
)
REQUIRED_FLAGS = F.SIGN | F.DATAGRAM | F.EXTENDED_SESSIONSECURITY | F.KEY_EXCH
"""What the AUTHENTICATE's flags (the negotiated ones, connection-less) must hold: MS-SIPAE
signs every message, per-message RC4 keys need DATAGRAM, and we implement ESS only."""

_FILETIME_EPOCH = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01
MAX_LIFETIME = 36 * 3600.0
"""How far the client's NTLMv2 timestamp may be from our clock ([MS-NLMP] §3.2.1
MaxLifetime, 36 hours by default)."""


def filetime(seconds: float) -> int:
    """A POSIX time as a FILETIME (100 ns units since 1601, [MS-DTYP] §2.3.3)."""
    return int((seconds + _FILETIME_EPOCH) * 10_000_000)


@frozen
class ServerNames:
    """The names the CHALLENGE's TargetName and TargetInfo announce ([MS-NLMP] §2.2.1.2)."""

    netbios_domain: str
    netbios_computer: str
    dns_computer: str
    dns_domain: str


@frozen
class PendingContext:
    """A CHALLENGE sent and not yet answered; `token` is its exact bytes (a MIC covers them)."""

    challenge: ChallengeMessage
    token: bytes
    issued_at: float


@frozen(repr=False)
class EstablishedContext:
    """A completed NTLM context: who authenticated and the keys to sign with."""

    account: AddressOfRecord
    user: str
    domain: str
    flags: NegotiateFlags
    keys: SessionKeys

    def __repr__(self) -> str:
        return f"EstablishedContext(account={self.account!s}, flags={int(self.flags):#010x})"

    def sign(self, message: bytes, sequence: int) -> bytes:
        """Our (server-to-client) signature of `message` ([MS-NLMP] §3.4.4.2)."""
        return mac(self.flags, self.keys.server_sign, self.keys.server_seal, sequence, message)

    def verify(self, message: bytes, sequence: int, signature: bytes) -> bool:
        """Whether `signature` is the client's (client-to-server) over `message`."""
        keys = self.keys
        return verify_mac(
            self.flags, keys.client_sign, keys.client_seal, sequence, message, signature
        )


class NtlmAcceptor:
    """Issues CHALLENGEs and completes contexts from AUTHENTICATEs."""

    def __init__(
        self,
        checker: INtlmResponseChecker,
        names: ServerNames,
        clock: IReactorTime,
        random: Callable[[int], bytes] = os.urandom,
        max_lifetime: float = MAX_LIFETIME,
    ) -> None:
        self._checker = checker
        self._names = names
        self._clock = clock
        self._random = random
        self._max_lifetime = max_lifetime

    def challenge(self) -> PendingContext:
        """A fresh CHALLENGE_MESSAGE with a random ServerChallenge ([MS-NLMP] §3.2.5.2)."""
        names = self._names
        now = self._clock.seconds()
        target_info = b"".join(
            (
                av_pair(AvId.NB_DOMAIN_NAME, names.netbios_domain.encode("utf-16-le")),
                av_pair(AvId.NB_COMPUTER_NAME, names.netbios_computer.encode("utf-16-le")),
                av_pair(AvId.DNS_DOMAIN_NAME, names.dns_domain.encode("utf-16-le")),
                av_pair(AvId.DNS_COMPUTER_NAME, names.dns_computer.encode("utf-16-le")),
                av_pair(AvId.TIMESTAMP, struct.pack("<Q", filetime(now))),
                av_pair(AvId.EOL, b""),
            )
        )
        message = ChallengeMessage(
            flags=CHALLENGE_FLAGS,
            server_challenge=self._random(8),
            target_name=names.netbios_domain,
            target_info=target_info,
        )
        return PendingContext(message, message.encode(), now)

    def accept(
        self, pending: PendingContext, message: AuthenticateMessage
    ) -> Deferred[EstablishedContext]:
        """Complete `pending` with the client's AUTHENTICATE (parsed by the caller with
        `parse_authenticate`, so that a malformed token is told apart and logged there).

        Fire with the context, or fail with `UnauthorizedLogin` (wrong credentials, missing
        flags, NTLMv1, a stale timestamp, a bad MIC).
        """
        refusal = self._refusal(message)
        if refusal is not None:
            return fail(UnauthorizedLogin(refusal))
        logon = NtlmLogon(
            message.user,
            message.domain,
            pending.challenge.server_challenge,
            message.nt_response,
        )
        checked = self._checker.check(logon)
        return checked.addCallback(self._established, pending, message)

    def _refusal(self, message: AuthenticateMessage) -> str | None:
        if message.flags & REQUIRED_FLAGS != REQUIRED_FLAGS:
            return "AUTHENTICATE lacks SIGN, DATAGRAM, ESS or KEY_EXCH"
        if not message.is_ntlmv2:
            return "NTLMv1 responses are refused"
        blob = parse_client_challenge(message.nt_response[16:])
        skew = abs(filetime(self._clock.seconds()) - blob.timestamp) / 10_000_000
        if skew > self._max_lifetime:
            return "NTLMv2 timestamp too far from the server's clock"
        if len(message.encrypted_random_session_key) != 16:
            return "KEY_EXCH without a 16-byte EncryptedRandomSessionKey"
        return None

    def _established(
        self, logon: VerifiedLogon, pending: PendingContext, message: AuthenticateMessage
    ) -> EstablishedContext:
        exported = exported_session_key(
            message.flags, logon.session_base_key, message.encrypted_random_session_key
        )
        mic = message.mic
        if mic is not None:
            # Connection-less: the MIC covers CHALLENGE ‖ AUTHENTICATE (MIC zeroed), there
            # being no NEGOTIATE ([MS-NLMP] §3.1.5.1.2, §3.2.5.1.2).
            expected = hmac_md5(exported, pending.token + message.without_mic())
            if not hmac.compare_digest(mic, expected):
                raise UnauthorizedLogin("NTLM MIC does not match")
        return EstablishedContext(
            account=logon.account,
            user=message.user,
            domain=message.domain,
            flags=message.flags,
            keys=session_keys(message.flags, exported),
        )
