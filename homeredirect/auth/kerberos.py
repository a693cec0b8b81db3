"""Kerberos authentication for SIP in Microsoft's wire format ([MS-SIPAE]).

The exchange ([MS-SIPAE] §3.3.5, example §4.2) takes one round trip:

1. A request without Kerberos credentials for our realm and targetname gets a 401 (407
   from a proxy) with ``Kerberos realm="SIP Communications Service",
   targetname="sip/director.example.com", version=4``.
2. The client gets a service ticket for the targetname from its KDC and sends the AP-REQ
   (the GSS-API initial context token, RFC 4121 §4.1) in ``gssapi-data``. We accept it with
   the service principal's keys from a keytab; the security association (SA) is then
   established, named by a fresh ``opaque``, and the request goes on as the client's
   principal mapped to an address of record (`PrincipalMapper`).

From then on every message in the SA is signed ([MS-SIP] §3.1.4.2): our responses carry
``Authentication-Info: Kerberos qop="auth", opaque, srand, snum, rspauth, targetname,
realm, version`` where `rspauth` is the hex GSS MIC (GSS_GetMIC, RFC 4121 §4.2.6.1) of the
signature string, added by the `sign` callable of the `Authenticated` outcome; requests
carrying ``crand``, ``cnum`` and ``response`` in that SA are verified (GSS_VerifyMIC).
When the client asked for mutual authentication, the AP-REP goes back in the
``gssapi-data`` of that Authentication-Info.

Accepting a token reads the keytab and writes the replay cache (file I/O), so it runs in
a bounded thread pool (`BlockingRunner`); the MIC of an established context is a few
microseconds of hashing and runs where the response is built. Failures (a token that is
not base64, not Kerberos, replayed, for another service, expired) never raise: a
malformed header gets 400, a token that does not check out a fresh 401, each logged, and
failures count towards the brute-force limits. The SA table is bounded and its entries
expire with the ticket or after `lifetime` seconds, whichever comes first.
"""

from __future__ import annotations

import binascii
import os
import threading
from base64 import b64decode
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import gssapi
from attrs import field, frozen
from gssapi.raw.misc import GSSError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.outcomes import Authenticated, AuthOutcome, Refused
from homeredirect.auth.request_credentials import TOO_MANY_FAILURES
from homeredirect.auth.sipae_scheme import SIPAE_REALM, SipaeAuthenticator, sa_version
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import AuthValue
from homeredirect.sip.message import Request

__all__ = [
    "SIPAE_REALM",
    "AcceptedTicket",
    "BlockingRunner",
    "KerberosAcceptor",
    "KerberosAssociation",
    "KerberosAssociations",
    "KerberosConfigError",
    "KerberosRejected",
    "KerberosSipAuthenticator",
    "PrincipalMapper",
]

log = FilteredLogger()

MAX_TOKEN_BYTES = 64 * 1024
"""An AP-REQ with a large Active Directory PAC is a few kilobytes; more is refused unread."""

_T = TypeVar("_T")


class KerberosConfigError(Exception):
    """The keytab or service principal cannot be used (start-up)."""


