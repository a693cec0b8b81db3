"""`[proxy]`: how requests are forwarded, transaction-statefully (RFC 3261 §16)."""

from __future__ import annotations

from attrs import field, frozen

from homeredirect.config.errors import InvalidField
from homeredirect.config.fields import BOOLEAN, SECONDS, one_of, to_seconds

__all__ = ["PATH_MODES", "ProxyConfig"]

PATH_MODES = ("supported", "always", "never")


@frozen(kw_only=True)
class ProxyConfig:
    """`[proxy]`: the transaction-stateful proxy (RFC 3261 §16) and its timers.

    - `record_route`: add our URI (with `lr`) in Record-Route to dialog-forming requests
      (INVITE, SUBSCRIBE, REFER, NOTIFY) so that the dialog's requests come back through
      us (RFC 3261 §16.6 step 4); default false.
    - `path`: when a proxied REGISTER gets our Path header (RFC 3327 §4): `"supported"`
      (default: when the client's Supported lists `path`), `"always"` or `"never"`.
    - `timer_c`: seconds an INVITE may stay unanswered (no provisional response) before
      it is cancelled (RFC 3261 §16.6 step 11, more than 180); default 180.
    - `t1`, `t2`, `t4`: the RFC 3261 §17.1.1.1 timer values in seconds (defaults 0.5, 4, 5)
      of the server and client transactions: a next hop that never answers costs 64*T1
      (Timer B/F) before the client gets 408.
    - `failover_timeout`: seconds a forwarded request may go without any response at all
      from a target before that target is given up and the next one (its SRV peers, its
      backup, RFC 3263 §4.3) is tried; default 4 (8*T1: over UDP, four copies were sent).
      A target that answered, even 100 Trying, keeps its Timer B/F, and so does the last
      target: with nothing left to try the client gets 408 only when Timer B/F fires. A
      value of 64*T1 or more never fires first, which turns failover on silence off.
    """

    record_route: bool = field(default=False, validator=BOOLEAN)
    path: str = field(default="supported", validator=one_of(*PATH_MODES))
    timer_c: float = field(default=180.0, converter=to_seconds, validator=SECONDS)
    t1: float = field(default=0.5, converter=to_seconds, validator=SECONDS)
    t2: float = field(default=4.0, converter=to_seconds, validator=SECONDS)
    t4: float = field(default=5.0, converter=to_seconds, validator=SECONDS)
    failover_timeout: float = field(default=4.0, converter=to_seconds, validator=SECONDS)

    def __attrs_post_init__(self) -> None:
        if self.t2 < self.t1:
            raise InvalidField("t2", f"at least t1 ({self.t1})", self.t2)
