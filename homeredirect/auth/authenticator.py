"""The SIP side of Digest authentication: from a request to an outcome (RFC 3261 §22).

`DigestAuthenticator.authenticate` reads the request's `Authorization` (or, for requests a
proxy forwards, `Proxy-Authorization`) for our realm, checks nonce, opaque and
nonce-count itself, hands the credentials to a `twisted.cred` portal, and says what to do:
go on as an authenticated user, challenge (401/407 with one challenge per algorithm,
strongest first, RFC 8760 §2.4), or refuse (400 for a malformed header, 403 once the
failure limit is reached). Challenges depend on nothing but the realm, the configured
algorithms and a fresh nonce, so known and unknown users get the same bytes apart from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from homeredirect.auth.cred import IAuthenticatedUser, SipDigestCredentials, aor_of_username
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceCounts, NonceIssuer, NonceState
from homeredirect.auth.outcomes import Authenticated, AuthOutcome, Challenge, Refused
from homeredirect.logs import FilteredLogger
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import AuthValue, format_auth_value, parse_auth_value
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.message import Request

__all__ = ["AuthOutcome", "Authenticated", "Challenge", "DigestAuthenticator", "Refused"]

log = FilteredLogger()

_NC_DIGITS = frozenset("0123456789abcdefABCDEF")


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
        self._opaque = nonces.opaque_for("")
        self._last_expiry = clock.seconds()

    def challenge(self, proxy: bool, stale: bool = False) -> Challenge:
        """A fresh challenge: one header per algorithm, all with the same nonce."""
        nonce = self._nonces.issue()
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = []
        for algorithm in self._algorithms:
            params = [
                ("realm", self.realm, True),
                ("nonce", nonce, True),
                ("opaque", self._opaque, True),
                ("algorithm", algorithm.value, False),
                ("qop", "auth", True),
            ]
            if stale:
                params.append(("stale", "true", False))
            headers.append((name, format_auth_value("Digest", params)))
        return Challenge(407 if proxy else 401, tuple(headers))

    def authenticate(self, request: Request, source: str, proxy: bool) -> Deferred[AuthOutcome]:
        """Decide what `request`, received from `source` (an address), gets.

        Never fails: every problem is an outcome, logged with the source.
        """
        self._expire_counts()
        header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            ours = self._credentials_for_realm(request.headers.get_all(header), header)
        except SipParseError as e:
            log.info(
                "malformed {header} from {source}: {reason}",
                header=header,
                source=source,
                reason=e.reason,
            )
            return succeed(Refused(400, f"Malformed {header} header"))
        if ours is None:
            return succeed(self.challenge(proxy))
        username = ours.get("username")
        account = None if username is None else aor_of_username(username, self.realm)
        user_key = None if account is None else str(account)
        if self._limiter.blocked(source, user_key):
            log.warn(
                "refused {source} for {user}: too many failed attempts",
                source=source,
                user=user_key,
            )
            return succeed(Refused(403, "Too many failed attempts"))
        problem = _missing_or_bad(ours)
        if problem is not None:
            log.info(
                "bad Digest credentials from {source}: {problem}", source=source, problem=problem
            )
            return succeed(Refused(400, f"Malformed {header} header: {problem}"))
        algorithm = DigestAlgorithm.named(ours.get("algorithm"))
        if algorithm is None or algorithm not in self._algorithms:
            return succeed(self.challenge(proxy))
        nonce = ours.params["nonce"]
        state = self._nonces.check(nonce)
        if state is NonceState.INVALID or ours.get("opaque") != self._opaque:
            log.info("nonce or opaque never issued, from {source}", source=source)
            return succeed(self.challenge(proxy))
        if state is NonceState.STALE:
            return succeed(self.challenge(proxy, stale=True))
        if not self._counts.use(nonce, self._nonces.issued_at(nonce), int(ours.params["nc"], 16)):
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
            uri=ours.params["uri"],
            nonce=nonce,
            qop="auth",
            nc=ours.params["nc"],
            cnonce=ours.params["cnonce"],
            response=ours.params["response"],
        )
        login = self._portal.login(credentials, None, IAuthenticatedUser)
        return login.addCallbacks(
            self._logged_in, self._login_failed, (source,), {}, (source, user_key, proxy)
        )

    def _logged_in(self, result: tuple[object, object, object], source: str) -> AuthOutcome:
        _, avatar, _ = result
        aor: AddressOfRecord = IAuthenticatedUser(avatar).aor
        self._limiter.succeeded(source, str(aor))
        return Authenticated(aor)

    def _login_failed(
        self, failure: Failure, source: str, user: str | None, proxy: bool
    ) -> AuthOutcome:
        if failure.check(DirectoryUnavailable):
            # The credentials source (LDAP) cannot answer: not a wrong password, so no
            # failure is counted; the client retries after Retry-After (RFC 3261 §21.5.4).
            log.warn(
                "no Digest credentials for {user} from the directory: {reason}",
                user=user,
                reason=str(failure.value),
            )
            return Refused(503, "Authentication service unavailable")
        if not failure.check(UnauthorizedLogin):
            log.failure("credential check failed for {user}", failure, user=user)
            return Refused(500, "Authentication failed")
        self._limiter.failed(source, user)
        log.info("authentication failed for {user} from {source}", user=user, source=source)
        if self._limiter.blocked(source, user):
            return Refused(403, "Too many failed attempts")
        return self.challenge(proxy)

    def _credentials_for_realm(self, values: list[str], header: str) -> AuthValue | None:
        """The Digest credentials for our realm (RFC 3261 §22.3: a request may carry
        credentials for several realms; the others belong to other proxies)."""
        for value in values:
            parsed = parse_auth_value(value, header)
            if parsed.scheme_is("Digest") and parsed.get("realm") == self.realm:
                return parsed
        return None

    def _expire_counts(self) -> None:
        now = self._clock.seconds()
        if now - self._last_expiry >= self._nonces.lifetime:
            self._counts.expire(now - self._nonces.lifetime)
            self._last_expiry = now


def _missing_or_bad(credentials: AuthValue) -> str | None:
    """What is wrong with a Digest credentials value, or None (RFC 7616 §3.4)."""
    for name in ("username", "nonce", "uri", "response", "qop", "nc", "cnonce"):
        if not credentials.get(name):
            return f"no {name}"
    if credentials.params["qop"] != "auth":
        return 'qop must be "auth"'
    nc = credentials.params["nc"]
    if len(nc) != 8 or not _NC_DIGITS.issuperset(nc):
        return "nc must be 8 hex digits"
    return None
