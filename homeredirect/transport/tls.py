"""TLS for SIP listeners (RFC 3261 §26.2.1, RFC 5630), with certificates that
can be replaced while the server runs, and TLS between servers (RFC 5922, RFC 5923):
which servers a listener accepts, and how we verify the servers we connect to.

Certificates are renewed every 90 days in many deployments; restarting a SIP
server for that drops every registered client's connection.  A
`ReloadableServerContext` builds each new connection from the *current* OpenSSL
context, so `reload()` (on SIGHUP) affects only
connections made afterwards; established connections keep the context they
were made with.  A failed reload keeps the old certificate and says why.

Between servers, each side proves its name with its certificate. A client verifies the
server's certificate against the FQDN it meant to reach and the configured CA
(`client_tls_creator`), and presents its own certificate when it has one (mutual TLS). A
listener with `require_client_certificate` refuses a handshake without a client
certificate signed by its CA, and with `allowed_peers` (`PeerCheck`) it closes, after the
handshake, any connection whose certificate names none of the allowed FQDNs. Names are
dNSName subjectAltNames, compared exactly: RFC 5922 §7.2 forbids wildcard matching of SIP
domains, and the Common Name is used only when a certificate has no dNSName at all
(RFC 5922 §7.1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from attrs import field, frozen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from zope.interface import implementer

from homeredirect.logs import FilteredLogger

if TYPE_CHECKING:  # the interface is public only through the functions' annotations
    from twisted.internet._sslverify import IOpenSSLTrustRoot

log = FilteredLogger()

_PEM = Encoding.PEM

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
    require_client_certificate: bool = False  # fail the handshake without a verified one


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
    if files.require_client_certificate:
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_verified)
    elif files.request_client_certificate:
        context.set_verify(SSL.VERIFY_PEER, _accept_verified)
    # Sessions resumed by ID must stay bound to this server's verification settings.
    context.set_session_id(b"homeredirect-sip")
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


# -- identities of servers -------------------------------------------------------------


class PeerRefused(Exception):
    """A TLS peer's certificate does not name a server we accept."""


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for, lowercased: its dNSName subjectAltNames, or its
    Common Name when it has none (RFC 5922 §7.1)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(attribute.value).lower() for attribute in common]
    return [name.lower() for name in names.value.get_values_for_type(x509.DNSName)]


def _lowercase_names(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name.lower() for name in names)


@frozen
class PeerCheck:
    """Which verified client certificates a listener accepts, and whom they identify.

    With `allowed` FQDNs, a certificate must name one of them exactly (no wildcards, RFC
    5922 §7.2); that name is the peer's identity. With none, any certificate the CA
    verified is accepted, and its first DNS name (without a wildcard) is the identity.
    """

    allowed: tuple[str, ...] = field(default=(), converter=_lowercase_names)

    def identity(self, certificate: x509.Certificate | None) -> str | None:
        """The peer's verified FQDN, or None (no certificate, none required); raise
        `PeerRefused` if `allowed` is set and the certificate names none of it."""
        if certificate is None:
            if self.allowed:
                raise PeerRefused("no client certificate")
            return None
        names = certificate_names(certificate)
        if not self.allowed:
            return next((name for name in names if "*" not in name), None)
        for name in names:
            if name in self.allowed:
                return name
        raise PeerRefused(f"certificate names {names}, none of them an allowed peer")


def client_tls_creator(
    ca: Path | None,
    certificate: Path | None = None,
    private_key: Path | None = None,
) -> Callable[[str], IOpenSSLClientConnectionCreator]:
    """How we open TLS connections to other servers: verifying the server's certificate
    against the FQDN given to the returned function and against the CAs in `ca` (every
    certificate of the PEM file; the system trust store if None), TLS 1.2 at least, and
    presenting `certificate` (a chain, leaf first) with `private_key` when given (mutual
    TLS). The files are read once, here; raise `CertificateError` if they cannot be used.
    """
    try:
        trust = platformTrust() if ca is None else _trust_root(ca)
    except (OSError, ValueError, crypto.Error) as error:
        raise CertificateError(f"cannot use CA file {ca}: {error}") from None
    options: dict[str, object] = {"raiseMinimumTo": TLSVersion.TLSv1_2}
    client_certificate: PrivateCertificate | None = None
    if certificate is not None and private_key is not None:
        try:
            chain = x509.load_pem_x509_certificates(certificate.read_bytes())
            client_certificate = PrivateCertificate.loadPEM(
                chain[0].public_bytes(_PEM).decode() + private_key.read_text()
            )
        except (OSError, ValueError, crypto.Error, SSL.Error) as error:
            raise CertificateError(
                f"cannot use client certificate {certificate} with key {private_key}: {error}"
            ) from None
        if chain[1:]:
            options["extraCertChain"] = [crypto.X509.from_cryptography(c) for c in chain[1:]]

    def creator(server_name: str) -> IOpenSSLClientConnectionCreator:
        return optionsForClientTLS(
            server_name,
            trustRoot=trust,
            clientCertificate=client_certificate,
            extraCertificateOptions=options,
        )

    return creator


def _trust_root(ca: Path) -> IOpenSSLTrustRoot:
    certificates = x509.load_pem_x509_certificates(ca.read_bytes())
    root: IOpenSSLTrustRoot = trustRootFromCertificates(
        [Certificate.loadPEM(c.public_bytes(_PEM)) for c in certificates]
    )
    return root
