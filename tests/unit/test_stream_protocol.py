"""The TCP/TLS protocol glue: framing into the sink, CRLF pongs, the idle
timeout and the connection limit (StringTransport and Clock, no sockets)."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from homeredirect.sip.message import Message
from homeredirect.sip.parser import MessageRejected
from homeredirect.transport.flows import IFlow
from homeredirect.transport.stream import ConnectionRegistry, SipStreamFactory, SipStreamProtocol

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[Message, IFlow]] = []
        self.rejected: list[MessageRejected] = []

    def message_received(self, message: Message, flow: IFlow) -> None:
        self.received.append((message, flow))

    def message_rejected(self, event: MessageRejected, flow: IFlow) -> None:
        self.rejected.append(event)


def factory(
    clock: Clock, sink: Sink, max_connections: int = 10, idle: float = 30.0
) -> SipStreamFactory:
    return SipStreamFactory(
        sink=sink,  # type: ignore[arg-type]
        transport_name="TCP",
        advertised=("192.0.2.1", 5060),
        registry=ConnectionRegistry(),
        max_message_size=4096,
        max_connections=max_connections,
        idle_timeout=idle,
        clock=clock,
    )


def connect(f: SipStreamFactory, port: int) -> tuple[SipStreamProtocol, StringTransport]:
    protocol = f.buildProtocol(IPv4Address("TCP", "192.0.2.4", port))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.4", port))
    protocol.makeConnection(transport)
    return protocol, transport


def test_messages_split_anywhere_reach_the_sink_with_their_flow() -> None:
    sink = Sink()
    protocol, _ = connect(factory(Clock(), sink), 40000)
    for offset in range(0, len(REGISTER), 7):
        protocol.dataReceived(REGISTER[offset : offset + 7])
    ((message, flow),) = sink.received
    assert flow.transport == "TCP" and flow.reliable and flow.remote == ("192.0.2.4", 40000)
    assert message.call_id == "c"


def test_keepalive_ping_is_answered_with_a_pong() -> None:
    protocol, transport = connect(factory(Clock(), Sink()), 40000)
    protocol.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"


def test_idle_connection_is_closed_and_activity_postpones_it() -> None:
    clock = Clock()
    protocol, transport = connect(factory(clock, Sink(), idle=30.0), 40000)
    clock.advance(20)
    protocol.dataReceived(b"\r\n\r\n")
    clock.advance(20)
    assert not transport.disconnecting
    clock.advance(11)
    assert transport.disconnecting


def test_connections_over_the_limit_are_refused_and_slots_are_freed() -> None:
    sink = Sink()
    f = factory(Clock(), sink, max_connections=2)
    first, _ = connect(f, 1)
    connect(f, 2)
    _, refused_transport = connect(f, 3)
    assert refused_transport.disconnecting
    assert f.open_connections == 2
    first.connectionLost(Failure(ConnectionDone()))
    assert f.open_connections == 1
    _, accepted = connect(f, 4)
    assert not accepted.disconnecting
    assert len(f.registry) == 2


def test_framing_error_is_reported_and_the_connection_closed() -> None:
    sink = Sink()
    protocol, transport = connect(factory(Clock(), sink), 40000)
    protocol.dataReceived(REGISTER.replace(b"Content-Length: 0", b"Content-Length: 99999"))
    (event,) = sink.rejected
    assert event.fatal and event.error.status == 513
    assert transport.disconnecting


def test_sending_on_a_closed_connection_raises_flow_closed() -> None:
    import pytest

    from homeredirect.transport.flows import FlowClosed

    protocol, _ = connect(factory(Clock(), Sink()), 40000)
    protocol.connectionLost(Failure(ConnectionDone()))
    with pytest.raises(FlowClosed):
        protocol.flow.send(b"x")
