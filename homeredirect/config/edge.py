"""`[edge]`: where an edge server sends what it proxies, when not to home servers itself."""

from __future__ import annotations

from attrs import field, frozen

from homeredirect.config.fields import BOOLEAN, Expect
from homeredirect.hostnames import is_hostname
from homeredirect.sip.errors import SipParseError
from homeredirect.sip.uri import SipUri, parse_uri

__all__ = ["EDGE_TRANSPORTS", "EdgeConfig", "NextHop", "parse_next_hop"]

EDGE_TRANSPORTS = ("udp", "tcp", "tls")


@frozen
class NextHop:
    """The next hop of `[edge].next_hop`, as a proxy reaches it (RFC 3263 §4.1, simplified).

    `fqdn` is the URI's host, which a TLS connection verifies the certificate against;
    `transport` is the URI's `transport` parameter, `tls` for a `sips:` URI, else `udp`
    (RFC 3263 §4.1 without NAPTR); `port` is the URI's, else 5061 for TLS and 5060 otherwise.
    """

    fqdn: str
    transport: str
    port: int

    def __str__(self) -> str:
        return f"sip:{self.fqdn}:{self.port};transport={self.transport}"


def parse_next_hop(text: str) -> NextHop:
    """Read a next-hop SIP URI; raise `ValueError` saying what is wrong with it."""
    try:
        uri = parse_uri(text)
    except SipParseError as error:
        raise ValueError(error.reason) from None
    if not isinstance(uri, SipUri):
        raise ValueError("not a sip: or sips: URI")
    if uri.user is not None:
        raise ValueError("the URI of a server has no user part")
    if not is_hostname(uri.host):
        # The FQDN is what a TLS certificate is verified against (RFC 5922 §7.2); an
        # address to connect to goes in [home_servers."FQDN"] host.
        raise ValueError("the host must be the server's FQDN, not an IP address")
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    if transport not in EDGE_TRANSPORTS or (uri.scheme == "sips" and transport != "tls"):
        raise ValueError(f"unsupported transport {transport!r}")
    port = uri.port if uri.port is not None else (5061 if transport == "tls" else 5060)
    return NextHop(uri.host.lower(), transport, port)


def _is_next_hop(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_next_hop(value)
    except ValueError:
        return False
    return True


@frozen(kw_only=True)
class EdgeConfig:
    """`[edge]`: only with `[server] role = "edge"`.

    - `next_hop` (optional): the SIP URI of the server every request is forwarded to,
      e.g. `"sip:director.example.com;transport=tls"` (a director, which then proxies to
      the home server, seeing two Vias). Its host is an FQDN: TLS verifies the next hop's
      certificate against it, and `[home_servers."FQDN"]` may give the address (`host`)
      and a `backup`. The transport is the URI's `transport` parameter (default `udp`,
      `tls` for `sips:`), the port the URI's (default 5060, or 5061 for TLS). With a next
      hop the edge resolves no assignments, and `[assignments]` is not needed.
      Without one, the edge proxies to each user's home server from `[assignments]`.
    - `mark` (default true): add `ms-edge-proxy-message-trust` ([MS-SIPRE] §2.2.15) to
      the requests the edge forwards, as a Microsoft Edge does for external users, so that
      a director or home server with the `edge-trust` policy that has this edge in its
      `[policy] trusted_edges` knows the request came from outside.
    """

    next_hop: str | None = field(
        default=None,
        validator=Expect(
            'a SIP URI naming a server by FQDN, e.g. "sip:director.example.com;transport=tls"',
            lambda value: value is None or _is_next_hop(value),
        ),
    )
    mark: bool = field(default=True, validator=BOOLEAN)

    @property
    def next_hop_target(self) -> NextHop | None:
        """`next_hop` parsed, or None."""
        return None if self.next_hop is None else parse_next_hop(self.next_hop)
