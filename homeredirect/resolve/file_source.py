"""Assignments from a CSV file, held in memory and reloaded without blocking the reactor.

The file is the simplest directory: one `user,home_server` line per user. Lookups are a dict
read, so the table is loaded whole; with a million users it has to load in about a second and
not hold a million copies of a handful of home server names.

File format::

    # comments and blank lines are ignored
    user,home_server
    alice@example.com,home1.example.com
    sip:Bob@Example.COM,home2.example.com

The header line is required. The `sip:`/`sips:` prefix is optional, the host part and the
home server are case-insensitive, the user part is case-sensitive (RFC 3261 §19.1.4). There is
no quoting: neither column can contain a comma. Listing a user twice is allowed only with the
same home server. Any bad line rejects the whole file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from homeredirect.hostnames import normalize_hostname, normalize_uri_host
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import (
    AssignmentFileError,
    AssignmentWriteError,
    DirectoryUnavailable,
)
from homeredirect.resolve.interfaces import (
    AddressOfRecord,
    Assignment,
    IAssignmentResolver,
    IAssignmentStore,
)
from homeredirect.resolve.stored import checked_moves

__all__ = [
    "FileAssignmentResolver",
    "parse_assignment_lines",
    "read_assignment_file",
    "rewrite_assignment_file",
]

_HEADER = ["user", "home_server"]

# The common line in one regex call, which is most of the per-line cost: an ASCII user of
# RFC 3261 §25.1 user characters (minus "," the separator), a hostname or IPv4 host, and a
# home server. Explicit ASCII classes match faster than negated ones. Anything else (IPv6
# hosts, non-ASCII users, comments) takes `_parse_other_line`, which is the general parser and
# yields the same key, so the fast path changes speed, not meaning. Hosts and home servers
# are checked once per distinct value, through the caches in `parse_assignment_lines`.
_LINE = re.compile(
    r"[ \t]*(?:[Ss][Ii][Pp][Ss]?:)?([A-Za-z0-9\-_.!~*'()&=+$;?/%]+)@([A-Za-z0-9.\-]+)"
    r"[ \t]*,[ \t]*([A-Za-z0-9.\-]+)[ \t]*\n?"
)


class _BadLine(Exception):
    """A line's reason for rejection; `parse_assignment_lines` adds path and line number."""


