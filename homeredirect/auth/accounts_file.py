"""Reading a CSV file of accounts by address of record: the Digest credentials file
(`[auth].credentials`) and the NTLM one (`[auth].ntlm_credentials`) alike.

Both are read once at start-up and rejected whole for one bad line, naming the file and
the line; blank lines and lines starting with `#` are skipped; the first other line is the
header, which says the layout; `user` (the first column) is the AOR, listed once. Only the
header's layouts and what the other columns hold differ, so those are passed in.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from homeredirect.resolve.interfaces import AddressOfRecord

__all__ = ["read_accounts"]

_T = TypeVar("_T")


def read_accounts(
    path: Path,
    error: type[Exception],
    check_header: Callable[[list[str], Path, int], list[str]],
    account: Callable[[AddressOfRecord, dict[str, str], Path, int], _T],
    layouts: str,
) -> Mapping[AddressOfRecord, _T]:
    """Each row's `account` (given its AOR and the cells by column name) by AOR.

    `check_header` returns the header line's cells or raises; `layouts` names the headers
    for a file without any. Every problem raises `error` naming `path` and the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read: {e}") from e
    rows = csv.reader(io.StringIO(text))
    accounts: dict[AddressOfRecord, _T] = {}
    header: list[str] | None = None
    for row in rows:
        number = rows.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if header is None:
            header = check_header(cells, path, number)
            continue
        if len(cells) != len(header):
            raise error(
                f"{path}:{number}: expected {len(header)} columns ({','.join(header)}), "
                f"got {len(cells)}"
            )
        try:
            aor = AddressOfRecord.parse(cells[0])
        except ValueError:
            raise error(
                f"{path}:{number}: expected a user such as alice@example.com, got {cells[0]!r}"
            ) from None
        if aor in accounts:
            raise error(f"{path}:{number}: {aor} is listed twice")
        accounts[aor] = account(aor, dict(zip(header, cells, strict=True)), path, number)
    if header is None:
        raise error(f"{path}: no header line ({layouts})")
    return MappingProxyType(accounts)
