"""A director run in-process for the cost benchmarks (bench/*_costs.py).

The real service from `makeService`, its UDP protocol on a fake port whose socket
records what is sent, and a `task.Clock` as the reactor: datagrams are handed to
`SipDatagramProtocol.datagramReceived` as the reactor would, and nothing touches the
network. Standard library, Twisted and homeredirect only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from homeredirect.config.load import load_config
from homeredirect.service import HomeRedirectService, makeService
from homeredirect.transport.udp import SipDatagramProtocol

__all__ = ["InProcessDirector"]


class _Socket:
    """The handle `SipDatagramProtocol.startProtocol` sizes and then sends through."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def setsockopt(self, *args: object) -> None:
        pass

    def getsockopt(self, *args: object) -> int:
        return 1 << 30

    def sendto(self, data: bytes, destination: object) -> int:
        self.sent.append((data, destination))
        return len(data)


class _Port:
    maxPacketSize = 8192

    def __init__(self, host: str, port: int) -> None:
        self.handle = _Socket()
        self._address = IPv4Address("UDP", host, port)

    def getHandle(self) -> _Socket:
        return self.handle

    def getHost(self) -> IPv4Address:
        return self._address

    def stopListening(self) -> None:
        pass


class _Reactor(Clock):
    """A `task.Clock` that hands `listenUDP` a fake port (the only reactor call a
    director with file assignments makes at start-up besides timers)."""

    def __init__(self) -> None:
        super().__init__()
        self.protocols: list[tuple[SipDatagramProtocol, _Port]] = []

    def listenUDP(self, port: int, protocol: SipDatagramProtocol, interface: str = "") -> _Port:
        fake = _Port(interface, port)
        protocol.makeConnection(fake)  # type: ignore[arg-type]
        self.protocols.append((protocol, fake))
        return fake


class InProcessDirector:
    """The director of `config` (one UDP listener): `receive(datagram, source)` as the
    reactor would call it; `sent` holds (datagram, destination) pairs as sent."""

    def __init__(self, config: Path) -> None:
        self.reactor = _Reactor()
        self.service: HomeRedirectService = makeService(load_config(config), reactor=self.reactor)
        for listener in self.service.listeners:
            listener.startService()
        [(protocol, port)] = self.reactor.protocols
        self.receive: Callable[[bytes, tuple[str, int]], None] = protocol.datagramReceived
        self.sent = port.handle.sent
