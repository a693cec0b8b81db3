"""Which server transaction a request belongs to (RFC 3261 §17.2.3).

A key is a tuple of strings that two requests share exactly when §17.2.3 says
they match, so that the transaction table is a dict.  RFC 3261 keys have three
elements and RFC 2543 keys eight, so the two kinds never collide.
"""

from __future__ import annotations

from homeredirect.sip.message import Request

TransactionKey = tuple[str, ...]

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: a branch starting with this was made unique by an RFC 3261 client."""

_RFC2543_TO_TAG = 2


def server_transaction_key(request: Request) -> TransactionKey:
    """The key of the server transaction that *request* belongs to (RFC 3261 §17.2.3).

    With a top Via branch starting with the magic cookie: (branch, sent-by
    lowercased, method), where an ACK takes the method INVITE, so that the ACK
    for a non-2xx final response finds its INVITE transaction, and a CANCEL keeps
    CANCEL, so that it has its own transaction.  The branch is compared exactly:
    retransmissions repeat it byte for byte.

    Otherwise the RFC 2543 rules: Request-URI, To tag, From tag, Call-ID, CSeq
    number, top Via and method (INVITE for an ACK).  §17.2.3 matches a 2543 ACK
    by the To tag of the *response*, which the INVITE did not carry; see
    `rfc2543_ack_fallback_key`.

    Raises SipParseError if a header field it reads is malformed (a parsed
    request has been checked already).
    """
    top = request.vias[0]
    branch = top.branch
    method = request.method
    if method == "ACK":
        method = "INVITE"
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, top.sent_by.lower(), method)
    return (
        "",
        str(request.uri),
        request.to_addr.tag or "",
        request.from_addr.tag or "",
        request.call_id,
        str(request.cseq.number),
        str(top),
        method,
    )


def is_rfc2543_key(key: TransactionKey) -> bool:
    """Whether *key* was made by the RFC 2543 rules (the request had no magic cookie)."""
    return len(key) != 3


def rfc2543_ack_fallback_key(ack_key: TransactionKey) -> TransactionKey | None:
    """For the RFC 2543 key of an ACK with a To tag, the key of an INVITE without one.

    An RFC 2543 ACK for a non-2xx final response carries the To tag that the
    response added, while the INVITE (outside a dialog) carried none (§17.2.3).
    None when there is nothing to fall back to.
    """
    if not is_rfc2543_key(ack_key) or not ack_key[_RFC2543_TO_TAG]:
        return None
    return (*ack_key[:_RFC2543_TO_TAG], "", *ack_key[_RFC2543_TO_TAG + 1 :])


def rfc2543_to_tag(key: TransactionKey) -> str:
    """The To tag recorded in an RFC 2543 key ("" for none)."""
    return key[_RFC2543_TO_TAG]
