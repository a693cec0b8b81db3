"""The Active Directory preset of the LDAP backend against a real Samba AD domain controller.

tests/samba_ad.py provisions the domain in a network namespace of its own, with the Lync
schema attributes and Lync-shaped pools and users. The lookups run through
`build_ldap_source` (what the service uses) in tests/ldap_lookup.py, inside that namespace,
once per way a director binds to AD:

- `simple`: an ordinary domain account (no administrative rights), simple bind over
  StartTLS, the certificate verified against the domain controller's CA;
- `gssapi-tls`: SASL GSSAPI from a keytab over StartTLS (AD refuses SASL sealing inside TLS,
  so the bind must not ask for it);
- `gssapi`: SASL GSSAPI from a keytab over plain LDAP, with Kerberos sealing instead of TLS.

What AD adds to the slapd tests: DN-syntax home attributes naming the pool's service object,
pools in the Configuration partition and in the System container, continuation references
in every search from the domain root, access rights of a non-administrative account, and
Kerberos. Starting the domain controller takes 10 to 20 seconds, once for the module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homeredirect.tools.certs import ensure_test_pki
from tests.samba_ad import (
    ADMIN_DN,
    ADMIN_PASSWORD,
    BASE_DN,
    BIND_DN,
    BIND_PASSWORD,
    POOL1_FQDN,
    POOL2_FQDN,
    POOLS_DN,
    SambaDomainController,
    samba_ad_unavailable,
)

REPOSITORY = Path(__file__).resolve().parents[2]

# Injection probes (RFC 4515 metacharacters in the user part): unescaped, the first and
# the last would find alice, and the second every SIP user.
INJECTION_AORS = (
    "al*ce@example.com",
    "*@example.com",
    "*)(sAMAccountName=alice)(msRTCSIP-PrimaryUserAddress=*@example.com",
)
LOOKUPS = (
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "dave@example.com",
    "nobody@example.com",
    *INJECTION_AORS,
    "alice@example.com",  # again: her pool's DN is resolved by now
)

pytestmark = pytest.mark.skipif(
    samba_ad_unavailable() is not None, reason=samba_ad_unavailable() or ""
)


@pytest.fixture(scope="module")
def domain_controller() -> Iterator[SambaDomainController]:
    dc = SambaDomainController.start()
    try:
        yield dc
    finally:
        dc.stop()


def bind_settings(dc: SambaDomainController, mode: str) -> dict[str, Any]:
    """`[assignments]` keys (AD preset) for one way of binding."""
    settings: dict[str, Any] = {"uris": [dc.uri], "base_dn": BASE_DN, "preset": "ad"}
    if mode in ("simple", "gssapi-tls"):
        settings.update(starttls=True, ca=str(dc.ca))
    if mode == "simple":
        settings.update(bind_dn=BIND_DN, bind_password=BIND_PASSWORD)
    elif mode.startswith("gssapi"):
        settings.update(sasl_mechanism="GSSAPI", keytab=str(dc.keytab))
    return settings


def run_lookups(
    dc: SambaDomainController, tmp_path: Path, settings: dict[str, Any], **plan: Any
) -> dict[str, Any]:
    """Run tests/ldap_lookup.py in the domain controller's namespace; its JSON report.

    The process gets the realm's krb5.conf but no credential cache: the resolver must get
    its Kerberos credentials from the keytab by itself."""
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"config": settings, **plan}))
    env = dc.environment()
    del env["KRB5CCNAME"]
    result = subprocess.run(
        dc.in_namespace([sys.executable, "-m", "tests.ldap_lookup", str(plan_file)]),
        cwd=REPOSITORY,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


@pytest.fixture(scope="module", params=["simple", "gssapi-tls", "gssapi"])
def report(
    request: pytest.FixtureRequest,
    domain_controller: SambaDomainController,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The AORs in LOOKUPS looked up in order, with one way of binding."""
    mode: str = request.param
    return run_lookups(
        domain_controller,
        tmp_path_factory.mktemp(f"ad-{mode}"),
        bind_settings(domain_controller, mode),
        lookups=list(LOOKUPS),
    )


@pytest.fixture
def lookups(report: dict[str, Any]) -> dict[str, Any]:
    """What each AOR in LOOKUPS resolved to."""
    outcomes: dict[str, Any] = report["lookups"]
    return outcomes


def test_user_homed_on_lync_pool_resolves_to_pool_fqdn(lookups: dict[str, Any]) -> None:
    """alice's home is `CN=Lc Services,CN=Microsoft,CN=1:1,...` (Configuration partition);
    the FQDN is on CN=1:1, two levels up."""
    assert lookups["alice@example.com"] == {"home": POOL1_FQDN}


