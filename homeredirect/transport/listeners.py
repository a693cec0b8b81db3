"""Listeners as services: each `[[listen]]` entry becomes one `ListenerService`.

A listener binds when the service starts and unbinds when it stops; once bound
it reports its address (which matters for port 0, used by tests) to whoever
needs it -- the network, for our Vias.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort

Address = tuple[str, int]


class ListenerService(Service):
    """Binds one listening socket for as long as the service runs."""

    port: IListeningPort | None = None

    def __init__(
        self,
        description: str,
        listen: Callable[[], IListeningPort],
        bound: Callable[[Address], None],
    ) -> None:
        self.description = description
        self._listen = listen
        self._bound = bound

    def startService(self) -> None:
        self.port = self._listen()
        host = self.port.getHost()
        self._bound((host.host, host.port))  # type: ignore[attr-defined]
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return None
        # maybeDeferred waits for a returned Deferred; its overloads cannot express that
        # for a function returning `Deferred[None] | None`.
        return cast("Deferred[None]", maybeDeferred(port.stopListening))

    @property
    def address(self) -> Address:
        """The bound (host, port); only while running."""
        assert self.port is not None, f"{self.description} is not listening"
        host = self.port.getHost()
        return host.host, host.port  # type: ignore[attr-defined]
