"""The built-in routing policies and the loader for custom ones.

- ``via-count`` (the seed's rule): exactly one Via means the client reached us
  directly, so redirect it to its home server; more than one means it came
  through an edge or another proxy, which cannot follow a redirect for it, so
  proxy the request there.
- ``always-redirect`` and ``always-proxy``: the same, whatever the Via count
  (an edge always proxies; it is the edge role's default).
- ``edge-trust`` (`homeredirect.director.edge`): proxy what a trusted edge marked with
  ``ms-edge-proxy-message-trust`` ([MS-SIPRE] §2.2.15), redirect the rest.

Each answers `Local` when the user is assigned to this server.
"""

from __future__ import annotations

import importlib

from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from homeredirect.director.decision import Decision, Local, Proxy, Redirect
from homeredirect.director.edge import EdgeTrustPolicy
from homeredirect.director.interfaces import IRoutingPolicy, PolicyContext
from homeredirect.resolve.interfaces import Assignment
from homeredirect.sip.message import Request


class _BuiltInPolicy:
    """Keeps users assigned here local; subclasses route everyone else."""

    name = ""

    def __init__(self, context: PolicyContext) -> None:
        self._context = context

    def decide(self, request: Request, assignment: Assignment) -> Decision:
        if self._context.is_local(assignment):
            return Local()
        return self._route(request, assignment.home_server)

    def _route(self, request: Request, home_server: str) -> Decision:
        raise NotImplementedError


@implementer(IRoutingPolicy)
class ViaCountPolicy(_BuiltInPolicy):
    """Redirect a client that connected directly, proxy a request that came through a proxy."""

    name = "via-count"

    def _route(self, request: Request, home_server: str) -> Decision:
        if len(request.vias) == 1:
            return Redirect(home_server)
        return Proxy(home_server)


@implementer(IRoutingPolicy)
class AlwaysRedirectPolicy(_BuiltInPolicy):
    name = "always-redirect"

    def _route(self, request: Request, home_server: str) -> Decision:
        return Redirect(home_server)


@implementer(IRoutingPolicy)
class AlwaysProxyPolicy(_BuiltInPolicy):
    name = "always-proxy"

    def _route(self, request: Request, home_server: str) -> Decision:
        return Proxy(home_server)


BUILT_IN_POLICIES: dict[
    str, type[ViaCountPolicy | AlwaysRedirectPolicy | AlwaysProxyPolicy | EdgeTrustPolicy]
] = {
    cls.name: cls
    for cls in (ViaCountPolicy, AlwaysRedirectPolicy, AlwaysProxyPolicy, EdgeTrustPolicy)
}


class PolicyLoadError(Exception):
    """A custom policy named in the configuration could not be loaded."""


def load_policy(name: str, context: PolicyContext) -> IRoutingPolicy:
    """Build the policy called *name*: a built-in name or ``package.module:Class``.

    Raises PolicyLoadError saying what went wrong (import failure, missing
    class, or an object that does not provide IRoutingPolicy).
    """
    built_in = BUILT_IN_POLICIES.get(name)
    if built_in is not None:
        return built_in(context)
    module_name, colon, class_name = name.partition(":")
    if not colon or not module_name or not class_name:
        raise PolicyLoadError(
            f"unknown policy {name!r}: expected one of {', '.join(sorted(BUILT_IN_POLICIES))}"
            " or 'package.module:Class'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PolicyLoadError(
            f"cannot import {module_name!r} for policy {name!r}: {error}"
        ) from None
    factory = getattr(module, class_name, None)
    if factory is None:
        raise PolicyLoadError(f"module {module_name!r} has no {class_name!r} for policy {name!r}")
    try:
        policy = factory(context)
        verifyObject(IRoutingPolicy, policy)
    except Invalid as error:
        raise PolicyLoadError(f"policy {name!r} does not provide IRoutingPolicy: {error}") from None
    except Exception as error:
        raise PolicyLoadError(f"policy {name!r} failed to start: {error!r}") from None
    return policy  # type: ignore[no-any-return]
