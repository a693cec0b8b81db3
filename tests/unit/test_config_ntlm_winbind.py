"""`[auth]` keys of the winbind NTLM backend, read through the real loader."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.task import Clock

from homeredirect.auth.factory import CredentialsFileError, build_authenticator
from homeredirect.auth.ntlm.winbind import WinbindChecker
from homeredirect.auth.sipae import NtlmSipAuthenticator
from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config


def config(tmp_path: Path, **auth: Any) -> Any:
    (tmp_path / "assignments.csv").write_text("")
    data = {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp"}],
        "assignments": {"path": "assignments.csv"},
        "auth": {
            "realm": "example.com",
            "schemes": ["ntlm"],
            "targetname": "director.example.com",
            **auth,
        },
    }
    return parse_config(data, "director.toml", tmp_path).auth


def test_file_backend_is_the_default_and_needs_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ntlm_credentials"):
        config(tmp_path)


def test_winbind_backend_needs_no_credentials_file(tmp_path: Path) -> None:
    auth = config(tmp_path, ntlm_backend="winbind")
    assert auth.ntlm_auth == ("/usr/bin/ntlm_auth",)
    assert (auth.ntlm_auth_helpers, auth.ntlm_auth_timeout) == (2, 5.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ntlm_backend", "ldap"),
        ("ntlm_auth", []),
        ("ntlm_auth", ["/usr/bin/ntlm_auth", ""]),
        ("ntlm_auth", [1]),
        ("ntlm_auth_helpers", 0),
        ("ntlm_auth_timeout", -1),
    ],
)
def test_bad_winbind_keys_are_named(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        config(tmp_path, **{"ntlm_backend": "winbind", key: value})


def test_factory_hands_the_helper_service_to_the_caller(tmp_path: Path) -> None:
    auth = config(
        tmp_path,
        ntlm_backend="winbind",
        ntlm_auth=[sys.executable, "helper.py"],
        ntlm_domain="HRAD",
    )
    services: list[IService] = []
    authenticator = build_authenticator(auth, reactor, reactor=reactor, services=services)
    assert isinstance(authenticator, NtlmSipAuthenticator)
    [checker] = services
    assert isinstance(checker, WinbindChecker)
    assert not checker.running


def test_factory_names_a_missing_ntlm_auth(tmp_path: Path) -> None:
    auth = config(tmp_path, ntlm_backend="winbind", ntlm_auth=["/nonexistent/ntlm_auth"])
    with pytest.raises(CredentialsFileError, match="/nonexistent/ntlm_auth"):
        build_authenticator(auth, reactor, reactor=reactor, services=[])


def test_factory_refuses_winbind_without_a_service_list(tmp_path: Path) -> None:
    auth = config(tmp_path, ntlm_backend="winbind", ntlm_auth=[sys.executable])
    with pytest.raises(ValueError, match="service list"):
        build_authenticator(auth, Clock())
