"""The sans-IO SIP reader: bytes in, events out (RFC 3261 §7, §18.3).

Nothing here touches a socket or the reactor.  `parse_datagram` reads one UDP
datagram; `StreamParser` frames a TCP/TLS byte stream by Content-Length and
answers RFC 5626 §3.5.1 keep-alive pings.  Every outcome is an event:

- `MessageReceived`: a well-formed request or response;
- `MessageRejected`: a malformed message, with what could be read of its header
  fields so that a request can still be answered with 400/505/513
  (RFC 3261 §8.2, §21.4.1), and whether the stream can no longer be framed;
- `KeepAlivePing`: a double CRLF on a stream, to be answered with a single CRLF.
"""

from __future__ import annotations

import re

from attrs import frozen

from homeredirect.sip.errors import MessageTooLarge, SipParseError, VersionNotSupported
from homeredirect.sip.headers import CANONICAL_NAMES, TOKEN_RE, check_contacts, check_name_addr
from homeredirect.sip.message import Headers, Message, Request, Response, _single
from homeredirect.sip.uri import SipUri, Uri, bounded_int, parse_uri

DEFAULT_MAX_MESSAGE_SIZE = 65_536

_VERSION_RE = re.compile(r"SIP/([0-9]{1,9})\.([0-9]{1,9})", re.I)
#: Above any message size limit; a longer Content-Length is a framing error.
_MAX_CONTENT_LENGTH = 2**63 - 1
_STATUS_RE = re.compile(r"[0-9]{3}")


@frozen
class MessageReceived:
    message: Message


@frozen
class MessageRejected:
    """A message that could not be read.

    *headers* holds what was readable of the header fields (possibly empty);
    *is_request* is False for responses and for bytes with no start line we
    recognise.  *fatal* means the stream lost its framing and must be closed
    after any answer.
    """

    error: SipParseError
    headers: Headers
    is_request: bool
    method: str | None = None
    fatal: bool = False


@frozen
class KeepAlivePing:
    """RFC 5626 §3.5.1: a CRLFCRLF ping on a stream, answered by a CRLF pong."""


Event = MessageReceived | MessageRejected | KeepAlivePing


def _check_version(version: str) -> None:
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise SipParseError(f"bad SIP-Version {version!r}")
    if (int(match.group(1)), int(match.group(2))) != (2, 0):
        raise VersionNotSupported(f"SIP-Version {version} not supported")


_NO_HEADERS = Headers()


class _Head:
    """The start line and header fields of one message, read but not yet validated.

    *error* is the first fault found in the header block; *framing_error* is a
    fault of Content-Length, which on a stream means the next message cannot be
    found (RFC 3261 §18.3).
    """

    __slots__ = (
        "body_offset",
        "content_length",
        "error",
        "framing_error",
        "headers",
        "is_request",
        "method",
        "start",
    )

    def __init__(self) -> None:
        self.start = ""
        self.is_request = False
        self.method: str | None = None
        self.headers = _NO_HEADERS
        self.content_length: int | None = None
        self.body_offset = 0
        self.error: SipParseError | None = None
        self.framing_error: SipParseError | None = None


#: One whole header line (RFC 3261 §7.3.1, after unfolding).  Anchored at a line
#: start, so that ``findall`` cannot pick a field out of the middle of a bad line.
_HEADER_LINE_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\r\n]*)\r\n", re.M)
_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")


def _name_table() -> dict[str, tuple[str, str]]:
    """Header name as commonly spelt on the wire -> (canonical name, index key)."""
    table: dict[str, tuple[str, str]] = {}
    for lowered, canonical in CANONICAL_NAMES.items():
        entry = (canonical, canonical.lower())
        for spelling in (lowered, lowered.upper(), canonical, lowered.title()):
            table[spelling] = entry
    return table


_NAMES = _name_table()


def _entry_for(name: str) -> tuple[str, str]:
    canonical = CANONICAL_NAMES.get(name.lower(), name)
    return canonical, canonical.lower()


