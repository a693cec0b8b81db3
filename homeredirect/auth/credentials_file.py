"""Digest credentials from a CSV file (`[auth].credentials`), for small setups.

Two layouts, told apart by the header line::

    user,password
    alice@example.com,secret

    user,ha1_md5,ha1_sha256,ha1_sha512_256
    alice@example.com,939e7578ed9e3c518a452acee763bce9,...,...

`user` is the AOR. A hashed column holds H(A1) = H(username:realm:password) (RFC 7616
§3.4.2) computed with the username a SIP client sends, the AOR's user part (`alice`);
hashed columns may be left empty, and an algorithm with no hash for a user fails for that
user. Passwords in the file let either spelling of the username (`alice` or
`alice@example.com`) authenticate. The file is read once at start-up, in a thread, and the
whole file is rejected for one bad line, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from attrs import frozen

from homeredirect.auth.accounts_file import read_accounts
from homeredirect.auth.digest import DigestAlgorithm, ha1_for
from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["CredentialsFileError", "DigestAccount", "read_credentials"]

_HASH_COLUMNS = {
    "ha1_md5": DigestAlgorithm.MD5,
    "ha1_sha256": DigestAlgorithm.SHA_256,
    "ha1_sha512_256": DigestAlgorithm.SHA_512_256,
}
_HEX_LENGTH = {
    DigestAlgorithm.MD5: 32,
    DigestAlgorithm.SHA_256: 64,
    DigestAlgorithm.SHA_512_256: 64,
}


class CredentialsFileError(Exception):
    """`str()` is `path:line: reason`."""


@frozen
class DigestAccount:
    """One user's Digest secrets: a password, or H(A1) per algorithm for the user part."""

    aor: AddressOfRecord
    password: str | None
    ha1: Mapping[DigestAlgorithm, str]

    def ha1_for(self, algorithm: DigestAlgorithm, username: str, realm: str) -> str | None:
        """H(A1) for the username as the client wrote it, or None if we cannot know it."""
        if self.password is not None:
            return _password_ha1(algorithm, username, realm, self.password)
        if username != self.aor.user:
            return None
        return self.ha1.get(algorithm)


@lru_cache(maxsize=4096)
def _password_ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """H(A1) of a password in the file, computed once per spelling of the username rather
    than for every answer (a busy director checks the same users over and over); bounded,
    since a username may be spelled many ways (`alice@EXAMPLE.com`)."""
    return ha1_for(algorithm, username, realm, password)


def read_credentials(path: Path) -> Mapping[AddressOfRecord, DigestAccount]:
    """Read the file; raise `CredentialsFileError` naming the file and line."""
    return read_accounts(
        path, CredentialsFileError, _check_header, _account, "user,password or user,ha1_..."
    )


def _check_header(cells: list[str], path: Path, number: int) -> list[str]:
    if cells == ["user", "password"]:
        return cells
    if cells[:1] == ["user"] and len(cells) > 1 and all(c in _HASH_COLUMNS for c in cells[1:]):
        if len(set(cells)) == len(cells):
            return cells
    raise CredentialsFileError(
        f"{path}:{number}: expected the header user,password or user followed by "
        f"{', '.join(_HASH_COLUMNS)}; got {','.join(cells)}"
    )


def _account(aor: AddressOfRecord, row: dict[str, str], path: Path, number: int) -> DigestAccount:
    if "password" in row:
        if not row["password"]:
            raise CredentialsFileError(f"{path}:{number}: empty password for {aor}")
        return DigestAccount(aor, row["password"], MappingProxyType({}))
    hashes: dict[DigestAlgorithm, str] = {}
    for column, algorithm in _HASH_COLUMNS.items():
        value = row.get(column, "").lower()
        if not value:
            continue
        if len(value) != _HEX_LENGTH[algorithm] or any(c not in "0123456789abcdef" for c in value):
            raise CredentialsFileError(
                f"{path}:{number}: {column} must be {_HEX_LENGTH[algorithm]} hex digits"
            )
        hashes[algorithm] = value
    if not hashes:
        raise CredentialsFileError(f"{path}:{number}: no hash given for {aor}")
    return DigestAccount(aor, None, MappingProxyType(hashes))
