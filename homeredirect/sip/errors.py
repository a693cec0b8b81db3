"""Errors raised while reading SIP messages off the wire.

Each error carries the status code that a server answers a malformed *request*
with (RFC 3261 §21.4.1 400 Bad Request, §21.5.14 513 Message Too Large,
§21.5.15 505 Version Not Supported) and a short reason that names the fault, so
that the peer learns what was wrong.  A malformed *response* is dropped instead
(RFC 3261 §18.1.2), so the status is then unused.
"""

from __future__ import annotations

#: Reasons quote the faulty text, which a peer may make as long as a message;
#: they go into logs and reason phrases, so they are cut to this length.
MAX_REASON_LENGTH = 200


class SipParseError(ValueError):
    """A message, or one of its header fields, does not follow RFC 3261 §25."""

    status: int = 400

    def __init__(self, reason: str) -> None:
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[: MAX_REASON_LENGTH - 3] + "..."
        super().__init__(reason)
        self.reason = reason


class MessageTooLarge(SipParseError):
    """The message, or its header block, exceeds the configured size limit."""

    status = 513


class VersionNotSupported(SipParseError):
    """A well-formed SIP-Version other than SIP/2.0 (RFC 3261 §8.2.2 ... §21.5.15)."""

    status = 505
