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
import email.utils
import os
from base64 import b64decode, b64encode
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from twisted.cred.error import UnauthorizedLogin
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
from homeredirect.auth.signature import SignedFields, signature_string
from homeredirect.logs import FilteredLogger
from homeredirect.sip.credentials import AuthValue, format_auth_value, parse_auth_value
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.message import Request, Response

__all__ = [
    "SIPAE_REALM",
    "NtlmSipAuthenticator",
    "SchemeAuthenticators",
    "SecurityAssociation",
    "SecurityAssociations",
]

log = FilteredLogger()

SIPAE_REALM = "SIP Communications Service"
"""The realm every [MS-SIPAE] server announces (§4.1), unrelated to the Digest realm."""
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
class NtlmSipAuthenticator:
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
        self.required = required
        self._acceptor = acceptor
        self.targetname = targetname
        self.version = version
        self._associations = associations
        self._limiter = limiter
        self._clock = clock
        self._random = random

    # -- challenges -----------------------------------------------------------

    def _challenge(self, proxy: bool, params: list[tuple[str, str, bool]]) -> Challenge:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        date = email.utils.formatdate(self._clock.seconds(), usegmt=True)
        return Challenge(
            407 if proxy else 401, (("Date", date), (name, format_auth_value("NTLM", params)))
        )

    def challenge(self, proxy: bool) -> Challenge:
        """The first challenge ([MS-SIPAE] §3.3.5.1): the same for every client."""
        return self._challenge(
            proxy,
            [
                ("realm", SIPAE_REALM, True),
                ("targetname", self.targetname, True),
                ("version", str(self.version), False),
            ],
        )

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

    def authenticate(self, request: Request, source: str, proxy: bool) -> Deferred[AuthOutcome]:
        """Decide what `request` from `source` gets; never fails (every problem is an
        outcome, logged with the source)."""
        header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            ours = self._credentials(request.headers.get_all(header), header)
        except SipParseError as e:
            log.info(
                "malformed {header} from {source}: {reason}",
                header=header,
                source=source,
                reason=e.reason,
            )
            return succeed(Refused(400, f"Malformed {header} header"))
        if ours is None:
            return succeed(self.challenge(proxy))
        if self._limiter.blocked(source, None):
            log.warn("refused {source}: too many failed NTLM attempts", source=source)
            return succeed(Refused(403, "Too many failed attempts"))
        data = ours.get("gssapi-data")
        if data == "":
            return succeed(self._token_challenge(proxy))
        opaque = ours.get("opaque") or ""
        if data is not None:
            return self._handshake(request, ours, opaque, data, source, proxy)
        association = self._associations.established.get(opaque)
        if association is None:
            log.info(
                "NTLM opaque {opaque!r} from {source} names no security association",
                opaque=opaque,
                source=source,
            )
            return succeed(self.challenge(proxy))
        return succeed(self._signed_request(request, ours, association, source, proxy))

    def _credentials(self, values: list[str], header: str) -> AuthValue | None:
        """The NTLM credentials for our realm and targetname ([MS-SIPAE] §3.3.5.1: others
        are as good as none)."""
        for value in values:
            parsed = parse_auth_value(value, header)
            if (
                parsed.scheme_is("NTLM")
                and parsed.get("realm") == SIPAE_REALM
                and parsed.get("targetname") == self.targetname
            ):
                return parsed
        return None

    def _handshake(
        self, request: Request, ours: AuthValue, opaque: str, data: str, source: str, proxy: bool
    ) -> Deferred[AuthOutcome]:
        pending = self._associations.pending.pop(opaque)
        if pending is None:
            log.info(
                "NTLM opaque {opaque!r} from {source} was never issued or has expired",
                opaque=opaque,
                source=source,
            )
            return succeed(self.challenge(proxy))
        try:
            message = parse_authenticate(b64decode(data, validate=True))
        except (binascii.Error, NtlmMessageError) as e:
            log.info("bad NTLM token from {source}: {reason}", source=source, reason=str(e))
            return succeed(Refused(400, "Malformed NTLM gssapi-data"))
        user = f"{message.domain}\\{message.user}".lower()
        if self._limiter.blocked(source, user):
            log.warn(
                "refused {source} for {user}: too many failed attempts", source=source, user=user
            )
            return succeed(Refused(403, "Too many failed attempts"))
        version = _version(ours.get("version"))
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
        if failure.check(WinbindUnavailable):
            log.warn(
                "no NTLM verdict for {user} from the domain controller: {reason}",
                user=user,
                reason=str(failure.value),
            )
            return Refused(503, "Authentication service unavailable")
        if not failure.check(UnauthorizedLogin):
            log.failure("NTLM check failed for {user}", failure, user=user)
            return Refused(500, "Authentication failed")
        self._limiter.failed(source, user)
        log.info(
            "NTLM authentication failed for {user} from {source}: {reason}",
            user=user,
            source=source,
            reason=str(failure.value),
        )
        if self._limiter.blocked(source, user):
            return Refused(403, "Too many failed attempts")
        return self.challenge(proxy)

    def _signed_request(
        self,
        request: Request,
        ours: AuthValue,
        association: SecurityAssociation,
        source: str,
        proxy: bool,
    ) -> AuthOutcome:
        """Verify `response=` over the request's signature string ([MS-SIPAE] §3.3.5.3)."""
        crand, cnum, response = ours.get("crand"), ours.get("cnum"), ours.get("response")
        try:
            signature = bytes.fromhex(response or "")
            number = int(cnum or "", 10)
        except ValueError:
            number, signature = -1, b""
        fields = SignedFields("NTLM", crand or "", cnum or "", SIPAE_REALM, self.targetname)
        text = signature_string(request, fields, association.version)
        if (
            crand is None
            or number <= association.cnum
            or not association.context.verify(text, SIGNATURE_SEQUENCE, signature)
        ):
            self._limiter.failed(source, None)
            log.info(
                "bad or replayed NTLM signature from {source} in {opaque}",
                source=source,
                opaque=association.opaque,
            )
            return self.challenge(proxy)
        association.cnum = number
        return Authenticated(association.context.account, sign=self._signer(association, proxy))

    def _signer(
        self, association: SecurityAssociation, proxy: bool
    ) -> Callable[[Response], Response]:
        name = "Proxy-Authentication-Info" if proxy else "Authentication-Info"

        def sign(response: Response) -> Response:
            """Add `name` with `rspauth` over the response's signature string."""
            association.snum += 1
            srand = self._random(4).hex().upper()
            snum = str(association.snum)
            fields = SignedFields("NTLM", srand, snum, SIPAE_REALM, self.targetname)
            text = signature_string(response, fields, association.version)
            rspauth = association.context.sign(text, SIGNATURE_SEQUENCE).hex()
            value = format_auth_value(
                "NTLM",
                [
                    ("qop", "auth", True),
                    ("opaque", association.opaque, True),
                    ("srand", srand, True),
                    ("snum", snum, True),
                    ("rspauth", rspauth, True),
                    ("targetname", self.targetname, True),
                    ("realm", SIPAE_REALM, True),
                    ("version", str(association.version), False),
                ],
            )
            return Response(
                response.status,
                response.reason,
                response.headers.appended(name, value),
                response.body,
                response.version,
            )

        return sign


def _version(text: str | None) -> int:
    """The SA's protocol version: the client's `version` (2 to 4), 2 when it sends none
    (the parameter came with version 3)."""
    if text is not None and text.isdigit() and 2 <= int(text) <= 4:
        return int(text)
    return 2


@implementer(IRequestAuthenticator)
class SchemeAuthenticators:
    """Several schemes side by side: a request carrying credentials of one scheme goes to
    that scheme's authenticator; one without any gets one challenge per scheme, in the
    configured order ([MS-SIPAE] §3.3.5.1, RFC 3261 §22.1)."""

    def __init__(self, schemes: Sequence[tuple[str, IRequestAuthenticator]], required: bool):
        self._schemes = tuple(schemes)
        self.required = required

    def authenticate(self, request: Request, source: str, proxy: bool) -> Deferred[AuthOutcome]:
        header = "Proxy-Authorization" if proxy else "Authorization"
        for value in request.headers.get_all(header):
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
