"""The routing-policy extension point (the seed's step 3).

A policy sees the request and the user's assignment and returns a `Decision`.
Users plug in their own with ``[policy] name = "package.module:Class"``; the
class is called with a `PolicyContext` and must provide `IRoutingPolicy`.
"""

from __future__ import annotations

from attrs import field, frozen
from zope.interface import Attribute, Interface

from homeredirect.director.decision import Decision
from homeredirect.hostnames import normalize_hostname
from homeredirect.resolve.interfaces import Assignment
from homeredirect.sip.message import Request


@frozen
class PolicyContext:
    """What a policy may need to know about the server it runs in."""

    fqdn: str = field(converter=normalize_hostname)
    role: str = "director"

    def is_local(self, assignment: Assignment) -> bool:
        """True when *assignment* names this very server."""
        return assignment.home_server == self.fqdn


class IRoutingPolicy(Interface):
    """Decides, for a user whose home server is known, what to do with a request."""

    name = Attribute("A short name for logs, e.g. 'via-count'.")

    def decide(request: Request, assignment: Assignment) -> Decision:
        """Return Redirect, Proxy, Local or Reject for *request*.

        Called on the reactor thread for every request: it must not block.
        *request.vias* has already been validated.
        """