def _parse_other_line(line: str) -> tuple[str, str] | None:
    """Read a line the fast pattern did not match: None for a blank or comment line, the
    (key, home server) pair for an unusual but valid one; raise `_BadLine` otherwise."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    columns = text.split(",")
    if len(columns) != 2:
        raise _BadLine(f"expected 2 columns (user,home_server), got {len(columns)}")
    user, home = (column.strip() for column in columns)
    try:
        aor = AddressOfRecord.parse(user)
    except ValueError:
        raise _BadLine(f"expected a user such as alice@example.com, got {user!r}") from None
    return str(aor), home


def _read_header(numbered: Iterator[tuple[int, str]], path: Path) -> None:
    """Consume lines up to the header, which must come before any data: a file without it
    is more likely the wrong file than one that forgot it."""
    number = 0
    for number, line in numbered:
        text = line.strip()
        if text and not text.startswith("#"):
            columns = [column.strip().lower() for column in text.split(",")]
            if columns != _HEADER:
                reason = f"expected the header line user,home_server, got {text!r}"
                raise AssignmentFileError(path, number, reason)
            return
    reason = "expected the header line user,home_server, got end of file"
    raise AssignmentFileError(path, number + 1, reason)


def parse_assignment_lines(lines: Iterable[str], path: Path) -> dict[str, Assignment]:
    """Parse the lines of an assignment file into a table keyed by `str(AddressOfRecord)`.

    Pure and synchronous, so it runs in a worker thread for reloads. Every user with the same
    home server shares one `Assignment` object, which is what interning the FQDN would buy and
    more: a million users cost a million dict entries plus a handful of objects. Raise
    `AssignmentFileError` naming `path` and the line of the first problem.
    """
    table: dict[str, Assignment] = {}
    # Caches, so each distinct host and home server is checked once, and every user of a home
    # server shares one Assignment (and so one FQDN string) however it was spelt.
    hosts: dict[str, str] = {}  # as written -> normalised
    homes: dict[str, Assignment] = {}  # as written -> shared assignment
    shared: dict[str, Assignment] = {}  # FQDN -> the one Assignment to it
    match = _LINE.fullmatch
    claim = table.setdefault
    numbered = enumerate(lines, 1)
    _read_header(numbered, path)
    for number, line in numbered:
        try:
            found = match(line)
            if found is not None:
                user, host, home = found.groups()
                canonical = hosts.get(host)
                if canonical is None:
                    try:
                        canonical = hosts[host] = normalize_uri_host(host)
                    except ValueError:
                        raise _BadLine(f"expected a hostname or IP address, got {host!r}") from None
                key = user + "@" + canonical
            else:
                parsed = _parse_other_line(line)
                if parsed is None:
                    continue
                key, home = parsed
            assignment = homes.get(home)
            if assignment is None:
                try:
                    fqdn = normalize_hostname(home)
                except ValueError:
                    raise _BadLine(f"expected a home server FQDN, got {home!r}") from None
                assignment = homes[home] = shared.setdefault(fqdn, Assignment(fqdn))
            previous = claim(key, assignment)
            if previous is not assignment:
                raise _BadLine(
                    f"{key} is already assigned to {previous.home_server}, "
                    f"not {assignment.home_server}"
                )
        except _BadLine as e:
            raise AssignmentFileError(path, number, str(e)) from None
    return table


def read_assignment_file(path: Path) -> dict[str, Assignment]:
    """Read and parse the assignment file at `path`; blocking, so call it from a thread once
    the reactor runs. A UTF-8 byte order mark (as spreadsheets write) is skipped. Raise
    `AssignmentFileError`."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            return parse_assignment_lines(file, path)
    except OSError as e:
        raise AssignmentFileError(path, None, f"cannot read the file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise AssignmentFileError(path, None, f"expected UTF-8 text: {e.reason}") from e


def _key_of(line: str) -> str | None:
    """The AOR key of a data line, None for a blank or comment line (the line is valid:
    the file has been parsed whole before)."""
    found = _LINE.fullmatch(line)
    if found is not None:
        user, host, _home = found.groups()
        return user + "@" + normalize_uri_host(host)
    parsed = _parse_other_line(line)
    return None if parsed is None else parsed[0]


def _rewritten_lines(lines: list[str], moves: Mapping[str, str]) -> list[str]:
    """`lines` with the home server of every moved user replaced in place (comments and order
    kept) and the users that are new appended."""
    output: list[str] = []
    remaining = dict(moves)
    header_seen = False
    for line in lines:
        if not header_seen:
            text = line.strip()
            header_seen = bool(text) and not text.startswith("#")
            output.append(line)
            continue
        key = _key_of(line)
        if key is not None and key in moves:
            remaining.pop(key, None)
            output.append(f"{key},{moves[key]}\n")
        else:
            output.append(line)
    if output and not output[-1].endswith("\n"):
        output[-1] += "\n"
    output.extend(f"{key},{home}\n" for key, home in remaining.items())
    return output


def rewrite_assignment_file(path: Path, moves: Mapping[str, str]) -> dict[str, Assignment]:
    """Apply `moves` (`{str(aor): fqdn}`) to the assignment file at `path` atomically, and
    return the new table. Blocking: call it from a thread once the reactor runs.

    The new file is written next to the old one, flushed to disk (fsync), and renamed over it
    (`os.replace`), then the directory is synced: a reader or a crash sees the old file or the
    new one, never a mix. Comments and line order are kept; new users are appended. The file
    keeps its permission bits. Raise `AssignmentWriteError` if the current file is invalid or
    the new one cannot be written.
    """
    try:
        with open(path, encoding="utf-8-sig") as file:
            lines = file.readlines()
        parse_assignment_lines(lines, path)
        new_lines = _rewritten_lines(lines, moves)
        table = parse_assignment_lines(new_lines, path)
    except OSError as e:
        raise AssignmentWriteError(f"{path}: cannot read the file: {e.strerror or e}") from e
    except (AssignmentFileError, UnicodeDecodeError) as e:
        raise AssignmentWriteError(f"not rewriting an invalid file: {e}") from e
    directory = path.parent
    try:
        mode = os.stat(path).st_mode & 0o7777
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.writelines(new_lines)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)
    except OSError as e:
        raise AssignmentWriteError(f"{path}: cannot write the file: {e.strerror or e}") from e
    return table


