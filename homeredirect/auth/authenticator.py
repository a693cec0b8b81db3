"""The SIP side of Digest authentication: from a request to an outcome (RFC 3261 §22).

`DigestAuthenticator.authenticate` reads the request's `Authorization` (or, for requests a
proxy forwards, `Proxy-Authorization`) for our realm, checks nonce, opaque and
nonce-count itself, hands the credentials to the `twisted.cred` portal's checker (a
credentials file's is asked directly, and Deferreds that have fired are read without
callback chains: every registration pays for this path), and says what to do:
go on as an authenticated user, challenge (401/407 with one challenge per algorithm,
strongest first, RFC 8760 §2.4), or refuse (400 for a malformed header, 403 once the
failure limit is reached). Challenges depend on nothing but the realm, the configured
algorithms and a fresh nonce, so known and unknown users get the same bytes apart from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.auth.cred import (
    DigestChecker,
    IAuthenticatedUser,
    ISipDigestCredentials,
    SipDigestCredentials,
    SipIdentityRealm,
    aor_of_username,
)
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceCounts, NonceIssuer, NonceState
from homeredirect.auth.outcomes import Authenticated, AuthOutcome, Challenge, Refused
from homeredirect.auth.request_credentials import (
    TOO_MANY_FAILURES,
    OurCredentials,
    credentials_header,
    refused_when_blocked,
    refused_without_verdict,
)
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import AuthValue, format_auth_value
from homeredirect.sip.message import Request

__all__ = ["AuthOutcome", "Authenticated", "Challenge", "DigestAuthenticator", "Refused"]

log = FilteredLogger()

_NC_DIGITS = frozenset("0123456789abcdefABCDEF")
_EXPIRY_INTERVAL = 1.0
"""Seconds between removals of expired nonce-counts."""
_NONCE_SLOT = "\x00"
"""Where a challenge template's nonce goes (a realm cannot hold a NUL)."""
_ChallengeTemplate = tuple[int, str, tuple[tuple[str, str], ...]]


