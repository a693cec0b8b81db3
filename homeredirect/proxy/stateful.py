"""The transaction-stateful proxy core (RFC 3261 §16): forward a request in client
transactions, collect the answers in a response context, send the best one upstream.

A request to forward arrives with its server transaction (`Upstream`); `StatefulProxy`
validates it (§16.3: Max-Forwards, loops), adds its Via, Record-Route and Path
(§16.6, RFC 3327 §4) and starts a client transaction to the first target (§16.6 step
10, `ClientTransactionTable`); the caller gives the others (the home server's further
addresses and its backup's, RFC 3263 §4.3) for failover, each tried with a branch of its
own when the one before times out, cannot be reached or answers 503; one that has sent
no response at all within `[proxy] failover_timeout` is given up for the next rather
than waited on for its whole Timer B/F (see `ResponseContext`).  The targets are chosen
by the caller (the routing policy, or a registered user's binding), never by what the
request says, so a client cannot steer the proxy elsewhere.

`ResponseContext` is the transaction user of those client transactions (§16.7): 1xx
other than 100 go upstream at once, a 2xx goes at once (and, for an INVITE, every later
2xx too, RFC 6026 §7.2), otherwise the best final response goes when every branch has
ended and no target is left: a 6xx first, else the lowest class.  A next hop that never
answers becomes a 408 (Timer B/F), one that cannot be reached or drops the connection,
or answers 503, our own 503 (§16.7 step 6: a 503 is not relayed); both carry
Retry-After.  Sending the final response through the server transaction completes it, so
retransmissions of the request are answered from it and the ACK of a non-2xx final
response is absorbed there, hop by hop (§16.7 step 8, §17.2.1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from homeredirect.auth.asserted_identity import (
    P_ASSERTED_IDENTITY,
    P_PREFERRED_IDENTITY,
    with_asserted_identity,
)
from homeredirect.director.responses import ResponseFactory
from homeredirect.director.targets import Target
from homeredirect.logs import FilteredLogger
from homeredirect.proxy.channel import NetworkChannel
from homeredirect.proxy.routing import (
    DIALOG_FORMING,
    BranchScheme,
    forwarded_request,
    hostport,
    pop_own_route,
    supports,
)
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import split_list
from homeredirect.sip.message import Headers, Request, Response
from homeredirect.sip.serialize import serialize
from homeredirect.transaction.client import ClientTransactionTable, DuplicateClientTransaction
from homeredirect.transaction.interfaces import IClientTransaction, IClientTransactionUser
from homeredirect.transaction.keys import TransactionKey, server_transaction_key
from homeredirect.transaction.server import ServerTransaction
from homeredirect.transaction.timers import FixedDelayQueue, TimerHandle
from homeredirect.transport.interfaces import ISipNetwork

__all__ = ["ProxySettings", "ResponseContext", "StatefulProxy", "Upstream"]

log = FilteredLogger()


@frozen
class ProxySettings:
    """The `[proxy]` choices the core reads per request, and `[server] retry_after`.

    `assert_identity`: we present a client certificate (`[tls_client]`) on the TLS
    connections we open, so a request proxied over one to a server the policy chose may
    carry the identity its client authenticated as (RFC 3325, `with_asserted_identity`).

    `failover_timeout`: `[proxy] failover_timeout`, how long a branch may hear nothing at
    all before the next target is tried (`ResponseContext`).
    """

    record_route: bool = False
    path: str = "supported"  # "supported" | "always" | "never"
    retry_after: int = 30
    assert_identity: bool = False
    failover_timeout: float = 4.0


# The header index keys of the identity headers (RFC 3325 §9).
_ASSERTED_KEY = P_ASSERTED_IDENTITY.lower()
_PREFERRED_KEY = P_PREFERRED_IDENTITY.lower()


class _Ours:
    """Our sent-by and URI in a copy forwarded over one transport from one listener: the
    start of our Via up to its branch value (§16.6 step 8), and our Path values (RFC 3327
    §4, with `ob` for an outbound client, RFC 5626 §5.1); `uri` starts a Record-Route."""

    __slots__ = ("path", "path_ob", "uri", "via")

    def __init__(self, transport: str, ours: str) -> None:
        self.via = f"SIP/2.0/{transport} {ours};branch="
        self.uri = f"sip:{ours};transport={transport.lower()};lr"
        self.path = f"<{self.uri}>"
        self.path_ob = f"<{self.uri};ob>"


class Upstream:
    """A request to forward, as it came to us: its server transaction and how to reach the
    previous hop without it (the 2xx retransmissions of RFC 6026 §7.2 come after the
    INVITE server transaction has ended)."""

    __slots__ = ("request", "send", "top_via", "transaction")

    def __init__(
        self,
        request: Request,
        top_via: str,
        transaction: ServerTransaction,
        send: Callable[[bytes], None],
    ) -> None:
        self.request = request
        self.top_via = top_via
        self.transaction = transaction
        self.send = send


class StatefulProxy:
    """Forwards requests statefully; one per server, shared by the director's proxying
    and a home server's routing to its users."""

    def __init__(
        self,
        *,
        network: ISipNetwork,
        clients: ClientTransactionTable,
        responses: ResponseFactory,
        secret: bytes,
        settings: ProxySettings,
        clock: IReactorTime,
    ) -> None:
        self.clients = clients
        self._network = network
        self._responses = responses
        self._branches = BranchScheme(secret)
        self._settings = settings
        # One queue for every branch's failover timer: one pending DelayedCall in all.
        self._failover_timers = FixedDelayQueue(clock, settings.failover_timeout)
        # INVITE response contexts by their server transaction's key, for CANCEL (§16.10).
        self._contexts: dict[TransactionKey, ResponseContext] = {}
        # What names us in a copy, per (transport, listener address): see `_ours`.
        self._our_names: dict[tuple[str, tuple[str, int]], _Ours] = {}

    def __len__(self) -> int:
        """The number of INVITE response contexts still waiting for a final response."""
        return len(self._contexts)

    def stop(self) -> None:
        """Cancel every timer, ours and the client transactions' (service stop)."""
        self._failover_timers.stop()
        self.clients.stop()

    # -- requests -----------------------------------------------------------------

    def forward(
        self,
        upstream: Upstream,
        target: Target,
        *,
        failover: Sequence[Target] = (),
        strip_routes: bool = False,
        strip_path: bool = False,
        path: bool = False,
        identity: AddressOfRecord | None = None,
    ) -> None:
        """Forward *upstream*'s request to *target* in a client transaction, or answer it
        (483 Too Many Hops, 482 Loop Detected, 502 with no transport to any target).

        *failover* are further targets to try, in order, each in a new client transaction
        with a branch of its own, when the previous one times out, cannot be reached or
        answers 503 (RFC 3263 §4.3, RFC 3261 §21.5.4): the home server's other
        addresses, then its backup's. *strip_routes* drops the request's Route headers
        (the caller chose the next hop and nothing beyond it is to be followed);
        *strip_path* drops Path headers a client put in (RFC 3327 §5.1: only proxies add
        Path); *path* adds our own Path to a REGISTER as `[proxy] path` says (RFC 3327 §4).
        *identity* is who the client authenticated as here: asserted to a target reached
        over mutual TLS (RFC 3325 §5), removed from every other copy.
        """
        request = upstream.request
        try:
            max_forwards = request.max_forwards
        except SipParseError:
            self._answer(upstream, 400, "Bad Max-Forwards")
            return
        if max_forwards == 0:
            self._answer(upstream, 483, "Too Many Hops")
            return
        # The loop check reads only the routing half of a branch, the same for every index:
        # computed once here for the check and every copy.
        routing = self._branches.routing(request)
        if self._branches.looped(request, routing, self._network.is_local):
            self._answer(upstream, 482, "Loop Detected")
            return

        def copy_for(next_target: Target, index: int) -> tuple[Request, str] | None:
            return self._copy_for(
                upstream, next_target, index, strip_routes, strip_path, path, identity, routing
            )

        context = ResponseContext(self, upstream, (target, *failover), copy_for)
        if request.method == "INVITE":
            self._contexts[upstream.transaction.key] = context
        context.try_next()

    def _copy_for(
        self,
        upstream: Upstream,
        target: Target,
        index: int,
        strip_routes: bool,
        strip_path: bool,
        path: bool,
        identity: AddressOfRecord | None = None,
        routing: str | None = None,
    ) -> tuple[Request, str] | None:
        """The copy of *upstream*'s request for the *index*-th target tried (§16.6 steps
        3-8) and the branch of our Via in it, for the target's transport; None (logged)
        if we have no listener of that transport to send from."""
        request = upstream.request
        transport = target.transport.upper()
        try:
            local = self._network.local_via(transport)
        except LookupError:
            log.warn(
                "no {transport} listener to forward to {target}",
                transport=transport,
                target=target.fqdn,
            )
            return None
        branches = self._branches
        if routing is None:
            routing = branches.routing(request)
        branch = branches.branch_of(routing, upstream.top_via, index)
        ours = self._ours(transport, local)
        method = request.method
        record_route = None
        if self._settings.record_route and method in DIALOG_FORMING:
            record_route = f"<{ours.uri};hr={self.dialog_token(request.call_id)}>"
        path_value = None
        if path and method == "REGISTER" and self._wants_path(request):
            path_value = ours.path_ob if supports(request, "outbound") else ours.path
        copy = forwarded_request(
            request,
            ours.via + branch + ";rport",
            upstream.top_via,
            record_route=record_route,
            path=path_value,
            strip_routes=strip_routes,
            strip_path=strip_path,
        )
        # RFC 3325 §5: an identity travels only to a next hop we trust, which is one whose
        # certificate the TLS connection verifies while presenting ours (mutual TLS).
        trusted = self._settings.assert_identity and transport == "TLS"
        asserted = identity if trusted else None
        names = request.headers._index
        if asserted is None and _ASSERTED_KEY not in names and _PREFERRED_KEY not in names:
            # Nothing to remove or add: asked of the received request, whose header index
            # exists already, rather than of the copy, which would build one to answer.
            return copy, branch
        return with_asserted_identity(copy, asserted), branch

    def _ours(self, transport: str, local: tuple[str, int]) -> _Ours:
        """What names us in a copy sent over *transport* from our listener *local*: made
        once per listener rather than formatted for every request."""
        key = (transport, local)
        ours = self._our_names.get(key)
        if ours is None:
            ours = self._our_names[key] = _Ours(transport, hostport(*local))
        return ours

    def dialog_token(self, call_id: str) -> str:
        """The `hr` parameter of our Record-Route URI: a keyed hash of the Call-ID, so that
        only requests of a dialog we record-routed are loose-routed onwards (§16.4)."""
        return self._branches.digest("record-route", call_id)

    def own_route(self, request: Request) -> tuple[Request, bool]:
        """Pop the top Route if it names us (RFC 3261 §16.4); return the request and
        whether it is a request of a dialog we record-routed (its Route carried our
        `hr` token for its Call-ID), which alone may be routed onwards by its Route
        set or Request-URI (§16.6 step 7) rather than by policy."""
        popped_request, popped = pop_own_route(request, self._network.is_local)
        if popped is None:
            return request, False
        token = popped.param("hr")
        in_dialog = bool(request.to_addr.tag) and token == self.dialog_token(request.call_id)
        return popped_request, in_dialog

    def cancel(self, cancel: Request) -> bool:
        """A CANCEL arrived (RFC 3261 §16.10): cancel the pending branches of the INVITE it
        matches and return True (the caller answers it 200), or False if we have no
        response context for it."""
        key = server_transaction_key(cancel)
        context = self._contexts.get((*key[:-1], "INVITE"))
        if context is None:
            return False
        context.cancel_pending()
        return True

    def forward_ack(self, ack: Request, top_via: str, target: Target) -> None:
        """Forward the ACK of a 2xx (end to end, RFC 3261 §16.7 step 10 / §13.2.2.4):
        statelessly, with a branch of its own (§16.11)."""
        transport = target.transport.upper()
        try:
            local = self._network.local_via(transport)
            if ack.max_forwards == 0:
                return
        except (LookupError, SipParseError):
            return
        branch = self._branches.branch(ack, top_via)
        copy = forwarded_request(
            ack, f"SIP/2.0/{transport} {hostport(*local)};branch={branch};rport", top_via
        )
        self._network.send(transport, (target.host, target.port), serialize(copy), target.fqdn)

    # -- responses ----------------------------------------------------------------

    def response_received(self, response: Response) -> None:
        """Hand a response to its client transaction (RFC 3261 §16.7 step 1, §17.1.3).

        One that matches none is dropped: everything we forward has a client
        transaction, which absorbs retransmissions and, for an INVITE, passes on late
        2xx until Timer M (RFC 6026 §7.2), so a stray response is either a very late
        retransmission or forged, and relaying it along its Vias would let anyone
        bounce traffic off us.
        """
        if not self.clients.receive(response):
            log.debug(
                "dropped a response matching no client transaction",
                status=response.status,
                call_id=response.headers.get("Call-ID"),
            )

    # -- for response contexts ----------------------------------------------------

    def _wants_path(self, request: Request) -> bool:
        mode = self._settings.path
        return mode == "always" or (mode == "supported" and supports(request, "path"))

    def _answer(self, upstream: Upstream, status: int, reason: str | None = None) -> None:
        upstream.transaction.respond(self._local_response(upstream, status, reason))

    def _local_response(
        self, upstream: Upstream, status: int, reason: str | None = None
    ) -> Response:
        extra: tuple[tuple[str, str], ...] = ()
        if status in (408, 503):
            extra = (("Retry-After", str(self._settings.retry_after)),)
        return self._responses.response(upstream.request, status, reason, extra, upstream.top_via)

    def _finished(self, upstream: Upstream) -> None:
        self._contexts.pop(upstream.transaction.key, None)


