"""NTLM authentication for SIP in Microsoft's wire format ([MS-SIPAE]).

The exchange (§3.3.5, example §4.1), connection-less NTLM underneath:

1. A request without NTLM credentials for our realm and targetname gets a 401 (407 from
   a proxy) with ``NTLM realm="SIP Communications Service", targetname="...", version=4``.
2. The client answers with ``gssapi-data=""`` (connection-less NTLM has no NEGOTIATE); we
   create a pending security association (SA), named by ``opaque``, and answer 401 with
   the CHALLENGE in ``gssapi-data``.
3. The client sends the AUTHENTICATE with that ``opaque``; once it checks out the SA is
   established and the request goes on as the authenticated user.

From then on every message in the SA is signed ([MS-SIP] §3.1.4.2): requests carry
``crand``, ``cnum`` and ``response`` (verified here), and our responses carry
``Authentication-Info: NTLM qop="auth", opaque, srand, snum, rspauth, targetname, realm``,
added by the `sign` callable of the `Authenticated` outcome. The NTLM sequence number of
every signature is 100, as Office Communications Server and pidgin-sipe use; the SA's own
counters travel in the signed text.

The SA table is bounded and expires on the injected clock; an opaque that was never
issued (or has expired) gets a fresh challenge, a malformed header or token a 400.
"""

from __future__ import annotations

import binascii
import os
from base64 import b64decode, b64encode
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.ntlm.acceptor import EstablishedContext, NtlmAcceptor, PendingContext
from homeredirect.auth.ntlm.messages import NtlmMessageError, parse_authenticate
from homeredirect.auth.ntlm.winbind import WinbindUnavailable
from homeredirect.auth.outcomes import Authenticated, AuthOutcome, Challenge, Refused
from homeredirect.auth.request_credentials import (
    TOO_MANY_FAILURES,
    credentials_header,
    refused_when_blocked,
    refused_without_verdict,
)
from homeredirect.auth.sipae_scheme import SIPAE_REALM, SipaeAuthenticator, sa_version
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import AuthValue
from homeredirect.sip.message import Request

__all__ = [
    "SIPAE_REALM",
    "NtlmSipAuthenticator",
    "SchemeAuthenticators",
    "SecurityAssociation",
    "SecurityAssociations",
]

log = FilteredLogger()

SIGNATURE_SEQUENCE = 100
"""The NTLM SeqNum of MS-SIPAE signatures (OCS and pidgin-sipe's `MAC(..., 100, ...)`)."""
PENDING_LIFETIME = 60.0
"""Seconds a CHALLENGE may wait for its AUTHENTICATE."""

_T = TypeVar("_T")


class SecurityAssociation:
    """An established SA: the NTLM context, the protocol version its signature strings
    follow, and the counters of both directions ([MS-SIPAE] §3.3.1)."""

    __slots__ = ("cnum", "context", "opaque", "snum", "version")

    def __init__(self, opaque: str, context: EstablishedContext, version: int) -> None:
        self.opaque = opaque
        self.context = context
        self.version = version
        self.snum = 0
        self.cnum = 0

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether `signature` is the client's over `text`."""
        return self.context.verify(text, SIGNATURE_SEQUENCE, signature)

    def mic(self, text: bytes) -> str:
        """Our signature of `text`, in hex (`rspauth`)."""
        return self.context.sign(text, SIGNATURE_SEQUENCE).hex()

    @property
    def aor(self) -> AddressOfRecord:
        """The account the NTLM context authenticated."""
        return self.context.account


class _ExpiringTable(Generic[_T]):
    """Entries by opaque, oldest first, dropped `lifetime` seconds after they were added
    or when more than `capacity` would be held (the oldest goes)."""

    def __init__(self, clock: IReactorTime, capacity: int, lifetime: float) -> None:
        self._clock = clock
        self._capacity = capacity
        self._lifetime = lifetime
        self._entries: OrderedDict[str, tuple[float, _T]] = OrderedDict()

    def _expire(self) -> None:
        deadline = self._clock.seconds() - self._lifetime
        entries = self._entries
        while entries and next(iter(entries.values()))[0] <= deadline:
            entries.popitem(last=False)

    def add(self, key: str, value: _T) -> None:
        self._expire()
        self._entries[key] = (self._clock.seconds(), value)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def get(self, key: str) -> _T | None:
        self._expire()
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def pop(self, key: str) -> _T | None:
        self._expire()
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)


