"""`[tls_client]`: our side of TLS connections we open to other servers (RFC 5922, RFC 5923)."""

from __future__ import annotations

from pathlib import Path

from attrs import field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import FILE, PATH, to_path

__all__ = ["TlsClientConfig"]


@frozen(kw_only=True)
class TlsClientConfig:
    """`[tls_client]`: how we connect to home servers (and any server we forward to) over TLS.

    - `ca` (optional): PEM file of the CAs that sign the servers' certificates; each
      server's certificate must also name the FQDN we connect to (RFC 5922 §7.2). Without
      it, the `ca` of the first TLS `[[listen]]` entry that has one is used, else the
      system's trust store.
    - `certificate`, `private_key` (both or neither): our certificate chain (leaf first) and
      key, presented when the server asks (mutual TLS, RFC 5923 §5), so that a server
      requiring client certificates accepts us; its SAN should name our `[server].fqdn`.

    Relative paths are resolved against the configuration file's directory.
    """

    ca: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    certificate: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)
    private_key: Path | None = field(default=None, converter=to_path, validator=PATH, metadata=FILE)

    def __attrs_post_init__(self) -> None:
        if (self.certificate is None) != (self.private_key is None):
            missing = "private_key" if self.private_key is None else "certificate"
            raise InvalidField(
                missing, "a file path (certificate and private_key go together)", None
            )
