"""Header work of a proxy that forwards a request: Via branch, loop detection, Route,
Record-Route and Path (RFC 3261 §16.3-16.6, RFC 3327 §4).

Pure functions over `Request` values (plus the keyed hash of `BranchScheme`): what to
send is decided here, where and when to send it in `homeredirect.proxy.stateful`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from homeredirect.director.targets import Target
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import parse_name_addr, split_list
from homeredirect.sip.message import Headers, Request
from homeredirect.sip.uri import SipUri, Uri
from homeredirect.transaction.keys import MAGIC_COOKIE
from homeredirect.transport.flows import DEFAULT_PORTS, replace_top_via

__all__ = [
    "DEFAULT_MAX_FORWARDS",
    "DIALOG_FORMING",
    "BranchScheme",
    "IsLocal",
    "forwarded_request",
    "hostport",
    "next_hop",
    "pop_own_route",
    "supports",
    "target_of_uri",
]

DEFAULT_MAX_FORWARDS = 70
"""RFC 3261 §16.6 step 3: a request without Max-Forwards gets 70."""

DIALOG_FORMING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
"""Requests that can create a dialog (RFC 3261 §12.1, RFC 6665 §4.1, RFC 3515): only they
get our Record-Route (§16.6 step 4)."""

_PREFIX = MAGIC_COOKIE + "-hr-"

IsLocal = Callable[[str, int | None], bool]
"""Whether host:port names one of our listeners (`ISipNetwork.is_local`)."""


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def supports(request: Request, option: str) -> bool:
    """Whether the request's Supported header lists *option* (RFC 3261 §20.37)."""
    try:
        return option in (value.lower() for value in request.headers.get_list("Supported"))
    except SipParseError:
        return False


class BranchScheme:
    """Branches for our Via (RFC 3261 §16.6 step 8) that also detect loops (§16.3 step 4).

    A branch has two parts after the magic cookie: a keyed hash of the request's
    identity *with* the Via it arrived with and the branch index (unique per client
    transaction, the same for a retransmission), and a keyed hash of what routes it
    *without* that Via, so that a request coming back to us unchanged is recognised as a
    loop even though it arrives with another top Via.
    """

    def __init__(self, secret: bytes) -> None:
        # Keyed once: each digest copies this state rather than hashing the key again.
        self._keyed = hashlib.blake2b(key=secret, digest_size=8)

    def branch(self, request: Request, top_via: str, index: int = 0) -> str:
        return self.branch_of(self.routing(request), top_via, index)

    def routing(self, request: Request) -> str:
        """The routing half of a branch: the same for every copy of *request*, so a
        caller that makes several (the loop check, then one per target) computes it once."""
        index = request.headers._index
        # The From field as received stands for its tag (§16.6 step 8): the same for
        # every copy of a request, and the parser has not built its value (a redirect
        # never reads it), which would cost more than the rest of the hash.
        parts = [
            request.to_addr.tag or "",
            _first(index.get("from")),
            request.call_id,
            str(request.uri),
            str(request.cseq.number),
        ]
        routes = index.get("route")
        if routes:
            parts += routes
        required = index.get("proxy-require")
        if required:
            parts += required
        return self.digest(*parts)

    def branch_of(self, routing: str, top_via: str, index: int = 0) -> str:
        """The branch of the *index*-th copy of a request whose routing hash is *routing*."""
        return f"{_PREFIX}{self.digest(routing, top_via, str(index))}.{routing}"

    def digest(self, *parts: str) -> str:
        # One update over the NUL-terminated parts: the same bytes as one update per part
        # and its NUL, in a single call into the hash.
        hashed = self._keyed.copy()
        hashed.update("\x00".join(parts).encode("utf-8", "surrogateescape") + b"\x00")
        return hashed.hexdigest()

    @staticmethod
    def looped(request: Request, branch: str, is_local: IsLocal) -> bool:
        """§16.3 step 4: one of our own Vias carries this request's routing hash.

        *branch* is one of our branches, or its routing hash alone (`routing`).

        A request that spirals (comes back with another Request-URI or Route, e.g.
        after retargeting) has another routing hash and is no loop.
        """
        # Only a Via of ours can carry the hash: a request whose Via text nowhere holds
        # our branch prefix (nearly every one) needs no Via looked at.
        if not any(_PREFIX in value for value in request.headers._index.get("via", ())):
            return False
        routing = branch.rpartition(".")[2]
        for via in request.vias:
            theirs = via.branch or ""
            if theirs.startswith(_PREFIX) and theirs.rpartition(".")[2] == routing:
                if is_local(via.host, via.port):
                    return True
        return False


