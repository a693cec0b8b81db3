"""What a client transaction needs from the transport, and what it tells its user (RFC 3261 §17.1).

A client transaction sits between two parties: the channel it sends on (one
next hop, chosen by the transaction user per RFC 3263 before the transaction
starts) and the transaction user (TU) that receives responses: a UAC core, or
the response context of a stateful proxy (§16.7).  Both are interfaces so that
the transaction logic stays sans-IO and testable on a `Clock`.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from homeredirect.sip.message import Response

__all__ = ["IClientChannel", "IClientTransaction", "IClientTransactionUser"]


class IClientChannel(Interface):
    """The way to one next hop (address, port and transport) that a client transaction sends on.

    The ACK for a non-2xx final response and a CANCEL go the same way as the
    request they belong to (RFC 3261 §17.1.1.3, §9.1), so the transaction keeps
    its channel for its whole life.
    """

    reliable = Attribute(
        "True for TCP, TLS and SCTP: the transaction does not retransmit (no Timer A or E) and "
        "Timers D and K are zero (RFC 3261 §17.1.1.2, §17.1.2.2)."
    )

    def send(data: bytes) -> bool:
        """Hand *data* (a whole serialized request) to the transport layer (RFC 3261 §18.1.1).

        Return False when the transport failed at once (no route, connection
        refused, ICMP error known already); the transaction then reports a
        transport error to its user (§17.1.4).  A failure found out later (a
        connection lost while waiting) is reported by calling
        `IClientTransaction.transport_error`.  Must not raise.
        """


class IClientTransaction(Interface):
    """A client transaction as its user and its channel see it (RFC 3261 §17.1)."""

    key = Attribute(
        "The §17.1.3 matching key: (top Via branch, method) of the request, as a tuple of str."
    )

    def transport_error() -> None:
        """The channel failed after the request was handed to it (RFC 3261 §17.1.4).

        Terminates a transaction still waiting for a final response, after
        telling its user; ignored once nothing more can be sent or received
        that the user would miss.
        """


class IClientTransactionUser(Interface):
    """The transaction user: a UAC core or a stateful proxy's response context (RFC 3261 §17.1).

    Every callback may run synchronously inside the call that caused it (a
    response handed to the transaction table, a timer, or even
    `ClientTransactionTable.create` when the first send fails at once).
    Exactly one of `final_response`, `timed_out` and `transport_failed` ends the
    wait for a final response; after a 2xx to an INVITE, `final_response` is
    called again for each further 2xx (RFC 6026 §7.2: retransmissions, or the
    answers of other forks).
    """

    def provisional_response(transaction: IClientTransaction, response: Response) -> None:
        """A 1xx arrived (RFC 3261 §17.1.1.2, §17.1.2.2); 100 (Trying) included."""

    def final_response(transaction: IClientTransaction, response: Response) -> None:
        """A final response arrived: the first one, or another 2xx to an INVITE (RFC 6026).

        For a 300-699 to an INVITE the transaction has sent the ACK itself
        (§17.1.1.3); the ACK for a 2xx is the user's job (§13.2.2.4, or passed
        on end to end by a proxy, §16.7).  Retransmissions of a non-2xx final
        response are absorbed and never reach the user.
        """

    def timed_out(transaction: IClientTransaction, response: Response) -> None:
        """No final response in time: Timer B or F fired, or no final response
        came within 64*T1 of a CANCEL (RFC 3261 §17.1.1.2, §17.1.2.2, §9.1).

        *response* is a 408 (Request Timeout) synthesized from the request, for
        the user to treat like a received one (§8.1.3.1, §16.7 step 6).
        """

    def transport_failed(transaction: IClientTransaction, response: Response) -> None:
        """The transport could not deliver the request or the ACK (RFC 3261 §17.1.4).

        *response* is a 503 (Service Unavailable) synthesized from the request,
        for the user to treat like a received one (§8.1.3.1, §16.9).  After a
        non-2xx final response to an INVITE (a failed ACK) the user has had the
        final response already.
        """