def _without_top_via(response: Response) -> Response:
    """*response* with our Via removed (RFC 3261 §16.7 step 3)."""
    fields = response.headers._fields
    for index, (name, value) in enumerate(fields):
        if name == "Via":
            if "," in value and (rest := split_list(value)[1:]):
                kept = (*fields[:index], ("Via", ", ".join(rest)), *fields[index + 1 :])
            else:
                kept = fields[:index] + fields[index + 1 :]
            break
    else:
        kept = fields
    return Response(response.status, response.reason, Headers._trusted_copy(kept), response.body)


def _rank(status: int) -> tuple[int, int]:
    """Lower is better (§16.7 step 6): any 6xx, then the lowest class."""
    return (0 if status >= 600 else 1, status // 100)


CopyFor = Callable[[Target, int], "tuple[Request, str] | None"]
"""Builds the copy of a request to send to a target as the n-th branch, with the branch of
our Via in it (None: no transport)."""


@implementer(IClientTransactionUser)
class ResponseContext:
    """The responses to one forwarded request, from every branch (RFC 3261 §16.7).

    The branches are tried one after another (RFC 3263 §4.3): `try_next` starts one to the
    next of *targets*; a branch that times out before any response, fails at transport
    level or is answered 503 (RFC 3261 §21.5.4) is followed by one to the next target,
    until a branch gets another answer or the targets run out. A branch that has heard a
    provisional response and then times out (Timer C, §16.8) is not retried: the next hop
    was there. Forking (several branches at once, `start_branch`) is possible; the proxy
    does not fork today.

    A branch that has heard nothing at all (not even 100 Trying) `failover_timeout`
    seconds after its request went out, while another target is left, is given up and
    the next target tried. Waiting for its Timer B/F (64*T1, 32 s) would be useless: a
    client behind us has the same 32 s (§17.1.1.2, §17.1.2.2), so it would time out at the
    moment we tried the backup. The default, 4 s = 8*T1, is four copies over UDP (Timer E
    at 0, 0.5, 1.5 and 3.5 s) where a live server answers a REGISTER within about T1 or
    sends 100 Trying within 200 ms of an INVITE (§17.2.1), and it leaves a home server,
    its SRV peer and a backup each a turn well inside the client's 32 s. This is the
    no-response timer that Kamailio (`fr_timer`) and OpenSIPS (`fr_timeout`) put on each
    branch, which both lower to a few seconds for gateway failover. The branch's client
    transaction is then ended through `transport_error` (its §17.1.4 path: timers
    cancelled, removed from the table; for an INVITE in Calling, no CANCEL may be sent,
    §9.1) and counts as a 408 (§16.8: no provisional response is "as if ... a 408").
    The last target keeps its full Timer B/F: with no other target, giving up early
    would only turn a slow answer into a 408.
    """

    __slots__ = (
        "_best",
        "_branches",
        "_cancelled",
        "_copy",
        "_ended",
        "_failover",
        "_final_sent",
        "_heard",
        "_index",
        "_proxy",
        "_targets",
        "_upstream",
    )

    def __init__(
        self,
        proxy: StatefulProxy,
        upstream: Upstream,
        targets: Sequence[Target] = (),
        copy: CopyFor | None = None,
    ) -> None:
        self._proxy = proxy
        self._upstream = upstream
        # The channels of branches still waiting for a final response.
        self._branches: dict[TransactionKey, tuple[IClientTransaction, NetworkChannel]] = {}
        # Branches that have had their final answer (a transaction can end inside
        # `ClientTransactionTable.create`, before it is recorded in _branches).
        self._ended: set[TransactionKey] = set()
        # Branches that have heard a response (a provisional one, at least).
        self._heard: set[TransactionKey] = set()
        self._best: Response | None = None
        self._final_sent = False
        self._cancelled = False
        # The targets not tried yet, and how to make the request for one.
        self._targets = deque(targets)
        self._copy = copy
        self._index = 0
        # The failover timers of branches that have heard nothing yet.
        self._failover: dict[TransactionKey, TimerHandle] = {}

    def try_next(self) -> None:
        """Start a branch to the next target not tried yet (RFC 3263 §4.3), skipping those
        we have no transport for (502); with none left, send the best response."""
        copy = self._copy
        while self._targets and copy is not None and not self._cancelled:
            target = self._targets.popleft()
            made = copy(target, self._index)
            self._index += 1
            if made is None:
                self._consider(
                    self._proxy._local_response(
                        self._upstream,
                        502,
                        f"No {target.transport.upper()} transport to the next hop",
                    )
                )
                continue
            self.start_branch(made[0], target, made[1])
            return
        self._maybe_finish()

    def start_branch(self, request: Request, target: Target, branch: str | None = None) -> None:
        """Send *request* (the forwarded copy, with our Via, whose *branch* the caller may
        give) to *target* (§16.6 step 10)."""
        channel = NetworkChannel(self._proxy._network, target)
        try:
            transaction = self._proxy.clients.create(request, channel, self, branch)
        except DuplicateClientTransaction:
            # The same request is being forwarded already: a merged request (§8.2.2.2).
            channel.close()
            self._consider(self._proxy._local_response(self._upstream, 482, "Merged Request"))
            self._maybe_finish()
            return
        if transaction.key in self._ended:
            channel.close()
            return
        self._branches[transaction.key] = (transaction, channel)
        channel.attach(transaction)
        if self._targets and not self._cancelled:
            self._failover[transaction.key] = self._proxy._failover_timers.schedule(
                lambda: self._failover_fired(transaction)
            )

    def cancel_pending(self) -> None:
        """§16.10: cancel every branch still waiting, and try no further targets; their
        487s come back as usual."""
        self._cancelled = True
        self._stop_failover_timers()
        for transaction, _ in tuple(self._branches.values()):
            cancel = getattr(transaction, "cancel", None)
            if cancel is not None:
                cancel()

    # -- IClientTransactionUser ---------------------------------------------------

    def provisional_response(self, transaction: IClientTransaction, response: Response) -> None:
        self._heard.add(transaction.key)
        self._stop_failover_timer(transaction.key)
        # §16.7 step 5: 1xx other than 100 go upstream at once, until a final one did.
        if response.status > 100 and not self._final_sent:
            self._upstream.transaction.respond(_without_top_via(response))

    def final_response(self, transaction: IClientTransaction, response: Response) -> None:
        ended = self._branch_ended(transaction)
        status = response.status
        if status < 300:
            relayed = _without_top_via(response)
            if not self._final_sent:
                self._send_final(relayed)
                self.cancel_pending()  # §16.7 step 10
            elif self._upstream.request.method == "INVITE":
                # RFC 6026 §7.2: every further 2xx to an INVITE goes upstream too.
                self._upstream.send(serialize(relayed))
            return
        if not ended:
            return
        if status == 503:
            # §21.5.4: try another server. Not relayed (§16.7 step 6): if nothing better
            # comes, the client hears our own 503, with our Retry-After.
            self._fail_over(self._proxy._local_response(self._upstream, 503), transaction)
            return
        if status >= 600 and not self._final_sent:
            self.cancel_pending()  # §16.7 step 10
        self._consider(_without_top_via(response))
        self._maybe_finish()

    def timed_out(self, transaction: IClientTransaction, response: Response) -> None:
        heard = transaction.key in self._heard
        if self._branch_ended(transaction):
            timeout = self._proxy._local_response(self._upstream, 408)
            if heard:
                self._consider(timeout)
                self._maybe_finish()
            else:
                self._fail_over(timeout, transaction)

    def transport_failed(self, transaction: IClientTransaction, response: Response) -> None:
        # After a final response this is a failed ACK (§17.1.4): nothing left to answer.
        if self._branch_ended(transaction):
            self._fail_over(self._proxy._local_response(self._upstream, 503), transaction)

    def _failover_fired(self, transaction: IClientTransaction) -> None:
        """`failover_timeout` passed with no response on *transaction*'s branch: end it
        (no CANCEL: nothing says the next hop has the request, §9.1) and try the next."""
        key = transaction.key
        self._failover.pop(key, None)
        if key in self._heard or not self._branch_ended(transaction):
            return
        log.info(
            "no response to {key} within {timeout} s; giving its target up",
            key=key,
            timeout=self._proxy._settings.failover_timeout,
            remaining=len(self._targets),
        )
        # The branch has ended for us already, so the transaction's own report of this
        # (transport_failed) is ignored; it terminates, leaving nothing behind.
        transaction.transport_error()
        self._fail_over(self._proxy._local_response(self._upstream, 408), transaction)

    # -- choosing the best response ------------------------------------------------

    def _fail_over(self, response: Response, transaction: IClientTransaction) -> None:
        """A branch ended with no usable answer (RFC 3263 §4.3): keep *response* in case
        nothing better comes, and try the next target if there is one."""
        self._consider(response)
        if self._targets and not self._cancelled and not self._final_sent:
            log.info(
                "next hop failed ({status}) for {key}; trying the next target",
                status=response.status,
                key=transaction.key,
                remaining=len(self._targets),
            )
            self.try_next()
        else:
            self._maybe_finish()

    def _branch_ended(self, transaction: IClientTransaction) -> bool:
        """Forget *transaction*'s branch; False if it had ended already."""
        key = transaction.key
        if key in self._ended:
            return False
        self._ended.add(key)
        self._heard.discard(key)
        self._stop_failover_timer(key)
        branch = self._branches.pop(key, None)
        if branch is not None:
            branch[1].close()
        return True

    def _stop_failover_timer(self, key: TransactionKey) -> None:
        handle = self._failover.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _stop_failover_timers(self) -> None:
        for handle in self._failover.values():
            handle.cancel()
        self._failover.clear()

    def _consider(self, response: Response) -> None:
        # Within a class the later response wins (§16.7 step 6 leaves the choice open):
        # targets are tried in turn, so it comes from the target that took the request
        # after the ones before it timed out or failed (a 486 beats our own 408).
        best = self._best
        if best is None or _rank(response.status) <= _rank(best.status):
            self._best = response

    def _maybe_finish(self) -> None:
        if self._branches or self._final_sent or self._best is None:
            return
        self._send_final(self._best)

    def _send_final(self, response: Response) -> None:
        self._final_sent = True
        self._best = None
        self._targets.clear()
        self._stop_failover_timers()
        self._proxy._finished(self._upstream)
        self._upstream.transaction.respond(response)
