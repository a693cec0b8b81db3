"""Why an assignment could not be looked up or loaded."""

from __future__ import annotations

from pathlib import Path

__all__ = ["AssignmentFileError", "AssignmentWriteError", "DirectoryUnavailable"]


class DirectoryUnavailable(Exception):
    """The assignment backend cannot answer now (down, timed out, not loaded yet).

    Distinct from "unknown user" (a resolver fires with None for that): the director
    answers 503 with Retry-After (RFC 3261 §21.5.4) rather than 404, so the client retries
    instead of concluding the user does not exist.
    """


class AssignmentFileError(Exception):
    """An assignment file cannot be used; `str()` is `path:line: reason`.

    `line` counts from 1 and is None when no single line is at fault (the file cannot be
    read). One bad line rejects the whole file: serving a partial table would send the users
    after it to 404.
    """

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        super().__init__(path, line, reason)
        self.path = path
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


class AssignmentWriteError(Exception):
    """The store refused to change an assignment (no permission, a constraint); the
    message says what the store said. Nothing was changed by the failing write."""
