"""pidgin-sipe signs on with [MS-SIPAE] Kerberos through the director.

As test_pidgin_sipe.py does for NTLM, with pidgin-sipe's "authentication" set to "krb5"
(Single Sign-On off): pidgin-sipe gets alice's TGT from her password itself
(gss_acquire_cred_with_password for `alice@EXAMPLE.COM`, from the login
`EXAMPLE.COM\\alice`), answers the director's `Kerberos ... targetname=
"sip/director.example.com"` challenge with an AP-REQ for that principal, verifies the
signed 301 with the Kerberos session key (GSS_VerifyMIC), follows it to home1, does the
same there for `sip/home1.example.com` and signs on.

The realm EXAMPLE.COM is a real MIT KDC (tests/krb5_kdc.py) running inside the test's
network namespace (tests/sipe/driver.py), so that pidgin-sipe reaches it on that
namespace's loopback; client and servers read the realm's krb5.conf (KRB5_CONFIG). home1's
keytab holds only sip/home1.example.com's keys, the director's not those.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import pytest

from homeredirect.tools.certs import ensure_test_pki
from tests.integration.test_pidgin_sipe import (
    DIRECTOR,
    DIRECTOR_TCP,
    HOME,
    HOME_TCP,
    HOME_TLS,
    assert_failed_at_the_director,
    assert_signed_on_through_the_redirect,
    director_config,
    has,
    home_config,
    in_order,
)
from tests.krb5_kdc import USERS, MitKdc, kdc_available
from tests.sipe.driver import ClientResult, SipeNetwork, build_driver, sipe_unavailable

pytestmark = [
    pytest.mark.skipif(sipe_unavailable() is not None, reason=sipe_unavailable() or ""),
    pytest.mark.skipif(
        not kdc_available(), reason="MIT krb5 (krb5-kdc, krb5-admin-server, krb5-user): make test"
    ),
]

REALM = "EXAMPLE.COM"
PASSWORD = USERS["alice"]
# Her SIP URI, then her login: pidgin-sipe asks the KDC for `alice@EXAMPLE.COM` (the login
# "DOMAIN\user" is user@DOMAIN in upper case), which the servers map to alice@example.com.
LOGIN = f"alice@example.com,{REALM}\\alice"


def kerberos_auth(fqdn: str, keytab: Path) -> str:
    """An [auth] table accepting Kerberos for `sip/<fqdn>` with the keys in *keytab*."""
    return f"""
[auth]
required = true
realm = "example.com"
schemes = ["kerberos"]
targetname = "{fqdn}"
service_principal = "sip/{fqdn}"
keytab = "{keytab}"
"""


@attrs.frozen
class Run:
    """One sign-on attempt: the client's result, and what the director, home1 and the KDC
    logged meanwhile."""

    result: ClientResult
    director: str
    home: str
    kdc: str


@attrs.frozen
class Setup:
    net: SipeNetwork
    driver: Path
    kdc: MitKdc

    def kdc_log(self) -> str:
        return (self.kdc.directory / "kdc.log").read_text(errors="replace")

    def sign_on(self, password: str = PASSWORD, login: str = LOGIN, linger: int = 0) -> Run:
        """pidgin-sipe, with krb5 and the test realm, at the TCP director."""
        before = [len(self.net.log("director")), len(self.net.log("home")), len(self.kdc_log())]
        result = self.net.run_client(
            self.driver,
            server=f"{DIRECTOR}:{DIRECTOR_TCP}",
            username=login,
            password=password,
            transport="tcp",
            authentication="krb5",
            linger=linger,
            environment=self.kdc.environment(),
        )
        logs = [self.net.log("director"), self.net.log("home"), self.kdc_log()]
        director, home, kdc = (log[start:] for log, start in zip(logs, before, strict=True))
        return Run(result, director, home, kdc)


def create_principals(kdc: MitKdc) -> tuple[Path, Path]:
    """Besides MitKdc's own (alice, sip/director.example.com in `kdc.keytab`): alice/admin
    (a principal that maps to no address of record) and sip/home1.example.com in a keytab
    of its own; return the director's and home1's keytabs."""
    home_keytab = kdc.directory / "home1.keytab"
    kdc.kadmin(
        f"addprinc -pw {PASSWORD} alice/admin",
        f"addprinc -randkey sip/{HOME}",
        f"ktadd -k {home_keytab} sip/{HOME}",
    )
    return kdc.keytab, home_keytab


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The driver; a KDC for EXAMPLE.COM, a TCP director and a home server, all in one
    network namespace (the home server's configuration has a TLS listener too: hence the
    certificates)."""
    directory = tmp_path_factory.mktemp("pidgin-sipe-kerberos")
    driver = build_driver(directory)
    ensure_test_pki(directory / "pki", [DIRECTOR, HOME], ["127.0.0.1"])
    (directory / "assignments.csv").write_text(f"user,home_server\nalice@example.com,{HOME}\n")
    realm = directory / "krb5"
    realm.mkdir()
    with SipeNetwork.create([DIRECTOR, HOME], directory) as net:
        kdc = MitKdc.start(realm, REALM, inside=net.inside)
        try:
            director_keytab, home_keytab = create_principals(kdc)
            environment: Mapping[str, str] = kdc.environment()
            net.start_server("home", home_config(kerberos_auth(HOME, home_keytab)), environment)
            net.start_server(
                "director",
                director_config(
                    "tcp", DIRECTOR_TCP, HOME_TCP, kerberos_auth(DIRECTOR, director_keytab)
                ),
                environment,
            )
            net.wait_listening([DIRECTOR_TCP, HOME_TCP, HOME_TLS])
            yield Setup(net, driver, kdc)
        finally:
            kdc.stop()


