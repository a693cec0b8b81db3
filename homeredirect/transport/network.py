"""Our listeners seen as one network endpoint, for sending what is not a reply
on the flow a request came in on: forwarded requests and relayed responses
(RFC 3261 §16.11, §18.1.1, §18.2.2).

Datagrams leave through our own UDP listener of the destination's address
family, so that the Via we add names a port that receives the responses.
Streams reuse an open connection to the destination (inbound or outbound) or
open one, queueing what is to be sent until it is up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.transport.flows import DEFAULT_PORTS, FlowClosed
from homeredirect.transport.interfaces import Address, ISipNetwork
from homeredirect.transport.stream import ConnectionRegistry, SipStreamFactory, SipStreamProtocol
from homeredirect.transport.udp import SipDatagramProtocol

log = FilteredLogger()


class _Reactor(IReactorTCP, IReactorTime, IReactorCore):
    """The reactor interfaces the network uses."""


def _is_ipv6(host: str) -> bool:
    return ":" in host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@implementer(ISipNetwork)
class SipNetwork:
    def __init__(
        self,
        reactor: _Reactor,
        registry: ConnectionRegistry,
        client_tls: Callable[[str], IOpenSSLClientConnectionCreator],
        connect_timeout: float = 10.0,
    ) -> None:
        self._reactor = reactor
        self._registry = registry
        self._client_tls = client_tls
        self._connect_timeout = connect_timeout
        self._datagram: dict[bool, SipDatagramProtocol] = {}
        self._advertised: dict[str, Address] = {}
        self._local: set[tuple[str, int]] = set()
        self._stream_factories: dict[str, SipStreamFactory] = {}
        self._outbound: dict[tuple[str, str, int], SipStreamProtocol] = {}
        self._connecting: dict[tuple[str, str, int], list[bytes]] = {}

    def add_listener(self, transport: str, advertised: Address, bound: Address) -> None:
        """Record a listener: *advertised* goes in our Vias, *bound* is the socket address."""
        self._advertised.setdefault(transport, advertised)
        for host, port in (advertised, bound):
            self._local.add((host.strip("[]").lower(), port))

    def add_datagram_protocol(self, protocol: SipDatagramProtocol, bound_host: str) -> None:
        self._datagram.setdefault(_is_ipv6(bound_host), protocol)

    def add_stream_factory(self, transport: str, factory: SipStreamFactory) -> None:
        self._stream_factories.setdefault(transport, factory)

    # -- ISipNetwork ---------------------------------------------------------

    def local_via(self, transport: str) -> Address:
        try:
            return self._advertised[transport]
        except KeyError:
            raise LookupError(f"no {transport} listener") from None

    def is_local(self, host: str, port: int | None) -> bool:
        return (host.strip("[]").lower(), port or 5060) in self._local

    def send(
        self, transport: str, destination: Address, data: bytes, server_name: str | None = None
    ) -> None:
        if transport == "UDP":
            self._send_datagram(destination, data)
        elif transport in ("TCP", "TLS"):
            self._send_stream(transport, destination, data, server_name or destination[0])
        else:
            log.warn("cannot send over unsupported transport {transport}", transport=transport)

    # -- datagrams -------------------------------------------------------------

    def _send_datagram(self, destination: Address, data: bytes) -> None:
        host, port = destination
        host = host.strip("[]")
        if not _is_ip(host):
            resolving = self._reactor.resolve(host)
            resolving.addCallbacks(
                lambda address: self._send_datagram((address, port), data),
                lambda failure: log.warn(
                    "cannot resolve {host}: {error}", host=host, error=failure.getErrorMessage()
                ),
            )
            return
        protocol = self._datagram.get(_is_ipv6(host))
        if protocol is None:
            log.warn("no UDP listener for the address family of {host}", host=host)
            return
        protocol.send(data, (host, port or DEFAULT_PORTS["UDP"]))

    # -- streams -----------------------------------------------------------------

    def _send_stream(
        self, transport: str, destination: Address, data: bytes, server_name: str
    ) -> None:
        host, port = destination[0].strip("[]"), destination[1] or DEFAULT_PORTS[transport]
        key = (transport, host, port)
        connection = self._outbound.get(key) or self._registry.get(transport, (host, port))
        if connection is not None:
            try:
                connection.write(data)
                return
            except FlowClosed:
                self._outbound.pop(key, None)
        queue = self._connecting.get(key)
        if queue is not None:
            queue.append(data)
            return
        factory = self._stream_factories.get(transport)
        if factory is None:
            log.warn("no {transport} listener to connect from", transport=transport)
            return
        self._connecting[key] = [data]
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, host, port, timeout=self._connect_timeout
        )
        if transport == "TLS":
            endpoint = wrapClientTLS(self._client_tls(server_name), endpoint)
        connecting = endpoint.connect(factory)
        connecting.addCallbacks(self._connected, self._connect_failed, (key,), {}, (key,))

    def _connected(self, protocol: SipStreamProtocol, key: tuple[str, str, int]) -> None:
        self._outbound[key] = protocol
        for data in self._connecting.pop(key, []):
            try:
                protocol.write(data)
            except FlowClosed:
                log.warn("connection to {destination} closed before sending", destination=key)
                return

    def _connect_failed(self, failure: Failure, key: tuple[str, str, int]) -> None:
        dropped = self._connecting.pop(key, [])
        log.warn(
            "cannot connect to {transport} {host}:{port}: {error}; dropped {count} messages",
            transport=key[0],
            host=key[1],
            port=key[2],
            error=failure.getErrorMessage(),
            count=len(dropped),
        )
