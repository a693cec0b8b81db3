"""Digest credentials from a directory (`[auth] digest_source = "ldap"`), the logic only:
the checker over an in-memory account source, the TTL cache on a Clock, reading H(A1)
values out of search results, the authenticator's 503 for an outage, and the config keys.
The real slapd is in tests/integration/test_ldap_digest.py."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from attrs import define, field
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeredirect.auth.authenticator import Authenticated, Challenge, DigestAuthenticator, Refused
from homeredirect.auth.cred import ISipDigestCredentials, SipDigestCredentials, SipIdentityRealm
from homeredirect.auth.credentials_file import DigestAccount
from homeredirect.auth.digest import DigestAlgorithm, expected_response, ha1_for
from homeredirect.auth.ldap_credentials import (
    CachedDigestAccounts,
    DirectoryDigestChecker,
    IDigestAccountSource,
    accounts_from_entries,
)
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceIssuer
from homeredirect.config.errors import ConfigError
from homeredirect.config.load import parse_config
from homeredirect.config.schema import Config
from homeredirect.resolve.errors import DirectoryUnavailable
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.resolve.ldap_pool import SearchResult
from tests.unit.test_auth_digest import answer, challenge_of, outcome, register

REALM = "example.com"
ALICE = AddressOfRecord("alice", REALM)
MD5_HA1 = ha1_for(DigestAlgorithm.MD5, "alice", REALM, "wonderland")
SHA256_HA1 = ha1_for(DigestAlgorithm.SHA_256, "alice", REALM, "wonderland")


@implementer(IDigestAccountSource)
@define
class MemoryAccounts:
    """An in-memory directory: answers at once, or leaves the answer `pending` when
    `hold` is set; `down` makes every lookup fail as an unreachable directory would."""

    accounts: dict[AddressOfRecord, DigestAccount] = field(factory=dict)
    down: bool = False
    hold: bool = False
    lookups: list[AddressOfRecord] = field(factory=list)
    pending: list[tuple[AddressOfRecord, Deferred[DigestAccount | None]]] = field(factory=list)

    def account(self, aor: AddressOfRecord) -> Deferred[DigestAccount | None]:
        self.lookups.append(aor)
        if self.down:
            return fail(DirectoryUnavailable("LDAP: Can't contact LDAP server"))
        if self.hold:
            waiting: Deferred[DigestAccount | None] = Deferred()
            self.pending.append((aor, waiting))
            return waiting
        return succeed(self.accounts.get(aor))


def alice_account() -> DigestAccount:
    hashes = {DigestAlgorithm.MD5: MD5_HA1, DigestAlgorithm.SHA_256: SHA256_HA1}
    return DigestAccount(ALICE, None, MappingProxyType(hashes))


@implementer(ISipDigestCredentials)
@define
class CountingCredentials:
    """Real credentials that count the hash checks made against them."""

    inner: SipDigestCredentials
    checks: int = 0

    @property
    def username(self) -> str:
        return self.inner.username

    @property
    def realm(self) -> str:
        return self.inner.realm

    @property
    def algorithm(self) -> DigestAlgorithm:
        return self.inner.algorithm

    def check_ha1(self, ha1: str) -> bool:
        self.checks += 1
        return self.inner.check_ha1(ha1)


def credentials(
    user: str = "alice",
    password: str = "wonderland",
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5,
) -> CountingCredentials:
    nonce, cnonce, nc = "n0nce", "cn0nce", "00000001"
    response = expected_response(
        algorithm,
        ha1_for(algorithm, user, REALM, password),
        method="REGISTER",
        uri="sip:example.com",
        nonce=nonce,
        qop="auth",
        nc=nc,
        cnonce=cnonce,
    )
    inner = SipDigestCredentials(
        username=user,
        realm=REALM,
        algorithm=algorithm,
        method="REGISTER",
        uri="sip:example.com",
        nonce=nonce,
        qop="auth",
        nc=nc,
        cnonce=cnonce,
        response=response,
    )
    return CountingCredentials(inner)


def result_of(deferred: Deferred[Any]) -> Any:
    """The result a Deferred already has (a Failure if it failed)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


# -- the checker -------------------------------------------------------------------------


def test_checker_and_sources_provide_their_interfaces() -> None:
    source = MemoryAccounts()
    assert verifyObject(IDigestAccountSource, source)
    assert verifyObject(ICredentialsChecker, DirectoryDigestChecker(source))
    cache = CachedDigestAccounts(source, clock=Clock(), ttl=30)
    assert verifyObject(IDigestAccountSource, cache)


