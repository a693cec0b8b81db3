"""The ntlm_auth (winbind) NTLM checker: its line protocol, and its helper processes
against tests/fake_ntlm_auth.py, a real subprocess speaking ntlm-server-1."""

from __future__ import annotations

import os
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from homeredirect.auth.ntlm.accounts import AccountNames
from homeredirect.auth.ntlm.interfaces import INtlmResponseChecker, NtlmLogon, VerifiedLogon
from homeredirect.auth.ntlm.keys import hmac_md5, nt_hash, ntowfv2
from homeredirect.auth.ntlm.winbind import (
    Accepted,
    HelperProtocolError,
    Rejected,
    ReplyParser,
    WinbindChecker,
    WinbindUnavailable,
    encode_request,
)
from homeredirect.resolve.interfaces import AddressOfRecord

FAKE = str(Path(__file__).resolve().parents[1] / "fake_ntlm_auth.py")
NAMES = AccountNames("EXAMPLE", "example.com")
CHALLENGE = bytes.fromhex("0123456789abcdef")


def ntlmv2_response(password: str, user: str, domain: str, challenge: bytes) -> tuple[bytes, bytes]:
    """A client's NtChallengeResponse ([MS-NLMP] §3.3.2) and its SessionBaseKey."""
    key = ntowfv2(nt_hash(password), user, domain)
    temp = b"\x01\x01" + bytes(6) + struct.pack("<Q", 133_000_000_000_000_000)
    temp += os.urandom(8) + bytes(4) + b"\x00\x00\x00\x00" + bytes(4)
    proof = hmac_md5(key, challenge + temp)
    return proof + temp, hmac_md5(key, proof)


def logon(user: str = "alice", password: str = "Secret123", domain: str = "EXAMPLE") -> NtlmLogon:
    return NtlmLogon(user, domain, CHALLENGE, ntlmv2_response(password, user, domain, CHALLENGE)[0])


# -- the protocol, sans-IO ----------------------------------------------------------

ANSWERS = (
    b"Authenticated: No\nAuthentication-Error: Wrong Password (0xc000006a)\n.\n.\n"
    b"Authenticated: Yes\nLANMAN-Session-Key: 0011223344556677\n"
    b"User-Session-Key: 00112233445566778899AABBCCDDEEFF\n.\n"
)
EXPECTED = [
    Rejected("Wrong Password (0xc000006a)"),
    Accepted(bytes.fromhex("00112233445566778899aabbccddeeff")),
]


def test_parser_reads_answers_split_at_every_offset() -> None:
    """Samba's extra "." after a failure is skipped, wherever the reads split."""
    for cut in range(len(ANSWERS) + 1):
        parser = ReplyParser()
        assert parser.feed(ANSWERS[:cut]) + parser.feed(ANSWERS[cut:]) == EXPECTED, cut


@pytest.mark.parametrize(
    "answer",
    [
        b"Error: No username supplied!\n.\n",
        b"Authenticated: Yes\n.\n",
        b"Authenticated: Yes\nUser-Session-Key: 0011\n.\n",
        b"Authenticated: No\nno colon here\n.\n",
        b"\xff\xfe\n.\n",
        b"A" * 5000,
    ],
)
def test_parser_refuses_what_is_not_an_answer(answer: bytes) -> None:
    with pytest.raises(HelperProtocolError):
        ReplyParser().feed(answer)


def test_request_puts_names_in_base64_so_they_cannot_add_lines() -> None:
    request = encode_request(NtlmLogon("al\nice", "EX\nAMPLE", CHALLENGE, bytes(48)))
    assert request.split(b"\n") == [
        b"LANMAN-Challenge: 0123456789abcdef",
        b"NT-Response: " + b"00" * 48,
        b"Username:: YWwKaWNl",
        b"NT-Domain:: RVgKQU1QTEU=",
        b"Request-User-Session-Key: Yes",
        b".",
        b"",
    ]


def test_request_without_domain_leaves_it_to_winbind() -> None:
    assert b"NT-Domain" not in encode_request(NtlmLogon("alice@example.com", "", CHALLENGE, b""))


# -- the checker against a real helper process ----------------------------------------


