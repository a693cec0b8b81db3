"""The [MS-SIPAE] message signature: the signed text and the Authentication-Info header.

Once a security association exists, both sides sign every message with GSS_GetMIC over a
string built from the message ([MS-SIP] §3.1.4.2, [MS-SIPAE] §3.2.5.2, §3.3.5.4): each value
enclosed in angle brackets, exactly as it appears on the wire::

    <scheme><rand><num><realm><targetname><Call-ID><CSeq number><CSeq method>
    <From URI><From tag><To URI><To tag><P-Asserted-Identity sip URI><... tel URI>
    <Expires><status code, responses only>

Protocol version 3 and later include the To URI and P-Asserted-Identity; version 2 does
not. The field extraction follows pidgin-sipe's (`sipe-sign.c`), which is the verifier our
responses meet: a From or To without angle brackets contributes an empty URI, and
P-Preferred-Identity stands in when P-Asserted-Identity is absent. The result is checked
against the signatures Office Communications Server 2007 R2 produced (pidgin-sipe's
`sip-sec-ntlm-tests.c`).
"""

from __future__ import annotations

import re

from attrs import frozen

from homeredirect.sip.headers import split_list
from homeredirect.sip.message import Headers, Request, Response

__all__ = ["SignedFields", "signature_string"]

_TAG = re.compile(r";\s*tag\s*=\s*([^;\s]*)", re.IGNORECASE)


@frozen
class SignedFields:
    """The security-association values a signature covers: `scheme` ("NTLM"), the
    sender's `rand` and `num` (crand/cnum or srand/snum) as written, realm, targetname."""

    scheme: str
    rand: str
    num: str
    realm: str
    targetname: str


def _angle_uri(value: str | None) -> str:
    """The text between the first `<` and the following `>`, or ""."""
    if value is None:
        return ""
    start = value.find("<")
    if start < 0:
        return ""
    end = value.find(">", start + 1)
    return value[start + 1 : end] if end >= 0 else value[start + 1 :]


def _tag(value: str | None) -> str:
    if value is None:
        return ""
    # The tag of the name-addr, not of a URI parameter inside its angle brackets.
    end = value.rfind(">")
    match = _TAG.search(value, end + 1 if end >= 0 else 0)
    return match[1] if match else ""


def _asserted_identity(headers: Headers) -> tuple[str, str]:
    """(sip URI, tel URI) of P-Asserted-Identity, else P-Preferred-Identity (RFC 3325)."""
    value = headers.get("P-Asserted-Identity") or headers.get("P-Preferred-Identity")
    sip = tel = ""
    if value is None:
        return sip, tel
    for item in split_list(value):
        uri = _angle_uri(item) if "<" in item else item.strip()
        scheme = uri[:4].lower()
        if scheme == "sip:" and not sip:
            sip = uri
        elif scheme == "tel:" and not tel:
            tel = uri
    return sip, tel


def signature_string(message: Request | Response, fields: SignedFields, version: int) -> bytes:
    """The text [MS-SIP] §3.1.4.2 signs, for protocol `version` (2, 3 or 4), as UTF-8."""
    headers = message.headers
    cseq = (headers.get("CSeq") or "").strip()
    number, _, cseq_method = cseq.partition(" ")
    if isinstance(message, Request):
        method, code = message.method, ""
    else:
        method, code = cseq_method.strip(), f"<{message.status}>"
    from_value = headers.get("From")
    to_value = headers.get("To")
    parts = [
        fields.scheme,
        fields.rand,
        fields.num,
        fields.realm,
        fields.targetname,
        headers.get("Call-ID") or "",
        number,
        method,
        _angle_uri(from_value),
        _tag(from_value),
    ]
    if version >= 3:
        sip, tel = _asserted_identity(headers)
        parts += [_angle_uri(to_value), _tag(to_value), sip, tel]
    else:
        parts.append(_tag(to_value))
    parts.append(headers.get("Expires") or "")
    return ("".join(f"<{part}>" for part in parts) + code).encode("utf-8")
