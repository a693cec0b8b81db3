"""SIP over UDP: one datagram, one message (RFC 3261 §18.1.1, §18.2.1, §18.3).

The protocol only glues the socket to the sans-IO parser and the core.  The
socket buffers are sized as production SIP servers size them (several MB): a
burst of REGISTERs must queue in the kernel, not be dropped, while the reactor
is busy.
"""

from __future__ import annotations

import socket
from typing import Protocol, cast

from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.sip.parser import MessageReceived, MessageRejected, parse_datagram
from homeredirect.transport.flows import Address, IFlow
from homeredirect.transport.sink import IMessageSink

log = FilteredLogger()


class _UDPPort(Protocol):
    """What startProtocol uses of the port listenUDP connects us to (udp.Port)."""

    maxPacketSize: int

    def getHandle(self) -> socket.socket: ...


@implementer(IFlow)
class DatagramFlow:
    """The (listener, remote address) pair a datagram arrived on."""

    __slots__ = ("_protocol", "local", "remote")

    transport = "UDP"
    reliable = False

    def __init__(self, protocol: SipDatagramProtocol, remote: Address) -> None:
        self._protocol = protocol
        self.remote = remote
        self.local = protocol.advertised

    def send(self, data: bytes, destination: Address | None = None) -> None:
        self._protocol.send(data, destination or self.remote)


class SipDatagramProtocol(DatagramProtocol):
    noisy = False

    def __init__(
        self,
        sink: IMessageSink,
        advertised: Address,
        max_message_size: int,
        receive_buffer: int,
        send_buffer: int,
    ) -> None:
        self._sink = sink
        self.advertised = advertised
        self._max = max_message_size
        self._buffers = (receive_buffer, send_buffer)

    def startProtocol(self) -> None:
        port = cast(_UDPPort, self.transport)
        handle = port.getHandle()
        for option, size in zip((socket.SO_RCVBUF, socket.SO_SNDBUF), self._buffers, strict=True):
            try:
                handle.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError as error:
                log.warn(
                    "cannot size UDP socket buffer to {size}: {error}", size=size, error=str(error)
                )
        # Twisted reads at most maxPacketSize bytes a datagram; SIP allows up to 64 KiB.
        port.maxPacketSize = max(self._max + 1, 65_536)
        # Replies go straight to the socket: Port.write would re-check on every
        # datagram that the address is an IP literal, which ours always are
        # (sources of datagrams, or names resolved by SipNetwork first).
        self._sendto = handle.sendto

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        try:
            event = parse_datagram(datagram, self._max)
            if event is None:
                return
            flow = DatagramFlow(self, (addr[0], addr[1]))
            if type(event) is MessageReceived:
                self._sink.message_received(event.message, flow)
            elif type(event) is MessageRejected:
                self._sink.message_rejected(event, flow)
        except Exception:
            log.failure("failed to handle a datagram from {remote}", remote=addr)

    def send(self, data: bytes, destination: Address) -> None:
        try:
            self._sendto(data, destination)
        except OSError as error:
            # UDP is unreliable (RFC 3261 §18.1.1): a full buffer or an ICMP error
            # costs this datagram only; retransmission recovers.
            log.warn(
                "UDP send to {destination} failed: {error}",
                destination=destination,
                error=str(error),
            )
