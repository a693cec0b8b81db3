"""`[auth]` keys for [MS-SIPAE] Kerberos, read through the real loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config


def config(tmp_path: Path, **auth: Any) -> Any:
    (tmp_path / "assignments.csv").write_text("")
    (tmp_path / "sip.keytab").write_bytes(b"\x05\x02")
    data = {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp"}],
        "assignments": {"path": "assignments.csv"},
        "auth": {"realm": "example.com", **auth},
    }
    return parse_config(data, "director.toml", tmp_path)


def test_kerberos_scheme_reads_its_keys(tmp_path: Path) -> None:
    auth = config(
        tmp_path,
        schemes=["kerberos"],
        keytab="sip.keytab",
        service_principal="sip/director.example.com@SIPTEST.EXAMPLE",
        kerberos_realms={"SIPTEST.EXAMPLE": "example.com"},
    ).auth
    assert auth.schemes == ("kerberos",)
    assert auth.keytab == tmp_path / "sip.keytab"
    assert auth.kerberos_principal == "sip/director.example.com@SIPTEST.EXAMPLE"
    assert dict(auth.kerberos_realms) == {"SIPTEST.EXAMPLE": "example.com"}


def test_service_principal_defaults_to_sip_slash_targetname(tmp_path: Path) -> None:
    auth = config(tmp_path, schemes=["kerberos"], targetname="director.example.com").auth
    assert auth.kerberos_principal == "sip/director.example.com"
    assert auth.keytab is None


def test_kerberos_without_principal_or_targetname_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[auth\]\.service_principal"):
        config(tmp_path, schemes=["kerberos"])


def test_service_principal_must_be_service_slash_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[auth\]\.service_principal.*Kerberos principal"):
        config(tmp_path, schemes=["kerberos"], service_principal="director.example.com")


def test_missing_keytab_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[auth\]\.keytab.*existing file"):
        config(
            tmp_path,
            schemes=["kerberos"],
            keytab="nowhere.keytab",
            service_principal="sip/director.example.com",
        )


def test_realm_map_entry_must_name_a_domain(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'kerberos_realms\."SIPTEST.EXAMPLE".*SIP domain'):
        config(
            tmp_path,
            schemes=["kerberos"],
            service_principal="sip/director.example.com",
            kerberos_realms={"SIPTEST.EXAMPLE": "not a domain"},
        )


def test_realm_map_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kerberos_realms.*table"):
        config(
            tmp_path,
            schemes=["kerberos"],
            service_principal="sip/director.example.com",
            kerberos_realms="SIPTEST.EXAMPLE=example.com",
        )
