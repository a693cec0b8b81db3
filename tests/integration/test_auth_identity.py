"""Nothing about a user is revealed before authentication, and guessing is cut short (issue
"Authentication before redirect"), on a live director over UDP:

- "Unknown and known users get byte-identical challenges except for nonces": with Digest
  and NTLM offered side by side, the whole 401 for a user assigned to one home, to another,
  and for no one at all is the same once the per-request fields (Via, tags, Call-ID, CSeq),
  the user's own name in From/To, the per-challenge values (Digest nonce, NTLM opaque,
  server challenge and timestamp) and the Date are set aside; so is the 401 answering
  wrong credentials, and NTLM's second-round 401 (the CHALLENGE).
- "A bounded brute-force loop of 200 wrong passwords from one address is limited after the
  configured count": `max_failures = 10` gives 401 to the first 9 wrong answers and 403
  from the 10th on, for Digest, for NTLM, and across both (one limiter).
"""

from __future__ import annotations

import base64
import re
import secrets
import struct
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from homeredirect.auth.digest_client import answer_challenge
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Response
from homeredirect.sip.serialize import serialize
from tests.integration.support import director_config, start_director, udp_client
from tests.ntlm_initiator import UNAVAILABLE

if UNAVAILABLE is None:
    from tests.ntlm_initiator import DatagramInitiator

needs_ntlm = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

TARGET = "director.example.com"
SIPAE_REALM = "SIP Communications Service"
PASSWORD = "Secret123"
# alice and carol are assigned to home1, bob to home2; mallory is nobody.
KNOWN = ("alice", "bob")
UNKNOWN = "mallory"


def auth_config(directory: Path, schemes: list[str], **auth: Any) -> dict[str, Any]:
    users = "user,password\n" + "".join(f"{u}@example.com,{PASSWORD}\n" for u in KNOWN)
    (directory / "users.csv").write_text(users)
    (directory / "ntlm-users.csv").write_text(users)
    config = director_config(directory, transports=("udp",))
    config["auth"] = {
        "required": True,
        "realm": "example.com",
        "schemes": schemes,
        "credentials": "users.csv",
        "ntlm_credentials": "ntlm-users.csv",
        "targetname": TARGET,
        **auth,
    }
    return config