def _read_head(data: bytes | bytearray, head_end: int) -> _Head:
    """Read start line and header fields of ``data[:head_end]`` (RFC 3261 §7.3).

    Errors in individual fields are recorded in ``head.error`` rather than raised,
    so the caller still gets the readable fields to answer with.
    """
    head = _Head()
    head.body_offset = head_end + 4
    text = data[:head_end].decode("utf-8", "surrogateescape")
    first_end = text.find("\r\n")
    if first_end < 0:
        head.start, block = text, ""
    else:
        head.start, block = text[:first_end], text[first_end + 2 :] + "\r\n"
    start = head.start
    # A Request-Line ends in SIP-Version; a Status-Line starts with it (a method,
    # being a token, cannot hold the '/' of "SIP/").
    if (start.endswith(" SIP/2.0") or " SIP/" in start.upper()) and start[:4].upper() != "SIP/":
        head.is_request = True
        head.method = start.split(" ", 1)[0]
    if "\r\n " in block or "\r\n\t" in block:
        block = _FOLD_RE.sub(" ", block)
    trailing_lws = " \r\n" in block or "\t\r\n" in block
    pairs = _split_fields(block)
    if pairs is None:
        pairs, head.error = _match_fields(block)
    fields, index = _indexed(pairs, trailing_lws)
    head.headers = Headers._trusted(tuple(fields), index)
    lengths = index.get("content-length")
    if lengths is not None:
        if len(lengths) > 1:
            # RFC 4475 §3.3.9: conflicting lengths are a framing error.
            head.framing_error = SipParseError("more than one Content-Length header")
        else:
            value = lengths[0]
            head.content_length = bounded_int(value, _MAX_CONTENT_LENGTH)
            if head.content_length is None:
                # RFC 4475 §3.1.2.3: never use a negative or non-numeric value.
                head.framing_error = SipParseError(f"bad Content-Length {value[:40]!r}")
        if head.framing_error is not None and head.error is None:
            head.error = head.framing_error
    return head


_Pairs = list[tuple[str, str]]
_Fields = tuple[_Pairs, dict[str, list[str]]]


def _split_fields(block: str) -> _Pairs | None:
    """The (name, value) pairs of an unfolded header *block* in which every line is
    well formed (RFC 3261 §7.3.1), or None if any is not.

    The fast path: where it answers, `_match_fields` would find the same pairs and
    no error; `block.split` and `str.partition` cost less than its ``findall``.
    Every CR and LF must pair up as the CRLFs that end the lines, and each line
    must have a token and then at once the colon.
    """
    lines = block.split("\r\n")
    lines.pop()  # after the CRLF that ends the block; "" for a block without fields
    count = len(lines)
    if block.count("\r") != count or block.count("\n") != count:
        return None
    pairs: _Pairs = []
    names = _NAMES
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or (name not in names and not TOKEN_RE.fullmatch(name)):
            return None
        pairs.append((name, value.lstrip(" \t")))
    return pairs


def _match_fields(block: str) -> tuple[_Pairs, SipParseError | None]:
    """The (name, value) pairs of the lines of *block* that are well formed, and the
    fault of the first that is not (RFC 3261 §7.3.1): a bare CR or LF, or no colon
    after a token."""
    pairs: _Pairs = _HEADER_LINE_RE.findall(block)
    # Each matched line holds exactly one CR and one LF: any other CR or LF (a bare
    # one, or a line that did not match) makes the counts differ.
    count = len(pairs)
    if block.count("\n") != count or block.count("\r") != count:
        return pairs, SipParseError(f"bad header line {_first_bad_line(block)!r}")
    return pairs, None


def _indexed(pairs: _Pairs, trailing_lws: bool) -> _Fields:
    """The fields under their canonical names, and the index of their values by
    lowercase name; with *trailing_lws*, values lose trailing spaces and tabs."""
    fields: _Pairs = []
    index: dict[str, list[str]] = {}
    names = _NAMES
    for name, value in pairs:
        entry = names.get(name) or _entry_for(name)
        if trailing_lws:
            value = value.rstrip(" \t")
        fields.append((entry[0], value))
        key = entry[1]
        if key in index:
            index[key].append(value)
        else:
            index[key] = [value]
    return fields, index


