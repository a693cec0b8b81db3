"""TLS for SIP listeners (RFC 3261 §26.2.1, RFC 5630), with certificates that
can be replaced while the server runs.

Certificates are renewed every 90 days in many deployments; restarting a SIP
server for that drops every registered client's connection.  A
`ReloadableServerContext` builds each new connection from the *current* OpenSSL
context, so `reload()` (on SIGHUP) affects only
connections made afterwards; established connections keep the context they
were made with.  A failed reload keeps the old certificate and says why.
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from homeredirect.logs import FilteredLogger

log = FilteredLogger()

#: Forward-secret AEAD suites for TLS 1.2; TLS 1.3 suites are OpenSSL's defaults.
_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


class CertificateError(Exception):
    """A certificate, key or CA file could not be loaded or does not match."""


@frozen
class TlsFiles:
    certificate: Path  # PEM: the leaf first, then intermediates (a chain)
    private_key: Path
    ca: Path | None = None
    request_client_certificate: bool = False


def build_server_context(files: TlsFiles) -> SSL.Context:
    """An OpenSSL server context: TLS 1.2 minimum, the configured chain and key,
    and, when asked, a request (not a demand) for a client certificate verified
    against the CA."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_TICKET)
    context.set_cipher_list(_CIPHERS)
    try:
        context.use_certificate_chain_file(str(files.certificate))
        context.use_privatekey_file(str(files.private_key))
        context.check_privatekey()
        if files.ca is not None:
            context.load_verify_locations(str(files.ca))
    except SSL.Error as error:
        raise CertificateError(
            f"cannot use certificate {files.certificate} with key {files.private_key}"
            f"{' and CA ' + str(files.ca) if files.ca else ''}: {_describe(error)}"
        ) from None
    if files.request_client_certificate:
        context.set_verify(SSL.VERIFY_PEER, _accept_verified)
    return context


def _accept_verified(
    connection: SSL.Connection, x509: object, errno: int, depth: int, ok: int
) -> bool:
    return bool(ok)


def _describe(error: SSL.Error) -> str:
    details = (
        [":".join(str(part) for part in item if part) for item in error.args[0]]
        if error.args
        else []
    )
    return "; ".join(details) or "unknown OpenSSL error"


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerContext:
    """Makes each new server-side TLS connection from the current context."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._context = build_server_context(files)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._context, None)

    def reload(self) -> bool:
        """Load the files again; on success new connections use them. Never raises."""
        try:
            self._context = build_server_context(self.files)
        except CertificateError as error:
            log.error("keeping the current TLS certificate: {error}", error=str(error))
            return False
        log.info("reloaded TLS certificate {certificate}", certificate=str(self.files.certificate))
        return True