@pytest.mark.parametrize("algorithm", [DigestAlgorithm.MD5, DigestAlgorithm.SHA_256])
def test_right_password_against_a_stored_ha1_gives_the_aor(algorithm: DigestAlgorithm) -> None:
    checker = DirectoryDigestChecker(MemoryAccounts({ALICE: alice_account()}))
    assert (
        result_of(checker.requestAvatarId(credentials(algorithm=algorithm))) == b"alice@example.com"
    )


def test_wrong_password_fails_as_unauthorized() -> None:
    checker = DirectoryDigestChecker(MemoryAccounts({ALICE: alice_account()}))
    failure = result_of(checker.requestAvatarId(credentials(password="guess")))
    assert isinstance(failure, Failure) and failure.check(UnauthorizedLogin)


def test_algorithm_without_a_stored_ha1_fails_as_unauthorized() -> None:
    checker = DirectoryDigestChecker(MemoryAccounts({ALICE: alice_account()}))
    creds = credentials(algorithm=DigestAlgorithm.SHA_512_256)
    failure = result_of(checker.requestAvatarId(creds))
    assert isinstance(failure, Failure) and failure.check(UnauthorizedLogin)


def test_unknown_user_costs_the_same_lookup_and_hash_as_a_known_one() -> None:
    source = MemoryAccounts({ALICE: alice_account()})
    checker = DirectoryDigestChecker(source)
    known, unknown = credentials(password="guess"), credentials(user="mallory")
    for creds in (known, unknown):
        failure = result_of(checker.requestAvatarId(creds))
        assert isinstance(failure, Failure) and failure.check(UnauthorizedLogin)
    assert source.lookups == [ALICE, AddressOfRecord("mallory", REALM)]
    assert (known.checks, unknown.checks) == (1, 1)


def test_directory_outage_fails_with_directory_unavailable_not_a_wrong_password() -> None:
    checker = DirectoryDigestChecker(MemoryAccounts({ALICE: alice_account()}, down=True))
    creds = credentials()
    failure = result_of(checker.requestAvatarId(creds))
    assert isinstance(failure, Failure) and failure.check(DirectoryUnavailable)
    assert not failure.check(UnauthorizedLogin)
    assert creds.checks == 0


def test_lookup_answered_later_completes_the_login() -> None:
    source = MemoryAccounts({ALICE: alice_account()}, hold=True)
    login = DirectoryDigestChecker(source).requestAvatarId(credentials())
    results: list[object] = []
    login.addBoth(results.append)
    assert results == []
    ((_, waiting),) = source.pending
    waiting.callback(alice_account())
    assert results == [b"alice@example.com"]


# -- the cache ---------------------------------------------------------------------------


def test_cache_reuses_an_answer_for_ttl_seconds_then_asks_again() -> None:
    clock, source = Clock(), MemoryAccounts({ALICE: alice_account()})
    cache = CachedDigestAccounts(source, clock=clock, ttl=30)
    assert result_of(cache.account(ALICE)) == alice_account()
    clock.advance(29)
    assert result_of(cache.account(ALICE)) == alice_account()
    assert len(source.lookups) == 1
    clock.advance(1)
    result_of(cache.account(ALICE))
    assert len(source.lookups) == 2
    assert (cache.hits, cache.misses) == (1, 2)


def test_cache_keeps_unknown_users_too() -> None:
    clock, source = Clock(), MemoryAccounts()
    cache = CachedDigestAccounts(source, clock=clock, ttl=30)
    assert result_of(cache.account(ALICE)) is None
    assert result_of(cache.account(ALICE)) is None
    assert len(source.lookups) == 1


def test_concurrent_lookups_of_one_user_share_one_query() -> None:
    source = MemoryAccounts({ALICE: alice_account()}, hold=True)
    cache = CachedDigestAccounts(source, clock=Clock(), ttl=30)
    first, second = cache.account(ALICE), cache.account(ALICE)
    ((_, waiting),) = source.pending
    waiting.callback(alice_account())
    assert result_of(first) == result_of(second) == alice_account()
    assert len(source.lookups) == 1


