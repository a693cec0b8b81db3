"""`homeredirect <command>`: the operator's command line, besides `twistd homeredirect`.

Each command lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`; this module only dispatches. Command modules import heavy client code
(LDAP, Redis) inside `run`, so that `homeredirect zone` does not load it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "assignments": (
        "homeredirect.tools.assignments",
        "show, move, import or export user -> home server assignments",
    ),
    "dns": (
        "homeredirect.dns.dns_command",
        "serve the DNS records by which clients find a first server",
    ),
    "zone": (
        "homeredirect.dns.zone_command",
        "print the records `homeredirect dns` serves, as a BIND zone fragment",
    ),
}
"""Command name -> (module path, one-line help)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default `sys.argv[1:]`), run the command, return its exit status."""
    parser = argparse.ArgumentParser(
        prog="homeredirect", description="homeredirect operator commands"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module_path, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        module = importlib.import_module(module_path)
        module.add_arguments(sub)
        modules[name] = module
    args = parser.parse_args(argv)
    status: int = modules[args.command].run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
