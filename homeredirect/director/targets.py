"""Home servers as places to send clients and requests to.

The `[home_servers."FQDN"]` entries of the configuration say how each home
server is reached (`Config.home_server` supplies defaults for an FQDN with no
entry: its own name, TLS, 5061). An entry with `locate = "dns"` (or any home
server, with `[locator] default = "dns"`) is found through DNS instead (RFC 3263,
`homeredirect.locate`).

Two views of the same configuration:

- `HomeServerTargets(fqdn)` -> `(primary, backup)`, at once: what a redirect
  names in its Contact headers (the FQDNs, which the client resolves itself).
- `HomeServerTargets.locate(fqdn)` -> `Deferred[list[Target]]`: every target a
  proxy should try, in order, for failover (RFC 3263 §4.3): the home server's own
  (its static entry, or what DNS gives), then its backup's.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.config.schema import Config
from homeredirect.locate.interfaces import ILocator
from homeredirect.locate.rfc3263 import LocateError, Locator, make_resolver
from homeredirect.locate.target import Target
from homeredirect.logs import FilteredLogger

__all__ = ["HomeServerTargets", "Target", "build_locator"]

log = FilteredLogger()


def build_locator(config: Config, reactor: Any) -> Locator:
    """The DNS locator `[locator]` describes, on `reactor`."""
    settings = config.locator
    return Locator(
        make_resolver(reactor, settings.nameservers, settings.timeout),
        reactor,
        random.SystemRandom(),
        transports=settings.transports,
        negative_ttl=settings.negative_ttl,
    )


@implementer(ILocator)
class HomeServerTargets:
    """Look up (primary, backup) targets by home server FQDN, and locate the full list.

    `dns` locates the home servers configured to be found through DNS; it is required
    only if some are (`reactor` builds one from `[locator]` when it is not given).
    """

    def __init__(self, config: Config, dns: ILocator | None = None, reactor: Any = None) -> None:
        self._config = config
        self._dns = dns
        self._reactor = reactor
        # fqdn -> its targets and its backup's, when none of them is found through DNS:
        # the configuration is frozen, so these never change (one entry per home server).
        self._static: dict[str, tuple[Target, ...]] = {}

    def target(self, fqdn: str) -> Target:
        entry = self._config.home_server(fqdn)
        return Target(entry.fqdn, entry.host, entry.port, str(entry.transport))

    def __call__(self, fqdn: str) -> tuple[Target, Target | None]:
        entry = self._config.home_server(fqdn)
        return self.target(fqdn), (self.target(entry.backup) if entry.backup else None)

    def uses_dns(self, fqdn: str) -> bool:
        """Whether `fqdn` is found through DNS rather than its static entry."""
        entry = self._config.home_server(fqdn)
        return (entry.locate or self._config.locator.default) == "dns"

    def locate(self, fqdn: str) -> Deferred[list[Target]]:
        """Every target to try for `fqdn`, best first, never empty (`ILocator.locate`).

        The home server's targets come first, then its configured backup's; a target is
        listed once. If one of the two cannot be located, the other's targets are still
        given (the failure is logged); if neither can, fail with the home server's
        `LocateError` (`HomeServerNotFound` or `LocatorUnavailable`).

        When neither is found through DNS the list is computed once and kept, and every
        call gets a copy in an already-fired Deferred: the proxy asks on every request,
        and a coroutine per call cost about 7 us where this costs 1.
        """
        static = self._static.get(fqdn)
        if static is not None:
            # The fast path: an already-fired Deferred, no coroutine (a fresh list each
            # time, as callers own what they are given).
            return succeed(list(static))
        entry = self._config.home_server(fqdn)
        names = [entry.fqdn] + ([entry.backup] if entry.backup else [])
        if not any(self.uses_dns(name) for name in names):
            located = tuple(dict.fromkeys(self.target(name) for name in names))
            self._static[fqdn] = located
            return succeed(list(located))
        return Deferred.fromCoroutine(self._locate_all(names))

    async def _locate_all(self, names: list[str]) -> list[Target]:
        targets: dict[Target, None] = {}
        first_error: Failure | None = None
        for name in names:
            try:
                located = await self._locate_one(name)
            except LocateError:
                failure = Failure()
                log.warn(
                    "no targets for home server {fqdn}: {error}",
                    fqdn=name,
                    error=str(failure.value),
                )
                first_error = first_error or failure
                continue
            targets.update(dict.fromkeys(located))
        if not targets:
            assert first_error is not None  # every name failed
            first_error.raiseException()
        return list(targets)

    def _locate_one(self, fqdn: str) -> Deferred[list[Target]]:
        if not self.uses_dns(fqdn):
            d: Deferred[list[Target]] = Deferred()
            d.callback([self.target(fqdn)])
            return d
        if self._dns is None:
            if self._reactor is None:
                raise RuntimeError(f"{fqdn} is located by DNS, but no locator was given")
            self._dns = build_locator(self._config, self._reactor)
        return self._dns.locate(fqdn)
