"""Stateless Digest nonces (RFC 7616 §3.3, §5.4) with nonce-count replay protection.

A nonce carries its own issue time and an HMAC over it, so any director holding the same
secret validates it, across restarts and across processes, without shared state: the
nonce is `base64url(time[8] | random[8] | mac[16])`. Expired nonces are recognised as
ours and answered with `stale=true`, so clients retry without prompting for a password.

What does need state is replay protection: a nonce-count (`nc`) may be used once per
nonce. `NonceCounts` remembers the highest count seen per nonce, in this process, for as
long as the nonce is valid, and is bounded in size.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

from twisted.internet.interfaces import IReactorTime

__all__ = ["NonceCounts", "NonceIssuer", "NonceState"]

_LAYOUT = struct.Struct(">d8s")
_MAC_BYTES = 16
_RAW_BYTES = _LAYOUT.size + _MAC_BYTES
_CLOCK_SKEW = 5.0
"""Seconds a nonce may appear to come from the future (directors' clocks differ a little)."""
_RANDOM_BATCH = 512
"""Nonces' random parts read from the system at once."""
_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
"""RFC 2104's ipad and opad, as `bytes.translate` tables XORing every byte of the key."""
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
"""base64url (RFC 4648 §5) by way of binascii, without `base64`'s layers of wrappers."""


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"
    """Ours, but older than the lifetime: re-challenge with `stale=true` (RFC 7616 §3.3)."""
    INVALID = "invalid"
    """Not ours (bad MAC, bad encoding, from the future)."""


class _HmacSha256:
    """HMAC-SHA256 (RFC 2104) under one fixed key, with the keyed inner and outer hash
    states computed once: each MAC then costs two short SHA-256 updates rather than the
    key schedule `hmac.new` redoes on every call (every challenge and every answer)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(_SHA256_BLOCK, b"\0")  # keys are 32 bytes: never hashed first
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class NonceIssuer:
    """Issues and checks nonces for one realm; `secret` is shared by cooperating directors."""

    def __init__(
        self,
        secret: bytes,
        realm: str,
        clock: IReactorTime,
        lifetime: float = 300.0,
        urandom: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("a nonce secret needs at least 16 bytes")
        key = hmac.new(secret, b"homeredirect nonce " + realm.encode(), "sha256").digest()
        self._hmac = _HmacSha256(key)
        self._clock = clock
        self.lifetime = lifetime
        self._urandom = urandom
        self._random = b""
        self._used = 0

    def _mac(self, body: bytes) -> bytes:
        return self._hmac.digest(body)[:_MAC_BYTES]

    def _random_bytes(self) -> bytes:
        """8 random bytes, from a buffer refilled `_RANDOM_BATCH` nonces at a time: one
        system call per batch instead of one per challenge."""
        used = self._used
        if used >= len(self._random):
            self._random, used = self._urandom(8 * _RANDOM_BATCH), 0
        self._used = used + 8
        return self._random[used : used + 8]

    def issue(self) -> str:
        body = _LAYOUT.pack(self._clock.seconds(), self._random_bytes())
        encoded = binascii.b2a_base64(body + self._mac(body), newline=False)
        return encoded.translate(_TO_URLSAFE).decode("ascii")

    def opaque_for(self, nonce: str) -> str:
        """The `opaque` sent with `nonce`: bound to it, so an opaque we never issued (or
        one from another challenge) is detected (RFC 7616 §3.3)."""
        return self._hmac.digest(b"opaque " + nonce.encode()).hex()[:32]

    def check(self, nonce: str) -> NonceState:
        """Whether `nonce` is ours and still valid."""
        return self.inspect(nonce)[0]

    def inspect(self, nonce: str) -> tuple[NonceState, float]:
        """The nonce's state and, when it is ours (valid or stale), its issue time, from
        one decoding and one MAC."""
        try:
            raw = binascii.a2b_base64(nonce.encode("ascii").translate(_FROM_URLSAFE))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return NonceState.INVALID, 0.0
        if len(raw) != _RAW_BYTES:
            return NonceState.INVALID, 0.0
        body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            return NonceState.INVALID, 0.0
        issued: float = _LAYOUT.unpack(body)[0]
        age = self._clock.seconds() - issued
        if age < -_CLOCK_SKEW:
            return NonceState.INVALID, 0.0
        return (NonceState.VALID if age <= self.lifetime else NonceState.STALE), issued


class NonceCounts:
    """The highest `nc` used with each live nonce (RFC 7616 §3.4: the count must increase).

    Bounded to `max_nonces`; the least recently used nonce is forgotten first, and a nonce
    issued before one that was forgotten is refused (the client is re-challenged with
    `stale=true`), so flooding the table costs its owner only re-challenges, never a replay.
    """

    def __init__(self, max_nonces: int = 100_000) -> None:
        self._highest: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._max = max_nonces
        self._forgotten_before = float("-inf")

    def use(self, nonce: str, issued_at: float, count: int) -> bool:
        """Record `count` for `nonce`; False when it is not higher than one already used
        (a replay) or the nonce may have been pushed out of the table."""
        entry = self._highest.get(nonce)
        if entry is None and issued_at <= self._forgotten_before:
            return False
        if entry is not None and count <= entry[1]:
            return False
        self._highest[nonce] = (issued_at, count)
        self._highest.move_to_end(nonce)
        while len(self._highest) > self._max:
            _, (oldest_issue, _) = self._highest.popitem(last=False)
            self._forgotten_before = max(self._forgotten_before, oldest_issue)
        return True

    def expire(self, issued_before: float) -> None:
        """Forget nonces issued before `issued_before`: they can only be stale now.

        Read from the least recently used end and stopped at the first nonce still live,
        so a call costs what it removes rather than a sweep of the whole table (100,000
        nonces took 20-40 ms, a stall of the reactor). A nonce issued long ago but used
        lately waits behind younger ones until they go: the issuer calls it stale, so it
        is never used again, and the size bound holds meanwhile.
        """
        highest = self._highest
        while highest:
            nonce, (issued, _) = next(iter(highest.items()))
            if issued >= issued_before:
                return
            del highest[nonce]

    def __len__(self) -> int:
        return len(self._highest)


def new_secret() -> bytes:
    """A random secret, for a single director with no `nonce_secret_file`."""
    return hashlib.sha256(os.urandom(32)).digest()