def test_pool_dn_is_read_once_then_cached(report: dict[str, Any]) -> None:
    """alice's first lookup reads her entry and walks up her pool's DN to the FQDN; the
    second reads her entry only."""
    first, again = report["searches_per_lookup"][0], report["searches_per_lookup"][-1]
    assert (first, again) == (4, 1), report["searches_per_lookup"]


def test_user_homed_on_ocs_2007_pool_in_system_container_resolves(
    lookups: dict[str, Any],
) -> None:
    assert lookups["carol@example.com"] == {"home": POOL2_FQDN}


def test_user_disabled_for_sip_is_unknown(lookups: dict[str, Any]) -> None:
    """bob has a home pool, but msRTCSIP-UserEnabled FALSE."""
    assert lookups["bob@example.com"] == {"home": None}


def test_directory_user_without_sip_attributes_is_unknown(lookups: dict[str, Any]) -> None:
    assert lookups["dave@example.com"] == {"home": None}


def test_user_not_in_directory_is_unknown(lookups: dict[str, Any]) -> None:
    assert lookups["nobody@example.com"] == {"home": None}


@pytest.mark.parametrize("aor", INJECTION_AORS)
def test_filter_metacharacters_in_aor_match_nobody(lookups: dict[str, Any], aor: str) -> None:
    """RFC 4515 escaping: the AOR is compared literally, so these find no one (unescaped,
    they would find alice, or several users)."""
    assert lookups[aor] == {"home": None}


def test_simple_bind_without_tls_is_directory_unavailable_not_unknown(
    domain_controller: SambaDomainController, tmp_path: Path
) -> None:
    """AD refuses a simple bind in clear text (strong authentication required): lookups
    must fail as the directory being unavailable (503), never as an unknown user (404)."""
    settings = bind_settings(domain_controller, "simple")
    del settings["starttls"], settings["ca"]
    report = run_lookups(domain_controller, tmp_path, settings, lookups=["alice@example.com"])
    outcome = report["lookups"]["alice@example.com"]
    assert "DirectoryUnavailable" in outcome.get("kinds", ()), outcome
    assert "Transport encryption required" in outcome["message"], outcome


def test_certificate_from_another_ca_is_directory_unavailable(
    domain_controller: SambaDomainController, tmp_path: Path
) -> None:
    """StartTLS verifies the domain controller's certificate against `ca`: with another CA
    the connection is refused, and lookups fail as unavailable (503), not unknown (404)."""
    other = ensure_test_pki(tmp_path / "other-ca", ["dc1.ad.example.com"], [])
    settings = bind_settings(domain_controller, "simple")
    settings["ca"] = str(other.ca_certificate)
    report = run_lookups(domain_controller, tmp_path, settings, lookups=["alice@example.com"])
    outcome = report["lookups"]["alice@example.com"]
    assert "DirectoryUnavailable" in outcome.get("kinds", ()), outcome


def test_move_by_non_administrative_account_is_refused(
    domain_controller: SambaDomainController, tmp_path: Path
) -> None:
    """The bind account may read but not write msRTCSIP-PrimaryHomeServer: the move is
    reported as refused (insufficient access), not swallowed, and nothing changes."""
    settings = bind_settings(domain_controller, "simple")
    settings["pool_base_dn"] = POOLS_DN
    report = run_lookups(
        domain_controller,
        tmp_path,
        settings,
        move=["carol@example.com", POOL1_FQDN],
        lookups=["carol@example.com"],
    )
    assert report["move"]["error"] == "AssignmentWriteError", report["move"]
    assert "insufficient access" in report["move"]["message"].lower(), report["move"]
    assert report["lookups"]["carol@example.com"] == {"home": POOL2_FQDN}


def test_move_writes_pool_service_object_dn_that_resolves_back(
    domain_controller: SambaDomainController, tmp_path: Path
) -> None:
    """An account allowed to write (here the domain administrator) moves erin from pool 2
    to pool 1: AD's DN-syntax attribute takes the pool's service object DN, found under
    `pool_base_dn` by its FQDN, and a fresh lookup resolves it back to that FQDN."""
    settings = bind_settings(domain_controller, "simple")
    settings.update(bind_dn=ADMIN_DN, bind_password=ADMIN_PASSWORD, pool_base_dn=POOLS_DN)
    report = run_lookups(
        domain_controller,
        tmp_path,
        settings,
        move=["erin@example.com", POOL1_FQDN],
        lookups=["erin@example.com"],
    )
    assert report["move"] == {"moved": True}
    assert report["lookups"]["erin@example.com"] == {"home": POOL1_FQDN}
