"""`twisted.cred` pieces for SIP Digest: credentials, a checker over a credentials source,
and a realm whose avatars are authenticated SIP identities.

The checker answers known and unknown users with the same work: for an unknown user it
still computes a response against a throw-away H(A1), so that the time taken does not tell
a prober which users exist (issue "Authentication before redirect": no user enumeration).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from attrs import frozen
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Attribute, Interface, implementer

from homeredirect.auth.credentials_file import DigestAccount
from homeredirect.auth.digest import DigestAlgorithm, expected_response, responses_match
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = [
    "DigestChecker",
    "IAuthenticatedUser",
    "ISipDigestCredentials",
    "SipDigestCredentials",
    "SipIdentityRealm",
    "answers_for",
    "aor_of_username",
    "verify_account",
]


class ISipDigestCredentials(ICredentials):
    """A Digest `Authorization` whose nonce, opaque and nonce-count were already checked."""

    username = Attribute("The username as the client wrote it.")
    realm = Attribute("The realm the client answered.")
    algorithm = Attribute("The DigestAlgorithm used.")

    def check_ha1(ha1: str) -> bool:
        """Whether the client's response is right for this H(A1)."""


@implementer(ISipDigestCredentials)
@frozen
class SipDigestCredentials:
    username: str
    realm: str
    algorithm: DigestAlgorithm
    method: str
    uri: str
    nonce: str
    qop: str | None
    nc: str | None
    cnonce: str | None
    response: str

    def check_ha1(self, ha1: str) -> bool:
        expected = expected_response(
            self.algorithm,
            ha1,
            method=self.method,
            uri=self.uri,
            nonce=self.nonce,
            qop=self.qop,
            nc=self.nc,
            cnonce=self.cnonce,
        )
        return responses_match(expected, self.response)


@lru_cache(maxsize=4096)
def aor_of_username(username: str, realm: str) -> AddressOfRecord | None:
    """The account a Digest username names: `alice@example.com` as is, `alice` in realm
    `example.com` as `alice@example.com`; None if neither makes an AOR."""
    try:
        if "@" in username:
            return AddressOfRecord.parse(username)
        return AddressOfRecord(user=username, host=realm)
    except ValueError:
        return None


@implementer(ICredentialsChecker)
class DigestChecker:
    """Checks `ISipDigestCredentials` against accounts; the avatar id is the AOR, UTF-8."""

    credentialInterfaces = (ISipDigestCredentials,)

    def __init__(self, accounts: Callable[[], Mapping[AddressOfRecord, DigestAccount]]) -> None:
        self._accounts = accounts

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        creds: ISipDigestCredentials = credentials
        return verify_account(creds, self._account(creds))

    def verified(self, creds: ISipDigestCredentials) -> AddressOfRecord | None:
        """What `requestAvatarId` decides, at once and as the AOR itself (None: refused):
        the accounts are in memory, so the authenticator can do without the Deferred and
        the avatar id that every registration would otherwise pay for."""
        account = self._account(creds)
        if not answers_for(creds, account):
            return None
        assert account is not None
        return account.aor

    def _account(self, creds: ISipDigestCredentials) -> DigestAccount | None:
        aor = aor_of_username(creds.username, creds.realm)
        return None if aor is None else self._accounts().get(aor)


def answers_for(creds: ISipDigestCredentials, account: DigestAccount | None) -> bool:
    """Whether `creds` answer for `account`. A missing account, or one without an H(A1)
    for the algorithm, costs the same hash work as a wrong response, so that a prober
    cannot time which users exist."""
    ha1 = None
    if account is not None:
        ha1 = account.ha1_for(creds.algorithm, creds.username, creds.realm)
    if ha1 is None:
        # Same work as a real check, so a wrong user costs what a wrong password does.
        creds.check_ha1(_UNKNOWN_HA1[creds.algorithm])
        return False
    return creds.check_ha1(ha1)


def verify_account(
    creds: ISipDigestCredentials, account: DigestAccount | None
) -> Deferred[bytes | tuple[()]]:
    """Fire with the avatar id (the AOR, UTF-8) if `creds` answer for `account`
    (`answers_for`); fail with `UnauthorizedLogin` otherwise. Shared by every checker,
    whatever its credentials source."""
    if not answers_for(creds, account):
        return fail(
            UnauthorizedLogin("unknown user, no secret for the algorithm, or wrong response")
        )
    assert account is not None
    return succeed(str(account.aor).encode())


_UNKNOWN_HA1 = {algorithm: "0" * len(algorithm.hash(b"")) for algorithm in DigestAlgorithm}
"""The H(A1) checked for a user without one: no password hashes to it."""


class IAuthenticatedUser(Interface):
    """The avatar of a successful login: who the client proved to be."""

    aor = Attribute("The AddressOfRecord the client authenticated as.")


@implementer(IAuthenticatedUser)
@frozen
class AuthenticatedUser:
    aor: AddressOfRecord


@implementer(IRealm)
class SipIdentityRealm:
    """Turns an avatar id (an AOR string) into an `IAuthenticatedUser`."""

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, AuthenticatedUser, Callable[[], None]]:
        if IAuthenticatedUser not in interfaces:
            raise NotImplementedError("only IAuthenticatedUser avatars")
        aor = _aor_of_avatar_id(avatarId if isinstance(avatarId, str) else avatarId.decode())
        return IAuthenticatedUser, AuthenticatedUser(aor), _no_logout


def _no_logout() -> None:
    """Nothing to release: an avatar is a value."""


@lru_cache(maxsize=4096)
def _aor_of_avatar_id(avatar_id: str) -> AddressOfRecord:
    """The checker's avatar ids are AORs it produced; parsing one is cached (a busy
    director authenticates the same users over and over)."""
    return AddressOfRecord.parse(avatar_id)
