"""What NTLM and Kerberos do alike in Microsoft's SIP authentication ([MS-SIPAE]).

Both schemes announce the same realm and a targetname, open a security association (SA)
named by `opaque`, and from then on sign every message: a request's `response` over its
signature string with the client's `crand` and `cnum`, a response's `rspauth` with our
`srand` and `snum` in `Authentication-Info` ([MS-SIP] §3.1.4.2, [MS-SIPAE] §3.3.5.3).
Only the mechanism that makes and checks those signatures differs: each scheme's SA
provides `verify` and `mic` (`SecurityAssociationState`), and each subclass of
`SipaeAuthenticator` handles its own token exchange (`_with_credentials`).
"""

from __future__ import annotations

import email.utils
from abc import ABC, abstractmethod
from base64 import b64encode
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.outcomes import Authenticated, AuthOutcome, Challenge, Refused
from homeredirect.auth.request_credentials import OurCredentials, refused_when_blocked
from homeredirect.auth.signature import SignedFields, signature_string
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import AuthValue, format_auth_value
from homeredirect.sip.message import Request, Response

__all__ = ["SIPAE_REALM", "SecurityAssociationState", "SipaeAuthenticator", "sa_version"]

SIPAE_REALM = "SIP Communications Service"
"""The realm every [MS-SIPAE] server announces (§4.1, §4.2), unrelated to the Digest
realm and to Kerberos realms."""


class SecurityAssociationState(Protocol):
    """The part of an SA that signing reads and counts ([MS-SIPAE] §3.3.1), and its
    mechanism's signatures: `verify` a client's over a signature string, `mic`, ours as
    the hex `rspauth` the scheme sends."""

    opaque: str
    version: int
    cnum: int
    snum: int

    @property
    def aor(self) -> AddressOfRecord:
        """Whom the SA authenticated."""

    def verify(self, text: bytes, signature: bytes) -> bool: ...

    def mic(self, text: bytes) -> str: ...