def test_failures_reach_every_waiter_and_are_not_cached() -> None:
    source = MemoryAccounts({ALICE: alice_account()}, hold=True)
    cache = CachedDigestAccounts(source, clock=Clock(), ttl=30)
    first, second = cache.account(ALICE), cache.account(ALICE)
    ((_, waiting),) = source.pending
    waiting.errback(DirectoryUnavailable("down"))
    for deferred in (first, second):
        failure = result_of(deferred)
        assert isinstance(failure, Failure) and failure.check(DirectoryUnavailable)
    source.hold = False
    assert result_of(cache.account(ALICE)) == alice_account()
    assert len(source.lookups) == 2


def test_cache_drops_the_least_recently_used_beyond_max_entries() -> None:
    source = MemoryAccounts()
    cache = CachedDigestAccounts(source, clock=Clock(), ttl=30, max_entries=2)
    users = [AddressOfRecord(name, REALM) for name in ("a", "b", "c")]
    for aor in users:
        result_of(cache.account(aor))
    result_of(cache.account(users[0]))  # dropped: asked again
    result_of(cache.account(users[2]))  # kept
    assert source.lookups == [*users, users[0]]


# -- reading search results --------------------------------------------------------------

ATTRIBUTES = {DigestAlgorithm.MD5: "sipHA1", DigestAlgorithm.SHA_256: "sipHA1Sha256"}


def entry(**attributes: str) -> tuple[str, dict[str, list[bytes]]]:
    return "cn=alice,ou=users,dc=example,dc=com", {
        name: [value.encode()] for name, value in attributes.items()
    }


def always(_: object) -> bool:
    return True


def test_ha1_values_are_read_from_the_configured_attributes_in_any_case() -> None:
    found = SearchResult([entry(siphA1=MD5_HA1.upper(), sipHA1Sha256=SHA256_HA1)], False)
    account, problem = accounts_from_entries(ALICE, found, ATTRIBUTES, always)
    assert account == alice_account() and problem is None


def test_a_password_in_an_ha1_attribute_is_ignored_and_reported() -> None:
    found = SearchResult([entry(sipHA1="wonderland", sipHA1Sha256=SHA256_HA1)], False)
    account, problem = accounts_from_entries(ALICE, found, ATTRIBUTES, always)
    assert account is not None and DigestAlgorithm.MD5 not in account.ha1
    assert problem is not None and "sipHA1" in problem


def test_entry_without_any_ha1_is_no_account() -> None:
    found = SearchResult([entry(cn="alice")], False)
    assert accounts_from_entries(ALICE, found, ATTRIBUTES, always) == (None, None)


def test_disabled_entry_is_no_account() -> None:
    found = SearchResult([entry(sipHA1=MD5_HA1)], False)
    assert accounts_from_entries(ALICE, found, ATTRIBUTES, lambda _: False) == (None, None)


def test_an_address_on_several_entries_is_no_account_and_reported() -> None:
    found = SearchResult([entry(sipHA1=MD5_HA1), entry(sipHA1=MD5_HA1)], True)
    account, problem = accounts_from_entries(ALICE, found, ATTRIBUTES, always)
    assert account is None and problem is not None and "several" in problem


# -- the authenticator -------------------------------------------------------------------


def directory_authenticator(source: MemoryAccounts, clock: Clock) -> DigestAuthenticator:
    return DigestAuthenticator(
        portal=Portal(SipIdentityRealm(), [DirectoryDigestChecker(source)]),
        realm=REALM,
        algorithms=[DigestAlgorithm.SHA_256, DigestAlgorithm.MD5],
        nonces=NonceIssuer(b"0123456789abcdef0123456789abcdef", REALM, clock),
        limiter=FailureLimiter(clock, max_failures=2, window=60),
        clock=clock,
    )


def test_authenticator_accepts_the_password_whose_ha1_the_directory_holds() -> None:
    auth = directory_authenticator(MemoryAccounts({ALICE: alice_account()}), Clock())
    challenge = challenge_of(outcome(auth, register()))
    assert outcome(auth, register(authorization=answer(challenge))) == Authenticated(ALICE)


def test_authenticator_answers_an_outage_with_503_and_counts_no_failure() -> None:
    source = MemoryAccounts({ALICE: alice_account()}, down=True)
    auth = directory_authenticator(source, Clock())
    for _ in range(3):  # more than max_failures: never turned into 403
        challenge = challenge_of(outcome(auth, register()))
        result = outcome(auth, register(authorization=answer(challenge)))
        assert result == Refused(503, "Authentication service unavailable")
    source.down = False
    challenge = challenge_of(outcome(auth, register()))
    assert isinstance(outcome(auth, register(authorization=answer(challenge))), Authenticated)


