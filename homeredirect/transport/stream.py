"""SIP over TCP and TLS (RFC 3261 §18.3): one protocol for both.

Messages are framed by Content-Length by the sans-IO `StreamParser`; CRLFCRLF
keep-alive pings are answered with CRLF (RFC 5626 §3.5.1); an idle connection
is closed after the configured timeout; when the open connection limit is
reached, new connections are closed at once.  Open connections are kept in a
`ConnectionRegistry` by remote address, which is how a response relayed by the
stateless proxy finds the connection its request came in on (RFC 3261 §18.2.2).

Over TLS, the flow's `peer_identity` is set once the handshake completes: the server name a
connection we opened was verified against, or the client certificate's name that the
listener's `PeerCheck` accepted; a connection the check refuses is aborted, and nothing it
sent reaches the core.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress, IHandshakeListener, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.sip.parser import KeepAlivePing, MessageReceived, MessageRejected, StreamParser
from homeredirect.transport.flows import Address, FlowClosed, IFlow
from homeredirect.transport.sink import IMessageSink
from homeredirect.transport.tls import PeerCheck, PeerRefused, certificate_names

log = FilteredLogger()

# connectionLost's default reason (Twisted always passes one).
_CONNECTION_LOST = Failure(ConnectionError())


def _address(address: IAddress) -> Address:
    host = getattr(address, "host", "")
    port = getattr(address, "port", 0)
    return str(host), int(port)


class ConnectionRegistry:
    """Open stream connections by (transport, remote host, remote port)."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, str, int], SipStreamProtocol] = {}

    def add(self, protocol: SipStreamProtocol) -> None:
        self._connections[protocol.key] = protocol

    def remove(self, protocol: SipStreamProtocol) -> None:
        if self._connections.get(protocol.key) is protocol:
            del self._connections[protocol.key]

    def get(self, transport: str, destination: Address) -> SipStreamProtocol | None:
        return self._connections.get((transport, destination[0], destination[1]))

    def __len__(self) -> int:
        return len(self._connections)

    def close_all(self, clock: IReactorTime, grace: float = 2.0) -> Deferred[None]:
        """Close every connection (service stop); abort those still open after *grace* s."""
        protocols = list(self._connections.values())
        closing = gatherResults([protocol.lost for protocol in protocols])
        for protocol in protocols:
            assert protocol.transport is not None  # registered connections are connected
            protocol.transport.loseConnection()
        deadline = clock.callLater(grace, _abort_open, protocols)

        def closed(_: object) -> None:
            if deadline.active():
                deadline.cancel()

        return closing.addCallback(closed)


def _abort_open(protocols: list[SipStreamProtocol]) -> None:
    for protocol in protocols:
        if protocol.connected:
            assert protocol.transport is not None
            protocol.transport.abortConnection()


@implementer(IFlow)
class StreamFlow:
    """A connection seen as a flow; sending on it after it closed raises FlowClosed."""

    __slots__ = ("_protocol", "local", "peer_identity", "remote", "transport")

    reliable = True

    def __init__(
        self, protocol: SipStreamProtocol, transport: str, remote: Address, local: Address
    ) -> None:
        self._protocol = protocol
        self.transport = transport
        self.remote = remote
        self.local = local
        self.peer_identity: str | None = None

    def send(self, data: bytes, destination: Address | None = None) -> None:
        self._protocol.write(data)


_IDENTITY_ONLY = PeerCheck()


