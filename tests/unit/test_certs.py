"""The test PKI tool: a CA, a server chain that verifies, and leaves for other servers."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store
from OpenSSL import SSL

from homeredirect.tools.certs import TestPki, ensure_leaf, ensure_test_pki, main

NOW = datetime.datetime(2030, 1, 15, 12, 0, tzinfo=datetime.UTC)


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def make(out: Path, now: datetime.datetime = NOW, **kwargs: bool) -> TestPki:
    return ensure_test_pki(out, ["director.example.com"], ["127.0.0.1", "::1"], now=now, **kwargs)


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return make(tmp_path / "run")


def test_server_file_holds_the_leaf_then_the_ca(pki: TestPki) -> None:
    leaf, ca = load_chain(pki.server_certificate)
    assert ca == x509.load_pem_x509_certificate(pki.ca_certificate.read_bytes())
    assert leaf.issuer == ca.subject


@pytest.mark.parametrize(
    "name",
    [
        DNSName("director.example.com"),
        DNSName("localhost"),
        IPAddress(ipaddress.ip_address("127.0.0.1")),
        IPAddress(ipaddress.ip_address("::1")),
    ],
)
def test_server_chain_verifies_for_each_name(pki: TestPki, name: DNSName | IPAddress) -> None:
    leaf, ca = load_chain(pki.server_certificate)
    verifier = PolicyBuilder().store(Store([ca])).time(NOW).build_server_verifier(name)
    assert verifier.verify(leaf, []) == [leaf, ca]


def test_server_certificate_lists_hostnames_localhost_and_ips(pki: TestPki) -> None:
    leaf, _ = load_chain(pki.server_certificate)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["director.example.com", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_keys_are_p256_and_private_to_the_owner(pki: TestPki) -> None:
    leaf, ca = load_chain(pki.server_certificate)
    for certificate in (leaf, ca):
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
    assert pki.server_key.stat().st_mode & 0o077 == 0
    assert pki.ca_key.stat().st_mode & 0o077 == 0


def test_certificates_are_valid_for_90_days(pki: TestPki) -> None:
    leaf, _ = load_chain(pki.server_certificate)
    assert leaf.not_valid_after_utc == NOW + datetime.timedelta(days=90)
    assert leaf.not_valid_before_utc < NOW


def test_pyopenssl_loads_the_chain_and_matching_key(pki: TestPki) -> None:
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate_chain_file(str(pki.server_certificate))
    context.use_privatekey_file(str(pki.server_key))
    context.check_privatekey()


def test_existing_files_are_kept(tmp_path: Path) -> None:
    pki = make(tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    make(tmp_path, now=NOW + datetime.timedelta(days=30))
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert pki.server.certificate == pki.server_certificate


def test_force_replaces_everything(tmp_path: Path) -> None:
    pki = make(tmp_path)
    ca_before = pki.ca_certificate.read_bytes()
    server_before = pki.server_certificate.read_bytes()
    make(tmp_path, force=True)
    assert pki.ca_certificate.read_bytes() != ca_before
    assert pki.server_certificate.read_bytes() != server_before


def test_certificates_near_expiry_are_replaced(tmp_path: Path) -> None:
    pki = make(tmp_path)
    later = NOW + datetime.timedelta(days=89, hours=12)
    make(tmp_path, now=later)
    leaf, ca = load_chain(pki.server_certificate)
    assert leaf.not_valid_after_utc == later + datetime.timedelta(days=90)
    PolicyBuilder().store(Store([ca])).time(later).build_server_verifier(
        DNSName("director.example.com")
    ).verify(leaf, [])


def test_server_certificate_missing_a_name_is_replaced(tmp_path: Path) -> None:
    make(tmp_path)
    pki = ensure_test_pki(tmp_path, ["other.example.com"], ["127.0.0.1"], now=NOW)
    leaf, _ = load_chain(pki.server_certificate)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "other.example.com" in names.get_values_for_type(x509.DNSName)


def test_leaf_for_a_home_server_is_signed_by_the_same_ca(pki: TestPki) -> None:
    files = ensure_leaf(pki, "home1.example.com", now=NOW)
    assert files.certificate == pki.ca_certificate.parent / "home1.example.com.pem"
    assert files.private_key == pki.ca_certificate.parent / "home1.example.com.key"
    leaf, ca = load_chain(files.certificate)
    store = Store(load_chain(pki.ca_certificate))
    server = (
        PolicyBuilder().store(store).time(NOW).build_server_verifier(DNSName("home1.example.com"))
    )
    assert server.verify(leaf, []) == [leaf, ca]
    client = PolicyBuilder().store(store).time(NOW).build_client_verifier()
    assert client.verify(leaf, []).subjects == [x509.DNSName("home1.example.com")]


def test_leaf_without_a_ca_is_refused(tmp_path: Path) -> None:
    pki = TestPki(
        ca_certificate=tmp_path / "ca.pem",
        ca_key=tmp_path / "ca.key",
        server_certificate=tmp_path / "server.pem",
        server_key=tmp_path / "server.key",
    )
    with pytest.raises(ValueError, match="no usable CA"):
        ensure_leaf(pki, "home1.example.com", now=NOW)


def test_command_line_writes_the_pki_and_leaves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert (
        main(["--out", str(out), "--hostname", "d.example.com", "--leaf", "home1.example.com"]) == 0
    )
    assert sorted(path.name for path in out.iterdir()) == [
        "ca.key",
        "ca.pem",
        "home1.example.com.key",
        "home1.example.com.pem",
        "server.key",
        "server.pem",
    ]
    assert str(out / "server.pem") in capsys.readouterr().out
    leaf, _ = load_chain(out / "server.pem")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["d.example.com", "localhost"]


def test_command_line_rejects_a_bad_ip(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--out", str(tmp_path), "--ip", "localhost"])
    assert exited.value.code == 2