class SipaeAuthenticator(ABC):
    """What an [MS-SIPAE] authenticator of scheme `name` ("NTLM" or "Kerberos") for one
    `targetname` does whatever its mechanism: find its credentials, challenge, check and
    make signatures. `random` draws each response's `srand`; `log` is the subclass
    module's logger, so events keep its namespace."""

    def __init__(
        self,
        name: str,
        targetname: str,
        version: int,
        limiter: FailureLimiter,
        clock: IReactorTime,
        random: Callable[[int], bytes],
        log: Logger,
    ) -> None:
        self.name = name
        self.targetname = targetname
        self.version = version
        self._limiter = limiter
        self._clock = clock
        self._random = random
        self._log = log
        self._ours = OurCredentials(name, SIPAE_REALM, targetname)

    def challenge(self, proxy: bool) -> Challenge:
        """The challenge to a request without our credentials (§3.3.5.1): the same for
        every client, so nothing about a user shows in it."""
        return self._challenge(
            proxy,
            [
                ("realm", SIPAE_REALM, True),
                ("targetname", self.targetname, True),
                ("version", str(self.version), False),
            ],
        )

    def _challenge(self, proxy: bool, params: list[tuple[str, str, bool]]) -> Challenge:
        """A 401 (407 from a proxy) with a `Date` and this scheme's `params`."""
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        date = email.utils.formatdate(self._clock.seconds(), usegmt=True)
        return Challenge(
            407 if proxy else 401, (("Date", date), (name, format_auth_value(self.name, params)))
        )

    def authenticate(self, request: Request, source: str, proxy: bool) -> Deferred[AuthOutcome]:
        """Decide what `request` from `source` gets; never fails (every problem is an
        outcome, logged with the source).

        Without our credentials (this scheme, realm and targetname; §3.3.5.2: others are as
        good as none) a challenge, 400 or, once `source` has failed too often, 403; with
        them, what the scheme's `_with_credentials` says."""
        ours = self._ours.find(request, proxy, source, self._log)
        if ours is None:
            return succeed(self.challenge(proxy))
        if isinstance(ours, Refused):
            return succeed(ours)
        event = f"refused {{source}}: too many failed {self.name} attempts"
        refused = refused_when_blocked(self._limiter, source, None, self._log, event)
        if refused is not None:
            return succeed(refused)
        return self._with_credentials(request, ours, source, proxy)

    @abstractmethod
    def _with_credentials(
        self, request: Request, ours: AuthValue, source: str, proxy: bool
    ) -> Deferred[AuthOutcome]:
        """What `request`, carrying our credentials `ours`, gets."""

    def _signed_request(
        self,
        request: Request,
        ours: AuthValue,
        association: SecurityAssociationState,
        source: str,
        proxy: bool,
    ) -> AuthOutcome:
        """Go on as the SA's user if `request` carries a valid signature with a new `cnum`
        (§3.3.5.3); if not, the failure is counted and logged, and a fresh challenge lets
        the client open a new SA."""
        number = self._verified_cnum(request, ours, association)
        if number is None:
            self._limiter.failed(source, None)
            self._log.info(
                f"bad or replayed {self.name} signature from {{source}} in {{opaque}}",
                source=source,
                opaque=association.opaque,
            )
            return self.challenge(proxy)
        association.cnum = number
        return Authenticated(association.aor, sign=self._signer(association, proxy))

    def _unknown_opaque(self, event: str, opaque: str, source: str, proxy: bool) -> AuthOutcome:
        """A fresh challenge for a request naming an SA we do not hold (never issued, or
        expired: the client starts over, §3.3.5.2), with `event` logged."""
        self._log.info(event, opaque=opaque, source=source)
        return self.challenge(proxy)

    def _verified_cnum(
        self, request: Request, ours: AuthValue, association: SecurityAssociationState
    ) -> int | None:
        """The request's `cnum` if the SA verifies its `response` over the request's
        signature string and the number is new in the SA (§3.3.5.3: no replays); else None."""
        crand, cnum, response = ours.get("crand"), ours.get("cnum"), ours.get("response")
        if crand is None or cnum is None or response is None:
            return None
        try:
            signature = bytes.fromhex(response)
            number = int(cnum, 10)
        except ValueError:
            return None
        if number <= association.cnum or not signature:
            return None
        fields = SignedFields(self.name, crand, cnum, SIPAE_REALM, self.targetname)
        text = signature_string(request, fields, association.version)
        return number if association.verify(text, signature) else None

    def _signer(
        self, association: SecurityAssociationState, proxy: bool, reply: bytes | None = None
    ) -> Callable[[Response], Response]:
        """The `sign` of an `Authenticated` outcome in `association`: `_signed`."""
        return lambda response: self._signed(response, association, proxy, reply)

    def _signed(
        self,
        response: Response,
        association: SecurityAssociationState,
        proxy: bool,
        reply: bytes | None = None,
    ) -> Response:
        """`response` with `Authentication-Info` (`Proxy-` from a proxy) whose `rspauth` is
        the SA's MIC of its signature string (§3.3.5.3); `reply`, the GSS token that
        completes mutual authentication, goes along in `gssapi-data`."""
        association.snum += 1
        srand = self._random(4).hex().upper()
        snum = str(association.snum)
        fields = SignedFields(self.name, srand, snum, SIPAE_REALM, self.targetname)
        rspauth = association.mic(signature_string(response, fields, association.version))
        params = [
            ("qop", "auth", True),
            ("opaque", association.opaque, True),
            ("srand", srand, True),
            ("snum", snum, True),
            ("rspauth", rspauth, True),
            ("targetname", self.targetname, True),
            ("realm", SIPAE_REALM, True),
            ("version", str(association.version), False),
        ]
        if reply is not None:
            params.insert(2, ("gssapi-data", b64encode(reply).decode("ascii"), True))
        name = "Proxy-Authentication-Info" if proxy else "Authentication-Info"
        return Response(
            response.status,
            response.reason,
            response.headers.appended(name, format_auth_value(self.name, params)),
            response.body,
            response.version,
        )


def sa_version(text: str | None) -> int:
    """The SA's protocol version: the client's `version` (2 to 4), 2 when it sends none
    (the parameter came with version 3)."""
    if text is not None and text.isdigit() and 2 <= int(text) <= 4:
        return int(text)
    return 2