@implementer(IHandshakeListener)
class SipStreamProtocol(Protocol, TimeoutMixin):
    """One TCP or TLS connection, inbound or outbound."""

    # TCP, or TLS over TCP (TLSMemoryBIOProtocol provides what the TCP transport does).
    transport: ITCPTransport | None
    flow: StreamFlow
    key: tuple[str, str, int]
    #: For a TLS connection we open: the server name its certificate is verified against.
    expected_peer: str | None = None
    #: True while an accepted connection waits for its peer's certificate to be checked.
    _awaiting_peer = False

    def __init__(self, factory: SipStreamFactory) -> None:
        self._factory = factory
        self._parser = StreamParser(factory.max_message_size)
        self._open = False
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        factory = self._factory
        remote = _address(self.transport.getPeer())
        self.key = (factory.transport_name, remote[0], remote[1])
        self.flow = StreamFlow(self, factory.transport_name, remote, factory.advertised)
        if not factory.admit(self):
            log.warn(
                "refused {transport} connection from {remote}: {limit} connections open",
                transport=factory.transport_name,
                remote=remote,
                limit=factory.max_connections,
            )
            self.transport.abortConnection()
            return
        self._open = True
        self._awaiting_peer = factory.peer_check is not None and self.expected_peer is None
        self.setTimeout(factory.idle_timeout)  # type: ignore[no-untyped-call]

    def handshakeCompleted(self) -> None:
        """TLS is up: record who the peer is, or close if the listener does not accept it."""
        if self.expected_peer is not None:  # the client options verified the server's name
            self.flow.peer_identity = self.expected_peer
            return
        assert self.transport is not None
        peer = self.transport.getPeerCertificate()  # type: ignore[attr-defined]
        certificate = None if peer is None else peer.to_cryptography()
        try:
            identity = (self._factory.peer_check or _IDENTITY_ONLY).identity(certificate)
        except PeerRefused as refused:
            log.warn(
                "refused TLS peer {remote} ({names}): {reason}",
                remote=self.flow.remote,
                names=[] if certificate is None else certificate_names(certificate),
                reason=str(refused),
            )
            self.transport.abortConnection()
            return
        self.flow.peer_identity = identity
        self._awaiting_peer = False

    def dataReceived(self, data: bytes) -> None:
        if self._awaiting_peer:
            return  # not yet (or never) accepted: nothing reaches the core
        self.resetTimeout()  # type: ignore[no-untyped-call]
        sink = self._factory.sink
        for event in self._parser.feed(data):
            try:
                if type(event) is MessageReceived:
                    sink.message_received(event.message, self.flow)
                elif type(event) is KeepAlivePing:
                    assert self.transport is not None
                    self.transport.write(b"\r\n")
                elif type(event) is MessageRejected:
                    sink.message_rejected(event, self.flow)
                    if event.fatal:
                        assert self.transport is not None
                        self.transport.loseConnection()
            except Exception:
                log.failure("failed to handle a message from {remote}", remote=self.flow.remote)

    def write(self, data: bytes) -> None:
        """Send *data* on this connection, or raise FlowClosed if it has gone."""
        if not self._open:
            raise FlowClosed(f"connection to {self.flow.remote} is closed")
        assert self.transport is not None  # open, so connected
        self.resetTimeout()  # type: ignore[no-untyped-call]
        self.transport.write(data)

    def timeoutConnection(self) -> None:
        log.info(
            "closing idle {transport} connection {remote}",
            transport=self.key[0],
            remote=self.flow.remote,
        )
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = _CONNECTION_LOST) -> None:
        was_open = self._open
        self._open = False
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if hasattr(self, "key"):
            self._factory.release(self, was_open)
        self.lost.callback(None)
        if was_open and reason.check(SSL.Error):
            # A failed handshake (RFC 5246 alert, bad certificate...) costs only this connection.
            log.info(
                "TLS connection {remote} failed: {reason}",
                remote=self.flow.remote,
                reason=str(reason.value),
            )


class SipStreamFactory(Factory):
    """Makes SipStreamProtocols for one listener (or for outbound connections)."""

    protocol = SipStreamProtocol
    noisy = False

    def __init__(
        self,
        *,
        sink: IMessageSink,
        transport_name: str,
        advertised: Address,
        registry: ConnectionRegistry,
        max_message_size: int,
        max_connections: int,
        idle_timeout: float,
        clock: IReactorTime,
        peer_check: PeerCheck | None = None,
    ) -> None:
        self.sink = sink
        self.transport_name = transport_name
        self.advertised = advertised
        self.registry = registry
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.peer_check = peer_check  # TLS listeners that check client certificates
        self.open_connections = 0

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol:
        protocol = SipStreamProtocol(self)
        # TimeoutMixin's (unannotated) hook for the clock it schedules idle timeouts on.
        protocol.callLater = self.clock.callLater  # type: ignore[method-assign, assignment]
        return protocol

    def admit(self, protocol: SipStreamProtocol) -> bool:
        if self.open_connections >= self.max_connections:
            return False
        self.open_connections += 1
        self.registry.add(protocol)
        return True

    def release(self, protocol: SipStreamProtocol, was_open: bool) -> None:
        if was_open:
            self.open_connections -= 1
        self.registry.remove(protocol)
