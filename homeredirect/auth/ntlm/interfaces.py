"""Where an NTLM acceptor gets its verdict on an NTLMv2 response.

A local source checks the response against NT hashes it holds; Samba's winbind
(`ntlm_auth --helper-protocol=ntlm-server-1`) can check it at an Active Directory domain
controller instead and return the same two things: whose account it is and the
SessionBaseKey that signing needs ([MS-NLMP] §3.2.5.1.2, §3.3.2).
"""

from __future__ import annotations

from attrs import frozen
from twisted.internet.defer import Deferred
from zope.interface import Interface

from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["INtlmResponseChecker", "NtlmLogon", "VerifiedLogon"]


@frozen
class NtlmLogon:
    """What an AUTHENTICATE_MESSAGE asks to be checked: the names as the client sent them,
    our ServerChallenge and its NTLMv2 NtChallengeResponse."""

    user: str
    domain: str
    server_challenge: bytes
    nt_response: bytes


@frozen(repr=False)
class VerifiedLogon:
    """A valid response: the account (AOR) it proves and its SessionBaseKey."""

    account: AddressOfRecord
    session_base_key: bytes

    def __repr__(self) -> str:
        return f"VerifiedLogon(account={self.account!s})"


class INtlmResponseChecker(Interface):
    """Checks NTLMv2 responses ([MS-NLMP] §3.3.2)."""

    def check(logon: NtlmLogon) -> Deferred[VerifiedLogon]:
        """Fire with the verified logon; fail with `twisted.cred.error.UnauthorizedLogin`
        for a wrong response or an unknown user, alike (no user enumeration)."""
