"""What the SIP core needs from the network layer to send requests and relay
responses that do not belong to a flow it was handed (proxying, RFC 3261 §16)."""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import Interface

Address = tuple[str, int]


class ISipNetwork(Interface):
    """Our listeners, seen as one network endpoint."""

    def local_via(transport: str) -> Address:
        """The sent-by (host, port) to put in our own Via for *transport*
        ('UDP', 'TCP' or 'TLS'); raises LookupError if we have no such listener."""

    def is_local(host: str, port: int | None) -> bool:
        """True if *host*:*port* names one of our listeners (a Via we added)."""

    def send(
        transport: str, destination: Address, data: bytes, server_name: str | None = None
    ) -> bool:
        """Send *data* over *transport* to *destination* (host may be a name).

        Streams reuse an open connection to *destination* or open one (over TLS
        verifying the certificate against *server_name*, default the host).  Never
        raises: failures are logged.  Returns False when the message is known at once
        not to go (no listener to send from, or the TLS connection to *destination*
        proved another name than *server_name*), for a client transaction to report as
        a transport error (RFC 3261 §17.1.4); True when it was sent or queued, later
        failures being reported through `watch`.
        """

    def watch(transport: str, destination: Address, lost: Callable[[], None]) -> Callable[[], None]:
        """Call *lost* once if the stream connection to *destination* fails to open or
        closes, so that the client transactions sending on it hear of a transport error
        (RFC 3261 §17.1.4) instead of waiting for Timer B or F.

        Returns the function that stops watching (call it when the transaction no longer
        cares, so that nothing is kept per transaction).  Datagrams have no connection:
        for 'UDP' *lost* is never called.
        """
