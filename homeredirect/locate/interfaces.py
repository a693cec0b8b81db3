"""What a proxy needs to find where a home server's requests go."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from homeredirect.locate.target import Target


class ILocator(Interface):
    """Turns a home server FQDN into the ordered targets to try (RFC 3263 §4)."""

    def locate(fqdn: str) -> Deferred[list[Target]]:
        """Fire with the targets to try, best first, never empty.

        The caller tries the first and moves to the next on a timeout, a connection failure
        or a 503 (RFC 3263 §4.3). Fails with `HomeServerNotFound` when DNS says the name
        has no usable records, `LocatorUnavailable` when DNS cannot answer (timeout,
        SERVFAIL): both mean the request cannot be routed now (503).
        """
