"""Run LDAP assignment lookups from a separate process and print what they gave, as JSON.

    python -m tests.ldap_lookup PLAN.json

For directories the test process cannot reach itself:
tests/integration/test_active_directory.py runs this inside the Samba domain controller's
network namespace (`ip netns exec`), where the domain controller's name resolves and its
ports are open. The plan is a JSON object:

    {"config": {...LdapAssignmentsConfig keyword arguments...},
     "move": ["erin@example.com", "pool1.example.com"],        (optional, done first)
     "lookups": ["alice@example.com", ...]}

and the output one JSON object: for the move and for each lookup, either `{"home": "<fqdn>"}`
(`null` for an unknown user; `{"moved": true}` for the move) or `{"error": "<exception
class>", "kinds": [<its class and base classes>], "message": "..."}`; `"searches"`, the
LDAP searches sent, and `"searches_per_lookup"`, those each lookup sent, in plan order.
Everything runs one step after the other on a real reactor, through
`LdapAssignmentResolver` started as a service, as in the director.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.python.failure import Failure

from homeredirect.config.assignments import LdapAssignmentsConfig
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment
from homeredirect.resolve.ldap_source import LdapAssignmentResolver


def _outcome(result: object) -> dict[str, Any]:
    if isinstance(result, Failure):
        kinds = [kind.__name__ for kind in type(result.value).__mro__]
        return {"error": kinds[0], "kinds": kinds, "message": str(result.value)}
    if isinstance(result, Assignment):
        return {"home": result.home_server}
    return {"home": None}


async def _settle(operation: Deferred[Any]) -> object:
    """The operation's result, or its Failure (boxed on the way: a Deferred whose result is
    a Failure is a failed Deferred)."""
    settled: list[object] = await operation.addCallbacks(lambda r: [r], lambda f: [f])
    return settled[0]


async def run_plan(reactor: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Carry out *plan* (see the module docstring) and return the report."""
    resolver = LdapAssignmentResolver(LdapAssignmentsConfig(**plan["config"]), reactor)
    resolver.startService()
    report: dict[str, Any] = {"lookups": {}}
    try:
        if plan.get("move"):
            aor, home = plan["move"]
            moved = await _settle(resolver.move(AddressOfRecord.parse(aor), home))
            report["move"] = _outcome(moved) if isinstance(moved, Failure) else {"moved": True}
        report["searches_per_lookup"] = []
        for text in plan.get("lookups", ()):
            before = resolver.searches
            found = await _settle(resolver.resolve(AddressOfRecord.parse(text)))
            report["lookups"][text] = _outcome(found)
            report["searches_per_lookup"].append(resolver.searches - before)
        report["searches"] = resolver.searches
    finally:
        resolver.stopService()
    return report


def main(reactor: Any, path: str) -> Deferred[None]:
    with open(path) as file:
        plan = json.load(file)

    async def run() -> None:
        report = await run_plan(reactor, plan)
        sys.stdout.write(json.dumps(report) + "\n")

    return ensureDeferred(run())


if __name__ == "__main__":
    react(main, sys.argv[1:])
