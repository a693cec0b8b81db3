"""`[dns]`: the home-server directory service, the DNS records by which clients find a
first server (`homeredirect dns` serves them, `homeredirect zone` prints them)."""

from __future__ import annotations

from attrs import field, frozen

from homeredirect.config.fields import Expect, integer, is_host_text, to_host

__all__ = ["DnsConfig"]


@frozen(kw_only=True)
class DnsConfig:
    """`[dns]`: where the DNS service listens and what it publishes.

    - `host`: the address to bind (default `"127.0.0.1"`); `port`: default 5353, 0 for any.
    - `ttl`: the TTL of every record, seconds (default 300).
    """

    host: str = field(
        default="127.0.0.1",
        converter=to_host,
        validator=Expect("an IPv4 or IPv6 address or a hostname", is_host_text),
    )
    port: int = field(default=5353, validator=integer(0, 65_535))
    ttl: int = field(default=300, validator=integer(0, 2**31 - 1))
