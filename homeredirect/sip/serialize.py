"""Turn messages back into bytes (RFC 3261 §7).

Header fields are written with their long names (RFC 3261 §7.3.3: compact forms
are optional; some Microsoft clients match only long names) and Content-Length
is always present and equal to the body's length, which stream transports
require (§18.3) and which some clients insist on even over UDP.
"""

from __future__ import annotations

from homeredirect.sip.message import Message, Request


def serialize(message: Message) -> bytes:
    if isinstance(message, Request):
        lines = [f"{message.method} {message.uri} {message.version}"]
    else:
        lines = [f"{message.version} {message.status} {message.reason}"]
    for name, value in message.headers:
        if name != "Content-Length":
            lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(message.body)}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + message.body