def _first_bad_line(block: str) -> str:
    for line in block.split("\r\n"):
        if "\r" in line or "\n" in line:
            return line[:60]
        if line and not _HEADER_LINE_RE.fullmatch(line + "\r\n"):
            return line[:60]
    return block[:60]


def _build(head: _Head, body: bytes) -> Message:
    """Validate *head* into a Request or Response, raising SipParseError.

    Reading each typed field validates it, including that a field which may
    appear once (RFC 3261 §7.3.1) does: Call-ID, CSeq, From, To, Max-Forwards;
    `_read_head` has checked Content-Length.  Expires is not checked: a
    malformed one means 3600 (RFC 3261 §20.19).
    """
    if head.error is not None:
        raise head.error
    headers = head.headers
    index = headers._index
    message: Message
    start = head.start
    if head.is_request:
        parts = start.split(" ")
        if len(parts) != 3:
            raise _request_line_error(start)
        method, uri_text, version = parts
        if not TOKEN_RE.fullmatch(method):
            raise SipParseError(f"bad method {method!r}")
        if version != "SIP/2.0":
            _check_version(version)
        message = Request(method, _parse_request_uri(uri_text), headers, body, version)
        cseq = message.cseq
        if cseq.method != method:
            # RFC 4475 §3.1.2.17 and §3.1.2.18 (with an unknown method as well).
            raise SipParseError(f"CSeq method {cseq.method} does not match {method}")
        message.max_forwards  # noqa: B018 - validates the field
    else:
        version, _, rest = start.partition(" ")
        if not version.upper().startswith("SIP/"):
            raise SipParseError("bad start line: neither a Request-Line nor a Status-Line")
        _check_version(version)
        status_text, _, reason = rest.partition(" ")
        if not _STATUS_RE.fullmatch(status_text) or not 100 <= int(status_text) <= 699:
            raise SipParseError(f"bad status code {status_text!r}")
        message = Response(int(status_text), reason, headers, body, version)
        message.cseq  # noqa: B018
    message.vias  # noqa: B018 - each access validates and caches the field
    # From and Contact are checked without building their values: a redirect
    # never reads them, and building costs more than the check.
    check_name_addr(_single(headers, "From", "from"), "From")
    message.to_addr  # noqa: B018
    message.call_id  # noqa: B018
    contacts = index.get("contact")
    if contacts is not None:
        check_contacts(contacts)  # RFC 4475 §3.1.2.13: '?' needs <>
    return message


def _request_line_error(start: str) -> SipParseError:
    """Name what is wrong with a Request-Line that is not three SP-separated parts.

    RFC 3261 §7.1 puts exactly one SP between the elements and none at the end
    (RFC 4475 §3.1.2.9 and §3.1.2.10), and a Request-URI holds no whitespace
    (§3.1.2.8).
    """
    if start.endswith(" "):
        return SipParseError("bad Request-Line: SP after the SIP-Version")
    if "  " in start:
        return SipParseError("bad Request-Line: more than one SP between its elements")
    if start.count(" ") > 2:
        return SipParseError("bad Request-URI: it contains whitespace")
    return SipParseError("bad Request-Line: expected Method SP Request-URI SP SIP-Version")


def _parse_request_uri(text: str) -> Uri:
    """Parse the Request-URI: no <> around it (RFC 4475 §3.1.2.7) and no headers in a
    SIP URI (RFC 3261 §19.1.1 table 1, RFC 4475 §3.1.2.11)."""
    if text.startswith("<"):
        raise SipParseError(f"bad Request-URI {text!r}: it must not be enclosed in <>")
    try:
        uri = parse_uri(text)
    except SipParseError as error:
        raise SipParseError(f"bad Request-URI: {error.reason}") from None
    if isinstance(uri, SipUri) and uri.headers is not None:
        raise SipParseError(f"bad Request-URI {text!r}: headers are not allowed in it")
    return uri


