"""MD4, NTLMv2 keys and signatures against published vectors: RFC 1320 §A.5 and
[MS-NLMP] §4.2.4 (NTLMv2 with Extended Session Security)."""

from __future__ import annotations

import pytest

from homeredirect.auth.ntlm.keys import (
    exported_session_key,
    nt_hash,
    ntlmv2_session_base_key,
    ntowfv2,
    rc4,
    session_keys,
)
from homeredirect.auth.ntlm.md4 import md4
from homeredirect.auth.ntlm.messages import NegotiateFlags as F
from homeredirect.auth.ntlm.signing import mac, verify_mac

# [MS-NLMP] §4.2.4: NTLMv2 authentication, user "User", domain "Domain", password "Password".
SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")
RANDOM_SESSION_KEY = b"\x55" * 16
FLAGS_4_2_4 = F(0xE28A8233)
# §4.2.4.1.3 temp: 0x0101, reserved, time 0, ClientChallenge aa*8, reserved, AV pairs
# (NbDomainName "Domain", NbComputerName "Server", EOL) and 4 zero bytes.
TEMP = bytes.fromhex(
    "0101000000000000"
    "0000000000000000"
    "aaaaaaaaaaaaaaaa"
    "00000000"
    "02000c0044006f006d00610069006e00"
    "01000c005300650072007600650072000000000000000000"
)
NT_PROOF = bytes.fromhex("68cd0ab851e51c96aabc927bebef6a1c")


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
        (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
        (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
        (b"message digest", "d9130a8164549fe818874806e1c7014b"),
        (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
        (
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "043f8582f241db351ce627e153e7f0e4",
        ),
        (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
    ],
)
def test_md4_matches_rfc_1320_test_suite(data: bytes, digest: str) -> None:
    assert md4(data).hex() == digest


def test_nt_hash_of_password_matches_ms_nlmp_4_2_2_1_2() -> None:
    assert nt_hash("Password").hex() == "a4f49c406510bdcab6824ee7c30fd852"


def test_ntowfv2_matches_ms_nlmp_4_2_4_1_1() -> None:
    assert ntowfv2(nt_hash("Password"), "User", "Domain").hex() == (
        "0c868a403bfd7a93a3001ef22ef02e3f"
    )


def test_ntlmv2_response_yields_the_session_base_key_of_4_2_4_1_2() -> None:
    base = ntlmv2_session_base_key(
        nt_hash("Password"), "User", "Domain", SERVER_CHALLENGE, NT_PROOF + TEMP
    )
    assert base is not None and base.hex() == "8de40ccadbc14a82f15cb0ad0de95ca3"


def test_ntlmv2_response_with_a_wrong_password_is_refused() -> None:
    assert (
        ntlmv2_session_base_key(
            nt_hash("password"), "User", "Domain", SERVER_CHALLENGE, NT_PROOF + TEMP
        )
        is None
    )


def test_ntlmv2_response_for_another_challenge_is_refused() -> None:
    assert (
        ntlmv2_session_base_key(nt_hash("Password"), "User", "Domain", b"\0" * 8, NT_PROOF + TEMP)
        is None
    )


def test_key_exchange_unwraps_the_random_session_key_of_4_2_4_2_3() -> None:
    base = bytes.fromhex("8de40ccadbc14a82f15cb0ad0de95ca3")
    encrypted = rc4(base, RANDOM_SESSION_KEY)
    assert encrypted.hex() == "c5dad2544fc9799094ce1ce90bc9d03e"
    assert exported_session_key(FLAGS_4_2_4, base, encrypted) == RANDOM_SESSION_KEY


def test_sign_and_seal_keys_match_4_2_4_4() -> None:
    keys = session_keys(FLAGS_4_2_4, RANDOM_SESSION_KEY)
    assert keys.client_sign.hex() == "4788dc861b4782f35d43fd98fe1a2d39"
    assert keys.client_seal.hex() == "59f600973cc4960a25480a7c196e4c58"


def test_mac_without_key_exchange_matches_4_2_4_4() -> None:
    """§4.2.4.4 signs "Plaintext" (UTF-16LE) at SeqNum 0; its checksum, before RC4 of a
    connection-oriented handle, is the HMAC prefix pidgin-sipe's tests also check."""
    keys = session_keys(FLAGS_4_2_4, RANDOM_SESSION_KEY)
    text = "Plaintext".encode("utf-16-le")
    signature = mac(FLAGS_4_2_4 & ~F.KEY_EXCH, keys.client_sign, keys.client_seal, 0, text)
    assert signature.hex() == "0100000070352851f256430900000000"


def test_datagram_mac_rekeys_rc4_per_sequence_number() -> None:
    keys = session_keys(FLAGS_4_2_4, RANDOM_SESSION_KEY)
    flags = FLAGS_4_2_4 | F.DATAGRAM
    first = mac(flags, keys.server_sign, keys.server_seal, 100, b"message")
    assert first[12:] == (100).to_bytes(4, "little")
    assert mac(flags, keys.server_sign, keys.server_seal, 100, b"message") == first
    assert mac(flags, keys.server_sign, keys.server_seal, 101, b"message")[4:12] != first[4:12]
    assert verify_mac(flags, keys.server_sign, keys.server_seal, 100, b"message", first)
    assert not verify_mac(flags, keys.server_sign, keys.server_seal, 100, b"messagf", first)
