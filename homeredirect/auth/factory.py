"""Build the request authenticator that `[auth]` describes."""

from __future__ import annotations

import shutil

from twisted.application.service import IService
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorFromThreads, IReactorProcess, IReactorTime
from twisted.python.threadpool import ThreadPool

from homeredirect.auth.authenticator import DigestAuthenticator
from homeredirect.auth.cred import DigestChecker, SipIdentityRealm
from homeredirect.auth.credentials_file import CredentialsFileError, read_credentials
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.interfaces import IRequestAuthenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceIssuer, new_secret
from homeredirect.auth.ntlm.acceptor import NtlmAcceptor, ServerNames
from homeredirect.auth.ntlm.accounts import (
    AccountNames,
    NtHashChecker,
    NtlmAccountsError,
    read_ntlm_accounts,
)
from homeredirect.auth.ntlm.interfaces import INtlmResponseChecker
from homeredirect.auth.ntlm.winbind import WinbindChecker
from homeredirect.auth.sipae import NtlmSipAuthenticator, SchemeAuthenticators, SecurityAssociations
from homeredirect.config.assignments import AssignmentsConfig, LdapAssignmentsConfig
from homeredirect.config.auth import AuthConfig

__all__ = ["CredentialsFileError", "build_authenticator"]


def build_authenticator(
    config: AuthConfig,
    clock: IReactorTime,
    *,
    reactor: IReactorFromThreads | None = None,
    pool: ThreadPool | None = None,
    services: list[IService] | None = None,
    assignments: AssignmentsConfig | None = None,
) -> IRequestAuthenticator:
    """Read the credentials and nonce secret (start-up, before the reactor runs, so
    synchronously) and assemble an authenticator per configured scheme; several are
    offered side by side, in the configured order. Kerberos accepts tokens in `pool`, a
    thread pool the caller owns, and needs `reactor` to come back from it. NTLM with the
    winbind backend appends to `services` the service running its `ntlm_auth` helpers
    (spawned through `reactor`), which the caller must start and stop; so does Digest with
    `digest_source = "ldap"`, for the lookups in the `assignments` LDAP directory.

    Raise `CredentialsFileError` for an unusable credentials or secret file, keytab or
    service principal.
    """
    limiter = FailureLimiter(clock, config.max_failures, config.failure_window)
    schemes: list[tuple[str, IRequestAuthenticator]] = []
    for scheme in config.schemes:
        if scheme == "digest":
            schemes.append(
                (scheme, _digest(config, clock, limiter, reactor, services, assignments))
            )
        elif scheme == "ntlm":
            schemes.append((scheme, _ntlm(config, clock, limiter, reactor, services)))
        elif scheme == "kerberos":
            schemes.append((scheme, _kerberos(config, clock, limiter, reactor, pool)))
    if len(schemes) == 1:
        return schemes[0][1]
    return SchemeAuthenticators(schemes, config.required)


def _digest(
    config: AuthConfig,
    clock: IReactorTime,
    limiter: FailureLimiter,
    reactor: object = None,
    services: list[IService] | None = None,
    assignments: AssignmentsConfig | None = None,
) -> DigestAuthenticator:
    checker: ICredentialsChecker
    if config.digest_source == "ldap":
        checker = _ldap_digest(config, clock, reactor, services, assignments)
    else:
        assert config.credentials is not None  # AuthConfig requires it for the file source
        accounts = read_credentials(config.credentials)
        checker = DigestChecker(lambda: accounts)
    if config.nonce_secret_file is not None:
        secret = config.nonce_secret_file.read_bytes().strip()
        if len(secret) < 16:
            raise CredentialsFileError(
                f"{config.nonce_secret_file} ([auth].nonce_secret_file): expected a secret of"
                f" at least 16 bytes (spaces and newlines at the ends do not count),"
                f" got {len(secret)}"
            )
    else:
        secret = new_secret()
    algorithms = [DigestAlgorithm(name) for name in config.algorithms]
    return DigestAuthenticator(
        required=config.required,
        portal=Portal(SipIdentityRealm(), [checker]),
        realm=config.realm,
        algorithms=algorithms,
        nonces=NonceIssuer(secret, config.realm, clock, lifetime=config.nonce_lifetime),
        limiter=limiter,
        clock=clock,
    )


