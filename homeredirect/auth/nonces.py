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

import base64
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


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"
    """Ours, but older than the lifetime: re-challenge with `stale=true` (RFC 7616 §3.3)."""
    INVALID = "invalid"
    """Not ours (bad MAC, bad encoding, from the future)."""


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
        self._key = hmac.new(secret, b"homeredirect nonce " + realm.encode(), "sha256").digest()
        self._clock = clock
        self.lifetime = lifetime
        self._urandom = urandom

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, "sha256").digest()[:_MAC_BYTES]

    def issue(self) -> str:
        body = _LAYOUT.pack(self._clock.seconds(), self._urandom(8))
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii")

    def opaque_for(self, nonce: str) -> str:
        """The `opaque` sent with `nonce`: bound to it, so an opaque we never issued (or
        one from another challenge) is detected (RFC 7616 §3.3)."""
        return hmac.new(self._key, b"opaque " + nonce.encode(), "sha256").hexdigest()[:32]

    def check(self, nonce: str) -> NonceState:
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return NonceState.INVALID
        if len(raw) != _RAW_BYTES:
            return NonceState.INVALID
        body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            return NonceState.INVALID
        issued, _ = _LAYOUT.unpack(body)
        age = self._clock.seconds() - issued
        if age < -_CLOCK_SKEW:
            return NonceState.INVALID
        return NonceState.VALID if age <= self.lifetime else NonceState.STALE

    def issued_at(self, nonce: str) -> float:
        """When a nonce that `check` accepted was issued."""
        raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        issued: float = _LAYOUT.unpack(raw[: _LAYOUT.size])[0]
        return issued


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
        """Forget nonces issued before `issued_before`: they can only be stale now."""
        for nonce in [n for n, (issued, _) in self._highest.items() if issued < issued_before]:
            del self._highest[nonce]

    def __len__(self) -> int:
        return len(self._highest)


def new_secret() -> bytes:
    """A random secret, for a single director with no `nonce_secret_file`."""
    return hashlib.sha256(os.urandom(32)).digest()