@implementer(IRequestAuthenticator)
class DigestAuthenticator:
    """Digest for one realm; `algorithms` in the order they are offered."""

    def __init__(
        self,
        *,
        required: bool = True,
        portal: Portal,
        realm: str,
        algorithms: Sequence[DigestAlgorithm],
        nonces: NonceIssuer,
        limiter: FailureLimiter,
        clock: IReactorTime,
        counts: NonceCounts | None = None,
    ) -> None:
        self.required = required
        self._portal = portal
        self.realm = realm
        self._algorithms = tuple(algorithms)
        self._nonces = nonces
        self._counts = counts if counts is not None else NonceCounts()
        self._limiter = limiter
        self._clock = clock
        self._ours = OurCredentials("Digest", realm)
        self._opaque = nonces.opaque_for("")
        self._last_expiry = clock.seconds()
        # A credentials file under our own realm answers at once, with the AOR itself.
        checker = portal.checkers.get(ISipDigestCredentials)
        self._verified: Callable[[SipDigestCredentials], AddressOfRecord | None] | None = (
            checker.verified
            if isinstance(checker, DigestChecker) and isinstance(portal.realm, SipIdentityRealm)
            else None
        )
        self._challenges = {
            (proxy, stale): self._challenge_template(proxy, stale)
            for proxy in (False, True)
            for stale in (False, True)
        }

    def _challenge_template(self, proxy: bool, stale: bool) -> _ChallengeTemplate:
        """A challenge's status, header name and, per algorithm, the header value before
        and after its nonce: everything but the nonce is fixed by the configuration, so it
        is formatted once."""
        parts = []
        for algorithm in self._algorithms:
            params = [
                ("realm", self.realm, True),
                ("nonce", _NONCE_SLOT, True),
                ("opaque", self._opaque, True),
                ("algorithm", algorithm.value, False),
                ("qop", "auth", True),
            ]
            if stale:
                params.append(("stale", "true", False))
            before, _, after = format_auth_value("Digest", params).partition(_NONCE_SLOT)
            parts.append((before, after))
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return 407 if proxy else 401, name, tuple(parts)

    def challenge(self, proxy: bool, stale: bool = False) -> Challenge:
        """A fresh challenge: one header per algorithm, all with the same nonce (base64url,
        which needs no quoting)."""
        status, name, parts = self._challenges[proxy, stale]
        nonce = self._nonces.issue()
        return Challenge(status, tuple([(name, before + nonce + after) for before, after in parts]))

    def authenticate(self, request: Request, source: str, proxy: bool) -> Deferred[AuthOutcome]:
        """Decide what `request`, received from `source` (an address), gets.

        Never fails: every problem is an outcome, logged with the source.
        """
        self._expire_counts()
        ours = self._ours.find(request, proxy, source, log)
        if not isinstance(ours, AuthValue):
            return succeed(self.challenge(proxy) if ours is None else ours)
        params = ours.params
        username = params.get("username")
        account = None if username is None else aor_of_username(username, self.realm)
        user_key = None if account is None else str(account)
        refused = refused_when_blocked(
            self._limiter,
            source,
            user_key,
            log,
            "refused {source} for {user}: too many failed attempts",
        )
        if refused is not None:
            return succeed(refused)
        problem = _missing_or_bad(params)
        if problem is not None:
            log.info(
                "bad Digest credentials from {source}: {problem}", source=source, problem=problem
            )
            header = credentials_header(proxy)
            return succeed(Refused(400, f"Malformed {header} header: {problem}"))
        algorithm = DigestAlgorithm.named(params.get("algorithm"))
        if algorithm is None or algorithm not in self._algorithms:
            return succeed(self.challenge(proxy))
        nonce = params["nonce"]
        state, issued = self._nonces.inspect(nonce)
        if state is NonceState.INVALID or params.get("opaque") != self._opaque:
            log.info("nonce or opaque never issued, from {source}", source=source)
            return succeed(self.challenge(proxy))
        if state is NonceState.STALE:
            return succeed(self.challenge(proxy, stale=True))
        if not self._counts.use(nonce, issued, int(params["nc"], 16)):
            log.info("replayed nonce-count from {source}", source=source)
            return succeed(self.challenge(proxy, stale=True))
        # The response hashes the client's `uri`, which we use as given rather than
        # insisting on the Request-URI (RFC 7616 §3.4.6 says SHOULD): clients differ (SIPp
        # sends its peer's address), and replaying credentials for another request is
        # already stopped by the nonce-count check above.
        assert username is not None
        credentials = SipDigestCredentials(
            username=username,
            realm=self.realm,
            algorithm=algorithm,
            method=request.method,
            uri=params["uri"],
            nonce=nonce,
            qop="auth",
            nc=params["nc"],
            cnonce=params["cnonce"],
            response=params["response"],
        )
        if self._verified is not None:
            return succeed(self._verdict(self._verified(credentials), source, user_key, proxy))
        return self._login(credentials, source, user_key, proxy)

    def _verdict(
        self, aor: AddressOfRecord | None, source: str, user: str | None, proxy: bool
    ) -> AuthOutcome:
        """The outcome of a check that answered at once: `aor`, or None for a refusal."""
        if aor is None:
            refused = Failure(UnauthorizedLogin("unknown user, no secret, or wrong response"))
            return self._login_failed(refused, source, user, proxy)
        return self._succeeded(aor, source, user)

    def _login(
        self, credentials: SipDigestCredentials, source: str, user: str | None, proxy: bool
    ) -> Deferred[AuthOutcome]:
        """`Portal.login` for our credentials, without its callback chains when the checker
        has answered at once (a credentials file, a cached directory entry): the checker
        registered for `ISipDigestCredentials` gives the avatar id, the portal's realm the
        avatar. Failures, and answers still to come, take the callback chain."""
        portal = self._portal
        checker = portal.checkers.get(ISipDigestCredentials)
        if checker is None:
            login: Deferred[Any] = portal.login(credentials, None, IAuthenticatedUser)
        else:
            try:
                checked = checker.requestAvatarId(credentials)
                if _answered(checked):
                    avatar_id = cast(bytes, checked.result)
                    avatar = portal.realm.requestAvatar(avatar_id, None, IAuthenticatedUser)
                    if not isinstance(avatar, Deferred):
                        return succeed(self._logged_in(avatar, source, user))
                    login = avatar
                else:
                    login = checked.addCallback(
                        portal.realm.requestAvatar, None, IAuthenticatedUser
                    )
            except Exception:
                login = fail()
        return login.addCallbacks(
            self._logged_in, self._login_failed, (source, user), {}, (source, user, proxy)
        )

    def _logged_in(
        self, result: tuple[object, object, object], source: str, user: str | None
    ) -> AuthOutcome:
        _, avatar, _ = result
        return self._succeeded(IAuthenticatedUser(avatar).aor, source, user)

    def _succeeded(self, aor: AddressOfRecord, source: str, user: str | None) -> AuthOutcome:
        # Clear the count the failures went to (the username's AOR, which is `aor`).
        self._limiter.succeeded(source, str(aor) if user is None else user)
        return Authenticated(aor)

    def _login_failed(
        self, failure: Failure, source: str, user: str | None, proxy: bool
    ) -> AuthOutcome:
        refused = refused_without_verdict(
            failure,
            user,
            log,
            DirectoryUnavailable,
            "no Digest credentials for {user} from the directory: {reason}",
            "credential check failed for {user}",
        )
        if refused is not None:
            return refused
        log.info("authentication failed for {user} from {source}", user=user, source=source)
        if self._limiter.failed(source, user):
            return TOO_MANY_FAILURES
        return self.challenge(proxy)

    def _expire_counts(self) -> None:
        """Forget the nonce-counts of nonces past their lifetime, once a second: each
        call removes only the nonces that expired since the last (`NonceCounts.expire`),
        so no call stalls the reactor however large the table is."""
        now = self._clock.seconds()
        if now - self._last_expiry >= _EXPIRY_INTERVAL:
            self._counts.expire(now - self._nonces.lifetime)
            self._last_expiry = now


def _answered(deferred: Deferred[Any]) -> bool:
    """Whether `deferred` holds a result already, one that is not a failure: it can be
    taken as it is, and nothing is left for callbacks to handle."""
    return (
        deferred.called
        and not deferred.paused
        and not isinstance(deferred.result, (Failure, Deferred))
    )


def _missing_or_bad(params: Mapping[str, str]) -> str | None:
    """What is wrong with a Digest credentials value's parameters, or None (RFC 7616 §3.4)."""
    for name in ("username", "nonce", "uri", "response", "qop", "nc", "cnonce"):
        if not params.get(name):
            return f"no {name}"
    if params["qop"] != "auth":
        return 'qop must be "auth"'
    nc = params["nc"]
    if len(nc) != 8 or not _NC_DIGITS.issuperset(nc):
        return "nc must be 8 hex digits"
    return None
