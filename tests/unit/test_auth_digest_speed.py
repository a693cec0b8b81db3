"""The fast paths of Digest authentication (bench/auth_costs.py) keep its behaviour and its
security properties: HMAC nonces, challenges as `format_auth_value` writes them, strict
header parsing, the same hash work for known and unknown users, and outcomes from
checkers that answer later or not at all."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from homeredirect.auth import digest
from homeredirect.auth.authenticator import (
    Authenticated,
    AuthOutcome,
    Challenge,
    DigestAuthenticator,
    Refused,
)
from homeredirect.auth.cred import DigestChecker, ISipDigestCredentials, SipIdentityRealm
from homeredirect.auth.credentials_file import read_credentials
from homeredirect.auth.digest import DigestAlgorithm
from homeredirect.auth.limiter import FailureLimiter
from homeredirect.auth.nonces import NonceIssuer, NonceState, _HmacSha256
from homeredirect.resolve.interfaces import AddressOfRecord
from homeredirect.sip.credentials import (
    _parse_param_by_param,
    format_auth_value,
    parse_auth_value,
    quote,
)
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.message import Request
from tests.unit.test_auth_digest import answer as answer_to
from tests.unit.test_auth_digest import challenge_of, register

SECRET = b"0123456789abcdef0123456789abcdef"
ALICE = AddressOfRecord.parse("alice@example.com")

# -- nonces --------------------------------------------------------------------------------


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=200))
def test_precomputed_hmac_is_rfc2104_hmac_sha256(key: bytes, message: bytes) -> None:
    assert _HmacSha256(key).digest(message) == hmac.digest(key, message, "sha256")


def test_inspect_gives_the_state_and_the_issue_time_from_one_decoding() -> None:
    clock = Clock()
    clock.advance(1_000)
    issuer = NonceIssuer(SECRET, "example.com", clock, lifetime=300)
    nonce = issuer.issue()
    clock.advance(10)
    assert issuer.inspect(nonce) == (NonceState.VALID, 1_000.0)
    clock.advance(300)
    assert issuer.inspect(nonce) == (NonceState.STALE, 1_000.0)
    assert issuer.inspect(nonce[:-4] + "AAA=")[0] is NonceState.INVALID


def test_random_parts_are_read_a_batch_at_a_time_and_never_reused() -> None:
    reads: list[int] = []

    def urandom(size: int) -> bytes:
        """Distinct 8-byte counters, as many as fit."""
        start = sum(reads) // 8
        reads.append(size)
        return b"".join(n.to_bytes(8, "big") for n in range(start, start + size // 8))

    issuer = NonceIssuer(SECRET, "example.com", Clock(), urandom=urandom)
    nonces = {issuer.issue() for _ in range(1_000)}
    assert len(nonces) == 1_000
    assert len(reads) == 2 and all(size == reads[0] for size in reads)


# -- challenges ----------------------------------------------------------------------------


def authenticator(
    tmp_path: Path, clock: Clock, portal: Portal | None = None, max_failures: int = 10
) -> DigestAuthenticator:
    path = tmp_path / "users.csv"
    path.write_text("user,password\nalice@example.com,wonderland\n")
    accounts = read_credentials(path)
    return DigestAuthenticator(
        portal=portal or Portal(SipIdentityRealm(), [DigestChecker(lambda: accounts)]),
        realm="example.com",
        algorithms=[DigestAlgorithm.SHA_256, DigestAlgorithm.MD5],
        nonces=NonceIssuer(SECRET, "example.com", clock),
        limiter=FailureLimiter(clock, max_failures=max_failures, window=60),
        clock=clock,
    )


@pytest.mark.parametrize(("proxy", "stale"), [(False, False), (False, True), (True, False)])
def test_challenge_templates_write_what_format_auth_value_writes(
    tmp_path: Path, proxy: bool, stale: bool
) -> None:
    auth = authenticator(tmp_path, Clock())
    challenge = auth.challenge(proxy, stale)
    assert challenge.status == (407 if proxy else 401)
    for (name, value), algorithm in zip(challenge.headers, ("SHA-256", "MD5"), strict=True):
        nonce = parse_auth_value(value).params["nonce"]
        params = [
            ("realm", "example.com", True),
            ("nonce", nonce, True),
            ("opaque", auth._opaque, True),
            ("algorithm", algorithm, False),
            ("qop", "auth", True),
        ]
        if stale:
            params.append(("stale", "true", False))
        assert name == ("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        assert value == format_auth_value("Digest", params)


def test_every_challenge_has_a_fresh_nonce(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, Clock())
    values = {auth.challenge(False).headers[0][1] for _ in range(100)}
    assert len(values) == 100


# -- parsing -------------------------------------------------------------------------------


def _both(value: str) -> tuple[object, object]:
    def run(parse: Callable[[str, str], Any]) -> object:
        try:
            parsed = parse(value, "Authorization")
        except SipParseError as e:
            return ("error", e.reason)
        return (parsed.scheme, dict(parsed.params))

    return run(parse_auth_value), run(_parse_param_by_param)


_PIECES = st.sampled_from(
    ["Digest", " ", "  ", "\t", ",", ", ", "=", " = ", '"', "\\", '\\"', "a", "Nc", "1",
     "x-y", "é", "\x01", "\n", "realm", "uri", '"sip:a@b, c"', "=="]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=20).map("".join))
def test_fast_parse_agrees_with_the_parameter_by_parameter_parse(value: str) -> None:
    fast, reference = _both(value)
    assert fast == reference


_TOKEN = st.text("abcXYZ019-.!%*_+`'~|^", min_size=1, max_size=8)
_QUOTED = st.text(st.characters(min_codepoint=9, max_codepoint=0x2FF), max_size=10)


@given(
    st.lists(st.tuples(_TOKEN, st.one_of(_TOKEN, _QUOTED), st.booleans()), min_size=1),
    st.sampled_from([", ", ",", " ,  "]),
)
def test_well_formed_values_parse_alike_both_ways(
    params: list[tuple[str, str, bool]], separator: str
) -> None:
    rendered = separator.join(
        f"{name}={quote(value) if quoted else value}" for name, value, quoted in params
    )
    fast, reference = _both(f"Digest {rendered}")
    assert fast == reference


def test_long_values_such_as_kerberos_tokens_parse_alike() -> None:
    value = 'Kerberos qop="auth", realm="SIP Communications Service", gssapi-data="'
    value += "QUJD" * 1000 + '", targetname="sip/director.example.com"'
    parsed = parse_auth_value(value)
    assert parsed.params["gssapi-data"] == "QUJD" * 1000
    assert _both(value)[0] == _both(value)[1]


def test_too_many_or_repeated_parameters_are_still_refused_by_name() -> None:
    many = "Digest " + ", ".join(f"p{n}=1" for n in range(33))
    with pytest.raises(SipParseError, match="more than 32 parameters"):
        parse_auth_value(many)
    with pytest.raises(SipParseError, match="'realm' given twice"):
        parse_auth_value('Digest realm="a", Realm="b"')


# -- the same work for known and unknown users ----------------------------------------------


def outcome(
    auth: DigestAuthenticator, request: Request, source: str = "192.0.2.10"
) -> list[AuthOutcome]:
    results: list[AuthOutcome] = []
    auth.authenticate(request, source, proxy=False).addCallback(results.append)
    return results


def answer(auth: DigestAuthenticator, user: str, password: str) -> str:
    return answer_to(challenge_of(auth.challenge(False), "MD5"), user, password)


def test_known_and_unknown_users_cost_the_same_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = authenticator(tmp_path, Clock(), max_failures=100)
    hashed: list[bytes] = []
    md5 = digest._HASHES[DigestAlgorithm.MD5]

    def counting(data: bytes) -> str:
        hashed.append(data)
        return md5(data)

    def hashes_for(user: str, password: str) -> int:
        credentials = answer(auth, user, password)
        hashed.clear()
        monkeypatch.setitem(digest._HASHES, DigestAlgorithm.MD5, counting)
        outcome(auth, register(user, credentials))
        monkeypatch.setitem(digest._HASHES, DigestAlgorithm.MD5, md5)
        return len(hashed)

    hashes_for("alice", "wonderland")  # H(A1) of the file's password, computed once
    work = {
        "right password": hashes_for("alice", "wonderland"),
        "wrong password": hashes_for("alice", "guess"),
        "unknown user": hashes_for("mallory", "guess"),
    }
    assert set(work.values()) == {2}, work  # H(A2) and the response, nothing else


# -- checkers that answer later, fail, or are missing ------------------------------------


@implementer(ICredentialsChecker)
class LaterChecker:
    """Answers each login when the test fires its Deferred."""

    credentialInterfaces = (ISipDigestCredentials,)

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes | tuple[()]]] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        self.pending.append(Deferred())
        return self.pending[-1]


@implementer(ICredentialsChecker)
class BrokenChecker:
    credentialInterfaces = (ISipDigestCredentials,)

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        raise RuntimeError("broken")


def test_an_answer_that_comes_later_is_waited_for(tmp_path: Path) -> None:
    checker = LaterChecker()
    auth = authenticator(tmp_path, Clock(), Portal(SipIdentityRealm(), [checker]))
    results = outcome(auth, register("alice", answer(auth, "alice", "wonderland")))
    assert results == []
    checker.pending[0].callback(b"alice@example.com")
    assert results == [Authenticated(ALICE)]


def test_a_checker_that_raises_refuses_with_500(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, Clock(), Portal(SipIdentityRealm(), [BrokenChecker()]))
    [result] = outcome(auth, register("alice", answer(auth, "alice", "wonderland")))
    assert result == Refused(500, "Authentication failed")


def test_a_portal_without_a_digest_checker_refuses_with_500(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, Clock(), Portal(SipIdentityRealm(), []))
    [result] = outcome(auth, register("alice", answer(auth, "alice", "wonderland")))
    assert result == Refused(500, "Authentication failed")


def test_success_clears_the_failures_counted_for_the_username(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, Clock(), max_failures=3)
    for _ in range(2):
        [result] = outcome(auth, register("alice", answer(auth, "alice", "guess")))
        assert isinstance(result, Challenge)
    [result] = outcome(auth, register("alice", answer(auth, "alice", "wonderland")))
    assert result == Authenticated(ALICE)
    # From another address (the first one's count stays), alice may fail twice again
    # before the third failure blocks her: her count restarted.
    for expected in (Challenge, Challenge, Refused):
        request = register("alice", answer(auth, "alice", "guess"))
        [result] = outcome(auth, request, source="198.51.100.7")
        assert isinstance(result, expected)
