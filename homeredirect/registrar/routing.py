"""Requests to users registered here: look up their bindings and forward (RFC 3261 §16.5-16.6).

A home server is the proxy responsible for its users' AORs. For a request to one of them it
reads the AOR's bindings from the location service and forwards the request to the best
one with the transaction-stateful proxy (`StatefulProxy`, RFC 3261 §16.6-16.7), which
answers the caller with the best response, or 408/503 when the device does not answer or
cannot be reached: the Request-URI becomes the binding's contact (§16.6 step 2), and the binding's
Path becomes Route headers in front of any the request has (RFC 3327 §5.4), the request
then going to the first Path hop. Without a binding the answer is 480 Temporarily
Unavailable (§21.4.18).

Only the best binding (highest q, then the most recently refreshed) is used: no forking
yet (the response context could merge several branches, §16.7).

Where the request goes: the first Path hop when there is a Path; else, for a binding
registered over TCP or TLS, the connection it was registered over (the client's own
contact is rarely reachable through NAT, and a TLS client accepts no connections; RFC 5626
§5.3 routes over the registration flow too); else the contact URI's host and port.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from homeredirect.director.core import LocalRequest
from homeredirect.director.targets import Target
from homeredirect.logs import FilteredLogger
from homeredirect.proxy.stateful import StatefulProxy
from homeredirect.registrar.location import Binding, ILocationStore
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import parse_name_addr
from homeredirect.sip.message import Headers, Request
from homeredirect.sip.uri import SipUri, parse_uri
from homeredirect.transport.flows import DEFAULT_PORTS

__all__ = ["UserRouter", "best_binding", "forwarding_target"]

log = FilteredLogger()


def best_binding(bindings: tuple[Binding, ...]) -> Binding | None:
    """The binding to forward to: highest q (absent counts as 1.0, RFC 3261 §16.6), then
    the one that expires last (the most recently refreshed at equal intervals)."""
    if not bindings:
        return None
    return max(bindings, key=lambda b: (1.0 if b.q is None else b.q, b.expires_at))


def _uri_target(uri: SipUri) -> Target:
    transport = "tls" if uri.scheme == "sips" else (uri.transport or "udp")
    port = uri.port or DEFAULT_PORTS.get(transport.upper(), 5060)
    return Target(uri.host.strip("[]"), uri.host.strip("[]"), port, transport)


def forwarding_target(binding: Binding) -> Target:
    """Where a request for *binding* is sent (see the module docstring); raise
    `SipParseError` if the stored contact or Path cannot be read."""
    if binding.path:
        uri = parse_name_addr(binding.path[0], "Path").uri
        if not isinstance(uri, SipUri):
            raise SipParseError("Path URI is not a SIP URI")
        return _uri_target(uri)
    contact = parse_uri(binding.contact)
    if not isinstance(contact, SipUri):
        raise SipParseError("contact is not a SIP URI")
    if binding.received is not None:
        transport, _, address = binding.received.partition(":")
        host, _, port = address.rpartition(":")
        if transport in ("TCP", "TLS") and host and port.isdigit():
            return Target(contact.host.strip("[]"), host.strip("[]"), int(port), transport.lower())
    return _uri_target(contact)


def retargeted(request: Request, binding: Binding) -> Request:
    """*request* with the binding's contact as Request-URI (RFC 3261 §16.6 step 2) and its
    Path as Route headers placed before the request's own (RFC 3327 §5.4)."""
    if not binding.path:
        return Request(request.method, parse_uri(binding.contact), request.headers, request.body)
    fields: list[tuple[str, str]] = []
    placed = False
    for name, value in request.headers:
        if name == "Route" and not placed:
            fields.extend(("Route", hop) for hop in binding.path)
            placed = True
        fields.append((name, value))
    if not placed:
        # After the Vias and Max-Forwards, where a Route usually stands.
        fields.extend(("Route", hop) for hop in binding.path)
    return Request(request.method, parse_uri(binding.contact), Headers(fields), request.body)


class UserRouter:
    """Forwards requests to the registered bindings of users homed here."""

    def __init__(self, store: ILocationStore, proxy: StatefulProxy, clock: IReactorTime) -> None:
        self._store = store
        self._proxy = proxy
        self._clock = clock

    def route(self, local: LocalRequest) -> None:
        """Forward *local* to its user's best binding, or answer 480 (none) or 500
        (the location service failed)."""
        looking = self._store.lookup(local.aor, self._clock.seconds())
        looking.addCallbacks(self._found, self._lookup_failed, (local,), {}, (local,))

    def _found(self, bindings: tuple[Binding, ...], local: LocalRequest) -> None:
        binding = best_binding(bindings)
        if binding is None:
            local.respond(480, "Temporarily Unavailable")
            return
        try:
            target = forwarding_target(binding)
            request = retargeted(local.request, binding)
        except SipParseError as error:
            log.warn(
                "unusable binding {contact} of {aor}: {reason}",
                contact=binding.contact,
                aor=str(local.aor),
                reason=error.reason,
            )
            local.respond(480, "Temporarily Unavailable")
            return
        self._proxy.forward(local.upstream(request), target)

    def _lookup_failed(self, failure: Failure, local: LocalRequest) -> None:
        log.failure("location lookup failed for {aor}", failure, aor=str(local.aor))
        local.respond(500, "Location service unavailable")
