"""The home-server role's parts for `makeService`: the local handler, the location store's
service, and the resolver for a home server that has no `[assignments]`.

- `HomeRequestHandler` is the `DirectorCore`'s local handler: a REGISTER for a user
  assigned here goes to the `Registrar`, any other request for one to the `UserRouter`.
  Users assigned elsewhere never reach it: the core redirects or proxies them by policy,
  exactly as a director does (one code path for both roles).
- `EveryoneHereResolver` assigns every user of our domains to this server, so that a
  standalone home server needs no assignment source; the pipeline and policy stay the
  same (the policy answers `Local` for all of them).
- `LocationService` owns the location store (`homeredirect.registrar.factory` builds the
  one `[location]` names): it purges expired bindings on a timer on the injected clock
  (`[registrar].purge_interval`) and closes the store when it stops.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.director.core import LocalRequest
from homeredirect.logs import FilteredLogger
from homeredirect.registrar.location import ILocationStore
from homeredirect.registrar.registrar import RegisterReply, Registrar
from homeredirect.registrar.routing import UserRouter
from homeredirect.resolve.interfaces import AddressOfRecord, Assignment, IAssignmentResolver

__all__ = [
    "EveryoneHereResolver",
    "HomeRequestHandler",
    "LocationService",
]

log = FilteredLogger()


@implementer(IAssignmentResolver)
class EveryoneHereResolver:
    """Assigns every AOR to one home server (this one, when `[assignments]` is omitted)."""

    def __init__(self, fqdn: str) -> None:
        self._assignment = Assignment(fqdn)

    def resolve(self, aor: AddressOfRecord) -> Deferred[Assignment | None]:
        return succeed(self._assignment)


class HomeRequestHandler:
    """The local handler of a home server's `DirectorCore` (see the module docstring)."""

    def __init__(self, registrar: Registrar, router: UserRouter) -> None:
        self.registrar = registrar
        self.router = router

    def __call__(self, local: LocalRequest) -> None:
        if local.request.method == "REGISTER":
            registering = self.registrar.register(local.request, local.aor, local.received)
            registering.addCallback(self._reply, local)
        else:
            self.router.route(local)

    @staticmethod
    def _reply(reply: RegisterReply, local: LocalRequest) -> None:
        local.respond(reply.status, reply.reason, reply.headers)


class LocationService(Service):
    """Purges expired bindings every *interval* seconds on *clock*; closes the store on stop."""

    def __init__(self, store: ILocationStore, clock: IReactorTime, interval: float) -> None:
        self.store = store
        self._clock = clock
        self._interval = interval
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        loop = self._loop = LoopingCall(self.purge)
        loop.clock = self._clock
        loop.start(self._interval, now=False).addErrback(self._loop_failed)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return self.store.close()

    def purge(self) -> Deferred[int]:
        """Drop the bindings expired now; a store failure is logged, and the next sweep
        tries again."""
        try:
            purging = self.store.purge(self._clock.seconds())
        except Exception:
            log.failure("purging expired bindings failed")
            return succeed(0)
        purging.addCallback(self._purged)
        purging.addErrback(self._purge_failed)
        return purging

    @staticmethod
    def _purged(count: int) -> int:
        if count:
            log.debug("purged {count} expired bindings", count=count)
        return count

    @staticmethod
    def _purge_failed(failure: Failure) -> int:
        log.warn("purging expired bindings failed: {reason}", reason=failure.getErrorMessage())
        return 0

    @staticmethod
    def _loop_failed(failure: Failure) -> None:
        log.failure("the purge timer stopped", failure)
