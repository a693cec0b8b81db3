"""The request pipeline shared by every role (the seed's steps 2 and 3).

For each request that arrives: match it to a server transaction (RFC 3261
§17.2.3) so that a retransmission is answered from the transaction, find the
user's address of record, ask the `IAssignmentResolver` for the home server,
ask the `IRoutingPolicy` what to do, and carry the decision out: a 3xx
redirect, a forward to the home server, a local handler, or a rejection.
Failures of any of these become SIP responses here and nowhere else.

A home server runs the same pipeline with a local handler (its registrar and the
routing to users registered there): REGISTERs are routed by the AOR of To, and
other requests to a user (INVITE, MESSAGE, SUBSCRIBE, OPTIONS...) by the AOR of
the Request-URI, so a user assigned elsewhere is redirected or proxied by the
same policy whatever server the request reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.auth.asserted_identity import P_ASSERTED_IDENTITY, asserted_identity
from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.outcomes import Authenticated, AuthOutcome, Challenge, Refused
from homeredirect.director.decision import Decision, Local, Proxy, Redirect, Reject
from homeredirect.director.interfaces import IRoutingPolicy
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import Target
from homeredirect.locate.interfaces import ILocator
from homeredirect.locate.rfc3263 import LocateError
from homeredirect.logs import FilteredLogger, enabled
from homeredirect.proxy.routing import next_hop
from homeredirect.proxy.stateful import StatefulProxy, Upstream
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment, IAssignmentResolver
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import parse_via, split_list
from homeredirect.sip.message import Message, Request, Response
from homeredirect.sip.parser import MessageRejected
from homeredirect.sip.serialize import serialize
from homeredirect.sip.uri import SipUri, Uri, unescape
from homeredirect.transaction.server import (
    ServerTransaction,
    ServerTransactionTable,
    check_stateless_final,
)
from homeredirect.transport.flows import (
    Address,
    FlowClosed,
    IFlow,
    annotate_via,
    reply_address,
)
from homeredirect.transport.sink import IMessageSink

log = FilteredLogger()

ALLOWED_METHODS = "REGISTER, OPTIONS, ACK, CANCEL"


@frozen
class DirectorSettings:
    """The parts of the configuration that the pipeline reads on every request."""

    domains: frozenset[str]
    unknown_domain_status: int = 404
    retry_after: int = 30
    redirect_status: int = 301
    redirect_reason: str = "Redirect request to Home Server"


class LocalRequest:
    """A request the policy decided to handle here (`Local`), as the local handler sees it.

    `aor` is the user it is for (from To for a REGISTER, from the Request-URI otherwise);
    `respond(status, reason, extra)` sends a final response through the server
    transaction; `upstream(request)` hands the request (retargeted) to the stateful
    proxy instead, which answers through the same transaction (RFC 3261 §16.7).
    """

    __slots__ = ("_context", "_respond", "aor")

    def __init__(
        self,
        context: _RequestContext,
        aor: AddressOfRecord,
        respond: Callable[[_RequestContext, int, str | None, tuple[tuple[str, str], ...]], None],
    ) -> None:
        self._context = context
        self._respond = respond
        self.aor = aor

    @property
    def request(self) -> Request:
        return self._context.request

    @property
    def top_via(self) -> str:
        """The request's top Via with received/rport added (RFC 3261 §18.2.1)."""
        return self._context.top_via

    @property
    def flow(self) -> IFlow:
        return self._context.flow

    @property
    def received(self) -> str:
        """Where the request came from, `TRANSPORT:host:port` (for a binding's flow)."""
        host, port = self._context.flow.remote
        return f"{self._context.flow.transport}:{host}:{port}"

    def respond(
        self, status: int, reason: str | None = None, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._respond(self._context, status, reason, extra)

    def upstream(self, request: Request | None = None) -> Upstream:
        """The request to forward (*request*: a retargeted copy) with its server transaction."""
        return self._context.upstream(request)


LocalHandler = Callable[[LocalRequest], None]
"""Handles requests for users assigned to this server (a home server's registrar and
user routing); it must answer through `LocalRequest.respond` or forward
`LocalRequest.upstream()` with the stateful proxy."""


@implementer(IMessageSink)
class DirectorCore:
    """Turns parsed messages into decisions and responses; owns no sockets."""

    def __init__(
        self,
        *,
        settings: DirectorSettings,
        resolver: IAssignmentResolver,
        policy: IRoutingPolicy,
        transactions: ServerTransactionTable,
        responses: ResponseFactory,
        proxy: StatefulProxy,
        targets: Callable[[str], tuple[Target, Target | None]],
        clock: IReactorTime,
        local_handler: LocalHandler | None = None,
        authenticator: IRequestAuthenticator | None = None,
        locator: ILocator | None = None,
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        self._policy = policy
        self._transactions = transactions
        self._responses = responses
        self._proxy = proxy
        self._targets = targets
        # Where a proxied request goes, in failover order (RFC 3263); without one, the
        # home server's static target and then its backup's.
        self._locator = locator
        self._clock = clock
        self._local_handler = local_handler
        self._authenticator = authenticator
        self._redirect_contacts: dict[str, tuple[tuple[str, str], ...]] = {}

    # -- entry points called by the transport protocols -------------------

    def message_received(self, message: Message, flow: IFlow) -> None:
        if isinstance(message, Response):
            self._proxy.response_received(message)
            return
        if self._transactions.absorb(message):
            return
        if message.method == "ACK":
            self._ack_received(message, flow)
            return
        self._request_received(message, flow)

    def _ack_received(self, ack: Request, flow: IFlow) -> None:
        """An ACK matching no transaction acknowledges a 2xx (RFC 3261 §17.2.3): end to
        end, so it is forwarded statelessly along its Route set (§16.7 step 10) when it
        belongs to a dialog we record-routed, and otherwise not ours to handle."""
        try:
            routed, in_dialog = self._proxy.own_route(ack)
            target = next_hop(routed) if in_dialog else None
        except SipParseError:
            return
        if target is not None:
            top_via = annotate_via(
                split_list(ack.headers.get_all("Via")[0])[0], ack.vias[0], flow.remote
            )
            self._proxy.forward_ack(routed, top_via, target)

    def message_rejected(self, event: MessageRejected, flow: IFlow) -> None:
        """Answer a malformed request with the status its error names (400, 505
        or 513); drop a malformed response (RFC 3261 §18.1.2) or an ACK."""
        log.info(
            "rejected malformed {kind} from {remote}: {reason}",
            kind="request" if event.is_request else "message",
            remote=flow.remote,
            reason=event.error.reason,
            status=event.error.status,
        )
        if not event.is_request or event.method == "ACK":
            return
        vias = event.headers.get_all("Via")
        try:
            top = parse_via(split_list(vias[0])[0])
        except (IndexError, SipParseError):
            # Without a usable Via a response could be neither well-formed nor routed
            # (RFC 3261 §18.2.2); the request is dropped.
            return
        response = self._responses.response_to_headers(
            event.headers, event.error.status, _reason_phrase(event.error)
        )
        destination = None if flow.reliable else reply_address(top, flow.remote, flow.transport)
        try:
            flow.send(serialize(response), destination)
        except FlowClosed:
            pass

    # -- the pipeline -------------------------------------------------------

    def _request_received(self, request: Request, flow: IFlow) -> None:
        received_at = self._clock.seconds()
        first_line = split_list(request.headers.get_all("Via")[0])
        top_via = annotate_via(first_line[0], request.vias[0], flow.remote)
        destination = (
            None if flow.reliable else reply_address(request.vias[0], flow.remote, flow.transport)
        )

        def send(data: bytes) -> None:
            flow.send(data, destination)

        received = request
        try:
            request, in_dialog = self._proxy.own_route(request)
        except SipParseError:
            in_dialog = False
        context = _RequestContext(
            request, top_via, received_at, flow, send, self._transactions, received, destination
        )
        self._dispatch(context, in_dialog)
        # Whatever is still to answer (a lookup, a login, a forwarded request) is answered
        # through the transaction, which must exist before the reactor reads the request's
        # retransmissions; a request answered statelessly has none (RFC 3261 §8.2.7).
        context.hold()

    def _dispatch(self, context: _RequestContext, in_dialog: bool) -> None:
        request = context.request
        method = request.method
        if method == "CANCEL":
            # §16.10: a CANCEL is answered here and cancels the branches of its INVITE.
            self._respond(context, 200 if self._proxy.cancel(request) else 481)
        elif in_dialog:
            self._route_in_dialog(context)
        elif method == "REGISTER":
            self._register(context)
        elif self._addressed_to_user(request):
            # A request to a user (INVITE, MESSAGE, SUBSCRIBE, OPTIONS...) is routed by
            # its Request-URI through the same policy as a REGISTER, in every role.
            uri = request.uri
            assert isinstance(uri, SipUri)
            self._route_to_user(context, uri)
        elif method == "OPTIONS":
            if self._refuse_extensions(context, "Require"):
                return
            self._respond(
                context, 200, extra=(("Allow", ALLOWED_METHODS), ("Accept", "application/sdp"))
            )
        else:
            self._respond(context, 405, extra=(("Allow", ALLOWED_METHODS),))

    def _route_in_dialog(self, context: _RequestContext) -> None:
        """A request of a dialog we record-routed (§16.4): forward it to its next Route,
        else its Request-URI (§16.6 steps 6-7), without asking the policy again."""
        if self._refuse_extensions(context, "Proxy-Require"):
            return
        target = next_hop(context.request)
        if target is None:
            self._respond(context, 416, "Next hop is not a loose-routing SIP URI")
            return
        self._proxy.forward(context.upstream(), target)

    @staticmethod
    def _addressed_to_user(request: Request) -> bool:
        """A Request-URI naming a user (not this server itself, RFC 3261 §11)."""
        uri = request.uri
        return isinstance(uri, SipUri) and bool(uri.user)

    def _register(self, context: _RequestContext) -> None:
        request = context.request
        if not isinstance(request.uri, SipUri):
            self._respond(context, 416)
            return
        self._route_to_user(context, request.to_addr.uri)

    def _route_to_user(self, context: _RequestContext, aor_uri: Uri) -> None:
        """Resolve the user of *aor_uri* (To of a REGISTER, RFC 3261 §10.3 step 5; the
        Request-URI otherwise) and carry out the policy's decision."""
        if not isinstance(aor_uri, SipUri) or not aor_uri.user:
            self._respond(context, 404, "Not a SIP address of record")
            return
        if aor_uri.host not in self._settings.domains:
            self._respond(context, self._settings.unknown_domain_status, "Domain not served here")
            return
        try:
            aor = AddressOfRecord.of_uri_parts(unescape(aor_uri.user), aor_uri.host)
        except ValueError:
            self._respond(context, 404, "Not a SIP address of record")
            return
        authenticator = self._authenticator
        request = context.request
        if authenticator is not None and P_ASSERTED_IDENTITY in request.headers:
            # Only a trusted server's assertion is still here (AssertedIdentityGate): it
            # authenticated the client already (RFC 3325 §5), so no second challenge.
            identity = asserted_identity(request)
            if identity is not None:
                self._authenticated(Authenticated(identity), context, aor)
                return
        if authenticator is not None and _needs_authentication(request, authenticator.required):
            outcome = authenticator.authenticate(
                request, context.flow.remote[0], proxy=request.method != "REGISTER"
            )
            if outcome.called and not outcome.paused:
                # Decided already (every challenge; a credentials file): go on at once,
                # without the cost of a callback chain. Authenticators never fail.
                result = outcome.result
                if not isinstance(result, (Failure, Deferred)):
                    self._authenticated(cast(AuthOutcome, result), context, aor)
                    return
            outcome.addCallback(self._authenticated, context, aor)
            return
        self._resolve(context, aor)

    def _authenticated(
        self, outcome: AuthOutcome, context: _RequestContext, aor: AddressOfRecord
    ) -> None:
        """Go on only as the owner of the AOR (RFC 3261 §10.3 step 3 for a REGISTER's
        To; the From of other requests); nothing about the user is revealed before."""
        if isinstance(outcome, Challenge):
            self._respond(
                context,
                outcome.status,
                None,
                outcome.headers,
                stateless=_without_credentials(context.request),
            )
            self._log_decision(context, aor, "challenge", None)
            return
        if isinstance(outcome, Refused):
            # A 503 means the authentication service (KDC thread pool, winbind) cannot
            # answer now: tell the client when to retry (RFC 3261 §21.5.4).
            retry = (("Retry-After", str(self._settings.retry_after)),)
            extra = retry if outcome.status == 503 else ()
            self._respond(context, outcome.status, outcome.reason, extra)
            self._log_decision(context, aor, "refused", None)
            return
        request = context.request
        context.sign = outcome.sign
        owner = aor if request.method == "REGISTER" else _from_aor(request)
        if outcome.aor != owner:
            log.info(
                "{identity} may not act for {owner}", identity=str(outcome.aor), owner=str(owner)
            )
            self._respond(context, 403, "Authenticated identity does not match")
            self._log_decision(context, aor, "refused", None)
            return
        context.identity = outcome.aor
        self._resolve(context, aor)

    def _resolve(self, context: _RequestContext, aor: AddressOfRecord) -> None:
        try:
            deferred: Deferred[Assignment | None] = self._resolver.resolve(aor)
        except Exception:
            deferred = fail()
        if deferred.called and not deferred.paused:
            # Answered already (a file table, a cache hit): go on at once, without the
            # cost of a callback chain.
            result = deferred.result
            if not isinstance(result, (Failure, Deferred)):
                self._assigned(cast("Assignment | None", result), context, aor)
                return
        # callbackKeywords: {} (what Twisted makes of None), not the default mapping proxy,
        # which is slower to unpack into the callback's call.
        deferred.addCallbacks(
            self._assigned, self._resolve_failed, (context, aor), {}, (context, aor)
        )

    def _assigned(
        self, assignment: Assignment | None, context: _RequestContext, aor: AddressOfRecord
    ) -> None:
        if assignment is None:
            self._respond(context, 404)
            self._log_decision(context, aor, "unknown", None)
            return
        try:
            decision: Decision = self._policy.decide(context.request, assignment)
        except Exception:
            log.failure("policy {policy} failed for {aor}", policy=self._policy.name, aor=str(aor))
            self._respond(context, 500, "Routing policy failed")
            return
        self._carry_out(decision, context, aor)

    def _resolve_failed(
        self, failure: Failure, context: _RequestContext, aor: AddressOfRecord
    ) -> None:
        if failure.check(DirectoryUnavailable):
            log.warn(
                "directory unavailable for {aor}: {reason}", aor=str(aor), reason=str(failure.value)
            )
        else:
            log.failure("resolver failed for {aor}", failure, aor=str(aor))
        self._respond(
            context,
            503,
            "Directory unavailable",
            extra=(("Retry-After", str(self._settings.retry_after)),),
        )
        self._log_decision(context, aor, "unavailable", None)

    def _carry_out(
        self, decision: Decision, context: _RequestContext, aor: AddressOfRecord
    ) -> None:
        if isinstance(decision, Redirect):
            if self._refuse_extensions(context, "Require"):
                return
            request = context.request
            if request.method == "REGISTER":
                settings = self._settings
                self._respond(
                    context,
                    settings.redirect_status,
                    settings.redirect_reason,
                    extra=self._contacts_for(decision.home_server),
                )
            else:
                # A call, MESSAGE, SUBSCRIBE... to a user homed elsewhere: 302 to the user
                # at the home server (RFC 3261 §21.3.3), so the callee is kept.
                uri = request.uri
                assert isinstance(uri, SipUri)  # _route_to_user checked it
                self._respond(
                    context,
                    302,
                    "Moved Temporarily",
                    extra=self._user_contacts(decision.home_server, uri.user or ""),
                )
            self._log_decision(context, aor, "redirect", decision.home_server)
        elif isinstance(decision, Proxy):
            if self._refuse_extensions(context, "Proxy-Require"):
                return
            home = decision.home_server
            if self._locator is None:
                # The static targets are known now: no Deferred to wait on (RFC 3263 §4.3
                # order: the home server, then its backup).
                primary, backup = self._targets(home)
                self._located(
                    [primary] if backup is None else [primary, backup], context, aor, home
                )
                return
            located = self._locate(home)
            if located.called and not located.paused:
                # Located already (static targets, a cached DNS answer): no callback chain.
                result = located.result
                if not isinstance(result, (Failure, Deferred)):
                    self._located(cast("list[Target]", result), context, aor, home)
                    return
            where = (context, aor, home)
            located.addCallbacks(self._located, self._locate_failed, where, {}, where)
        elif isinstance(decision, Local):
            if self._local_handler is None:
                log.warn("{aor} is assigned to this server, which has no registrar", aor=str(aor))
                self._respond(context, 500, "No registrar on this server")
            else:
                self._local_handler(LocalRequest(context, aor, self._respond))
            self._log_decision(context, aor, "local", None)
        elif isinstance(decision, Reject):
            self._respond(context, decision.status, decision.reason)
            self._log_decision(context, aor, "reject", None)

    def _locate(self, home_server: str) -> Deferred[list[Target]]:
        """Every target of *home_server* to try, in order (RFC 3263 §4.3)."""
        if self._locator is None:
            primary, backup = self._targets(home_server)
            return succeed([primary] if backup is None else [primary, backup])
        try:
            return self._locator.locate(home_server)
        except Exception:
            return fail()

    def _located(
        self, targets: list[Target], context: _RequestContext, aor: AddressOfRecord, home: str
    ) -> None:
        # The policy chose the next hop: Route headers a client sent beyond ours are not
        # followed (nor passed on to the home server), and a client that reached us
        # directly (one Via) may not put in a Path (RFC 3327 §5.1, §4).
        self._proxy.forward(
            context.upstream(),
            targets[0],
            failover=targets[1:],
            strip_routes=True,
            strip_path=len(context.request.vias) == 1,
            path=True,
            identity=context.identity,
        )
        self._log_decision(context, aor, "proxy", home)

    def _locate_failed(
        self, failure: Failure, context: _RequestContext, aor: AddressOfRecord, home: str
    ) -> None:
        """No target for the home server (RFC 3263 §4.3: DNS has none, or cannot answer):
        the request cannot be routed now, 503 with Retry-After."""
        if failure.check(LocateError):
            log.warn(
                "cannot locate home server {home} for {aor}: {reason}",
                home=home,
                aor=str(aor),
                reason=str(failure.value),
            )
        else:
            log.failure("locating home server {home} failed", failure, home=home)
        self._respond(
            context,
            503,
            "Home server unavailable",
            extra=(("Retry-After", str(self._settings.retry_after)),),
        )
        self._log_decision(context, aor, "unavailable", home)

    def _refuse_extensions(self, context: _RequestContext, header: str) -> bool:
        """Answer 420 Bad Extension, listing them in Unsupported, if *header*
        (Require when we answer as a UAS, RFC 3261 §8.2.2.3; Proxy-Require when we
        forward, §16.3 step 5) names extensions: we support none."""
        try:
            options = context.request.headers.get_list(header)
        except SipParseError:
            options = [header]
        if not options:
            return False
        self._respond(context, 420, extra=(("Unsupported", ", ".join(options)),))
        return True

    def _contacts_for(self, home_server: str) -> tuple[tuple[str, str], ...]:
        """Contact headers of a redirect: the home server at q=0.7 and its backup
        at q=0.3, as a Lync Director sends them (Microsoft clients use the first)."""
        contacts = self._redirect_contacts.get(home_server)
        if contacts is None:
            primary, backup = self._targets(home_server)
            contacts = (("Contact", f"<{primary.contact_uri()}>;q=0.7"),)
            if backup is not None:
                contacts += (("Contact", f"<{backup.contact_uri()}>;q=0.3"),)
            if len(self._redirect_contacts) < 10_000:
                self._redirect_contacts[home_server] = contacts
        return contacts

    def _user_contacts(self, home_server: str, user: str) -> tuple[tuple[str, str], ...]:
        """Contact headers redirecting a request to *user* (its Request-URI's user part, as
        it came) at the home server, q=0.7, and at its backup, q=0.3."""
        primary, backup = self._targets(home_server)
        contacts: tuple[tuple[str, str], ...] = (
            ("Contact", f"<{_user_uri(user, primary)}>;q=0.7"),
        )
        if backup is not None:
            contacts += (("Contact", f"<{_user_uri(user, backup)}>;q=0.3"),)
        return contacts

    def _respond(
        self,
        context: _RequestContext,
        status: int,
        reason: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        stateless: bool = False,
    ) -> None:
        """Answer through the request's server transaction; with *stateless*, as a
        stateless UAS (RFC 3261 §8.2.7: sent once, nothing kept)."""
        response = self._responses.response(context.request, status, reason, extra, context.top_via)
        if context.sign is not None:
            # Every response in an established security association is signed ([MS-SIPAE]).
            response = context.sign(response)
        if stateless:
            context.respond_statelessly(response)
        else:
            context.transaction.respond(response)

    def _log_decision(
        self, context: _RequestContext, aor: AddressOfRecord, decision: str, target: str | None
    ) -> None:
        if not enabled(LogLevel.info):
            return
        log.info(
            "{decision} {aor} -> {target}",
            aor=str(aor),
            decision=decision,
            target=target or "-",
            transport=context.flow.transport,
            remote=context.flow.remote,
            policy=self._policy.name,
            latency_ms=round((self._clock.seconds() - context.received_at) * 1000, 3),
        )


def _without_credentials(request: Request) -> bool:
    """A non-INVITE request with no Authorization or Proxy-Authorization at all: its
    challenge is answered statelessly (RFC 3261 §8.2.7), so that clients that have not
    even tried to authenticate cost no transaction state. A challenge that continues a
    handshake (NTLM, Kerberos) or refuses credentials (stale or bad Digest) stays in its
    transaction, so that a retransmission gets the same answer."""
    headers = request.headers
    return (
        request.method != "INVITE"
        and "Authorization" not in headers
        and "Proxy-Authorization" not in headers
    )


class _RequestContext:
    """One request on its way through the pipeline.

    Its server transaction (RFC 3261 §17.2) is started at first use, or by `hold` once
    the pipeline has returned: a request answered statelessly (§8.2.7), as a challenge to
    a client that sent no credentials is, never has one, which saves each such request
    the transaction's creation and removal.
    """

    __slots__ = (
        "_answered_statelessly",
        "_destination",
        "_received",
        "_table",
        "_transaction",
        "flow",
        "identity",
        "received_at",
        "request",
        "send",
        "sign",
        "top_via",
    )

    def __init__(
        self,
        request: Request,
        top_via: str,
        received_at: float,
        flow: IFlow,
        send: Callable[[bytes], None],
        table: ServerTransactionTable,
        received: Request,
        destination: Address | None,
    ) -> None:
        self.request = request
        self.top_via = top_via
        self.received_at = received_at
        self.flow = flow
        self.send = send
        self.sign: Callable[[Response], Response] | None = None
        # Who the client authenticated as (asserted to the home server, RFC 3325).
        self.identity: AddressOfRecord | None = None
        self._table = table
        self._received = received  # as it came, before our own Route was taken off
        self._destination = destination
        self._transaction: ServerTransaction | None = None
        self._answered_statelessly = False

    @property
    def transaction(self) -> ServerTransaction:
        transaction = self._transaction
        if transaction is None:
            transaction = self._transaction = self._table.create(
                self._received, self.flow, self._destination
            )
        return transaction

    def hold(self) -> None:
        """Start the transaction now unless the request was answered statelessly."""
        if not self._answered_statelessly:
            self.transaction  # noqa: B018 - started on first access

    def respond_statelessly(self, response: Response) -> None:
        """Send a final non-2xx *response* once and keep nothing (§8.2.7): a
        retransmission of the request is processed as a new request."""
        self._answered_statelessly = True
        if self._transaction is not None:
            self._transaction.respond_statelessly(response)
            return
        check_stateless_final(response)
        try:
            self.send(serialize(response))
        except Exception as error:
            log.info(
                "transport failed to send a stateless {status} response: {error}",
                status=response.status,
                error=repr(error),
            )

    def upstream(self, request: Request | None = None) -> Upstream:
        return Upstream(
            request or self.request, self.top_via, self.transaction, self._send_upstream
        )

    def _send_upstream(self, data: bytes) -> None:
        try:
            self.send(data)
        except FlowClosed:
            pass


def _user_uri(user: str, target: Target) -> str:
    """`sip:USER@HOME:PORT;transport=T`: the user at *target* (RFC 3261 §19.1.1)."""
    return f"sip:{user}@{target.fqdn}:{target.port};transport={target.transport}"


def _reason_phrase(error: SipParseError) -> str:
    """A reason phrase naming the fault (RFC 3261 §21.4.1 lets it say why)."""
    text = "".join(c if c.isprintable() else "?" for c in error.reason)
    return text[:120]


def _needs_authentication(request: Request, required: bool) -> bool:
    """CANCEL and ACK are never challenged (RFC 3261 §22.1); otherwise all requests when
    authentication is required, else only those that carry credentials."""
    if request.method in ("CANCEL", "ACK"):
        return False
    if required:
        return True
    headers = request.headers
    return headers.get("Authorization") is not None or (
        headers.get("Proxy-Authorization") is not None
    )


def _from_aor(request: Request) -> AddressOfRecord | None:
    uri = request.from_addr.uri
    if not isinstance(uri, SipUri) or not uri.user:
        return None
    try:
        return AddressOfRecord.of_uri_parts(unescape(uri.user), uri.host)
    except ValueError:
        return None
