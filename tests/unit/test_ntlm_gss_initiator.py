"""Our acceptor against a real NTLM initiator: gss-ntlmssp in datagram mode."""

from __future__ import annotations

import time
from typing import Any

import pytest
from twisted.internet.task import Clock

from homeredirect.auth.ntlm.acceptor import EstablishedContext, NtlmAcceptor, ServerNames
from homeredirect.auth.ntlm.accounts import AccountNames, NtHashChecker
from homeredirect.auth.ntlm.keys import nt_hash, session_keys
from homeredirect.auth.ntlm.messages import NegotiateFlags as F
from homeredirect.auth.ntlm.messages import parse_authenticate
from homeredirect.resolve.interfaces import AddressOfRecord
from tests.ntlm_initiator import UNAVAILABLE

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

PIDGIN_SIPE_MINIMUM = (
    F.UNICODE | F.NTLM | F.ALWAYS_SIGN | F.EXTENDED_SESSIONSECURITY | F.TARGET_INFO
) | (F.SIGN | F.DATAGRAM | F.IDENTIFY | F.KEY_EXCH)


def run(password: str) -> tuple[Any, EstablishedContext | Exception, int]:
    from tests.ntlm_initiator import DatagramInitiator

    clock = Clock()
    checker = NtHashChecker(
        {AddressOfRecord("alice", "example.com"): nt_hash("Secret123")},
        AccountNames("EXAMPLE", "example.com"),
    )
    names = ServerNames("EXAMPLE", "DIRECTOR", "director.example.com", "example.com")
    # The client's NTLMv2 timestamp comes from the real clock; ours must be near it.
    clock.advance(time.time() - clock.seconds())
    acceptor = NtlmAcceptor(checker, names, clock)
    pending = acceptor.challenge()
    initiator = DatagramInitiator("alice", "EXAMPLE", password, "director.example.com")
    assert initiator.first_token() == b""
    token = initiator.answer(pending.token)
    outcomes: list[Any] = []
    acceptor.accept(pending, parse_authenticate(token)).addCallbacks(
        outcomes.append, lambda f: outcomes.append(f.value)
    )
    return initiator, outcomes[0], pending.challenge.flags


def test_challenge_carries_every_flag_pidgin_sipe_requires() -> None:
    _, _, flags = run("Secret123")
    assert flags & PIDGIN_SIPE_MINIMUM == PIDGIN_SIPE_MINIMUM


def test_session_keys_match_the_initiators() -> None:
    initiator, context, _ = run("Secret123")
    assert isinstance(context, EstablishedContext)
    assert context.keys == session_keys(context.flags, initiator.session_key())


def test_signatures_cross_verify_at_explicit_sequence_numbers() -> None:
    initiator, context, _ = run("Secret123")
    assert isinstance(context, EstablishedContext)
    for sequence in (100, 1, 100):
        assert initiator.verify(b"<NTLM><x>", context.sign(b"<NTLM><x>", sequence), sequence)
    assert not initiator.verify(b"<NTLM><x>", context.sign(b"<NTLM><x>", 100), 101)
    assert context.verify(b"<NTLM><y>", 100, initiator.sign(b"<NTLM><y>", 100))


def test_wrong_password_is_refused() -> None:
    _, outcome, _ = run("nope")
    assert not isinstance(outcome, EstablishedContext)
