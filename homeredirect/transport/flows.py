"""Flows: how a message arrived, and how to send back along the same way (RFC 3261 §18).

A flow is the pairing of one of our listeners with one remote address (RFC 5626
§3 calls it a flow as well).  The core never touches sockets: it hands bytes to
`IFlow.send`, and computes *where* a response goes with the rules of §18.2.2.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from homeredirect.sip.headers import Via, split_list

Address = tuple[str, int]

DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


class IFlow(Interface):
    """One transport association with a peer: a UDP (listener, remote) pair or a connection."""

    transport = Attribute("'UDP', 'TCP' or 'TLS', as written in a Via (RFC 3261 §20.42).")
    reliable = Attribute("True for stream transports: no retransmission timers (§17).")
    remote = Attribute("The peer's (host, port) as seen on the socket.")
    local = Attribute("Our (host, port) as advertised in Via and Contact.")
    peer_identity = Attribute(
        "The peer's FQDN as verified by TLS, or None: for a connection we opened, the name its"
        " certificate was verified against; for one a listener accepted, the name from the"
        " client certificate that `allowed_peers` matched (or, without allowed_peers, its"
        " first dNSName). None over UDP and TCP and for TLS clients without a certificate."
        " Only this, never a header, says which server a request came from (RFC 5922 §7)."
    )

    def send(data: bytes, destination: Address | None = None) -> None:
        """Write *data*; a datagram flow sends to *destination* (default: the peer).

        Raises `FlowClosed` if a stream flow's connection has gone.
        """


class FlowClosed(Exception):
    """The connection of a stream flow is no longer open (RFC 3261 §18.2.2)."""


def annotate_via(via_text: str, via: Via, source: Address) -> str:
    """Add ``received`` and fill ``rport`` on a request's top Via (RFC 3261 §18.2.1, RFC 3581 §4).

    *via_text* is the top Via as received; it is returned unchanged when nothing
    needs adding, so that an unmodified Via stays byte-identical.
    """
    host, port = source
    add_received = via.host.strip("[]") != host and via.received is None
    fill_rport = via.rport == ""
    if not add_received and not fill_rport:
        return via_text
    text = via_text
    if fill_rport:
        text = _fill_rport(text, port)
        add_received = via.received is None
    if add_received:
        text = f"{text};received={host}"
    return text


def replace_top_via(first_line: str, top_via: str) -> str:
    """The first Via header line with its first value replaced by *top_via* (the
    annotated one), keeping any further values of that line (RFC 3261 §7.3.1)."""
    values = split_list(first_line)
    values[0] = top_via
    return ", ".join(values)


def _fill_rport(via_text: str, port: int) -> str:
    lowered = via_text.lower()
    start = 0
    while True:
        index = lowered.find(";rport", start)
        if index < 0:
            return via_text
        end = index + len(";rport")
        if end == len(via_text) or via_text[end] in "; \t,":
            return f"{via_text[:end]}={port}{via_text[end:]}"
        start = end


def reply_address(via: Via, source: Address, transport: str) -> Address:
    """Where responses to a request just received over an unreliable transport
    go (RFC 3261 §18.2.2, RFC 3581 §4): to the source port if the client asked
    for rport, else to the source address (which is what ``received`` would say)
    at the port in sent-by.

    `maddr` is ignored on purpose: RFC 3261 §18.2.2 would send the response to the
    address it names, which lets any client reflect our responses at a host of its
    choosing. It exists for multicast requests, which we never receive.
    """
    if via.rport == "":
        return source
    return source[0], via.port or DEFAULT_PORTS.get(transport, 5060)


def response_destination(via: Via, flow_remote: Address, transport: str) -> Address:
    """Where a response to a request with top Via *via* goes over an unreliable
    transport (RFC 3261 §18.2.2, RFC 3581 §4).

    *via* must be the top Via as annotated by `annotate_via`; its `maddr` is ignored,
    as in `reply_address`.
    """
    rport = via.rport
    if rport:
        return via.received or flow_remote[0], int(rport)
    if via.received:
        return via.received, via.port or DEFAULT_PORTS.get(transport, 5060)
    return via.host.strip("[]"), via.port or DEFAULT_PORTS.get(transport, 5060)
