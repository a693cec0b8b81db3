"""SIP over UDP: one datagram, one message (RFC 3261 §18.1.1, §18.2.1, §18.3).

The protocol only glues the socket to the sans-IO parser and the core.  The
socket buffers are sized as production SIP servers size them (several MB): a
burst of REGISTERs must queue in the kernel, not be dropped, while the reactor
is busy.
"""

from __future__ import annotations

import socket
import sys
from typing import Protocol, cast

from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from homeredirect.logs import FilteredLogger
from homeredirect.sip.parser import MessageReceived, MessageRejected, parse_datagram
from homeredirect.transport.flows import Address, IFlow
from homeredirect.transport.sink import IMessageSink

log = FilteredLogger()

# option, the privileged variant that ignores net.core.*mem_max (Linux, needs
# CAP_NET_ADMIN), and the sysctl that caps the plain one.
_BUFFER_OPTIONS = {
    "receive": (socket.SO_RCVBUF, 33, "net.core.rmem_max"),
    "send": (socket.SO_SNDBUF, 32, "net.core.wmem_max"),
}


def size_socket_buffer(handle: socket.socket, name: str, size: int) -> int:
    """Ask for a *size*-byte socket buffer and return what the kernel granted.

    Linux silently caps SO_RCVBUF/SO_SNDBUF at net.core.rmem_max/wmem_max
    (about 208 KiB by default) and reports double the usable size; when the
    cap bites, the FORCE variant is tried (it works for root), and if the
    buffer is still short the operator is told which sysctl to raise.
    """
    option, force, sysctl = _BUFFER_OPTIONS[name]
    try:
        handle.setsockopt(socket.SOL_SOCKET, option, size)
        granted = handle.getsockopt(socket.SOL_SOCKET, option)
        if granted < size and sys.platform.startswith("linux"):
            try:
                handle.setsockopt(socket.SOL_SOCKET, force, size)
                granted = handle.getsockopt(socket.SOL_SOCKET, option)
            except OSError:
                pass
    except OSError as error:
        log.warn(
            "cannot size the UDP {name} buffer to {size}: {error}",
            name=name,
            size=size,
            error=str(error),
        )
        return 0
    if granted < size:
        log.warn(
            "UDP {name} buffer is {granted} bytes, not the {size} configured: raise {sysctl}",
            name=name,
            granted=granted,
            size=size,
            sysctl=sysctl,
        )
    return granted


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
    peer_identity = None  # datagrams carry no verified identity

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
        for name, size in zip(("receive", "send"), self._buffers, strict=True):
            size_socket_buffer(handle, name, size)
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
