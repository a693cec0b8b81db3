"""The edge role, and telling requests that came through an edge ([MS-SIPRE] §2.2.15).

A Microsoft Edge server marks the requests of external users with an
``ms-edge-proxy-message-trust`` header (``ms-source-type=InternetUser;ms-ep-fqdn=...``);
internal servers believe it only from an edge they trust, and a client must never add it.
Counting Vias (``via-count``) cannot tell an edge from any other proxy, nor from a client
that writes a second Via itself; this header, from a peer whose TLS certificate was
verified, can.

- `EdgeTrustGate` sits between the transports and the `DirectorCore` (an `IMessageSink`
  in front of another). Trust needs the flow a request arrived on, which a routing policy
  does not see (`IRoutingPolicy.decide(request, assignment)`), and the header must be gone
  before anything processes or forwards the request; so the check is made here, once, at
  the boundary: the header is kept only on a request from a flow whose verified
  `peer_identity` (mutual TLS, RFC 5922 §7) is one of `[policy] trusted_edges`, and
  removed from every other request. Behind the gate, the header's presence *is* the
  verified fact, and policies need neither the flow nor an interface change. On an edge
  (`mark`), the gate also marks the requests of clients (flows without a verified
  identity) for the servers behind it.
- `EdgeTrustPolicy` (``[policy] name = "edge-trust"``) proxies a request that carries the
  header (it came through a trusted edge) and redirects every other REGISTER, whatever
  its Via count: a forged Via gets a client a redirect, never a proxied request.
- `refuse_local` is an edge's local handler: an edge homes no users.
- `next_hop_home_servers` makes `[edge] next_hop` a home server for everyone: the edge then
  resolves no assignments, and forwards every request there (a director, which proxies
  what it gets with two Vias).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs
from zope.interface import implementer

from homeredirect.config.edge import NextHop
from homeredirect.config.schema import HomeServer
from homeredirect.director.core import LocalRequest
from homeredirect.director.decision import Decision, Local, Proxy, Redirect
from homeredirect.director.interfaces import IRoutingPolicy, PolicyContext
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.interfaces import Assignment
from homeredirect.sip.message import Message, Request
from homeredirect.sip.parser import MessageRejected
from homeredirect.transport.flows import IFlow
from homeredirect.transport.sink import IMessageSink

__all__ = [
    "EDGE_TRUST_HEADER",
    "EdgeTrustGate",
    "EdgeTrustPolicy",
    "edge_mark",
    "next_hop_home_servers",
    "refuse_local",
]

log = FilteredLogger()

EDGE_TRUST_HEADER = "ms-edge-proxy-message-trust"
"""[MS-SIPRE] §2.2.15: added by an Edge to requests from outside; clients must not add it."""


def edge_mark(fqdn: str) -> str:
    """The header value an edge adds to a client's request ([MS-SIPRE] §2.2.15): a remote
    user, through the edge *fqdn*, not authenticated by the edge."""
    return f"ms-source-type=InternetUser;ms-ep-fqdn={fqdn};ms-source-verified-user=unverified"


@implementer(IMessageSink)
class EdgeTrustGate:
    """Keeps `ms-edge-proxy-message-trust` only from trusted edges (see the module docstring).

    *trusted* are the FQDNs whose verified `IFlow.peer_identity` makes the header
    believable. *mark*, when given (an edge's own FQDN), is the `ms-ep-fqdn` of the mark
    added to requests from flows without a verified identity, that is, from clients.
    Responses and malformed messages pass through untouched.
    """

    def __init__(
        self, sink: IMessageSink, trusted: frozenset[str], mark: str | None = None
    ) -> None:
        self._sink = sink
        self._trusted = trusted
        self._mark = None if mark is None else edge_mark(mark)

    def message_received(self, message: Message, flow: IFlow) -> None:
        if isinstance(message, Request):
            message = self._vetted(message, flow)
        self._sink.message_received(message, flow)

    def message_rejected(self, event: MessageRejected, flow: IFlow) -> None:
        self._sink.message_rejected(event, flow)

    def _vetted(self, request: Request, flow: IFlow) -> Request:
        headers = request.headers
        identity = getattr(flow, "peer_identity", None)
        if EDGE_TRUST_HEADER in headers:
            if identity is not None and identity in self._trusted:
                return request
            log.info(
                "removed {header} from a request of {remote} ({identity})",
                header=EDGE_TRUST_HEADER,
                remote=flow.remote,
                identity=identity or "no verified identity",
                method=request.method,
            )
            headers = headers.without(EDGE_TRUST_HEADER)
        if self._mark is not None and identity is None:
            # A client of the edge: say so to the servers behind it (after any Via, so
            # the header block stays in the order a proxy would write it).
            headers = headers.appended(EDGE_TRUST_HEADER, self._mark)
        if headers is request.headers:
            return request
        return attrs.evolve(request, headers=headers)


@implementer(IRoutingPolicy)
class EdgeTrustPolicy:
    """``edge-trust``: proxy what a trusted edge marked, redirect every other REGISTER.

    Relies on `EdgeTrustGate` (which `makeService` always installs) having removed the
    header from requests that did not come from a verified, trusted edge. Requests other
    than REGISTER are forwarded rather than redirected by the core in any case.
    """

    name = "edge-trust"

    def __init__(self, context: PolicyContext) -> None:
        self._context = context

    def decide(self, request: Request, assignment: Assignment) -> Decision:
        if self._context.is_local(assignment):
            return Local()
        if EDGE_TRUST_HEADER in request.headers:
            return Proxy(assignment.home_server)
        return Redirect(assignment.home_server)


def refuse_local(local: LocalRequest) -> None:
    """The local handler of an edge: a user assigned to the edge itself is a configuration
    mistake (an edge homes no users), answered 500 like a director without a registrar.

    Giving the edge a local handler is also what makes the core route requests to users
    (INVITE, MESSAGE...) by policy instead of answering 405: an edge forwards them all.
    """
    log.warn("{aor} is assigned to this edge, which homes no users", aor=str(local.aor))
    local.respond(500, "No users are homed on an edge")


def next_hop_home_servers(
    home_servers: Mapping[str, HomeServer], hop: NextHop
) -> Mapping[str, HomeServer]:
    """*home_servers* with an entry for *hop*, so that the usual targets reach it.

    The URI gives the transport and port; a `[home_servers."FQDN"]` table for the same
    FQDN still gives the address (`host`), the `backup` and the `locate` method.
    """
    configured = home_servers.get(hop.fqdn)
    entry = HomeServer(
        fqdn=hop.fqdn,
        transport=hop.transport,
        port=hop.port,
        host=hop.fqdn if configured is None else configured.host,
        backup=None if configured is None else configured.backup,
        locate=None if configured is None else configured.locate,
    )
    return MappingProxyType({**home_servers, hop.fqdn: entry})
