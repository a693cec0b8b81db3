"""Build the request authenticator that `[auth]` describes."""

from __future__ import annotations

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

from homeredirect.auth.authenticator import DigestAuthenticator
from homeredirect.auth.cred import DigestChecker, SipIdentityRealm
from homeredirect.auth.credentials_file import CredentialsFileError, read_credentials
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceIssuer, new_secret
from homeredirect.config.auth import AuthConfig

__all__ = ["CredentialsFileError", "build_authenticator"]


def build_authenticator(config: AuthConfig, clock: IReactorTime) -> DigestAuthenticator:
    """Read the credentials and nonce secret (start-up, before the reactor runs, so
    synchronously) and assemble the Digest authenticator.

    Raise `CredentialsFileError` for an unusable credentials or secret file.
    """
    assert config.credentials is not None  # AuthConfig requires it for digest
    accounts = read_credentials(config.credentials)
    if config.nonce_secret_file is not None:
        secret = config.nonce_secret_file.read_bytes().strip()
        if len(secret) < 16:
            raise CredentialsFileError(
                f"{config.nonce_secret_file}: a nonce secret needs at least 16 bytes"
            )
    else:
        secret = new_secret()
    algorithms = [DigestAlgorithm(name) for name in config.algorithms]
    return DigestAuthenticator(
        required=config.required,
        portal=Portal(SipIdentityRealm(), [DigestChecker(lambda: accounts)]),
        realm=config.realm,
        algorithms=algorithms,
        nonces=NonceIssuer(secret, config.realm, clock, lifetime=config.nonce_lifetime),
        limiter=FailureLimiter(clock, config.max_failures, config.failure_window),
        clock=clock,
    )
