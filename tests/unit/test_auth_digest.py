"""Digest authentication logic (RFC 3261 §22, RFC 7616, RFC 8760), driven with a Clock:
computations against the RFC's test vectors, nonces, replay, brute-force limits, the
credentials file and the SIP-side authenticator."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from homeredirect.auth.authenticator import (
    Authenticated,
    AuthOutcome,
    Challenge,
    DigestAuthenticator,
    Refused,
)
from homeredirect.auth.cred import DigestChecker, SipIdentityRealm, aor_of_username
from homeredirect.auth.credentials_file import CredentialsFileError, read_credentials
from homeredirect.auth.digest import DigestAlgorithm, expected_response, ha1_for
from homeredirect.auth.digest_client import answer_challenge
from homeredirect.auth.factory import build_authenticator
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceCounts, NonceIssuer, NonceState
from homeredirect.config.auth import AuthConfig
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import format_auth_value, parse_auth_value
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.message import Request
from homeredirect.sip.parser import MessageReceived, parse_datagram
from tests.unit import test_sipae_config as sipae_config

SECRET = b"0123456789abcdef0123456789abcdef"

# RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        (DigestAlgorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            DigestAlgorithm.SHA_256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ],
)
def test_responses_match_rfc7616_test_vectors(algorithm: DigestAlgorithm, response: str) -> None:
    v = RFC7616
    ha1 = ha1_for(algorithm, v["username"], v["realm"], v["password"])
    computed = expected_response(
        algorithm,
        ha1,
        method=v["method"],
        uri=v["uri"],
        nonce=v["nonce"],
        qop="auth",
        nc="00000001",
        cnonce=v["cnonce"],
    )
    assert computed == response


def test_sha512_256_is_the_truncated_sha512_variant_not_a_truncated_digest() -> None:
    # SHA-512/256 has its own initial values: it is not the first 64 hex digits of SHA-512.
    import hashlib

    ours = DigestAlgorithm.SHA_512_256.hash(b"abc")
    assert ours == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    assert ours != hashlib.sha512(b"abc").hexdigest()[:64]


def test_algorithm_names_are_case_insensitive_and_absent_means_md5() -> None:
    assert DigestAlgorithm.named("sha-256") is DigestAlgorithm.SHA_256
    assert DigestAlgorithm.named(None) is DigestAlgorithm.MD5
    assert DigestAlgorithm.named("MD5-sess") is None


# -- header syntax -----------------------------------------------------------------------


def test_auth_value_parses_quoted_and_token_params() -> None:
    value = parse_auth_value('Digest username="a\\"b", realm="example.com", nc=00000001, qop=auth')
    assert value.scheme_is("digest")
    assert dict(value.params) == {
        "username": 'a"b',
        "realm": "example.com",
        "nc": "00000001",
        "qop": "auth",
    }


def test_auth_value_round_trips_through_format() -> None:
    text = format_auth_value("Digest", [("realm", 'r"x', True), ("algorithm", "MD5", False)])
    assert text == 'Digest realm="r\\"x", algorithm=MD5'
    assert dict(parse_auth_value(text).params) == {"realm": 'r"x', "algorithm": "MD5"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        'Digest realm="unterminated',
        "Digest realm=a b=c",
        'Digest realm="a", realm="b"',
        "Digest =x",
        ", ".join(f"p{n}=1" for n in range(40)).join(("Digest ", "")),
    ],
)
def test_malformed_auth_values_raise_naming_the_header(value: str) -> None:
    with pytest.raises(SipParseError, match="Authorization"):
        parse_auth_value(value)


# -- nonces --------------------------------------------------------------------------------


def test_nonce_is_valid_then_stale_after_its_lifetime() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    issuer = NonceIssuer(SECRET, "example.com", clock, lifetime=300)
    nonce = issuer.issue()
    assert issuer.check(nonce) is NonceState.VALID
    clock.advance(301)
    assert issuer.check(nonce) is NonceState.STALE


def test_nonce_from_another_secret_or_tampered_is_invalid() -> None:
    clock = Clock()
    mine = NonceIssuer(SECRET, "example.com", clock)
    theirs = NonceIssuer(b"another secret of 16+ bytes", "example.com", clock)
    nonce = theirs.issue()
    assert mine.check(nonce) is NonceState.INVALID
    own = mine.issue()
    flipped = own[:-3] + ("A" if own[-3] != "A" else "B") + own[-2:]
    assert mine.check(flipped) is NonceState.INVALID
    assert mine.check("not base64 at all!") is NonceState.INVALID
    assert mine.check("") is NonceState.INVALID


def test_nonces_validate_across_issuers_sharing_a_secret() -> None:
    clock = Clock()
    one = NonceIssuer(SECRET, "example.com", clock)
    two = NonceIssuer(SECRET, "example.com", clock)
    assert two.check(one.issue()) is NonceState.VALID


def test_nonce_count_must_increase_and_the_table_is_bounded() -> None:
    counts = NonceCounts(max_nonces=2)
    assert counts.use("n1", 1.0, 1)
    assert not counts.use("n1", 1.0, 1)
    assert counts.use("n1", 1.0, 2)
    assert counts.use("n2", 2.0, 1)
    assert counts.use("n3", 3.0, 1)
    assert len(counts) == 2


def test_expire_forgets_nonces_issued_before_the_cutoff_from_the_least_recent_end() -> None:
    counts = NonceCounts()
    for issued in (1.0, 2.0, 3.0, 4.0):
        assert counts.use(f"n{issued:.0f}", issued, 1)
    counts.expire(3.0)
    assert len(counts) == 2
    # Forgotten: a count already used is accepted again only because the issuer calls
    # the nonce stale first; the live ones still refuse a replay.
    assert counts.use("n1", 1.0, 1)
    assert not counts.use("n3", 3.0, 1)
    assert not counts.use("n4", 4.0, 1)


def test_expire_stops_at_the_first_live_nonce_and_costs_what_it_removes() -> None:
    counts = NonceCounts()
    assert counts.use("old", 1.0, 1)
    assert counts.use("young", 10.0, 1)
    assert counts.use("old", 1.0, 2)  # used lately: now behind "young"
    counts.expire(5.0)
    assert len(counts) == 2  # "old" waits behind the live "young" (the issuer calls it stale)
    counts.expire(11.0)
    assert len(counts) == 0


def test_authenticator_forgets_expired_nonce_counts_within_a_second(tmp_path: Path) -> None:
    clock = Clock()
    auth = make_authenticator(tmp_path, clock)
    lifetime = auth._nonces.lifetime
    clock.advance(lifetime - 1)
    nonce_challenge = challenge_of(outcome(auth, register()))
    assert isinstance(outcome(auth, register(authorization=answer(nonce_challenge))), Authenticated)
    clock.advance(2)
    outcome(auth, register())  # any request lets the authenticator tidy up: still live
    assert len(auth._counts) == 1
    clock.advance(lifetime - 1)  # the nonce is a second past its lifetime
    outcome(auth, register())
    assert len(auth._counts) == 0


# -- brute force -----------------------------------------------------------------------


def test_limiter_blocks_after_max_failures_and_forgets_after_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(clock, max_failures=3, window=60)
    for _ in range(3):
        assert not limiter.blocked("198.51.100.1", "alice@example.com")
        limiter.failed("198.51.100.1", "alice@example.com")
    assert limiter.blocked("198.51.100.1", None)
    assert limiter.blocked("198.51.100.2", "alice@example.com")
    assert not limiter.blocked("198.51.100.2", "bob@example.com")
    clock.advance(60)
    assert not limiter.blocked("198.51.100.1", "alice@example.com")


def test_limiter_failed_says_whether_the_failure_blocks() -> None:
    clock = Clock()
    limiter = FailureLimiter(clock, max_failures=2, window=60)
    assert not limiter.failed("198.51.100.1", None)
    assert limiter.failed("198.51.100.1", None)  # the address's second failure
    assert not limiter.failed("198.51.100.2", "alice@example.com")
    assert limiter.failed("198.51.100.3", "alice@example.com")  # the user's second
    clock.advance(60)
    assert not limiter.failed("198.51.100.1", "alice@example.com")


def test_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(Clock(), max_failures=3, window=60, max_keys=100)
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}", f"user{n}@example.com")
    assert limiter.tracked() == (100, 100)


# -- credentials file ------------------------------------------------------------------


def test_credentials_file_with_passwords_and_hashes(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("user,password\nalice@example.com,wonderland\n")
    accounts = read_credentials(plain)
    alice = accounts[AddressOfRecord.parse("alice@example.com")]
    assert alice.ha1_for(DigestAlgorithm.MD5, "alice", "example.com") == ha1_for(
        DigestAlgorithm.MD5, "alice", "example.com", "wonderland"
    )
    hashed = tmp_path / "hashed.csv"
    md5 = ha1_for(DigestAlgorithm.MD5, "bob", "example.com", "builder")
    hashed.write_text(f"user,ha1_md5\nbob@example.com,{md5}\n")
    bob = read_credentials(hashed)[AddressOfRecord.parse("bob@example.com")]
    assert bob.ha1_for(DigestAlgorithm.MD5, "bob", "example.com") == md5
    assert bob.ha1_for(DigestAlgorithm.SHA_256, "bob", "example.com") is None
    assert bob.ha1_for(DigestAlgorithm.MD5, "bob@example.com", "example.com") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,secret\n", r"creds\.csv:1: expected the header"),
        ("user,password\nalice@example.com\n", r"creds\.csv:2: expected 2 columns"),
        ("user,password\nnot-an-aor,x\n", r"creds\.csv:2: expected a user"),
        ("user,ha1_md5\nalice@example.com,xyz\n", r"creds\.csv:2: ha1_md5 must be 32 hex"),
        ("user,password\na@example.com,x\na@example.com,y\n", r"creds\.csv:3: .* twice"),
        ("# only a comment\n", r"creds\.csv: no header line"),
    ],
)
def test_bad_credentials_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "creds.csv"
    path.write_text(text)
    with pytest.raises(CredentialsFileError, match=message):
        read_credentials(path)


def test_username_with_or_without_domain_names_the_same_account() -> None:
    assert aor_of_username("alice", "example.com") == aor_of_username(
        "alice@example.com", "example.com"
    )
    assert aor_of_username("a b", "example.com") is None


# -- the authenticator -----------------------------------------------------------------


def make_authenticator(tmp_path: Path, clock: Clock, max_failures: int = 10) -> DigestAuthenticator:
    path = tmp_path / "users.csv"
    path.write_text("user,password\nalice@example.com,wonderland\n")
    accounts = read_credentials(path)
    checker = DigestChecker(lambda: accounts)
    assert verifyObject(ICredentialsChecker, checker)
    return DigestAuthenticator(
        portal=Portal(SipIdentityRealm(), [checker]),
        realm="example.com",
        algorithms=list(DigestAlgorithm),
        nonces=NonceIssuer(SECRET, "example.com", clock),
        limiter=FailureLimiter(clock, max_failures=max_failures, window=60),
        clock=clock,
    )


def register(user: str = "alice", authorization: str | None = None) -> Request:
    header = f"Authorization: {authorization}\r\n" if authorization else ""
    data = (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bKabc\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@example.com>;tag=f1\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: c1@x\r\nCSeq: 1 REGISTER\r\n{header}Content-Length: 0\r\n\r\n"
    ).encode()
    event = parse_datagram(data)
    assert isinstance(event, MessageReceived) and isinstance(event.message, Request)
    return event.message


def outcome(auth: DigestAuthenticator, req: Request, source: str = "192.0.2.10") -> AuthOutcome:
    results: list[AuthOutcome] = []
    auth.authenticate(req, source, proxy=False).addCallback(results.append)
    (result,) = results
    return result


def challenge_of(result: AuthOutcome, algorithm: str = "SHA-256") -> str:
    assert isinstance(result, Challenge), result
    for _, value in result.headers:
        if f"algorithm={algorithm}" in value:
            return value
    raise AssertionError(f"no {algorithm} challenge in {result}")


def answer(challenge: str, user: str = "alice", password: str = "wonderland", nc: int = 1) -> str:
    return answer_challenge(
        parse_auth_value(challenge, "WWW-Authenticate"),
        method="REGISTER",
        uri="sip:example.com",
        username=user,
        password=password,
        nc=nc,
    )


def test_request_without_credentials_gets_one_challenge_per_algorithm_strongest_first(
    tmp_path: Path,
) -> None:
    result = outcome(make_authenticator(tmp_path, Clock()), register())
    assert isinstance(result, Challenge) and result.status == 401
    algorithms = [re.search(r"algorithm=([\w-]+)", v)[1] for _, v in result.headers]  # type: ignore[index]
    assert algorithms == ["SHA-512-256", "SHA-256", "MD5"]
    assert all(name == "WWW-Authenticate" for name, _ in result.headers)
    assert all('qop="auth"' in value for _, value in result.headers)


@pytest.mark.parametrize("algorithm", ["SHA-512-256", "SHA-256", "MD5"])
def test_right_password_authenticates_with_each_algorithm(tmp_path: Path, algorithm: str) -> None:
    auth = make_authenticator(tmp_path, Clock())
    challenge = challenge_of(outcome(auth, register()), algorithm)
    result = outcome(auth, register(authorization=answer(challenge)))
    assert result == Authenticated(AddressOfRecord.parse("alice@example.com"))


def test_wrong_password_gets_a_fresh_challenge(tmp_path: Path) -> None:
    auth = make_authenticator(tmp_path, Clock())
    challenge = challenge_of(outcome(auth, register()))
    result = outcome(auth, register(authorization=answer(challenge, password="guess")))
    assert isinstance(result, Challenge) and result.status == 401
    assert "stale" not in challenge_of(result)


def test_known_and_unknown_users_get_identical_challenges_but_for_the_nonce(
    tmp_path: Path,
) -> None:
    auth = make_authenticator(tmp_path, Clock())
    known = outcome(auth, register("alice"))
    unknown = outcome(auth, register("mallory"))
    assert isinstance(known, Challenge) and isinstance(unknown, Challenge)

    def without_nonce(c: Challenge) -> list[tuple[str, str]]:
        return [(n, re.sub(r'nonce="[^"]*"', "", v)) for n, v in c.headers]

    assert without_nonce(known) == without_nonce(unknown)
    # ... and a wrong password for either is answered alike, too.
    for user in ("alice", "mallory"):
        c = challenge_of(outcome(auth, register(user)))
        again = outcome(auth, register(user, answer(c, user=user, password="nope")))
        assert isinstance(again, Challenge) and again.status == 401


def test_stale_nonce_is_rechallenged_with_stale_true(tmp_path: Path) -> None:
    clock = Clock()
    auth = make_authenticator(tmp_path, clock)
    challenge = challenge_of(outcome(auth, register()))
    clock.advance(301)
    result = outcome(auth, register(authorization=answer(challenge)))
    assert "stale=true" in challenge_of(result)


def test_replayed_nonce_count_is_not_accepted_twice(tmp_path: Path) -> None:
    auth = make_authenticator(tmp_path, Clock())
    challenge = challenge_of(outcome(auth, register()))
    credentials = answer(challenge)
    assert isinstance(outcome(auth, register(authorization=credentials)), Authenticated)
    replay = outcome(auth, register(authorization=credentials))
    assert "stale=true" in challenge_of(replay)
    # The client's next count with the same nonce is fine.
    assert isinstance(outcome(auth, register(authorization=answer(challenge, nc=2))), Authenticated)


def test_opaque_never_issued_gets_a_fresh_challenge(tmp_path: Path) -> None:
    auth = make_authenticator(tmp_path, Clock())
    challenge = challenge_of(outcome(auth, register()))
    forged = re.sub(r'opaque="[^"]*"', 'opaque="0000"', answer(challenge))
    result = outcome(auth, register(authorization=forged))
    assert isinstance(result, Challenge) and "stale" not in challenge_of(result)


@pytest.mark.parametrize(
    "authorization",
    [
        'Digest realm="example.com", username="alice"',
        'Digest realm="example.com", username="alice", nonce="x", uri="sip:example.com", '
        'response="00", qop=auth, nc=1, cnonce="c"',
        'Digest realm="example.com", username=',
    ],
)
def test_malformed_authorization_gets_400(tmp_path: Path, authorization: str) -> None:
    result = outcome(make_authenticator(tmp_path, Clock()), register(authorization=authorization))
    assert isinstance(result, Refused) and result.status == 400


def test_credentials_for_another_realm_are_ignored_and_challenged(tmp_path: Path) -> None:
    auth = make_authenticator(tmp_path, Clock())
    other = 'Digest realm="elsewhere.example", username="alice", nonce="x"'
    assert isinstance(outcome(auth, register(authorization=other)), Challenge)


def test_credentials_hash_the_uri_the_client_names_even_if_not_the_request_uri(
    tmp_path: Path,
) -> None:
    auth = make_authenticator(tmp_path, Clock())
    challenge = challenge_of(outcome(auth, register()))
    credentials = answer_challenge(
        parse_auth_value(challenge, "WWW-Authenticate"),
        method="REGISTER",
        uri="sip:127.0.0.1:5060",
        username="alice",
        password="wonderland",
    )
    assert isinstance(outcome(auth, register(authorization=credentials)), Authenticated)
    # ... but the response must be computed over that uri.
    challenge = challenge_of(outcome(auth, register()))
    moved = answer(challenge).replace('uri="sip:example.com"', 'uri="sip:other.example"')
    assert isinstance(outcome(auth, register(authorization=moved)), Challenge)


def test_bounded_brute_force_loop_is_limited_after_max_failures(tmp_path: Path) -> None:
    auth = make_authenticator(tmp_path, Clock(), max_failures=10)
    statuses = []
    for attempt in range(200):
        challenge = challenge_of(outcome(auth, register()))
        result = outcome(auth, register(authorization=answer(challenge, password=f"pw{attempt}")))
        statuses.append(result.status)  # type: ignore[union-attr]
    assert statuses[:9] == [401] * 9
    assert set(statuses[9:]) == {403}
    # Even the right password is refused from that address while the window lasts...
    challenge = challenge_of(outcome(auth, register(), source="192.0.2.99"))
    assert isinstance(outcome(auth, register(authorization=answer(challenge))), Refused)


# -- hashed credentials file, end to end ---------------------------------------------------

# H(A1) = H("alice:example.com:wonderland") (RFC 7616 §3.4.2), spelled out rather than
# computed with the code under test.
ALICE_HA1 = {
    "MD5": hashlib.md5(b"alice:example.com:wonderland", usedforsecurity=False).hexdigest(),
    "SHA-256": hashlib.sha256(b"alice:example.com:wonderland").hexdigest(),
}


def hashed_authenticator(tmp_path: Path, clock: Clock) -> DigestAuthenticator:
    """An authenticator over a file with the hashed header `user,ha1_md5,ha1_sha256`
    (no password, no SHA-512-256 column), offering every algorithm."""
    path = tmp_path / "hashed.csv"
    path.write_text(
        f"user,ha1_md5,ha1_sha256\nalice@example.com,{ALICE_HA1['MD5']},{ALICE_HA1['SHA-256']}\n"
    )
    accounts = read_credentials(path)
    return DigestAuthenticator(
        portal=Portal(SipIdentityRealm(), [DigestChecker(lambda: accounts)]),
        realm="example.com",
        algorithms=list(DigestAlgorithm),
        nonces=NonceIssuer(SECRET, "example.com", clock),
        limiter=FailureLimiter(clock, max_failures=10, window=60),
        clock=clock,
    )


def answer_from_ha1(challenge: str, algorithm: str, ha1: str, username: str = "alice") -> str:
    """An Authorization answering `challenge` as a client holding only H(A1) would, with
    the response of RFC 7616 §3.4.1 computed here with hashlib."""
    value = parse_auth_value(challenge, "WWW-Authenticate")
    digest = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
    nonce, opaque = value.get("nonce"), value.get("opaque")
    assert nonce is not None and opaque is not None
    ha2 = digest(b"REGISTER:sip:example.com").hexdigest()
    response = digest(f"{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}".encode()).hexdigest()
    return format_auth_value(
        "Digest",
        [
            ("username", username, True),
            ("realm", "example.com", True),
            ("nonce", nonce, True),
            ("uri", "sip:example.com", True),
            ("response", response, True),
            ("algorithm", algorithm, False),
            ("qop", "auth", False),
            ("nc", "00000001", False),
            ("cnonce", "0a4f113b", True),
            ("opaque", opaque, True),
        ],
    )


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_hashed_credentials_file_authenticates_a_response_from_its_column(
    tmp_path: Path, algorithm: str
) -> None:
    auth = hashed_authenticator(tmp_path, Clock())
    challenge = challenge_of(outcome(auth, register()), algorithm)
    credentials = answer_from_ha1(challenge, algorithm, ALICE_HA1[algorithm])
    result = outcome(auth, register(authorization=credentials))
    assert result == Authenticated(AddressOfRecord.parse("alice@example.com"))


def test_hashed_credentials_file_refuses_the_other_columns_hash_and_a_missing_column(
    tmp_path: Path,
) -> None:
    auth = hashed_authenticator(tmp_path, Clock())
    # A SHA-256 response keyed with the MD5 column's value is wrong.
    challenge = challenge_of(outcome(auth, register()), "SHA-256")
    crossed = answer_from_ha1(challenge, "SHA-256", ALICE_HA1["MD5"])
    result = outcome(auth, register(authorization=crossed))
    assert isinstance(result, Challenge) and result.status == 401
    # No ha1_sha512_256 column: even the right password cannot answer SHA-512-256.
    challenge = challenge_of(outcome(auth, register()), "SHA-512-256")
    result = outcome(auth, register(authorization=answer(challenge)))
    assert isinstance(result, Challenge) and result.status == 401


def auth_with_secret(tmp_path: Path, secret: bytes) -> AuthConfig:
    """`[auth]` through the real loader (test_sipae_config's configuration), Digest from
    its users.csv, with `secret` as the content of its nonce_secret_file."""
    (tmp_path / "nonce.secret").write_bytes(secret)
    auth: AuthConfig | None = sipae_config.config(
        tmp_path, credentials="users.csv", nonce_secret_file="nonce.secret"
    ).auth
    assert auth is not None
    return auth


@pytest.mark.parametrize("secret", [b"short\n", b"  \n", b" 0123456789abcde \n"])
def test_a_short_nonce_secret_file_names_the_file_the_key_and_the_length(
    tmp_path: Path, secret: bytes
) -> None:
    auth = auth_with_secret(tmp_path, secret)
    with pytest.raises(CredentialsFileError) as raised:
        build_authenticator(auth, Clock())
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'nonce.secret'} ([auth].nonce_secret_file): ")
    length = len(secret.strip())
    assert message.endswith(f"(spaces and newlines at the ends do not count), got {length}")


def test_a_nonce_secret_file_of_sixteen_bytes_is_taken(tmp_path: Path) -> None:
    auth = auth_with_secret(tmp_path, b"0123456789abcdef\n")
    assert isinstance(build_authenticator(auth, Clock()), DigestAuthenticator)