def _ldap_digest(
    config: AuthConfig,
    clock: IReactorTime,
    reactor: object,
    services: list[IService] | None,
    assignments: AssignmentsConfig | None,
) -> ICredentialsChecker:
    """H(A1) values from the `[assignments]` LDAP directory, cached `digest_cache_ttl`
    seconds; the lookup service goes into `services`. python-ldap is imported only here."""
    if not isinstance(assignments, LdapAssignmentsConfig):
        raise CredentialsFileError('digest_source = "ldap" needs [assignments] backend = "ldap"')
    if services is None or reactor is None:
        raise ValueError("LDAP Digest credentials need a reactor and a service list")
    try:
        from homeredirect.auth import ldap_credentials
    except ImportError as e:
        raise CredentialsFileError(
            f'digest_source = "ldap" needs python-ldap: install homeredirect[ldap] ({e})'
        ) from e
    attributes = {DigestAlgorithm(name): attr for name, attr in config.ha1_attributes.items()}
    source = ldap_credentials.LdapDigestAccounts(assignments, attributes, reactor)
    services.append(source)
    cached = ldap_credentials.CachedDigestAccounts(source, clock=clock, ttl=config.digest_cache_ttl)
    return ldap_credentials.DirectoryDigestChecker(cached)


def _ntlm(
    config: AuthConfig,
    clock: IReactorTime,
    limiter: FailureLimiter,
    reactor: object = None,
    services: list[IService] | None = None,
) -> NtlmSipAuthenticator:
    """[MS-SIPAE] NTLM with NT hashes from `ntlm_credentials`, or checked at the domain
    controller through `ntlm_auth` (`ntlm_backend = "winbind"`)."""
    assert config.targetname is not None
    netbios = config.netbios_domain
    names = ServerNames(
        netbios_domain=netbios,
        netbios_computer=config.targetname.split(".", 1)[0].upper()[:15],
        dns_computer=config.targetname,
        dns_domain=config.realm,
    )
    account_names = AccountNames(netbios, config.realm)
    checker: INtlmResponseChecker
    if config.ntlm_backend == "winbind":
        checker = _winbind(config, account_names, clock, reactor, services)
    else:
        assert config.ntlm_credentials is not None  # AuthConfig requires it for "file"
        try:
            accounts = read_ntlm_accounts(config.ntlm_credentials)
        except NtlmAccountsError as e:
            raise CredentialsFileError(str(e)) from e
        checker = NtHashChecker(accounts, account_names)
    return NtlmSipAuthenticator(
        required=config.required,
        acceptor=NtlmAcceptor(checker, names, clock),
        targetname=config.targetname,
        version=config.sipae_version,
        associations=SecurityAssociations(
            clock, config.max_security_associations, config.security_association_lifetime
        ),
        limiter=limiter,
        clock=clock,
    )


WINBIND_MAX_PENDING = 64
"""NTLM logons waiting for ntlm_auth at once; more get no verdict rather than a queue."""


def _winbind(
    config: AuthConfig,
    names: AccountNames,
    clock: IReactorTime,
    reactor: object,
    services: list[IService] | None,
) -> WinbindChecker:
    if services is None or not IReactorProcess.providedBy(reactor):
        raise ValueError("the winbind NTLM backend needs a process reactor and a service list")
    program = shutil.which(config.ntlm_auth[0])
    if program is None:
        raise CredentialsFileError(
            f"ntlm_auth: cannot find {config.ntlm_auth[0]} (Debian package winbind)"
        )
    checker = WinbindChecker(
        [program, *config.ntlm_auth[1:]],
        names,
        IReactorProcess(reactor),
        clock,
        helpers=config.ntlm_auth_helpers,
        timeout=config.ntlm_auth_timeout,
        max_pending=WINBIND_MAX_PENDING,
        env=None,
    )
    services.append(checker)
    return checker


KERBEROS_MAX_PENDING = 64
"""Tokens being checked at once; more get 503 rather than a growing queue."""


def _kerberos(
    config: AuthConfig,
    clock: IReactorTime,
    limiter: FailureLimiter,
    reactor: IReactorFromThreads | None,
    pool: ThreadPool | None,
) -> IRequestAuthenticator:
    """[MS-SIPAE] Kerberos with the service principal's keys from `keytab`.

    gssapi (the `kerberos` extra) is imported only here, so the other schemes run
    without it.
    """
    principal = config.kerberos_principal
    assert principal is not None  # AuthConfig requires it for kerberos
    if reactor is None or pool is None:
        raise ValueError("Kerberos authentication needs a reactor and a thread pool")
    try:
        from homeredirect.auth import kerberos
    except ImportError as e:
        raise CredentialsFileError(
            f"Kerberos needs the gssapi package (pip install 'homeredirect[kerberos]'): {e}"
        ) from e
    try:
        acceptor = kerberos.KerberosAcceptor(principal, config.keytab)
    except kerberos.KerberosConfigError as e:
        raise CredentialsFileError(str(e)) from e
    return kerberos.KerberosSipAuthenticator(
        required=config.required,
        acceptor=acceptor,
        targetname=principal.partition("@")[0],
        version=config.sipae_version,
        associations=kerberos.KerberosAssociations(
            clock, config.max_security_associations, config.security_association_lifetime
        ),
        mapper=kerberos.PrincipalMapper(acceptor.realm, config.realm, config.kerberos_realms),
        limiter=limiter,
        clock=clock,
        runner=kerberos.BlockingRunner(reactor, pool, KERBEROS_MAX_PENDING),
    )
