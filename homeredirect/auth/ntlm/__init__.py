"""Connection-less (datagram) NTLMv2 acceptor per [MS-NLMP], for [MS-SIPAE].

gss-ntlmssp cannot act as the datagram acceptor that MS-SIPAE clients need (see
docs/research/ntlm-datagram-acceptor.md), so the server side is written here on
`cryptography` (RC4) and the standard library (MD5, HMAC), with an MD4 of our own.
"""