def test_pidgin_sipe_signs_on_with_kerberos(setup: Setup) -> None:
    """Kerberos at the director, the signed 301 verified and followed, Kerberos at home1,
    the signed 200 verified, signed on; still connected a second later. pidgin-sipe asked
    the KDC for a ticket for each server's targetname, and each server made a security
    association for alice's principal as her address of record."""
    run = setup.sign_on(linger=1)
    result = run.result
    assert_signed_on_through_the_redirect(result, HOME_TCP)
    assert result.named("done") == [{"event": "done", "status": "0"}]
    lines = result.sipe_lines()
    assert in_order(
        lines,
        [
            has(f'Kerberos realm="SIP Communications Service", targetname="sip/{DIRECTOR}"'),
            has(f"username 'alice@{REALM}'"),
            has("signature of incoming message validated"),
            has(f'Kerberos realm="SIP Communications Service", targetname="sip/{HOME}"'),
            has(f"username 'alice@{REALM}'"),
            has("signature of incoming message validated"),
            has('Kerberos qop="auth", opaque="'),
        ],
    ), result.summary()
    assert not any("GSSAPI error" in line for line in lines), result.summary()
    for service in (DIRECTOR, HOME):
        assert f"alice@{REALM} for sip/{service}@{REALM}" in run.kdc, run.kdc
    for log in (run.director, run.home):
        assert f"for alice@{REALM} as alice@example.com from 127.0.0.1" in log, log


def test_wrong_password_gets_no_ticket(setup: Setup) -> None:
    """With a key made from the wrong password pidgin-sipe cannot decrypt the KDC's AS-REP
    (the test realm does not require pre-authentication, so the KDC answers), has no
    ticket and no AP-REQ to send, and fails with an authentication error at the director,
    which never saw a token."""
    run = setup.sign_on(password="not-" + PASSWORD)
    assert_failed_at_the_director(run.result)
    # PURPLE_CONNECTION_ERROR_AUTHENTICATION_FAILED
    assert [e["reason"] for e in run.result.named("error")] == ["2"], run.result.summary()
    assert any(
        "gss_acquire_cred_with_password (Mech): Decrypt integrity check failed" in line
        for line in run.result.sipe_lines()
    ), run.result.summary()
    assert "for sip/" not in run.kdc, run.kdc
    assert "Kerberos" not in run.director, run.director


def test_principal_mapping_to_no_address_of_record_is_refused(setup: Setup) -> None:
    """`alice/admin` gets a valid ticket for sip/director.example.com, but a principal with
    an instance authenticates as nobody: the director refuses it (403), and logs why."""
    run = setup.sign_on(login=f"alice@example.com,{REALM}\\alice/admin")
    assert_failed_at_the_director(run.result)
    # PURPLE_CONNECTION_ERROR_INVALID_SETTINGS: pidgin-sipe's "rejected by the server" (403)
    assert [e["reason"] for e in run.result.named("error")] == ["7"], run.result.summary()
    assert f"alice/admin@{REALM} for sip/{DIRECTOR}@{REALM}" in run.kdc, run.kdc
    assert f"Kerberos principal alice/admin@{REALM} from 127.0.0.1 maps to no" in run.director
