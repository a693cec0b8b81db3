"""The NTLM credentials file and the NT-hash checker."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.cred.error import UnauthorizedLogin
from zope.interface.verify import verifyObject

from homeredirect.auth.ntlm.accounts import (
    AccountNames,
    NtHashChecker,
    NtlmAccountsError,
    read_ntlm_accounts,
)
from homeredirect.auth.ntlm.interfaces import INtlmResponseChecker, NtlmLogon
from homeredirect.auth.ntlm.keys import nt_hash
from homeredirect.resolve.interfaces import AddressOfRecord

ALICE = AddressOfRecord("alice", "example.com")
NAMES = AccountNames("EXAMPLE", "example.com")


def test_hash_and_password_files_give_the_same_secret(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(f"user,nt_hash\nalice@example.com,{nt_hash('pw').hex()}\n")
    (tmp_path / "b.csv").write_text("user,password\n# comment\nalice@example.com,pw\n")
    assert read_ntlm_accounts(tmp_path / "a.csv") == read_ntlm_accounts(tmp_path / "b.csv")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("user,ha1\n", ":1: expected the header"),
        ("user,nt_hash\nalice@example.com,abc\n", ":2: nt_hash must be 32 hex digits"),
        ("user,password\nalice,pw\n", ":2: expected a user such as"),
        ("user,password\nalice@example.com,a\nalice@example.com,b\n", ":3: alice@example.com"),
        ("", "no header line"),
    ],
)
def test_bad_files_are_refused_naming_the_line(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "u.csv").write_text(text)
    with pytest.raises(NtlmAccountsError, match=reason):
        read_ntlm_accounts(tmp_path / "u.csv")


@pytest.mark.parametrize(
    ("user", "domain", "expected"),
    [
        ("Alice", "EXAMPLE", ("alice", "example.com")),
        ("alice", "example", ("alice", "example.com")),
        ("alice", "", ("alice", "example.com")),
        ("alice@Other.org", "", ("alice", "other.org")),
        ("alice", "other.org", ("alice", "other.org")),
        ("alice", "OTHER", None),
    ],
)
def test_account_names_map_ntlm_names_onto_aors(
    user: str, domain: str, expected: tuple[str, str] | None
) -> None:
    assert NAMES.candidate(user, domain) == expected


def test_checker_provides_the_interface_and_fails_unknown_users_like_wrong_ones() -> None:
    checker = NtHashChecker({ALICE: nt_hash("pw")}, NAMES)
    assert verifyObject(INtlmResponseChecker, checker)
    response = b"\0" * 16 + b"\x01\x01" + b"\0" * 30
    failures = []
    for user in ("alice", "mallory"):
        logon = NtlmLogon(user, "EXAMPLE", b"\0" * 8, response)
        checker.check(logon).addErrback(lambda f: failures.append(f.trap(UnauthorizedLogin)))
    assert failures == [UnauthorizedLogin, UnauthorizedLogin]