def _rejected(head: _Head, error: SipParseError, fatal: bool = False) -> MessageRejected:
    return MessageRejected(error, head.headers, head.is_request, head.method, fatal)


def parse_datagram(data: bytes, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Event | None:
    """Read one UDP datagram (RFC 3261 §18.3).

    Returns None for a datagram that carries no message at all (CRLF keep-alives).
    Bytes beyond Content-Length are discarded; a body shorter than Content-Length
    is an error.
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if start:
        data = data[start:]
    if not data:
        return None
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        head = _read_head(data, len(data.rstrip(b"\r\n")))
        try:
            # Name a fault of the fields if there is one (RFC 4475 §3.1.2.15 lacks
            # the empty line too, but what it is about is the display names).
            _build(head, b"")
        except SipParseError as error:
            return _rejected(head, error)
        return _rejected(head, SipParseError("no empty line after the header fields"))
    head = _read_head(data, head_end)
    if len(data) > max_message_size:
        return _rejected(head, MessageTooLarge(f"message larger than {max_message_size} bytes"))
    body_start = head.body_offset
    if head.content_length is None:
        body = data[body_start:]
    else:
        end = body_start + head.content_length
        if end > len(data):
            return _rejected(head, SipParseError("Content-Length larger than the message body"))
        body = data[body_start:end]
    try:
        return MessageReceived(_build(head, body))
    except SipParseError as error:
        return _rejected(head, error)


class StreamParser:
    """Frame SIP messages on a TCP or TLS stream by Content-Length (RFC 3261 §18.3).

    ``feed(data)`` returns the events completed by *data*.  After a fatal
    `MessageRejected` the stream cannot be framed any more and the parser
    returns nothing further; the connection should be closed.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_message_size
        self._head: _Head | None = None
        self._broken = False
        # Where the search for the end of the header fields resumes, so that a
        # header block trickling in byte by byte is not rescanned from its start.
        self._scan_from = 0

    def feed(self, data: bytes) -> list[Event]:
        if self._broken:
            return []
        self._buffer += data
        events: list[Event] = []
        while True:
            event = self._next_event()
            if event is None:
                return events
            events.append(event)
            if isinstance(event, MessageRejected) and event.fatal:
                self._broken = True
                self._buffer.clear()
                return events

    def _next_event(self) -> Event | None:
        buffer = self._buffer
        if self._head is None:
            # RFC 3261 §7.5: CRLFs before a start line are ignored; RFC 5626 §3.5.1:
            # a CRLFCRLF between messages is a keep-alive ping.
            if buffer.startswith(b"\r\n\r\n"):
                del buffer[:4]
                return KeepAlivePing()
            if buffer.startswith(b"\r\n"):
                if len(buffer) < 4 and b"\r\n\r\n".startswith(bytes(buffer)):
                    return None
                del buffer[:2]
                self._scan_from = 0
                return self._next_event()
            head_end = buffer.find(b"\r\n\r\n", self._scan_from)
            if head_end < 0:
                self._scan_from = max(0, len(buffer) - 3)
                if len(buffer) > self._max:
                    head = _read_head(bytes(buffer[: self._max]), self._max)
                    return _rejected(head, MessageTooLarge("header fields too large"), fatal=True)
                return None
            head = _read_head(buffer, head_end)
            if head.framing_error is not None:
                return _rejected(head, head.framing_error, fatal=True)
            if head.content_length is None:
                # §18.3 requires Content-Length on a stream; without one, the
                # message is taken to have no body (an RFC 2543 INVITE's body
                # is then read as the start of the next message).
                head.content_length = 0
            if head.body_offset + head.content_length > self._max:
                error = MessageTooLarge(f"message larger than {self._max} bytes")
                return _rejected(head, error, fatal=True)
            self._head = head
        head = self._head
        assert head.content_length is not None
        end = head.body_offset + head.content_length
        if len(buffer) < end:
            return None
        body = bytes(buffer[head.body_offset : end])
        del buffer[:end]
        self._head = None
        self._scan_from = 0
        try:
            return MessageReceived(_build(head, body))
        except SipParseError as error:
            return _rejected(head, error)
