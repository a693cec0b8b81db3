"""The authentication extension point of the request pipeline."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from homeredirect.auth.outcomes import AuthOutcome
from homeredirect.sip.message import Request

__all__ = ["IRequestAuthenticator"]


class IRequestAuthenticator(Interface):
    """Decides whether a request is authenticated before the directory is asked."""

    required = Attribute(
        "True: every request routed to a user must authenticate. False: only credentials "
        "that a client offers are checked."
    )

    def authenticate(request: Request, source: str, proxy: bool) -> Deferred[AuthOutcome]:
        """Fire with `Authenticated`, `Challenge` (401, or 407 when `proxy`) or `Refused`;
        never fail. `source` is the address the request came from (brute-force limits)."""
