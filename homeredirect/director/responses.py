"""Build the responses a server generates itself (RFC 3261 §8.2.6).

Via (all values, in order), From, Call-ID and CSeq are copied verbatim -- some
Microsoft clients match a response to its request on the exact Call-ID and
CSeq strings -- and To gains a tag when the response is final or the request
carried none.  Names are written long (serialize adds Content-Length).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from homeredirect.sip.errors import SipParseError
from homeredirect.sip.headers import parse_name_addr
from homeredirect.sip.message import Headers, Request, Response
from homeredirect.transport.flows import replace_top_via

REASON_PHRASES = {
    100: "Trying",
    200: "OK",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    489: "Bad Event",
    500: "Server Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}

#: Copied from the request in this order (RFC 3261 §8.2.6.2), with their index keys.
_COPIED = (("From", "from"), ("To", "to"), ("Call-ID", "call-id"), ("CSeq", "cseq"))


class TagSource:
    """To tags (RFC 3261 §19.3: globally unique, cryptographically random, at least
    32 bits; ours are 48): hex slices of os.urandom read 512 tags at a time, so
    that a response costs no system call of its own."""

    _TAG_BYTES = 6
    _BATCH = 512

    def __init__(self, urandom: Callable[[int], bytes] = os.urandom) -> None:
        self._urandom = urandom
        self._pool = ""
        self._offset = 0

    def __call__(self) -> str:
        width = 2 * self._TAG_BYTES
        if self._offset >= len(self._pool):
            self._pool = self._urandom(self._TAG_BYTES * self._BATCH).hex()
            self._offset = 0
        start = self._offset
        self._offset = start + width
        return self._pool[start : start + width]


class ResponseFactory:
    """Makes responses to requests, all carrying the same Server header."""

    def __init__(self, server: str, make_tag: Callable[[], str]) -> None:
        self._server = server
        self._make_tag = make_tag

    def response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        top_via: str | None = None,
    ) -> Response:
        """A response to a parsed request; *top_via* replaces the first Via value
        (the one annotated with received/rport, RFC 3261 §18.2.1)."""
        return Response(
            status,
            reason if reason is not None else REASON_PHRASES.get(status, ""),
            Headers._trusted_copy(
                self._fields(
                    request.headers, status, extra, top_via, request.to_addr.tag is not None
                )
            ),
        )

    def response_to_headers(
        self, headers: Headers, status: int, reason: str, extra: Sequence[tuple[str, str]] = ()
    ) -> Response:
        """A response built from whatever header fields of a malformed request
        could be read (RFC 3261 §8.2: even a 400 echoes Via, From, To, Call-ID, CSeq)."""
        to = headers.get("To")
        try:
            has_tag = to is not None and parse_name_addr(to, "To").tag is not None
        except SipParseError:
            has_tag = False
        fields = self._fields(headers, status, extra, None, has_tag)
        return Response(status, reason, Headers._trusted_copy(fields))

    def _fields(
        self,
        headers: Headers,
        status: int,
        extra: Iterable[tuple[str, str]],
        top_via: str | None,
        to_has_tag: bool,
    ) -> tuple[tuple[str, str], ...]:
        # One response per request: read the index by its lowercase keys directly.
        index = headers._index
        fields: list[tuple[str, str]] = []
        vias = index.get("via")
        if vias:
            if top_via is not None:
                fields.append(("Via", replace_top_via(vias[0], top_via)))
                fields.extend(("Via", value) for value in vias[1:])
            else:
                fields.extend(("Via", value) for value in vias)
        for name, key in _COPIED:
            values = index.get(key)
            if values is None:
                continue
            value = values[0]
            if key == "to" and status > 100 and not to_has_tag:
                value = f"{value};tag={self._make_tag()}"
            fields.append((name, value))
        fields.extend(extra)
        fields.append(("Server", self._server))
        return tuple(fields)
