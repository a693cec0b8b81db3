"""Home servers as places to send clients and requests to.

The `[home_servers."FQDN"]` entries of the configuration say how each home
server is reached (`Config.home_server` supplies defaults for an FQDN with no
entry: its own name, TLS, 5061).
"""

from __future__ import annotations

from attrs import frozen

from homeredirect.config.schema import Config


@frozen
class Target:
    """How to reach one home server: for Contact headers and for forwarding."""

    fqdn: str
    host: str
    port: int
    transport: str  # "udp" | "tcp" | "tls"

    def contact_uri(self) -> str:
        """The URI a redirect names (Contact of a 3xx, RFC 3261 §21.3.2)."""
        return f"sip:{self.fqdn}:{self.port};transport={self.transport}"


class HomeServerTargets:
    """Look up (primary, backup) targets by home server FQDN."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def target(self, fqdn: str) -> Target:
        entry = self._config.home_server(fqdn)
        return Target(entry.fqdn, entry.host, entry.port, str(entry.transport))

    def __call__(self, fqdn: str) -> tuple[Target, Target | None]:
        entry = self._config.home_server(fqdn)
        return self.target(fqdn), (self.target(entry.backup) if entry.backup else None)
