"""NTLM accounts from a CSV file (`[auth].ntlm_credentials`) and the checker over them.

Two layouts, told apart by the header line::

    user,nt_hash                      user,password
    alice@example.com,<32 hex>        alice@example.com,secret

`user` is the AOR; `nt_hash` is MD4(UTF-16LE(password)) ([MS-NLMP] §3.3.1), the form
Windows and Samba store (`homeredirect.auth.ntlm.keys.nt_hash` computes it), so the file
need not hold passwords. The file is read
once at start-up and rejected whole for one bad line, naming it.

NTLM names a user `DOMAIN\\user` (or `user@dns.domain`); `AccountNames` maps that onto
the AOR, comparing user names case-insensitively as Windows does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from attrs import frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from homeredirect.auth.accounts_file import read_accounts
from homeredirect.auth.ntlm.interfaces import INtlmResponseChecker, NtlmLogon, VerifiedLogon
from homeredirect.auth.ntlm.keys import nt_hash, ntlmv2_session_base_key
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["AccountNames", "NtHashChecker", "NtlmAccountsError", "read_ntlm_accounts"]

_HEX = frozenset("0123456789abcdef")
_DUMMY_HASH = b"\0" * 16


class NtlmAccountsError(Exception):
    """`str()` is `path:line: reason`."""


def read_ntlm_accounts(path: Path) -> Mapping[AddressOfRecord, bytes]:
    """NT hashes by AOR; raise `NtlmAccountsError` naming the file and line."""
    return read_accounts(
        path, NtlmAccountsError, _check_header, _secret, "user,nt_hash or user,password"
    )


def _check_header(cells: list[str], path: Path, number: int) -> list[str]:
    if cells not in (["user", "nt_hash"], ["user", "password"]):
        raise NtlmAccountsError(
            f"{path}:{number}: expected the header user,nt_hash or user,password; "
            f"got {','.join(cells)}"
        )
    return cells


def _secret(aor: AddressOfRecord, row: dict[str, str], path: Path, number: int) -> bytes:
    if "password" in row:
        if not row["password"]:
            raise NtlmAccountsError(f"{path}:{number}: empty password")
        return nt_hash(row["password"])
    value = row["nt_hash"].lower()
    if len(value) != 32 or not _HEX.issuperset(value):
        raise NtlmAccountsError(f"{path}:{number}: nt_hash must be 32 hex digits")
    return bytes.fromhex(value)


@frozen
class AccountNames:
    """Maps NTLM's (user, domain) onto an AOR.

    `user@host` as the user name (a UPN) names that AOR; otherwise the NetBIOS domain
    `netbios_domain` or the DNS domain `sip_domain` (or no domain) put the user in
    `sip_domain`, and any other dotted domain is taken as the user's SIP domain.
    """

    netbios_domain: str
    sip_domain: str

    def candidate(self, user: str, domain: str) -> tuple[str, str] | None:
        """(user part, host), both lowercased, or None for a foreign NetBIOS domain."""
        if "@" in user:
            name, _, host = user.rpartition("@")
            return name.lower(), host.lower()
        if not domain or domain.upper() == self.netbios_domain.upper():
            return user.lower(), self.sip_domain.lower()
        if "." in domain:
            return user.lower(), domain.lower()
        return None


@implementer(INtlmResponseChecker)
class NtHashChecker:
    """Checks NTLMv2 responses against NT hashes held in memory.

    An unknown user is checked against a dummy hash, so that it costs what a wrong
    password costs and both fail alike.
    """

    def __init__(self, accounts: Mapping[AddressOfRecord, bytes], names: AccountNames) -> None:
        self._names = names
        self._by_name = {(aor.user.lower(), aor.host): (aor, h) for aor, h in accounts.items()}

    def check(self, logon: NtlmLogon) -> Deferred[VerifiedLogon]:
        key = self._names.candidate(logon.user, logon.domain)
        found = None if key is None else self._by_name.get(key)
        secret = _DUMMY_HASH if found is None else found[1]
        base_key = ntlmv2_session_base_key(
            secret, logon.user, logon.domain, logon.server_challenge, logon.nt_response
        )
        if found is None or base_key is None:
            return fail(UnauthorizedLogin("NTLM logon failed"))
        return succeed(VerifiedLogon(found[0], base_key))
