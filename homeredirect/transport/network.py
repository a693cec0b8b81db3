"""Our listeners seen as one network endpoint, for sending what is not a reply
on the flow a request came in on: forwarded requests and relayed responses
(RFC 3261 §16.11, §18.1.1, §18.2.2).

Datagrams leave through our own UDP listener of the destination's address
family, so that the Via we add names a port that receives the responses.
Streams reuse an open connection to the destination (inbound or outbound) or
open one, queueing what is to be sent until it is up.

`send` returns False when it knows at once that the message cannot go (no listener to
send from, or the only connection to the address proved another server's name), so that
a client transaction reports a transport error and the proxy tries its next target at
once (RFC 3261 §17.1.4, §18.1.1) instead of waiting for Timer B or F.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.transport.flows import DEFAULT_PORTS, FlowClosed
from homeredirect.transport.interfaces import Address, ISipNetwork
from homeredirect.transport.stream import ConnectionRegistry, SipStreamFactory, SipStreamProtocol
from homeredirect.transport.tls import certificate_names
from homeredirect.transport.udp import SipDatagramProtocol

log = FilteredLogger()


class _Reactor(IReactorTCP, IReactorTime, IReactorCore):
    """The reactor interfaces the network uses."""


def _is_ipv6(host: str) -> bool:
    return ":" in host


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    # Cached: every datagram sent asks this of one of a few next hops, and parsing an
    # address each time cost more than the rest of the send.
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
        # What waits for a connection being opened, and the name it is verified for.
        self._connecting: dict[tuple[str, str, int], tuple[str, list[bytes]]] = {}
        # Who hears of a stream connection's failure or loss (ISipNetwork.watch).
        self._watchers: dict[tuple[str, str, int], dict[object, Callable[[], None]]] = {}

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
    ) -> bool:
        if transport == "UDP":
            return self._send_datagram(destination, data)
        if transport in ("TCP", "TLS"):
            return self._send_stream(transport, destination, data, server_name or destination[0])
        log.warn("cannot send over unsupported transport {transport}", transport=transport)
        return False

    def watch(
        self, transport: str, destination: Address, lost: Callable[[], None]
    ) -> Callable[[], None]:
        if transport not in ("TCP", "TLS"):
            return _not_watching
        key = (transport, destination[0].strip("[]"), destination[1] or DEFAULT_PORTS[transport])
        token = object()
        self._watchers.setdefault(key, {})[token] = lost

        def stop() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.pop(token, None)
                if not watchers:
                    del self._watchers[key]

        return stop

    def _connection_gone(self, key: tuple[str, str, int]) -> None:
        for lost in tuple(self._watchers.pop(key, {}).values()):
            lost()

    # -- datagrams -------------------------------------------------------------

    def _send_datagram(self, destination: Address, data: bytes) -> bool:
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
            return True
        protocol = self._datagram.get(_is_ipv6(host))
        if protocol is None:
            log.warn("no UDP listener for the address family of {host}", host=host)
            return False
        protocol.send(data, (host, port or DEFAULT_PORTS["UDP"]))
        return True

    # -- streams -----------------------------------------------------------------

    def _send_stream(
        self, transport: str, destination: Address, data: bytes, server_name: str
    ) -> bool:
        host, port = destination[0].strip("[]"), destination[1] or DEFAULT_PORTS[transport]
        key = (transport, host, port)
        connection = self._outbound.get(key) or self._registry.get(transport, (host, port))
        if connection is not None and not _verified_for(connection, server_name):
            # A transport error for this message only (the caller fails over at once);
            # the connection stays, for the server whose name it proved.
            log.warn(
                "not sending to {server_name} over the TLS connection to {host}:{port}, whose "
                "certificate was verified for {verified} only",
                server_name=server_name,
                host=host,
                port=port,
                verified=connection.expected_peer,
            )
            return False
        if connection is not None:
            try:
                connection.write(data)
                return True
            except FlowClosed:
                self._outbound.pop(key, None)
        pending = self._connecting.get(key)
        if pending is not None:
            verifying, queue = pending
            if transport == "TLS" and verifying != server_name.lower():
                # The connection being opened proves `verifying` only; we cannot know yet
                # whether its certificate also names `server_name`.
                log.warn(
                    "not sending to {server_name} over the TLS connection being opened to "
                    "{host}:{port} for {verifying}",
                    server_name=server_name,
                    host=host,
                    port=port,
                    verifying=verifying,
                )
                return False
            queue.append(data)
            return True
        factory = self._stream_factories.get(transport)
        if factory is None:
            log.warn("no {transport} listener to connect from", transport=transport)
            return False
        self._connecting[key] = (server_name.lower(), [data])
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, host, port, timeout=self._connect_timeout
        )
        if transport == "TLS":
            endpoint = wrapClientTLS(self._client_tls(server_name), endpoint)
        connecting = endpoint.connect(
            _OutboundFactory(factory, server_name if transport == "TLS" else None)
        )
        connecting.addCallbacks(self._connected, self._connect_failed, (key,), {}, (key,))
        return True

    def _connected(self, protocol: SipStreamProtocol, key: tuple[str, str, int]) -> None:
        self._outbound[key] = protocol
        protocol.lost.addCallback(self._outbound_lost, protocol, key)
        for data in self._connecting.pop(key, ("", []))[1]:
            try:
                protocol.write(data)
            except FlowClosed:
                log.warn("connection to {destination} closed before sending", destination=key)
                return

    def _connect_failed(self, failure: Failure, key: tuple[str, str, int]) -> None:
        _, dropped = self._connecting.pop(key, ("", []))
        log.warn(
            "cannot connect to {transport} {host}:{port}: {error}; dropped {count} messages",
            transport=key[0],
            host=key[1],
            port=key[2],
            error=failure.getErrorMessage(),
            count=len(dropped),
        )
        self._connection_gone(key)

    def _outbound_lost(
        self, _: object, protocol: SipStreamProtocol, key: tuple[str, str, int]
    ) -> None:
        if self._outbound.get(key) is protocol:
            del self._outbound[key]
        self._connection_gone(key)


def _not_watching() -> None:
    """What `SipNetwork.watch` returns for datagrams: there is nothing to stop."""


def _verified_for(connection: SipStreamProtocol, server_name: str) -> bool:
    """Whether a connection may carry requests meant for `server_name`: any connection a
    peer opened to us (responses go back on it, RFC 3261 §18.2.2), and a TLS connection we
    opened only if its server's certificate names `server_name` too (RFC 5922 §7.2), so
    that a connection verified for one home server is never reused for another at the
    same address that could not prove its name."""
    verified = connection.expected_peer
    if verified is None or verified == server_name.lower():
        return True
    assert connection.transport is not None
    peer = connection.transport.getPeerCertificate()  # type: ignore[attr-defined]
    return peer is not None and server_name.lower() in certificate_names(peer.to_cryptography())


class _OutboundFactory(Factory):
    """Builds the protocol of a connection we open from the listener's factory, telling a
    TLS connection the server name its certificate is verified against (which becomes the
    flow's `peer_identity`, and exempts it from the listener's client-certificate check)."""

    noisy = False

    def __init__(self, factory: SipStreamFactory, server_name: str | None) -> None:
        self._factory = factory
        self._server_name = server_name

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol:
        protocol = self._factory.buildProtocol(addr)
        protocol.expected_peer = None if self._server_name is None else self._server_name.lower()
        return protocol