class WinbindCheckerTests(TestCase):
    def checker(self, *extra: str, **options: Any) -> WinbindChecker:
        options.setdefault("timeout", 5.0)
        checker = WinbindChecker(
            [sys.executable, "-u", FAKE, *extra], NAMES, reactor, reactor, env=None, **options
        )
        checker.startService()
        self.addCleanup(checker.stopService)
        return checker

    @inlineCallbacks
    def until(self, condition: Any, limit: float = 5.0) -> Any:
        """Poll `condition` on the reactor for at most `limit` seconds."""
        for _ in range(int(limit / 0.02)):
            if condition():
                return
            yield deferLater(reactor, 0.02, lambda: None)
        self.fail("condition not reached in time")

    def test_checker_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(INtlmResponseChecker, self.checker()))

    @inlineCallbacks
    def test_right_password_gives_account_and_session_key(self) -> Any:
        response, session_key = ntlmv2_response("Secret123", "Alice", "EXAMPLE", CHALLENGE)
        verified = yield self.checker().check(NtlmLogon("Alice", "EXAMPLE", CHALLENGE, response))
        self.assertIsInstance(verified, VerifiedLogon)
        self.assertEqual(verified.account, AddressOfRecord("alice", "example.com"))
        self.assertEqual(verified.session_base_key, session_key)

    @inlineCallbacks
    def test_wrong_password_is_unauthorized_and_keeps_the_helper_in_step(self) -> Any:
        checker = self.checker(helpers=1)
        yield self.assertFailure(checker.check(logon(password="wrong")), UnauthorizedLogin)
        verified = yield checker.check(logon())
        self.assertEqual(str(verified.account), "alice@example.com")

    def test_foreign_domain_and_short_response_are_refused_without_asking(self) -> None:
        checker = self.checker()
        foreign = checker.check(logon(domain="OTHER"))
        short = checker.check(NtlmLogon("alice", "EXAMPLE", CHALLENGE, bytes(24)))
        self.failureResultOf(foreign, UnauthorizedLogin)
        self.failureResultOf(short, UnauthorizedLogin)

    def test_checker_not_started_has_no_verdict(self) -> None:
        checker = WinbindChecker([sys.executable, FAKE], NAMES, reactor, reactor)
        self.failureResultOf(checker.check(logon()), WinbindUnavailable)

    @inlineCallbacks
    def test_answer_split_across_many_reads_is_read(self) -> Any:
        verified = yield self.checker().check(logon(user="chunked"))
        self.assertEqual(str(verified.account), "chunked@example.com")

    @inlineCallbacks
    def test_helper_dying_mid_request_is_retried_once_then_replaced(self) -> Any:
        checker = self.checker(helpers=1)
        yield self.assertFailure(checker.check(logon(user="crash")), WinbindUnavailable)
        verified = yield checker.check(logon())
        self.assertEqual(str(verified.account), "alice@example.com")

    @inlineCallbacks
    def test_killed_helper_is_restarted_and_its_request_retried(self) -> Any:
        checker = self.checker(helpers=1)
        yield self.until(lambda: checker.helper_pids)
        [pid] = checker.helper_pids
        os.kill(pid, signal.SIGKILL)
        verified = yield checker.check(logon())
        self.assertEqual(str(verified.account), "alice@example.com")
        self.assertNotEqual(checker.helper_pids, [pid])

    @inlineCallbacks
    def test_silent_helper_times_out_and_is_replaced(self) -> Any:
        checker = self.checker(helpers=1, timeout=0.5)
        yield self.assertFailure(checker.check(logon(user="hang")), WinbindUnavailable)
        verified = yield checker.check(logon())
        self.assertEqual(str(verified.account), "alice@example.com")

    @inlineCallbacks
    def test_unreadable_answers_fail_the_request_and_restart_the_helper(self) -> Any:
        checker = self.checker(helpers=1)
        for user in ("garbage", "nokey", "longline"):
            yield self.until(lambda: checker.helper_pids)
            before = checker.helper_pids
            yield self.assertFailure(checker.check(logon(user=user)), WinbindUnavailable)
            verified = yield checker.check(logon())
            self.assertEqual(str(verified.account), "alice@example.com")
            self.assertNotEqual(checker.helper_pids, before, user)

    @inlineCallbacks
    def test_pool_answers_beside_a_silent_helper(self) -> Any:
        checker = self.checker(helpers=2, timeout=2.0)
        yield self.until(lambda: len(checker.helper_pids) == 2)
        silent = checker.check(logon(user="hang"))
        verified = yield checker.check(logon())
        self.assertFalse(silent.called)
        self.assertEqual(str(verified.account), "alice@example.com")
        yield self.assertFailure(silent, WinbindUnavailable)

    @inlineCallbacks
    def test_queue_is_bounded(self) -> Any:
        checker = self.checker(helpers=1, timeout=0.5, max_pending=2)
        waiting = [checker.check(logon(user="hang")), checker.check(logon(user="hang"))]
        self.failureResultOf(checker.check(logon()), WinbindUnavailable)
        for deferred in waiting:
            yield self.assertFailure(deferred, WinbindUnavailable)

    @inlineCallbacks
    def test_helper_that_cannot_start_gives_no_verdict_in_time(self) -> Any:
        checker = self.checker("--exit-at-start", timeout=0.3)
        yield self.assertFailure(checker.check(logon()), WinbindUnavailable)

    @inlineCallbacks
    def test_stopping_ends_the_helpers_and_fails_waiting_requests(self) -> Any:
        checker = WinbindChecker(
            [sys.executable, "-u", FAKE], NAMES, reactor, reactor, helpers=1, env=None
        )
        checker.startService()
        answering = checker.check(logon(user="hang"))
        waiting = checker.check(logon())
        yield checker.stopService()
        self.assertEqual(checker.helper_pids, [])
        self.failureResultOf(answering, WinbindUnavailable)
        self.failureResultOf(waiting, WinbindUnavailable)
