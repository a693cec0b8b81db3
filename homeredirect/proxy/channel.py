"""A client transaction's way to its next hop, over our listeners (`ISipNetwork`).

RFC 3261 §17.1 leaves the transport to the transaction's channel; this one sends
through the network's sockets (our UDP listener, a reused or new TCP/TLS connection)
and turns a stream connection that fails to open, or is lost while the transaction
waits, into a transport error (§17.1.4), so that the proxy answers 503 at once instead
of after Timer B or F.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from homeredirect.director.targets import Target
from homeredirect.transaction.interfaces import IClientChannel, IClientTransaction
from homeredirect.transport.interfaces import ISipNetwork

__all__ = ["NetworkChannel"]


@implementer(IClientChannel)
class NetworkChannel:
    """Sends to one `Target`; `close()` when its transaction no longer waits."""

    __slots__ = (
        "_destination",
        "_network",
        "_stop_watching",
        "_target",
        "_transaction",
        "_transport",
        "reliable",
    )

    def __init__(self, network: ISipNetwork, target: Target) -> None:
        self._network = network
        self._target = target
        self._transport = target.transport.upper()
        self._destination = (target.host, target.port)
        self.reliable = target.transport != "udp"
        self._transaction: IClientTransaction | None = None
        self._stop_watching: Callable[[], None] | None = None

    def attach(self, transaction: IClientTransaction) -> None:
        """Report the connection's failure or loss to *transaction* from now on."""
        if self._transaction is None:
            self._transaction = transaction

    def send(self, data: bytes) -> bool:
        # Only a connection can be lost: datagrams have nothing to watch (`ISipNetwork.watch`).
        if self.reliable and self._stop_watching is None:
            self._stop_watching = self._network.watch(
                self._transport, self._destination, self._lost
            )
        return self._network.send(self._transport, self._destination, data, self._target.fqdn)

    def close(self) -> None:
        """Stop watching the connection: the transaction has its final answer."""
        stop, self._stop_watching = self._stop_watching, None
        self._transaction = None
        if stop is not None:
            stop()

    def _lost(self) -> None:
        self._stop_watching = None
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            transaction.transport_error()