class KerberosRejected(Exception):
    """A token did not establish a context; `reason` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@frozen(eq=False)
class AcceptedTicket:
    """An established acceptor context: the client's principal (`alice@REALM`), the
    AP-REP to send back if the client asked for mutual authentication, and how many
    seconds the ticket has left (None: unknown)."""

    client: str
    context: gssapi.SecurityContext = field(repr=False)
    reply: bytes | None
    lifetime: float | None


class KerberosAcceptor:
    """Accepts AP-REQs for one service principal with keys from a keytab.

    Blocking (keytab and replay cache are files): call `accept` from a thread pool.
    The acceptor credential is bound to `service_principal`, so a ticket for any other
    principal, even one whose keys the keytab also holds, is refused.
    """

    def __init__(self, service_principal: str, keytab: Path | None = None) -> None:
        """Acquire the acceptor credential (start-up, before the reactor runs).

        `keytab`: None for the default keytab (KRB5_KTNAME, else /etc/krb5.keytab).
        Raise `KerberosConfigError` if the keytab has no key for the principal.
        """
        store: dict[bytes | str, bytes | str] | None = (
            None if keytab is None else {"keytab": f"FILE:{keytab}"}
        )
        try:
            name = gssapi.Name(service_principal, gssapi.NameType.kerberos_principal)
            self._credentials = gssapi.Credentials(
                name=name,
                usage="accept",
                mechs=[gssapi.MechType.kerberos],
                store=store,
            )
            self.principal = str(self._credentials.name)
        except GSSError as e:
            raise KerberosConfigError(
                f"no usable key for {service_principal} in "
                f"{keytab or 'the default keytab'}: {_gss_reason(e)}"
            ) from e
        _, _, self.realm = self.principal.rpartition("@")

    def accept(self, token: bytes) -> AcceptedTicket:
        """Establish a context from the client's initial token (RFC 2743 §2.2.2).

        Raise `KerberosRejected` for anything that does not complete it in one step.
        """
        context = gssapi.SecurityContext(creds=self._credentials, usage="accept")
        try:
            reply = context.step(token)
        except GSSError as e:
            raise KerberosRejected(_gss_reason(e)) from None
        if not context.complete:
            raise KerberosRejected("the token needs more than one round trip")
        if context.mech != gssapi.MechType.kerberos:
            raise KerberosRejected(f"mechanism {context.mech.dotted_form} is not Kerberos")
        try:
            lifetime: float | None = float(context.lifetime)
        except GSSError:
            lifetime = None
        return AcceptedTicket(str(context.initiator_name), context, reply or None, lifetime)


def _gss_reason(error: GSSError) -> str:
    """The major and minor status text, on one line (for logs)."""
    return " ".join(str(error.gen_message()).split())


class BlockingRunner:
    """Runs blocking calls in a thread pool the service owns, with at most `max_pending`
    waiting or running at once: beyond that `run` answers None at once, so a flood of
    tokens costs memory for neither threads nor a queue (STYLE b.11)."""

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool, max_pending: int) -> None:
        self._reactor = reactor
        self._pool = pool
        self.max_pending = max_pending
        self.pending = 0

    def run(self, call: Callable[[], _T]) -> Deferred[_T] | None:
        if self.pending >= self.max_pending:
            return None
        self.pending += 1
        deferred: Deferred[_T] = deferToThreadPool(self._reactor, self._pool, call)
        return deferred.addBoth(self._done)

    def _done(self, result: _T) -> _T:
        self.pending -= 1
        return result


@frozen
class PrincipalMapper:
    """Which address of record a Kerberos principal authenticates as.

    `alice@REALM` is `alice@domains[REALM]` when the realm is mapped, else
    `alice@default_domain` when REALM is the service's own realm; principals of other
    realms (cross-realm trust) and principals with an instance (`alice/admin@REALM`)
    authenticate as nobody.
    """

    service_realm: str
    default_domain: str
    domains: Mapping[str, str] = field(factory=dict)

    def aor_of(self, principal: str) -> AddressOfRecord | None:
        user, at, realm = principal.rpartition("@")
        if not at or not user or "/" in user:
            return None
        domain = self.domains.get(realm)
        if domain is None and realm == self.service_realm:
            domain = self.default_domain
        if domain is None:
            return None
        try:
            return AddressOfRecord(user, domain)
        except ValueError:
            return None


class KerberosAssociation:
    """An established SA ([MS-SIPAE] §3.3.1): the context, the AOR it proved, the
    protocol version its signature strings follow, and the counters of both directions.
    `lock` serialises the context's MIC calls (a GSS context is not thread-safe)."""

    __slots__ = ("aor", "cnum", "context", "expires", "lock", "opaque", "snum", "version")

    def __init__(
        self,
        opaque: str,
        context: gssapi.SecurityContext,
        aor: AddressOfRecord,
        version: int,
        expires: float,
    ) -> None:
        self.opaque = opaque
        self.context = context
        self.aor = aor
        self.version = version
        self.expires = expires
        self.snum = 0
        self.cnum = 0
        self.lock = threading.Lock()

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether `signature` is the client's MIC of `text` (GSS_VerifyMIC)."""
        try:
            with self.lock:
                self.context.verify_signature(text, signature)
        except GSSError:
            return False
        return True

    def mic(self, text: bytes) -> str:
        """Our MIC of `text` (GSS_GetMIC) in upper-case hex, as Microsoft servers send."""
        with self.lock:
            return self.context.get_signature(text).hex().upper()


class KerberosAssociations:
    """Established SAs by opaque: at most `capacity` (the oldest goes first), each dropped
    when its ticket ends or `lifetime` seconds after it was made, whichever is sooner."""

    def __init__(self, clock: IReactorTime, capacity: int, lifetime: float) -> None:
        self._clock = clock
        self.capacity = capacity
        self.lifetime = lifetime
        self._entries: OrderedDict[str, KerberosAssociation] = OrderedDict()

    def deadline(self, ticket_lifetime: float | None) -> float:
        """When an SA made now expires."""
        lifetime = self.lifetime
        if ticket_lifetime is not None:
            lifetime = min(lifetime, ticket_lifetime)
        return self._clock.seconds() + lifetime

    def add(self, association: KerberosAssociation) -> None:
        self._expire()
        self._entries[association.opaque] = association
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, opaque: str) -> KerberosAssociation | None:
        self._expire()
        association = self._entries.get(opaque)
        if association is not None and association.expires <= self._clock.seconds():
            del self._entries[opaque]
            return None
        return association

    def __contains__(self, opaque: str) -> bool:
        return self.get(opaque) is not None

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def _expire(self) -> None:
        """Drop SAs from the oldest on while they are past `lifetime`; one whose ticket
        ended earlier goes when it is looked up, or when capacity pushes it out."""
        now = self._clock.seconds()
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.expires > now:
                break
            entries.popitem(last=False)