def test_authenticator_rechallenges_a_wrong_password_from_the_directory() -> None:
    auth = directory_authenticator(MemoryAccounts({ALICE: alice_account()}), Clock())
    challenge = challenge_of(outcome(auth, register()))
    result = outcome(auth, register(authorization=answer(challenge, password="guess")))
    assert isinstance(result, Challenge) and result.status == 401


# -- [auth] keys -------------------------------------------------------------------------

LDAP = {"backend": "ldap", "uris": ["ldap://127.0.0.1:3890"], "base_dn": "dc=example,dc=com"}
HA1 = {"MD5": "sipHA1", "SHA-256": "sipHA1Sha256"}


def config_with(base_dir: Path, assignments: dict[str, Any] = LDAP, **auth: Any) -> Config:
    data = {
        "server": {"fqdn": "director.example.com", "domains": ["example.com"]},
        "listen": [{"transport": "udp"}],
        "assignments": assignments,
        "auth": {"realm": REALM} | auth,
    }
    return parse_config(data, "director.toml", base_dir)


def error_for(base_dir: Path, assignments: dict[str, Any] = LDAP, **auth: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        config_with(base_dir, assignments, **auth)
    return str(caught.value)


def test_digest_source_defaults_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user,password\n")
    auth = config_with(tmp_path, credentials="users.csv").auth
    assert auth is not None
    assert (auth.digest_source, dict(auth.ha1_attributes), auth.digest_cache_ttl) == (
        "file",
        {},
        30.0,
    )


def test_ldap_digest_source_keys_are_read(tmp_path: Path) -> None:
    auth = config_with(
        tmp_path,
        digest_source="ldap",
        ha1_attributes=HA1,
        algorithms=["SHA-256", "MD5"],
        digest_cache_ttl=5,
    ).auth
    assert auth is not None
    assert (auth.digest_source, dict(auth.ha1_attributes), auth.digest_cache_ttl) == (
        "ldap",
        HA1,
        5.0,
    )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"ha1_attributes": {"MD5": "userPassword"}, "algorithms": ["MD5"]},
            '[auth].ha1_attributes."MD5": expected an attribute holding H(A1), not a password,'
            ' got "userPassword"',
        ),
        (
            {"ha1_attributes": {"SHA-1": "sipHA1"}},
            '[auth].ha1_attributes."SHA-1": expected one of SHA-512-256, SHA-256, MD5',
        ),
        (
            {"ha1_attributes": {"MD5": "sip HA1"}, "algorithms": ["MD5"]},
            '[auth].ha1_attributes."MD5": expected an LDAP attribute name',
        ),
        ({}, "[auth].ha1_attributes: expected a table such as"),
        (
            {"ha1_attributes": HA1},
            "[auth].algorithms: expected only algorithms ha1_attributes has an attribute for"
            ' ("MD5", "SHA-256")',
        ),
        (
            {"ha1_attributes": HA1, "algorithms": ["MD5"], "credentials": "users.csv"},
            '[auth].credentials: expected nothing with digest_source = "ldap"',
        ),
        ({"digest_source": "sql"}, '[auth].digest_source: expected one of "file", "ldap"'),
    ],
)
def test_bad_ldap_digest_keys_are_named(tmp_path: Path, keys: dict[str, Any], message: str) -> None:
    (tmp_path / "users.csv").write_text("user,password\n")
    settings: dict[str, Any] = {"digest_source": "ldap"} | keys
    assert message in error_for(tmp_path, **settings)


def test_ha1_attributes_are_refused_with_the_file_source(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user,password\n")
    message = error_for(tmp_path, credentials="users.csv", ha1_attributes={"MD5": "sipHA1"})
    assert '[auth].ha1_attributes: expected nothing with digest_source = "file"' in message


def test_ldap_digest_source_needs_the_ldap_assignments_backend(tmp_path: Path) -> None:
    (tmp_path / "assignments.csv").write_text("user,home_server\n")
    message = error_for(
        tmp_path,
        {"backend": "file", "path": "assignments.csv"},
        digest_source="ldap",
        ha1_attributes={"MD5": "sipHA1"},
        algorithms=["MD5"],
    )
    assert '[assignments]: expected backend = "ldap"' in message
    assert 'got "file"' in message
