"""`homeredirect assignments show|move|import|export --config FILE`: read and write the
user -> home server assignments in whatever backend the configuration names.

    homeredirect assignments show alice@example.com --config director.toml
    homeredirect assignments move alice@example.com home2.example.com --config director.toml
    homeredirect assignments import users.csv --config director.toml
    homeredirect assignments export [users.csv] --config director.toml

It goes through the same code as the director (`homeredirect.resolve.factory`), so it reads
and writes exactly what the directors serve; a move reaches running directors within their
cache TTL (the file backend: on their next reload). CSV files have the header
`user,home_server`, the format of the file backend. `import` checks the whole file before
writing anything and writes it in one transaction (SQL), one MSET (Redis) or one rewrite
(file).

Exit status: 0 done; 1 the backend could not do it (unavailable, refused, unknown user for
`show`); 2 a bad command line, configuration or input file. Every error is one line on
stderr naming the problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TextIO

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import load_config
from homeredirect.resolve.errors import (
    AssignmentFileError,
    AssignmentWriteError,
    DirectoryUnavailable,
)
from homeredirect.resolve.factory import AssignmentBackend, BackendUnavailable, build_resolver
from homeredirect.resolve.file_source import read_assignment_file
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment

__all__ = ["add_arguments", "run"]

PROG = "homeredirect assignments"


class _Refused(Exception):
    """A problem with what was asked (exit 2), as opposed to the backend failing (exit 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `assignments` sub-commands; `--config` goes before or after the action."""
    parser.add_argument("--config", "-c", metavar="FILE", help="the director's TOML config")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", parents=[common], help="print a user's home server")
    show.add_argument("aor", metavar="AOR", help="the user, e.g. alice@example.com")
    move = actions.add_parser("move", parents=[common], help="assign a user to a home server")
    move.add_argument("aor", metavar="AOR")
    move.add_argument("home_server", metavar="FQDN")
    load = actions.add_parser(
        "import", parents=[common], help="apply every line of a CSV file (user,home_server)"
    )
    load.add_argument("file", metavar="FILE.csv", type=Path)
    dump = actions.add_parser(
        "export", parents=[common], help="write every assignment as CSV (default: stdout)"
    )
    dump.add_argument("file", metavar="FILE.csv", type=Path, nargs="?")


def run(args: argparse.Namespace) -> int:
    """Run the action in `args`; return the exit status (see the module docstring)."""
    if not args.config:
        return _error("--config FILE is required", 2)
    try:
        config = load_config(args.config)
        if config.assignments is None:
            raise _Refused(f"{args.config}: no [assignments] table: nothing to read or write")
        action = _action(args)
    except (ConfigError, _Refused) as e:
        return _error(str(e), 2)
    try:
        return _run_on_reactor(lambda reactor, pool: _with_backend(config, reactor, pool, action))
    except (_Refused, AssignmentFileError, BackendUnavailable) as e:
        return _error(str(e), 2)
    except (DirectoryUnavailable, AssignmentWriteError) as e:
        return _error(str(e), 1)


_Action = Callable[[AssignmentBackend], Deferred[int]]


def _action(args: argparse.Namespace) -> _Action:
    """Check the arguments (before any backend is touched) and return the work to do."""
    if args.action == "show":
        aor = _aor(args.aor)
        return lambda backend: _show(backend, aor)
    if args.action == "move":
        aor = _aor(args.aor)
        try:
            home = Assignment(args.home_server).home_server
        except ValueError:
            raise _Refused(f"not a home server FQDN: {args.home_server!r}") from None
        return lambda backend: _move(backend, [(aor, home)], f"moved {aor} to {home}")
    if args.action == "import":
        try:
            table = read_assignment_file(args.file)
        except AssignmentFileError as e:
            raise _Refused(str(e)) from None
        moves = [(AddressOfRecord.parse(key), a.home_server) for key, a in table.items()]
        message = f"imported {len(moves)} assignments from {args.file}"
        return lambda backend: _move(backend, moves, message)
    target: Path | None = args.file
    return lambda backend: _export(backend, target)


def _aor(text: str) -> AddressOfRecord:
    try:
        return AddressOfRecord.parse(text)
    except ValueError as e:
        raise _Refused(str(e)) from None


@inlineCallbacks
def _show(backend: AssignmentBackend, aor: AddressOfRecord) -> Generator[Any, Any, int]:
    # Ask the backend itself, not the cache: the point is what the directory says now.
    resolver = backend.cache.backend if backend.cache is not None else backend.resolver
    assignment = yield resolver.resolve(aor)
    if assignment is None:
        return _error(f"{aor} is not assigned to any home server", 1)
    print(f"{aor},{assignment.home_server}")
    return 0


@inlineCallbacks
def _move(
    backend: AssignmentBackend, moves: list[tuple[AddressOfRecord, str]], message: str
) -> Generator[Any, Any, int]:
    if backend.store is None:
        raise _Refused("this assignment backend cannot be written to")
    yield backend.store.move_many(moves)
    print(message)
    return 0


@inlineCallbacks
def _export(backend: AssignmentBackend, target: Path | None) -> Generator[Any, Any, int]:
    if backend.store is None:
        raise _Refused("this assignment backend cannot list its assignments")
    rows: list[tuple[AddressOfRecord, Assignment]] = yield backend.store.export()
    if target is None:
        _write_csv(sys.stdout, rows)
        return 0
    try:
        with open(target, "w", encoding="utf-8") as file:
            _write_csv(file, rows)
    except OSError as e:
        raise _Refused(f"{target}: cannot write the file: {e.strerror or e}") from e
    print(f"exported {len(rows)} assignments to {target}")
    return 0


def _write_csv(out: TextIO, rows: list[tuple[AddressOfRecord, Assignment]]) -> None:
    out.write("user,home_server\n")
    out.writelines(f"{aor},{assignment.home_server}\n" for aor, assignment in rows)


@inlineCallbacks
def _with_backend(
    config: Any, reactor: Any, pool: ThreadPool, action: _Action
) -> Generator[Any, Any, int]:
    backend = build_resolver(config, reactor, pool)
    try:
        status: int = yield action(backend)
    finally:
        yield backend.close()
    return status


def _run_on_reactor(work: Callable[[Any, ThreadPool], Deferred[int]]) -> int:
    """Run `work(reactor, pool)` on the global reactor and return what it fires with, or
    raise what it fails with.

    The reactor is ended with `crash()`, not `stop()`, which leaves it able to run again:
    `homeredirect.cli.main` may be called several times in one process (the tests do). The
    Redis client schedules on the global reactor, so a private reactor would not do.
    """
    from twisted.internet import reactor

    running: Any = reactor
    if running.running:
        raise _Refused("cannot run inside a running Twisted reactor")
    pool = ThreadPool(minthreads=0, maxthreads=2, name="homeredirect-assignments")
    outcome: list[object] = []

    def finish(result: object) -> None:
        outcome.append(result)
        # Two more turns, for the connections' own close-down calls, then return.
        running.callLater(0, running.callLater, 0, running.crash)

    def start() -> None:
        pool.start()
        Deferred.fromCoroutine(_call(work, running, pool)).addBoth(finish)

    running.callWhenRunning(start)
    try:
        running.run(installSignalHandlers=False)
    finally:
        pool.stop()
    result = outcome[0] if outcome else Failure(_Refused("interrupted"))
    if isinstance(result, Failure):
        result.raiseException()
    assert isinstance(result, int)
    return result


async def _call(
    work: Callable[[Any, ThreadPool], Deferred[int]], reactor: Any, pool: ThreadPool
) -> int:
    return await work(reactor, pool)


def _error(message: str, status: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return status