@implementer(IRequestAuthenticator)
class KerberosSipAuthenticator(SipaeAuthenticator):
    """[MS-SIPAE] Kerberos for one service principal (`targetname` is `sip/<fqdn>`)."""

    def __init__(
        self,
        *,
        required: bool,
        acceptor: KerberosAcceptor,
        targetname: str,
        version: int,
        associations: KerberosAssociations,
        mapper: PrincipalMapper,
        limiter: FailureLimiter,
        clock: IReactorTime,
        runner: BlockingRunner,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__("Kerberos", targetname, version, limiter, clock, random, log)
        self.required = required
        self._acceptor = acceptor
        self._associations = associations
        self._mapper = mapper
        self._runner = runner

    # -- IRequestAuthenticator ------------------------------------------------

    def _with_credentials(
        self, request: Request, ours: AuthValue, source: str, proxy: bool
    ) -> Deferred[AuthOutcome]:
        """An AP-REQ (`gssapi-data`) opens an SA; a request naming one (`opaque`) must be
        signed in it."""
        data = ours.get("gssapi-data")
        if data:
            return self._accept(request, ours, data, source, proxy)
        opaque = ours.get("opaque")
        if opaque is None:
            return succeed(self.challenge(proxy))
        association = self._associations.get(opaque)
        if association is None:
            event = "Kerberos opaque {opaque!r} from {source} names no security association"
            return succeed(self._unknown_opaque(event, opaque, source, proxy))
        return succeed(self._signed_request(request, ours, association, source, proxy))

    # -- the AP-REQ -----------------------------------------------------------

    def _accept(
        self, request: Request, ours: AuthValue, data: str, source: str, proxy: bool
    ) -> Deferred[AuthOutcome]:
        try:
            if len(data) > MAX_TOKEN_BYTES * 4 // 3 + 4:
                raise ValueError("longer than any Kerberos token we accept")
            token = b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            log.info("bad Kerberos gssapi-data from {source}: {reason}", source=source, reason=e)
            return succeed(Refused(400, "Malformed Kerberos gssapi-data"))
        accepted = self._runner.run(lambda: self._acceptor.accept(token))
        if accepted is None:
            log.warn(
                "Kerberos from {source} refused: {pending} tokens already being checked",
                source=source,
                pending=self._runner.pending,
            )
            return succeed(Refused(503, "Authentication service busy"))
        version = sa_version(ours.get("version"))
        return accepted.addCallbacks(
            self._established,
            self._rejected,
            (request, ours, version, source, proxy),
            {},
            (source, proxy),
        )

    def _established(
        self,
        ticket: AcceptedTicket,
        request: Request,
        ours: AuthValue,
        version: int,
        source: str,
        proxy: bool,
    ) -> AuthOutcome:
        aor = self._mapper.aor_of(ticket.client)
        if aor is None:
            self._limiter.failed(source, None)
            log.info(
                "Kerberos principal {principal} from {source} maps to no address of record",
                principal=ticket.client,
                source=source,
            )
            return Refused(403, "Principal not accepted")
        opaque = self._new_opaque()
        association = KerberosAssociation(
            opaque, ticket.context, aor, version, self._associations.deadline(ticket.lifetime)
        )
        self._associations.add(association)
        self._limiter.succeeded(source, str(aor))
        log.info(
            "Kerberos security association {opaque} for {principal} as {aor} from {source}",
            opaque=opaque,
            principal=ticket.client,
            aor=str(aor),
            source=source,
        )
        return Authenticated(aor, sign=self._signer(association, proxy, ticket.reply))

    def _rejected(self, failure: Failure, source: str, proxy: bool) -> AuthOutcome:
        if not failure.check(KerberosRejected):
            log.failure("Kerberos acceptor failed for {source}", failure, source=source)
            return Refused(500, "Authentication failed")
        reason = failure.value.reason  # type: ignore[union-attr]
        log.info("Kerberos token from {source} refused: {reason}", source=source, reason=reason)
        if self._limiter.failed(source, None):
            return TOO_MANY_FAILURES
        return self.challenge(proxy)

    def _new_opaque(self) -> str:
        """8 upper-case hex digits as Microsoft servers send, drawn until unused."""
        while True:
            opaque = self._random(4).hex().upper()
            if opaque not in self._associations:
                return opaque