def _first(values: list[str] | None) -> str:
    return values[0] if values else ""


def _route_uri(value: str) -> Uri | None:
    try:
        return parse_name_addr(value, "Route").uri
    except SipParseError:
        return None


def pop_own_route(request: Request, is_local: IsLocal) -> tuple[Request, SipUri | None]:
    """Remove the top Route if it names us (RFC 3261 §16.4); return the request and the
    popped URI (None when the top Route is not ours or there is none)."""
    values = request.headers._index.get("route")
    if not values:
        return request, None
    routes = [route for value in values for route in split_list(value)]
    if not routes:
        return request, None
    uri = _route_uri(routes[0])
    if not isinstance(uri, SipUri) or not is_local(uri.host.strip("[]"), uri.port):
        return request, None
    fields: list[tuple[str, str]] = []
    placed = False
    for name, value in request.headers:
        if name == "Route":
            if not placed:
                placed = True
                fields.extend(("Route", route) for route in routes[1:])
            continue
        fields.append((name, value))
    return Request(request.method, request.uri, Headers(fields), request.body), uri


def next_route(request: Request) -> SipUri | None:
    """The first Route's URI if it is a loose router's SIP URI (`lr`, RFC 3261 §16.6
    step 7), else None (no Route, or one we cannot follow: strict routing is not
    supported)."""
    values = request.headers.get_all("Route")
    if not values:
        return None
    uri = _route_uri(split_list(values[0])[0])
    if isinstance(uri, SipUri) and uri.param("lr") is not None:
        return uri
    return None


def forwarded_request(
    request: Request,
    own_via: str,
    top_via: str,
    *,
    record_route: str | None = None,
    path: str | None = None,
    strip_routes: bool = False,
    strip_path: bool = False,
) -> Request:
    """The copy of *request* to send (RFC 3261 §16.6 steps 3-8): our Via (*own_via*) on
    top of the annotated received one (*top_via*, §18.2.1), Max-Forwards decremented (or
    70), Record-Route and Path (RFC 3327 §4) on top of any present, and, when asked, the
    request's Route or Path headers removed (a client must not steer what the policy
    decided)."""
    max_forwards = request.max_forwards
    rebuilt: list[tuple[str, str]] = []
    append = rebuilt.append
    seen_via = False
    for field in request.headers:
        name = field[0]
        if name == "Via" and not seen_via:
            seen_via = True
            value = field[1]
            append(("Via", own_via))
            # A line with one value is that value: no list to split (§7.3.1).
            append(("Via", top_via if "," not in value else replace_top_via(value, top_via)))
            if record_route is not None:
                append(("Record-Route", record_route))
            if path is not None:
                append(("Path", path))
        elif name == "Max-Forwards":
            continue
        elif name == "Route" and strip_routes:
            continue
        elif name == "Path" and strip_path:
            continue
        else:
            append(field)
    append(
        ("Max-Forwards", str(DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1))
    )
    return Request(request.method, request.uri, Headers._trusted_copy(tuple(rebuilt)), request.body)


def target_of_uri(uri: SipUri) -> Target:
    """Where a request for *uri* goes when no policy chose (RFC 3263 §4 without DNS:
    `sips` means TLS, else the `transport` parameter, default UDP; the transport's port)."""
    transport = "tls" if uri.scheme == "sips" else (uri.transport or "udp")
    host = uri.host.strip("[]")
    port = uri.port or DEFAULT_PORTS.get(transport.upper(), 5060)
    return Target(fqdn=host, host=host, port=port, transport=transport)


def next_hop(request: Request) -> Target | None:
    """The next hop of a loose-routed request (RFC 3261 §16.6 steps 6-7): its first
    Route, else its Request-URI; None if that is not a SIP URI we can follow."""
    route = next_route(request)
    if route is not None:
        return target_of_uri(route)
    if request.headers.get("Route") is not None:
        return None
    uri = request.uri
    return target_of_uri(uri) if isinstance(uri, SipUri) else None
