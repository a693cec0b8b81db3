"""Carrying the fact of authentication between our servers: `P-Asserted-Identity` within a
trust domain (RFC 3325).

A director (or edge) that authenticated a client and proxies its request to the home
server tells the home who the client proved to be, so that the home does not challenge a
second time: it adds `P-Asserted-Identity: <sip:AOR>` (RFC 3325 §9.1). The header is
worth only what the link it came over is worth, so both ends insist on mutual TLS
(RFC 5922, RFC 5923 §5):

- Sending (`with_asserted_identity`, used by the stateful proxy): the header is added
  only to a request proxied to a server the routing policy chose, over TLS, by a server
  that has a client certificate (`[tls_client]`), so that the connection verified the
  next hop's certificate against its FQDN and presented ours. Every other forwarded copy
  loses any `P-Asserted-Identity` and `P-Preferred-Identity` (RFC 3325 §5: an identity is
  not passed outside the trust domain).
- Receiving (`AssertedIdentityGate`, between the transports and the core, like
  `EdgeTrustGate`): both headers are removed from every request that did not arrive on a
  flow whose verified `peer_identity` is one of the trusted peers (`[auth]
  trusted_peers`), before anything reads them (RFC 3325 §5: a proxy MUST remove or
  replace an identity received from an element it does not trust). Behind the gate, the
  header's presence is the verified fact: the core then treats the request as
  authenticated as `asserted_identity(request)`, still subject to owning the AOR (403).
"""

from __future__ import annotations

import attrs
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import parse_name_addr, split_list
from homeredirect.sip.message import Headers, Message, Request
from homeredirect.sip.parser import MessageRejected
from homeredirect.sip.uri import SipUri, unescape
from homeredirect.transport.flows import IFlow
from homeredirect.transport.sink import IMessageSink

__all__ = [
    "P_ASSERTED_IDENTITY",
    "P_PREFERRED_IDENTITY",
    "AssertedIdentityGate",
    "asserted_identity",
    "identity_uri",
    "with_asserted_identity",
]

log = FilteredLogger()

P_ASSERTED_IDENTITY = "P-Asserted-Identity"
"""RFC 3325 §9.1: the identity a trusted server authenticated."""
P_PREFERRED_IDENTITY = "P-Preferred-Identity"
"""RFC 3325 §9.2: a user agent's hint of which identity to assert; never trusted from one."""


@implementer(IMessageSink)
class AssertedIdentityGate:
    """Keeps `P-Asserted-Identity` and `P-Preferred-Identity` only on requests from trusted
    peers (see the module docstring); responses and malformed messages pass untouched.

    *trusted* are the FQDNs whose verified `IFlow.peer_identity` (the name a client
    certificate was accepted for, RFC 5922 §7) makes an asserted identity believable.
    With none, the headers are removed from every request.
    """

    def __init__(self, sink: IMessageSink, trusted: frozenset[str]) -> None:
        self._sink = sink
        self._trusted = frozenset(name.lower() for name in trusted)

    def message_received(self, message: Message, flow: IFlow) -> None:
        if isinstance(message, Request):
            message = self._vetted(message, flow)
        self._sink.message_received(message, flow)

    def message_rejected(self, event: MessageRejected, flow: IFlow) -> None:
        self._sink.message_rejected(event, flow)

    def trusts(self, flow: IFlow) -> bool:
        """Whether requests from *flow* may carry an asserted identity."""
        identity = getattr(flow, "peer_identity", None)
        return identity is not None and identity in self._trusted

    def _vetted(self, request: Request, flow: IFlow) -> Request:
        headers = request.headers
        if P_ASSERTED_IDENTITY not in headers and P_PREFERRED_IDENTITY not in headers:
            return request
        if self.trusts(flow):
            return request
        log.info(
            "removed an identity assertion from a request of {remote} ({identity})",
            remote=flow.remote,
            identity=getattr(flow, "peer_identity", None) or "no verified identity",
            method=request.method,
        )
        return attrs.evolve(request, headers=_without_identities(headers))


def asserted_identity(request: Request) -> AddressOfRecord | None:
    """The AOR of the SIP or SIPS URI in *request*'s `P-Asserted-Identity`, or None when
    it has none or the header is unusable (logged: the request is then treated as
    unauthenticated and challenged).

    RFC 3325 §9.1 allows one SIP(S) URI and one tel URI; the tel URI says nothing about
    which AOR the user owns and is ignored, and two SIP URIs make the header unusable.
    Call it only behind `AssertedIdentityGate`, which removed untrusted assertions.
    """
    values = request.headers.get_all(P_ASSERTED_IDENTITY)
    if not values:
        return None
    found: AddressOfRecord | None = None
    try:
        for value in values:
            for item in split_list(value, P_ASSERTED_IDENTITY):
                uri = parse_name_addr(item, P_ASSERTED_IDENTITY).uri
                if not isinstance(uri, SipUri):
                    continue
                if found is not None or not uri.user:
                    raise ValueError("one SIP URI with a user part is allowed")
                found = AddressOfRecord.of_uri_parts(unescape(uri.user), uri.host)
    except (SipParseError, ValueError) as error:
        log.warn("ignored an unusable {header}: {error}", header=P_ASSERTED_IDENTITY, error=error)
        return None
    return found


def with_asserted_identity(request: Request, identity: AddressOfRecord | None) -> Request:
    """*request* (a copy being forwarded) without any identity headers it came with, and
    with `P-Asserted-Identity: <sip:identity>` when *identity* is given (RFC 3325 §5).

    The caller decides whether the next hop is trusted: only then is *identity* given.
    A request with nothing to remove or add is returned as is.
    """
    headers = request.headers
    if identity is None and P_ASSERTED_IDENTITY not in headers:
        if P_PREFERRED_IDENTITY not in headers:
            return request
    headers = _without_identities(headers)
    if identity is not None:
        headers = headers.appended(P_ASSERTED_IDENTITY, identity_uri(identity))
    return Request(request.method, request.uri, headers, request.body)


_USER_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)
"""`unreserved` and `user-unreserved` (RFC 3261 §25.1): what a user part holds unescaped."""


def identity_uri(identity: AddressOfRecord) -> str:
    """`<sip:user@host>` for *identity*, its user part escaped where RFC 3261 §25.1
    requires (an AOR keeps the user unescaped, as a lookup key)."""
    user = "".join(
        c if c in _USER_CHARACTERS else "".join(f"%{b:02X}" for b in c.encode())
        for c in identity.user
    )
    return f"<sip:{user}@{identity.host}>"


def _without_identities(headers: Headers) -> Headers:
    return headers.without(P_ASSERTED_IDENTITY).without(P_PREFERRED_IDENTITY)
