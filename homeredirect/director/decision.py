"""What a routing policy can decide for a request (the seed's step 3).

A decision names home servers by FQDN only; how to reach one (port, transport,
backup) comes from the `[home_servers]` configuration, so that a policy never
needs to know the deployment's addressing.
"""

from __future__ import annotations

from attrs import field, frozen
from attrs.validators import in_

from homeredirect.hostnames import normalize_hostname


@frozen
class Redirect:
    """Answer with a 3xx whose Contact is the home server (and its backup)."""

    home_server: str = field(converter=normalize_hostname)


@frozen
class Proxy:
    """Forward the request to the home server (RFC 3261 §16)."""

    home_server: str = field(converter=normalize_hostname)


@frozen
class Local:
    """The user is assigned to this server: handle the request here."""


@frozen
class Reject:
    """Refuse the request with a final response of our choosing."""

    status: int = field(validator=in_(range(400, 700)))
    reason: str = field(default="Forbidden")


Decision = Redirect | Proxy | Local | Reject
