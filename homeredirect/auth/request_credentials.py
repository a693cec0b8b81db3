"""What every scheme's authenticator does first with a request, written once.

A request may carry several `Authorization` values (`Proxy-Authorization` when a proxy
challenged it), for other realms and other schemes; each authenticator takes the first
that is its own and treats the others as absent (RFC 3261 §22.3; [MS-SIPAE] §3.3.5.1-2
adds the targetname for NTLM and Kerberos). A value that does not parse is the client's
error: 400, not a challenge it could not answer either. An address or user past the
failure limit gets 403 before any credential is checked (`FailureLimiter`).

The scheme's own checks (Digest's nonce, an [MS-SIPAE] security association) follow in
its authenticator; the logger is the caller's, so events keep its namespace.
"""

from __future__ import annotations

from attrs import frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.python.failure import Failure

from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.outcomes import Refused
from homeredirect.sip.credentials import AuthValue, parse_auth_value
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.message import Request

__all__ = [
    "TOO_MANY_FAILURES",
    "OurCredentials",
    "credentials_header",
    "refused_when_blocked",
    "refused_without_verdict",
]

TOO_MANY_FAILURES = Refused(403, "Too many failed attempts")
"""The answer once the failure limit is reached (before or after a check)."""


def credentials_header(proxy: bool) -> str:
    """Where the credentials are: `Proxy-Authorization` answers a proxy's 407, else
    `Authorization` (RFC 3261 §22.2, §22.3)."""
    return "Proxy-Authorization" if proxy else "Authorization"


@frozen
class OurCredentials:
    """Credentials of `scheme` for `realm` (and `targetname`, for [MS-SIPAE] schemes)."""

    scheme: str
    realm: str
    targetname: str | None = None

    def find(
        self, request: Request, proxy: bool, source: str, log: Logger
    ) -> AuthValue | Refused | None:
        """Ours among the request's values; None if there are none (challenge), or 400
        (logged with `source`) when a value up to ours does not parse."""
        header = credentials_header(proxy)
        try:
            for value in request.headers.get_all(header):
                parsed = parse_auth_value(value, header)
                if (
                    parsed.scheme_is(self.scheme)
                    and parsed.get("realm") == self.realm
                    and (self.targetname is None or parsed.get("targetname") == self.targetname)
                ):
                    return parsed
        except SipParseError as e:
            log.info(
                "malformed {header} from {source}: {reason}",
                header=header,
                source=source,
                reason=e.reason,
            )
            return Refused(400, f"Malformed {header} header")
        return None


def refused_when_blocked(
    limiter: FailureLimiter, source: str, user: str | None, log: Logger, event: str
) -> Refused | None:
    """`TOO_MANY_FAILURES`, with `event` logged (fields `source` and `user`), when `source`
    or `user` has reached the failure limit; else None, and the check goes on."""
    if not limiter.blocked(source, user):
        return None
    log.warn(event, source=source, user=user)
    return TOO_MANY_FAILURES


def refused_without_verdict(
    failure: Failure,
    user: str | None,
    log: Logger,
    unavailable: type[Exception],
    unavailable_event: str,
    error_event: str,
) -> Refused | None:
    """What a credential check that ended in `failure` gets when it is no verdict on the
    credentials, logged with `user`: 503 when the source of verdicts (a directory, a domain
    controller) raised `unavailable`, counting nothing, since the password may be right
    (the client retries after Retry-After, RFC 3261 §21.5.4); 500 for anything else but
    `UnauthorizedLogin`. None for that refusal, which the caller counts and logs."""
    if failure.check(unavailable):
        log.warn(unavailable_event, user=user, reason=str(failure.value))
        return Refused(503, "Authentication service unavailable")
    if not failure.check(UnauthorizedLogin):
        log.failure(error_event, failure, user=user)
        return Refused(500, "Authentication failed")
    return None
