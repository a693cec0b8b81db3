#!/usr/bin/env python3
"""CPU cost of reading one SIP datagram (`parse_datagram`), in-process.

The director spends about a quarter of its CPU in `homeredirect.sip.parser.parse_datagram`
on every path (redirect, Digest, proxy). This times that call alone on the messages the
SIPp benchmarks send, their keywords filled in with plausible values:

* register-1via: the REGISTER of bench/register_301.xml (bench/run.py), SIPp's one Via;
* register-2via: the REGISTER of bench/proxy_register.xml, SIPp's Via above a fake edge's;
* 200-3via: bench/home_uas.xml's 200 to the proxied REGISTER (the director's Via on top,
  as the director writes it, then the two of the request; From, To with a tag, Call-ID,
  CSeq copied);
* register-digest: the second REGISTER of tests/data/sipp/register_digest_301.xml, with
  the Authorization header SIPp's [authentication] writes for a qop=auth challenge.

Each message is parsed `--count` times per run (fixed list, one datagram per call, a
fresh `bytes` object per message so that nothing is cached between calls), `--repeat`
runs; the figure is process CPU time (`time.process_time`) per message, best and median
of the runs. The cyclic collector is off while timing. `--profile NAME` runs one more
round of that message under cProfile. Standard library and homeredirect only; the
figures are noisy on a shared machine, compare best values.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import time

from homeredirect.sip.parser import MessageReceived, parse_datagram

_REGISTER_1VIA = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-{n}-0\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:user0000008@example.com>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:user0000008@example.com>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:user0000008@127.0.0.1:5071;transport=UDP>\r\n"
    "Expires: 3600\r\n"
    "User-Agent: homeredirect-bench\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
_REGISTER_2VIA = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-{n}-0\r\n"
    "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKedge{n};received=192.0.2.1\r\n"
    "Max-Forwards: 69\r\n"
    "From: <sip:user0000008@example.com>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:user0000008@example.com>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:user0000008@192.0.2.99:5061;transport=tls>\r\n"
    "Expires: 3600\r\n"
    "User-Agent: homeredirect-bench\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
_OK_3VIA = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-hr-0fbdd74b342e1e1d.2ececfeb349b{n:04d};"
    "rport\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-{n}-0\r\n"
    "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKedge{n};received=192.0.2.1\r\n"
    "From: <sip:user0000008@example.com>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:user0000008@example.com>;tag=home{n}\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
_REGISTER_DIGEST = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-{n}-2;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:user0000008@example.com>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:user0000008@example.com>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Contact: <sip:user0000008@127.0.0.1:5071;transport=UDP>\r\n"
    'Authorization: Digest username="user0000008",realm="example.com",'
    'cnonce="6b8b4567",nc=00000001,qop=auth,uri="sip:example.com",'
    'nonce="MTc2NDIxNzYwMC4wMDAwMDA6YWJjZGVmMDEyMzQ1Njc4OQ.{n:08d}",'
    'response="0123456789abcdef0123456789abcdef",algorithm=MD5\r\n'
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
MESSAGES = {
    "register-1via": _REGISTER_1VIA,
    "register-2via": _REGISTER_2VIA,
    "200-3via": _OK_3VIA,
    "register-digest": _REGISTER_DIGEST,
}


def datagrams(template: str, count: int) -> list[bytes]:
    """*count* datagrams of *template*, each with its own branch, tag and Call-ID."""
    return [template.format(n=n).encode() for n in range(count)]


def one_round(data: list[bytes]) -> float:
    """CPU seconds per datagram to parse every one of *data*."""
    parse = parse_datagram
    gc.collect()
    gc.disable()
    start = time.process_time()
    for datagram in data:
        parse(datagram)
    elapsed = time.process_time() - start
    gc.enable()
    return elapsed / len(data)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=20_000)
    options.add_argument("--repeat", type=int, default=7)
    options.add_argument("--profile", choices=sorted(MESSAGES), help="cProfile one message")
    args = options.parse_args()
    print(f"parse_datagram, {args.count} datagrams x {args.repeat} runs (best / median us):")
    for name, template in MESSAGES.items():
        data = datagrams(template, args.count)
        assert all(isinstance(parse_datagram(d), MessageReceived) for d in data[:3]), name
        one_round(data)  # warms caches, untimed
        runs = [one_round(data) for _ in range(args.repeat)]
        print(f"  {name:16} {min(runs) * 1e6:6.2f} / {statistics.median(runs) * 1e6:6.2f}")
    if args.profile:
        data = datagrams(MESSAGES[args.profile], args.count)
        profile = cProfile.Profile()
        profile.runcall(one_round, data)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
