"""Make a throw-away PKI for tests and local runs: a CA and leaf certificates it signs.

SIP over TLS needs a server certificate whose SAN names the host (RFC 5922 §7.1), and home
servers need their own, signed by a CA the director trusts. This writes ECDSA P-256 keys and
certificates valid for 90 days::

    python -m homeredirect.tools.certs --out run/ \\
        [--hostname director.example.com] [--ip 127.0.0.1] [--leaf home1.example.com] [--force]

producing `ca.pem`/`ca.key`, `server.pem` (the leaf followed by the CA: a chain, as TLS
servers send it) and `server.key`, plus `<hostname>.pem`/`.key` for each `--leaf`. Existing
usable files are kept; an expired, soon-expiring, foreign-CA or wrong-name certificate is
replaced, and `--force` replaces everything. Never use these keys in production: they are
unencrypted and the CA key sits next to them.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateFiles",
    "TestPki",
    "ensure_leaf",
    "ensure_test_pki",
    "main",
]

VALIDITY = datetime.timedelta(days=90)
"""How long minted certificates are valid."""

_BACKDATE = datetime.timedelta(hours=1)  # tolerate a peer's clock running a little behind
_RENEW_BEFORE = datetime.timedelta(days=1)  # replace certificates this close to expiry
_CA_NAME = "homeredirect test CA"


@frozen
class CertificateFiles:
    """A PEM certificate (chain, leaf first) and its PEM private key."""

    certificate: Path
    private_key: Path


@frozen
class TestPki:
    """The files `ensure_test_pki` wrote: the CA, and the server's chain and key."""

    __test__ = False  # a value, not a pytest test class, despite its name

    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path

    @property
    def server(self) -> CertificateFiles:
        """The server certificate chain and key, as one value."""
        return CertificateFiles(self.server_certificate, self.server_key)


def ensure_test_pki(
    out_dir: Path,
    hostnames: Sequence[str],
    ips: Sequence[str],
    *,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> TestPki:
    """Make sure `out_dir` holds a test CA and a server certificate for `hostnames` and `ips`.

    The server certificate's SAN lists `hostnames`, `localhost` and `ips`; its subject CN is
    the first hostname. Usable existing files are kept (see the module docstring), so tests
    and `make run` can call this every time. `now` defaults to the current time.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    pki = TestPki(
        ca_certificate=out_dir / "ca.pem",
        ca_key=out_dir / "ca.key",
        server_certificate=out_dir / "server.pem",
        server_key=out_dir / "server.key",
    )
    ca = _load_ca(pki, now) if not force else None
    if ca is None:
        ca = _make_ca(now)
        _write(pki.ca_key, pki.ca_certificate, *ca)
        force = True  # certificates from any previous CA no longer verify
    names = [*hostnames, "localhost"]
    _ensure_leaf(pki.server, ca, names, ips, force=force, now=now)
    return pki


def ensure_leaf(
    pki: TestPki,
    hostname: str,
    *,
    ips: Sequence[str] = (),
    force: bool = False,
    now: datetime.datetime | None = None,
) -> CertificateFiles:
    """Make sure `<hostname>.pem`/`.key` exist next to the CA, signed by it, for `hostname`.

    For other servers in a test deployment, such as a home server. Raise `ValueError` if
    `pki`'s CA files are missing or unusable.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    ca = _load_ca(pki, now)
    if ca is None:
        raise ValueError(f"no usable CA in {pki.ca_certificate}: run ensure_test_pki first")
    directory = pki.ca_certificate.parent
    files = CertificateFiles(directory / f"{hostname}.pem", directory / f"{hostname}.key")
    _ensure_leaf(files, ca, [hostname], ips, force=force, now=now)
    return files


_CA = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _load_ca(pki: TestPki, now: datetime.datetime) -> _CA | None:
    """The CA on disk, or None if it is missing, unreadable or expiring."""
    try:
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _current(certificate, now):
        return None
    if certificate.public_key() != key.public_key():
        return None
    return key, certificate


def _current(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return (
        certificate.not_valid_before_utc <= now
        and now + _RENEW_BEFORE < certificate.not_valid_after_utc
    )


def _make_ca(now: datetime.datetime) -> _CA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "homeredirect tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME),
        ]
    )
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        _validity(x509.CertificateBuilder(), now)
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(key_id, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _validity(builder: x509.CertificateBuilder, now: datetime.datetime) -> x509.CertificateBuilder:
    return builder.not_valid_before(now - _BACKDATE).not_valid_after(now + VALIDITY)


def _subject_alternative_names(names: Sequence[str], ips: Sequence[str]) -> list[x509.GeneralName]:
    dns: list[x509.GeneralName] = [x509.DNSName(name) for name in dict.fromkeys(names)]
    addresses: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)
    ]
    return dns + addresses


def _ensure_leaf(
    files: CertificateFiles,
    ca: _CA,
    names: Sequence[str],
    ips: Sequence[str],
    *,
    force: bool,
    now: datetime.datetime,
) -> None:
    wanted = _subject_alternative_names(names, ips)
    if not force and _usable_leaf(files, ca, wanted, now):
        return
    key, certificate = _make_leaf(ca, names[0], wanted, now)
    _write(files.private_key, files.certificate, key, certificate, ca[1])


def _usable_leaf(
    files: CertificateFiles, ca: _CA, wanted: Sequence[x509.GeneralName], now: datetime.datetime
) -> bool:
    """Whether the leaf on disk is current, signed by `ca`, matches its key and names `wanted`."""
    try:
        certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        key = serialization.load_pem_private_key(files.private_key.read_bytes(), password=None)
        certificate.verify_directly_issued_by(ca[1])
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return (
        _current(certificate, now)
        and certificate.public_key() == key.public_key()
        and set(wanted) <= set(names.value)
    )


def _make_leaf(
    ca: _CA, common_name: str, names: Sequence[x509.GeneralName], now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key, ca_certificate = ca
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key_id = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    certificate = (
        _validity(x509.CertificateBuilder(), now)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Both: SIP servers accept TLS connections and open them (RFC 5922 §7.2, §7.3).
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id.value),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _write(
    key_path: Path,
    certificate_path: Path,
    key: ec.EllipticCurvePrivateKey,
    *chain: x509.Certificate,
) -> None:
    """Write the key readable by its owner only, then the certificate chain."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key_pem)
    certificate_path.write_bytes(
        b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in chain)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m homeredirect.tools.certs",
        description="Make a test CA and certificates signed by it (never for production).",
    )
    parser.add_argument("--out", type=Path, default=Path("run"), help="directory (default run/)")
    parser.add_argument(
        "--hostname",
        action="append",
        help="server certificate DNS name, repeatable (default director.example.com)",
    )
    parser.add_argument(
        "--ip",
        action="append",
        help="server certificate IP address, repeatable (default 127.0.0.1, ::1)",
    )
    parser.add_argument(
        "--leaf", action="append", default=[], help="also mint <name>.pem/.key, repeatable"
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    options = parser.parse_args(argv)
    hostnames = options.hostname or ["director.example.com"]
    ips = options.ip or ["127.0.0.1", "::1"]
    try:
        pki = ensure_test_pki(options.out, hostnames, ips, force=options.force)
        leaves = [ensure_leaf(pki, name, force=options.force) for name in options.leaf]
    except ValueError as e:  # a malformed --ip or --hostname
        parser.error(str(e))
    for path in (pki.ca_certificate, pki.ca_key, pki.server_certificate, pki.server_key):
        print(path)
    for leaf in leaves:
        print(leaf.certificate)
        print(leaf.private_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
