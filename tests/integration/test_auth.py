"""Digest authentication on a live director over loopback: raw sockets for the
protocol details, SIPp as a real client computing its own credentials."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from homeredirect.auth.digest_client import answer_challenge
from homeredirect.sip.credentials import parse_auth_value
from homeredirect.sip.message import Response
from tests.integration.support import director_config, register, start_director, udp_client

SCENARIO = Path(__file__).parent.parent / "data" / "sipp" / "register_digest_301.xml"
SIPP = shutil.which("sipp")
USERS = {"alice": "wonderland", "bob": "builder"}


def write_users(directory: Path) -> None:
    """`USERS` as the credentials file `users.csv` in `directory`."""
    (directory / "users.csv").write_text(
        "user,password\n" + "".join(f"{u}@example.com,{p}\n" for u, p in USERS.items())
    )


def auth_table(algorithms: list[str] | None = None) -> dict[str, Any]:
    """`[auth]`: Digest required in example.com, with `write_users`' credentials file."""
    return {
        "required": True,
        "realm": "example.com",
        "credentials": "users.csv",
        **({"algorithms": algorithms} if algorithms else {}),
    }


def auth_config(directory: Path, algorithms: list[str] | None = None) -> dict[str, Any]:
    write_users(directory)
    config = director_config(directory, transports=("udp",))
    config["auth"] = auth_table(algorithms)
    return config


def with_authorization(
    message: bytes, authorization: str, cseq: int = 2, header: str = "Authorization"
) -> bytes:
    """The retry of `message` (CSeq 1) with credentials in `header`: a new transaction
    (new branch), same Call-ID, CSeq `cseq` (RFC 3261 §22.2)."""
    retry = re.sub(rb"branch=[^;\r]+", b"branch=z9hG4bK" + secrets.token_hex(6).encode(), message)
    return retry.replace(b"CSeq: 1 ", f"CSeq: {cseq} ".encode()).replace(
        b"Content-Length: 0", f"{header}: {authorization}\r\nContent-Length: 0".encode()
    )


def sha256_challenge(challenge: Response) -> str:
    """The `WWW-Authenticate` value of `challenge` offering SHA-256."""
    (value,) = [v for v in challenge.headers.get_all("WWW-Authenticate") if "SHA-256" in v]
    return value


def answered(message: bytes, challenge: Response, user: str, password: str) -> bytes:
    """The retry of `message` (a REGISTER for sip:example.com) with `user`'s answer to the
    SHA-256 challenge of `challenge`."""
    answer = answer_challenge(
        parse_auth_value(sha256_challenge(challenge), "WWW-Authenticate"),
        method="REGISTER",
        uri="sip:example.com",
        username=user,
        password=password,
    )
    return with_authorization(message, answer)


class DigestOnTheWireTests(TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.service = start_director(self.directory, auth_config(self.directory))
        self.addCleanup(self.service.stopService)
        self.port = self.service.listener("udp").address[1]
        self.client = udp_client()
        self.addCleanup(self.client.transport.stopListening)

    def send(self, data: bytes) -> None:
        self.client.transport.write(data, ("127.0.0.1", self.port))

    @inlineCallbacks
    def challenge_then_answer(  # type: ignore[no-untyped-def]
        self, user: str, password: str, to_user: str | None = None
    ):
        message = register(f"{to_user or user}@example.com", via_port=self.client.port)
        self.send(message)
        challenge = yield self.client.next()
        assert isinstance(challenge, Response) and challenge.status == 401
        self.send(answered(message, challenge, user, password))
        response = yield self.client.next()
        return challenge, response

    @inlineCallbacks
    def test_register_is_challenged_then_redirected_once_authenticated(self):  # type: ignore[no-untyped-def]
        challenge, response = yield self.challenge_then_answer("alice", "wonderland")
        algorithms = [
            re.search(r"algorithm=([\w-]+)", v)[1]  # type: ignore[index]
            for v in challenge.headers.get_all("WWW-Authenticate")
        ]
        self.assertEqual(algorithms, ["SHA-512-256", "SHA-256", "MD5"])
        assert isinstance(response, Response)
        self.assertEqual(response.status, 301)
        self.assertIn("home1.example.com", response.headers.get("Contact") or "")

    @inlineCallbacks
    def test_unknown_user_gets_the_same_challenge_and_no_hint(self):  # type: ignore[no-untyped-def]
        known, _ = yield self.challenge_then_answer("alice", "wrong")
        unknown, response = yield self.challenge_then_answer("mallory", "whatever")

        def shape(r: Response) -> list[str]:
            return [re.sub(r'nonce="[^"]*"', "", v) for v in r.headers.get_all("WWW-Authenticate")]

        self.assertEqual(shape(known), shape(unknown))
        assert isinstance(response, Response)
        self.assertEqual(response.status, 401)

    @inlineCallbacks
    def test_authenticated_user_may_not_register_someone_else(self):  # type: ignore[no-untyped-def]
        _, response = yield self.challenge_then_answer("alice", "wonderland", to_user="bob")
        assert isinstance(response, Response)
        self.assertEqual(response.status, 403)

    @inlineCallbacks
    def test_malformed_authorization_gets_400_and_the_server_keeps_serving(self):  # type: ignore[no-untyped-def]
        message = register("alice@example.com", via_port=self.client.port)
        self.send(with_authorization(message, 'Digest realm="example.com", username='))
        response = yield self.client.next()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 400)
        _, after = yield self.challenge_then_answer("alice", "wonderland")
        self.assertEqual(after.status, 301)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(SIPP is None, reason="sipp is installed by `make test` (sip-tester)")
class SippDigestTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_sipp_authenticates_with_md5_digest_and_gets_301(self):  # type: ignore[no-untyped-def]
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        # SIPp computes MD5 Digest only, so this director offers just that.
        service = start_director(directory, auth_config(directory, algorithms=["MD5"]))
        self.addCleanup(service.stopService)
        injection = directory / "users.csv.sipp"
        injection.write_text("SEQUENTIAL\nalice;example.com;home1.example.com\n")
        port = service.listener("udp").address[1]
        args = [
            f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-inf", str(injection),
            "-i", "127.0.0.1", "-p", str(free_port()), "-cp", str(free_port()),
            "-mp", str(free_port()),
            "-t", "u1", "-m", "40", "-r", "100", "-l", "40",
            "-nostdin", "-nd", "-timeout", "60s", "-timeout_error", "-recv_timeout", "5000",
            "-trace_err", "-error_file", str(directory / "errors.log"),
            "-au", "alice", "-ap", USERS["alice"],
        ]  # fmt: skip
        out, err, code = yield getProcessOutputAndValue(
            SIPP, args, path=str(directory), reactor=reactor
        )
        errors = directory / "errors.log"
        detail = errors.read_text()[-2000:] if errors.exists() else ""
        self.assertEqual(code, 0, (out[-2000:], err[-2000:], detail))
