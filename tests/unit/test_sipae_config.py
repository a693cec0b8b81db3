"""`[auth]` keys for [MS-SIPAE] NTLM, read through the real loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from homeredirect.auth.factory import build_authenticator
from homeredirect.auth.sipae import NtlmSipAuthenticator, SchemeAuthenticators
from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config


def config(tmp_path: Path, **auth: Any) -> Any:
    (tmp_path / "assignments.csv").write_text("")
    (tmp_path / "ntlm.csv").write_text("user,password\nalice@example.com,Secret123\n")
    (tmp_path / "users.csv").write_text("user,password\nalice@example.com,Secret123\n")
    data = {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp"}],
        "assignments": {"path": "assignments.csv"},
        "auth": {"realm": "example.com", **auth},
    }
    return parse_config(data, "director.toml", tmp_path)


def test_ntlm_scheme_reads_its_keys(tmp_path: Path) -> None:
    auth = config(
        tmp_path, schemes=["ntlm"], ntlm_credentials="ntlm.csv", targetname="Director.Example.com"
    ).auth
    assert auth.schemes == ("ntlm",)
    assert auth.targetname == "director.example.com"
    assert (auth.sipae_version, auth.netbios_domain) == (4, "EXAMPLE")
    assert isinstance(build_authenticator(auth, Clock()), NtlmSipAuthenticator)


def test_ntlm_without_targetname_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="targetname"):
        config(tmp_path, schemes=["ntlm"], ntlm_credentials="ntlm.csv")


def test_ntlm_without_credentials_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ntlm_credentials"):
        config(tmp_path, schemes=["ntlm"], targetname="director.example.com")


def test_sipae_version_must_be_3_or_4(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sipae_version"):
        config(
            tmp_path,
            schemes=["ntlm"],
            ntlm_credentials="ntlm.csv",
            targetname="director.example.com",
            sipae_version=2,
        )


def test_ntlm_domain_rejects_a_dotted_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ntlm_domain"):
        config(
            tmp_path,
            schemes=["ntlm"],
            ntlm_credentials="ntlm.csv",
            targetname="director.example.com",
            ntlm_domain="example.com",
        )


def test_digest_and_ntlm_together_are_offered_side_by_side(tmp_path: Path) -> None:
    auth = config(
        tmp_path,
        schemes=["ntlm", "digest"],
        credentials="users.csv",
        ntlm_credentials="ntlm.csv",
        targetname="director.example.com",
    ).auth
    assert isinstance(build_authenticator(auth, Clock()), SchemeAuthenticators)