class Client:
    """The REGISTERs of one user agent: same Call-ID and From tag, rising CSeq."""

    def __init__(self, port: int, user: str) -> None:
        self.port = port
        self.user = user
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)
        self.cseq = 0

    def register(self, authorization: str | None = None) -> bytes:
        self.cseq += 1
        aor = f"{self.user}@example.com"
        lines = [
            "REGISTER sip:example.com SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{aor}>;tag={self.tag}",
            f"To: <sip:{aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
            *([f"Authorization: {authorization}"] if authorization else []),
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ntlm(**params: str) -> str:
    head = f'NTLM qop="auth", realm="{SIPAE_REALM}", targetname="{TARGET}", version=4'
    return head + "".join(f', {name.replace("_", "-")}="{value}"' for name, value in params.items())


def digest_answer(challenge: Response, user: str, password: str, nc: int = 1) -> str:
    digest = next(
        v for v in challenge.headers.get_all("WWW-Authenticate") if v.startswith("Digest")
    )
    return answer_challenge(
        parse_auth_value(digest, "WWW-Authenticate"),
        method="REGISTER",
        uri="sip:example.com",
        username=user,
        password=password,
        nc=nc,
    )


# -- what may differ between two challenges ----------------------------------------------

_PER_REQUEST = {"via", "call-id", "cseq"}


def _masked_ntlm_token(token: bytes) -> bytes:
    """A CHALLENGE_MESSAGE ([MS-NLMP] §2.2.1.2) with the ServerChallenge and the
    MsvAvTimestamp value zeroed: the only parts that are per challenge."""
    masked = bytearray(token)
    masked[24:32] = bytes(8)
    length, _, offset = struct.unpack_from("<HHI", token, 40)
    position = offset
    while position + 4 <= offset + length:
        avid, size = struct.unpack_from("<HH", token, position)
        if avid == 7:  # MsvAvTimestamp
            masked[position + 4 : position + 4 + size] = bytes(size)
        if avid == 0:
            break
        position += 4 + size
    return bytes(masked)


def _masked_auth(value: str) -> str:
    value = re.sub(r'(nonce|opaque)="[^"]*"', r'\1="-"', value)

    def token(match: re.Match[str]) -> str:
        data = _masked_ntlm_token(base64.b64decode(match[1]))
        return f'gssapi-data="{base64.b64encode(data).decode()}"'

    return re.sub(r'gssapi-data="([^"]+)"', token, value)


def shape(response: Response, user: str) -> list[str]:
    """The serialized response, line by line, without what is per request or per
    challenge (see the module docstring); what is left must be the same for every user."""
    lines = serialize(response).decode().split("\r\n")
    kept = []
    for line in lines:
        name, separator, value = line.partition(": ")
        if not separator:  # the status line, the blank line
            kept.append(line)
            continue
        key = name.lower()
        if key in _PER_REQUEST:
            continue
        if key in ("from", "to"):
            value = re.sub(r";tag=[^;]*", "", value).replace(f"sip:{user}@", "sip:USER@")
        elif key == "date":
            value = "-"
        elif key == "www-authenticate":
            value = _masked_auth(value)
        kept.append(f"{name}: {value}")
    return kept


class _Director(TestCase):
    schemes: list[str] = ["digest"]
    auth: dict[str, Any] = {}

    def setUp(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        self.service = start_director(directory, auth_config(directory, self.schemes, **self.auth))
        self.addCleanup(self.service.stopService)
        self.address = ("127.0.0.1", self.service.listener("udp").address[1])
        self.udp = udp_client()
        self.addCleanup(self.udp.transport.stopListening)

    def client(self, user: str) -> Client:
        return Client(self.udp.port, user)

    @inlineCallbacks
    def exchange(self, data: bytes):  # type: ignore[no-untyped-def]
        self.udp.transport.write(data, self.address)
        response = yield self.udp.next()
        assert isinstance(response, Response)
        return response

    @inlineCallbacks
    def ntlm_attempt(self, user: str, password: str):  # type: ignore[no-untyped-def]
        """The NTLM handshake as far as the server lets it go: fire with the responses
        (401 NTLM offer, 401 CHALLENGE or 403, and the answer to AUTHENTICATE)."""
        client = self.client(user)
        offer = yield self.exchange(client.register())
        second = yield self.exchange(client.register(ntlm(gssapi_data="")))
        if second.status != 401:
            return [offer, second]
        challenge = parse_auth_value(
            next(v for v in second.headers.get_all("WWW-Authenticate") if v.startswith("NTLM"))
        )
        initiator = DatagramInitiator(user, "EXAMPLE", password, TARGET)
        initiator.first_token()
        token = initiator.answer(base64.b64decode(challenge.params["gssapi-data"]))
        final = yield self.exchange(
            client.register(
                ntlm(
                    opaque=challenge.params["opaque"],
                    gssapi_data=base64.b64encode(token).decode(),
                )
            )
        )
        return [offer, second, final]


class IdenticalChallengeTests(_Director):
    schemes = ["digest", "ntlm"]

    @inlineCallbacks
    def test_first_challenges_are_the_same_for_known_and_unknown_users(self):  # type: ignore[no-untyped-def]
        shapes = {}
        for user in (*KNOWN, UNKNOWN):
            response = yield self.exchange(self.client(user).register())
            self.assertEqual(response.status, 401)
            shapes[user] = shape(response, user)
        # Both schemes are offered, Digest's algorithms first.
        offered = [line.split(" ")[1] for line in shapes[UNKNOWN] if "Authenticate" in line]
        self.assertEqual(offered, ["Digest", "Digest", "Digest", "NTLM"])
        for user in KNOWN:
            self.assertEqual(shapes[user], shapes[UNKNOWN], user)

    @inlineCallbacks
    def test_wrong_digest_credentials_get_the_same_answer_as_an_unknown_user(self):  # type: ignore[no-untyped-def]
        shapes = {}
        for user in (*KNOWN, UNKNOWN):
            client = self.client(user)
            challenge = yield self.exchange(client.register())
            response = yield self.exchange(client.register(digest_answer(challenge, user, "wrong")))
            self.assertEqual(response.status, 401)
            shapes[user] = shape(response, user)
        for user in KNOWN:
            self.assertEqual(shapes[user], shapes[UNKNOWN], user)

    @needs_ntlm
    @inlineCallbacks
    def test_ntlm_challenges_are_the_same_for_known_and_unknown_users(self):  # type: ignore[no-untyped-def]
        rounds: dict[str, list[list[str]]] = {}
        for user in (*KNOWN, UNKNOWN):
            responses = yield self.ntlm_attempt(user, "wrong")
            self.assertEqual([r.status for r in responses], [401, 401, 401])
            rounds[user] = [shape(r, user) for r in responses]
        # The CHALLENGE really is there, masked only where it is per challenge.
        self.assertIn('gssapi-data="TlRMTVNTUAAC', "\n".join(rounds[UNKNOWN][1]))
        for user in KNOWN:
            self.assertEqual(rounds[user], rounds[UNKNOWN], user)


class DigestBruteForceTests(_Director):
    auth = {"max_failures": 10, "algorithms": ["SHA-256"]}

    @inlineCallbacks
    def test_two_hundred_wrong_passwords_are_limited_after_ten(self):  # type: ignore[no-untyped-def]
        client = self.client("alice")
        challenge = yield self.exchange(client.register())
        statuses = []
        nc = 1
        for _ in range(200):
            response = yield self.exchange(
                client.register(digest_answer(challenge, "alice", "guess", nc))
            )
            statuses.append(response.status)
            if response.status == 401:
                challenge, nc = response, 1  # a fresh nonce comes with each 401
            else:
                nc += 1
        self.assertEqual(statuses[:9], [401] * 9)
        self.assertEqual(set(statuses[9:]), {403}, statuses[9:20])
        # The right password does not help from this address until the window passes.
        fresh = self.client("alice")
        offer = yield self.exchange(fresh.register())
        right = yield self.exchange(fresh.register(digest_answer(offer, "alice", PASSWORD)))
        self.assertEqual(right.status, 403)


@needs_ntlm
class NtlmBruteForceTests(_Director):
    schemes = ["digest", "ntlm"]
    auth = {"max_failures": 10}

    @inlineCallbacks
    def test_wrong_ntlm_passwords_are_limited_after_ten(self):  # type: ignore[no-untyped-def]
        finals = []
        for _ in range(30):  # each attempt is a three-message handshake
            responses = yield self.ntlm_attempt("alice", "guess")
            finals.append(responses[-1].status)
        self.assertEqual(finals[:9], [401] * 9)
        self.assertEqual(set(finals[9:]), {403})

    @inlineCallbacks
    def test_digest_failures_count_against_ntlm_from_the_same_address(self):  # type: ignore[no-untyped-def]
        client = self.client("alice")
        challenge = yield self.exchange(client.register())
        for _ in range(10):
            response = yield self.exchange(
                client.register(digest_answer(challenge, "alice", "guess"))
            )
            challenge = response if response.status == 401 else challenge
        self.assertEqual(response.status, 403)
        responses = yield self.ntlm_attempt("alice", PASSWORD)
        self.assertEqual([r.status for r in responses], [401, 403])
