"""Checking assignments on their way into and out of a store (SQL, Redis, file).

Stores hold plain text written by other tools as well as by us, so a value read back is
checked before it becomes an `Assignment`, and a value about to be written is checked before
anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable

from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import AssignmentWriteError
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment

__all__ = ["assignment_from_store", "checked_moves"]

log = FilteredLogger()


def assignment_from_store(value: object, key: str, directory: str) -> Assignment | None:
    """The assignment a stored home value names, or None when the value is not an FQDN.

    A bad value is logged as an error with the store's `key` and the director answers the
    user 404, as for an unknown user (README "Assignment backends"): the store does not say
    where the user belongs, and no other answer would bring them home. Never raises.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return Assignment(value)
        except ValueError:
            pass
    log.error(
        "bad assignment in {directory}: {key} has home server {value!r}, not an FQDN;"
        " answering as for an unknown user",
        directory=directory,
        key=key,
        value=value,
    )
    return None


def checked_moves(moves: Iterable[tuple[AddressOfRecord, str]]) -> dict[str, str]:
    """The moves as `{str(aor): fqdn}` (normalised, the last move of an AOR winning); raise
    `AssignmentWriteError` naming the first home server that is not an FQDN, before any
    store is touched."""
    checked: dict[str, str] = {}
    for aor, home in moves:
        try:
            checked[str(aor)] = Assignment(home).home_server
        except ValueError:
            raise AssignmentWriteError(
                f"cannot assign {aor} to {home!r}: not a home server FQDN"
            ) from None
    return checked
