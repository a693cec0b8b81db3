"""Locating home servers (RFC 3263): which addresses, ports and transports to try, in order.

The public API is `ILocator` (`interfaces`), `Target` (`target`), the DNS `Locator`
(`rfc3263`) and its errors; `srv` and `cache` are its parts.
"""
