"""Fakes for unit tests of logic (never a substitute for the integration tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from homeredirect.director.responses import ResponseFactory
from homeredirect.proxy.stateful import ProxySettings, StatefulProxy
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment, IAssignmentResolver
from homeredirect.sip.message import Message
from homeredirect.sip.parser import MessageReceived, parse_datagram
from homeredirect.transaction.client import ClientTransactionTable
from homeredirect.transport.flows import Address, IFlow
from homeredirect.transport.interfaces import ISipNetwork


@implementer(IFlow)
class RecordingFlow:
    """An IFlow that keeps what is sent."""

    def __init__(self, transport: str = "UDP", remote: Address = ("192.0.2.10", 5099)) -> None:
        self.transport = transport
        self.reliable = transport != "UDP"
        self.remote = remote
        self.local = ("127.0.0.1", 5060)
        self.peer_identity: str | None = None
        self.sent: list[tuple[bytes, Address | None]] = []

    def send(self, data: bytes, destination: Address | None = None) -> None:
        self.sent.append((data, destination))

    def messages(self) -> list[Message]:
        parsed = [parse_datagram(data) for data, _ in self.sent]
        return [event.message for event in parsed if isinstance(event, MessageReceived)]


@implementer(IAssignmentResolver)
class TableResolver:
    """Resolves from a dict; `pending` keeps lookups unanswered until fired."""

    def __init__(self, table: Mapping[str, str], *, down: bool = False, hold: bool = False) -> None:
        self.table = dict(table)
        self.down = down
        self.hold = hold
        self.lookups: list[AddressOfRecord] = []
        self.pending: list[Deferred[Assignment | None]] = []

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        self.lookups.append(aor)
        if self.down:
            return fail(DirectoryUnavailable("directory is down"))
        home = self.table.get(str(aor))
        if self.hold:
            held: Deferred[Assignment | None] = Deferred()
            self.pending.append(held)
            return held
        return succeed(Assignment(home) if home else None)


@implementer(ISipNetwork)
class RecordingNetwork:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Address, bytes, str | None]] = []
        self.watchers: dict[tuple[str, Address], list[Callable[[], None]]] = {}
        # Destinations whose sends fail at once (`send` returns False).
        self.refused: set[tuple[str, Address]] = set()

    def local_via(self, transport: str) -> Address:
        if transport == "TLS":
            raise LookupError("no TLS")
        return ("192.0.2.1", 5060)

    def is_local(self, host: str, port: int | None) -> bool:
        return (host, port or 5060) == ("192.0.2.1", 5060)

    def send(
        self, transport: str, destination: Address, data: bytes, server_name: str | None = None
    ) -> bool:
        if (transport, destination) in self.refused:
            return False
        self.sent.append((transport, destination, data, server_name))
        return True

    def watch(
        self, transport: str, destination: Address, lost: Callable[[], None]
    ) -> Callable[[], None]:
        """Keep *lost* so that a test can play a lost connection with `lose`."""
        key = (transport, destination)
        self.watchers.setdefault(key, []).append(lost)

        def stop() -> None:
            watching = self.watchers.get(key, [])
            if lost in watching:
                watching.remove(lost)
            if not watching:
                self.watchers.pop(key, None)

        return stop

    def lose(self, transport: str, destination: Address) -> None:
        for lost in self.watchers.pop((transport, destination), []):
            lost()


def stateful_proxy(
    network: ISipNetwork, clock: IReactorTime, settings: ProxySettings | None = None
) -> StatefulProxy:
    """A stateful proxy on *clock* sending through *network*, as makeService builds it."""
    return StatefulProxy(
        network=network,
        clients=ClientTransactionTable(clock, timer_c=180.0),
        responses=ResponseFactory("test", iter(f"ptag{n}" for n in range(100_000)).__next__),
        secret=b"secret",
        settings=settings or ProxySettings(),
        clock=clock,
    )