class SecurityAssociations:
    """Pending handshakes and established SAs, each bounded and expiring."""

    def __init__(
        self,
        clock: IReactorTime,
        capacity: int = 10_000,
        lifetime: float = 8 * 3600.0,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.pending: _ExpiringTable[PendingContext] = _ExpiringTable(
            clock, capacity, PENDING_LIFETIME
        )
        self.established: _ExpiringTable[SecurityAssociation] = _ExpiringTable(
            clock, capacity, lifetime
        )
        self._random = random

    def new_opaque(self) -> str:
        """A fresh SA name: 8 upper-case hex digits as Microsoft servers send, drawn until
        it names nothing held."""
        while True:
            opaque = self._random(4).hex().upper()
            if self.pending.get(opaque) is None and self.established.get(opaque) is None:
                return opaque


@implementer(IRequestAuthenticator)
class NtlmSipAuthenticator(SipaeAuthenticator):
    """[MS-SIPAE] NTLM for one server name (`targetname`)."""

    def __init__(
        self,
        *,
        required: bool,
        acceptor: NtlmAcceptor,
        targetname: str,
        version: int,
        associations: SecurityAssociations,
        limiter: FailureLimiter,
        clock: IReactorTime,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__("NTLM", targetname, version, limiter, clock, random, log)
        self.required = required
        self._acceptor = acceptor
        self._associations = associations

    # -- challenges -----------------------------------------------------------

    def _token_challenge(self, proxy: bool) -> Challenge:
        """A new pending SA and the 401 carrying its CHALLENGE (§3.3.5.2, §4.1 step 4)."""
        associations = self._associations
        opaque = associations.new_opaque()
        pending = self._acceptor.challenge()
        associations.pending.add(opaque, pending)
        return self._challenge(
            proxy,
            [
                ("opaque", opaque, True),
                ("gssapi-data", b64encode(pending.token).decode("ascii"), True),
                ("targetname", self.targetname, True),
                ("realm", SIPAE_REALM, True),
                ("version", str(self.version), False),
            ],
        )

    # -- IRequestAuthenticator ------------------------------------------------

    def _with_credentials(
        self, request: Request, ours: AuthValue, source: str, proxy: bool
    ) -> Deferred[AuthOutcome]:
        """Empty `gssapi-data` asks for a CHALLENGE, a token completes the handshake of the
        pending SA `opaque`; otherwise the request must be signed in an established SA."""
        data = ours.get("gssapi-data")
        if data == "":
            return succeed(self._token_challenge(proxy))
        opaque = ours.get("opaque") or ""
        if data is not None:
            return self._handshake(request, ours, opaque, data, source, proxy)
        association = self._associations.established.get(opaque)
        if association is None:
            event = "NTLM opaque {opaque!r} from {source} names no security association"
            return succeed(self._unknown_opaque(event, opaque, source, proxy))
        return succeed(self._signed_request(request, ours, association, source, proxy))

    def _handshake(
        self, request: Request, ours: AuthValue, opaque: str, data: str, source: str, proxy: bool
    ) -> Deferred[AuthOutcome]:
        pending = self._associations.pending.pop(opaque)
        if pending is None:
            event = "NTLM opaque {opaque!r} from {source} was never issued or has expired"
            return succeed(self._unknown_opaque(event, opaque, source, proxy))
        try:
            message = parse_authenticate(b64decode(data, validate=True))
        except (binascii.Error, NtlmMessageError) as e:
            log.info("bad NTLM token from {source}: {reason}", source=source, reason=str(e))
            return succeed(Refused(400, "Malformed NTLM gssapi-data"))
        user = f"{message.domain}\\{message.user}".lower()
        refused = refused_when_blocked(
            self._limiter,
            source,
            user,
            log,
            "refused {source} for {user}: too many failed attempts",
        )
        if refused is not None:
            return succeed(refused)
        version = sa_version(ours.get("version"))
        accepted = self._acceptor.accept(pending, message)
        return accepted.addCallbacks(
            self._established,
            self._failed,
            (request, ours, opaque, version, source, proxy),
            {},
            (source, user, proxy),
        )

    def _established(
        self,
        context: EstablishedContext,
        request: Request,
        ours: AuthValue,
        opaque: str,
        version: int,
        source: str,
        proxy: bool,
    ) -> AuthOutcome:
        association = SecurityAssociation(opaque, context, version)
        if ours.get("response") is not None:
            # The AUTHENTICATE may come signed with the new keys (Office Communicator does).
            outcome = self._signed_request(request, ours, association, source, proxy)
            if not isinstance(outcome, Authenticated):
                return outcome
        self._associations.established.add(opaque, association)
        self._limiter.succeeded(source, str(context.account))
        log.info(
            "NTLM security association {opaque} for {account} from {source}",
            opaque=opaque,
            account=str(context.account),
            source=source,
        )
        return Authenticated(context.account, sign=self._signer(association, proxy))

    def _failed(self, failure: Failure, source: str, user: str, proxy: bool) -> AuthOutcome:
        refused = refused_without_verdict(
            failure,
            user,
            log,
            WinbindUnavailable,
            "no NTLM verdict for {user} from the domain controller: {reason}",
            "NTLM check failed for {user}",
        )
        if refused is not None:
            return refused
        log.info(
            "NTLM authentication failed for {user} from {source}: {reason}",
            user=user,
            source=source,
            reason=str(failure.value),
        )
        if self._limiter.failed(source, user):
            return TOO_MANY_FAILURES
        return self.challenge(proxy)


@implementer(IRequestAuthenticator)
class SchemeAuthenticators:
    """Several schemes side by side: a request carrying credentials of one scheme goes to
    that scheme's authenticator; one without any gets one challenge per scheme, in the
    configured order ([MS-SIPAE] §3.3.5.1, RFC 3261 §22.1)."""

    def __init__(self, schemes: Sequence[tuple[str, IRequestAuthenticator]], required: bool):
        self._schemes = tuple(schemes)
        self.required = required

    def authenticate(self, request: Request, source: str, proxy: bool) -> Deferred[AuthOutcome]:
        for value in request.headers.get_all(credentials_header(proxy)):
            scheme = value.strip().split(" ", 1)[0].lower()
            for name, authenticator in self._schemes:
                if scheme == name:
                    return authenticator.authenticate(request, source, proxy)
        outcomes = [a.authenticate(request, source, proxy) for _, a in self._schemes]
        return gatherResults(outcomes).addCallback(_merged)


def _merged(outcomes: list[AuthOutcome]) -> AuthOutcome:
    """One challenge holding every scheme's headers (Date once); any other outcome wins."""
    headers: list[tuple[str, str]] = []
    status = 401
    for outcome in outcomes:
        if not isinstance(outcome, Challenge):
            return outcome
        status = outcome.status
        headers.extend(h for h in outcome.headers if h[0] != "Date" or h not in headers)
    return Challenge(status, tuple(headers))
