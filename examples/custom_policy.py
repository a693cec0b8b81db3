"""A custom routing policy: the extension point users write their own with.

Configure it with ``[policy] name = "custom_policy:VipPolicy"`` (the module
must be importable, e.g. from PYTHONPATH) or pass it to `makeService` through
the configuration as `examples/embed.py` does.

VIPs (users whose name starts with ``vip-``) are always redirected, even when
their REGISTER came through an edge, so that their clients connect straight to
the home server; everyone else follows the via-count rule.
"""

from __future__ import annotations

from zope.interface import implementer

from homeredirect.director.decision import Decision, Local, Proxy, Redirect
from homeredirect.director.interfaces import IRoutingPolicy, PolicyContext
from homeredirect.resolve.interfaces import Assignment
from homeredirect.sip.message import Request
from homeredirect.sip.uri import SipUri


@implementer(IRoutingPolicy)
class VipPolicy:
    name = "vip"

    def __init__(self, context: PolicyContext) -> None:
        self._context = context

    def decide(self, request: Request, assignment: Assignment) -> Decision:
        if self._context.is_local(assignment):
            return Local()
        uri = request.to_addr.uri
        if isinstance(uri, SipUri) and (uri.user or "").startswith("vip-"):
            return Redirect(assignment.home_server)
        if len(request.vias) == 1:
            return Redirect(assignment.home_server)
        return Proxy(assignment.home_server)
