"""`Target`: one place to send a home server's requests to, the unit of failover."""

from __future__ import annotations

from attrs import frozen


@frozen
class Target:
    """How to reach one home server: for Contact headers and for forwarding.

    `fqdn` is the home server's own name, whatever `host` is: a redirect names it, and a TLS
    connection verifies the server's certificate against it (RFC 5922 §4.2), even when
    `host` is an address that SRV and A/AAAA records led to.
    """

    fqdn: str
    host: str
    port: int
    transport: str  # "udp" | "tcp" | "tls"

    def contact_uri(self) -> str:
        """The URI a redirect names (Contact of a 3xx, RFC 3261 §21.3.2)."""
        return f"sip:{self.fqdn}:{self.port};transport={self.transport}"