@implementer(IAssignmentResolver, IAssignmentStore)
class FileAssignmentResolver:
    """Resolve users from an assignment file loaded into memory.

    Call `load()` once at start-up (it blocks, which is fine before the reactor runs) and
    `reload()` afterwards, e.g. on SIGHUP: it reads in `threadpool` so that lookups go on
    meanwhile, and replaces the table only if the new file is entirely valid. Until the first
    successful load, `resolve` fails with `DirectoryUnavailable`.

    It is also an `IAssignmentStore`: a write rewrites the file atomically in the thread
    pool (`rewrite_assignment_file`) and then serves the new table. Writes and reloads run one
    at a time, in the order they were asked for.

    The thread pool belongs to the caller, which starts and stops it (STYLE b.11).
    """

    log = FilteredLogger()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
    ) -> None:
        self.path = Path(path)
        self._reactor = reactor
        self._threadpool = threadpool
        self._table: Mapping[str, Assignment] | None = None
        self._reloading = DeferredLock()

    def __len__(self) -> int:
        """The number of users currently loaded."""
        return 0 if self._table is None else len(self._table)

    def load(self) -> None:
        """Read the file synchronously and use it; raise `AssignmentFileError` if invalid."""
        self._use(read_assignment_file(self.path))

    def reload(self) -> Deferred[bool]:
        """Re-read the file in the thread pool and use it if it is valid.

        Fire with True once the new table is in use, or False if the file was invalid (that
        is logged with its path, line and reason, and the previous table stays in use).
        Reloads requested while one runs are queued, so the newest file always wins.
        """
        return self._reloading.run(self._reload)

    def _reload(self) -> Deferred[bool]:
        reading = deferToThreadPool(
            self._reactor, self._threadpool, read_assignment_file, self.path
        )
        return reading.addCallbacks(self._use, self._keep)

    def _use(self, table: Mapping[str, Assignment]) -> bool:
        self._table = table  # one reference swap, on the reactor thread: lookups see old or new
        self.log.info(
            "loaded {count} assignments from {path}", count=len(table), path=str(self.path)
        )
        return True

    def _keep(self, failure: Failure) -> bool | Failure:
        error = failure.value
        if not isinstance(error, AssignmentFileError):
            return failure  # a bug, not a bad file: let the caller see it
        self.log.error(
            "not reloading assignments: {path}:{line}: {reason}; keeping {count} loaded",
            path=str(error.path),
            line=error.line,
            reason=error.reason,
            count=len(self),
        )
        return False

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        """Fire with the user's assignment or None; fail with `DirectoryUnavailable` if the
        file was never loaded."""
        if self._table is None:
            return fail(DirectoryUnavailable(f"assignment file {self.path} is not loaded"))
        return succeed(self._table.get(str(aor)))

    def move(self, aor: AddressOfRecord, home_server: str) -> Deferred[None]:
        """Assign `aor` to `home_server` in the file (appending the user if new)."""
        return self.move_many([(aor, home_server)]).addCallback(lambda _: None)

    def move_many(self, moves: Iterable[tuple[AddressOfRecord, str]]) -> Deferred[int]:
        """Apply all moves in one atomic rewrite of the file; fire with their count and
        serve the new table from then on. Fail with `AssignmentWriteError` (nothing
        written) if a home server is not an FQDN or the file cannot be read or written."""
        try:
            checked = checked_moves(moves)
        except AssignmentWriteError:
            return fail()

        def rewrite() -> Deferred[int]:
            writing = deferToThreadPool(
                self._reactor, self._threadpool, rewrite_assignment_file, self.path, checked
            )
            return writing.addCallback(self._written, len(checked))

        return self._reloading.run(rewrite)

    def _written(self, table: Mapping[str, Assignment], count: int) -> int:
        self.log.info(
            "wrote {moves} assignment changes to {path}", moves=count, path=str(self.path)
        )
        self._use(table)
        return count

    def export(self) -> Deferred[list[tuple[AddressOfRecord, Assignment]]]:
        """Fire with the loaded table, ordered by user; fail with `DirectoryUnavailable` if
        the file was never loaded."""
        if self._table is None:
            return fail(DirectoryUnavailable(f"assignment file {self.path} is not loaded"))
        return succeed(
            [(AddressOfRecord.parse(key), self._table[key]) for key in sorted(self._table)]
        )
