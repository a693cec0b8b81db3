#!/usr/bin/env python3
"""CPU cost of one REGISTER proxied transaction-statefully by the director, in-process.

The in-process counterpart of bench/proxy.py (issue 4: at most 80 us of CPU per proxied
REGISTER transaction). A director is built with `makeService` from a configuration like
bench/proxy.py's `ProxyDirector`: one UDP listener, `[assignments]` from a file
(`--users` entries, cycled), the via-count policy, `[proxy] path = "always"`,
`[log] level = "error"`, and a static `[home_servers."FQDN"]` entry per home server
pointing at the home stand-in over UDP. Datagrams are fed to the real UDP protocol
(`SipDatagramProtocol.datagramReceived`, as the reactor calls it) on a fake port whose
socket records what is sent, with a `task.Clock` as the reactor; nothing touches the
network.

Each transaction is what SIPp does in bench/proxy_register.xml: a REGISTER with two Vias
(SIPp's and a fake edge's below it, so via-count proxies it) and a fresh Call-ID and
branch, which the director forwards to the home server; then the 200 that
bench/home_uas.xml sends back for it (every Via, From, To with a tag, Call-ID, CSeq),
which the director relays to SIPp. `--window` REGISTERs (default 50) are forwarded before
their 200s come back (50 in flight: 10 ms at 5,000/s).
CPU time (`time.thread_time`, the figure the aim is about) per transaction, over `--count`
transactions, best and median of `--repeat` runs:

* request: the REGISTER in, the forwarded copy out (server and client transactions made);
* response: the home's 200 in, the relayed 200 out (both transactions completed);
* timers: the clock advanced past Timer K (T4, the client side) and Timer J (64*T1, the
  server side), which remove both transactions (RFC 3261 §17.1.2.2, §17.2.2);
* total: the three together, the figure to hold against the 80 us aim (which bench/proxy.py
  measures for the whole process: the reactor and the system calls come on top).

The 200s are built from the forwarded requests between the two timed steps of a window,
untimed (they are the stand-in's work). The cyclic collector is off while timing, as
bench/auth_costs.py does (a running director collects on a schedule,
homeredirect.collector). `--profile` runs one more round under cProfile and prints the
functions with the most time of their own (`--sort cumulative` for the call tree); the
stand-in's `home_answer` shows there too. Standard library and homeredirect only; the
figures are noisy on a shared machine, compare best values.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inprocess import InProcessDirector

DOMAIN = "example.com"
HOMES = ("home1.example.com", "home2.example.com", "home3.example.com", "home4.example.com")
DIRECTOR = ("127.0.0.1", 5070)
SIPP = ("127.0.0.1", 5071)
HOME = ("127.0.0.1", 5072)

# What SIPp sends (bench/proxy_register.xml), as its keywords expand.
REGISTER = (
    "REGISTER sip:{domain} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-{n}-0\r\n"
    "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKedge{n};received=192.0.2.1\r\n"
    "Max-Forwards: 69\r\n"
    "From: <sip:{user}@{domain}>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:{user}@{domain}>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:{user}@192.0.2.99:5061;transport=tls>\r\n"
    "Expires: 3600\r\n"
    "User-Agent: homeredirect-bench\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
# What bench/home_uas.xml copies from the request into its 200 ([last_Via:] is every Via).
_COPIED = (b"Via:", b"From:", b"Call-ID:", b"CSeq:")


def user_name(i: int, users: int) -> str:
    return f"user{i % users + 1:07d}"


def write_config(directory: Path, users: int) -> Path:
    """bench/proxy.py's director configuration, the home stand-in at HOME over UDP."""
    assignments = directory / "assignments.csv"
    assignments.write_text(
        "user,home_server\n"
        + "".join(f"{user_name(i, users)}@{DOMAIN},{HOMES[i % len(HOMES)]}\n" for i in range(users))
    )
    homes = "".join(
        f'\n[home_servers."{h}"]\nhost = "{HOME[0]}"\nport = {HOME[1]}\ntransport = "udp"\n'
        for h in HOMES
    )
    config = directory / "director.toml"
    config.write_text(
        f'[server]\nrole = "director"\nfqdn = "director.example.com"\ndomains = ["{DOMAIN}"]\n'
        f'\n[[listen]]\ntransport = "udp"\nhost = "{DIRECTOR[0]}"\nport = {DIRECTOR[1]}\n'
        f'\n[assignments]\nbackend = "file"\npath = "{assignments}"\n'
        f'\n[policy]\nname = "via-count"\n\n[proxy]\npath = "always"\n'
        f'\n[log]\nlevel = "error"\n{homes}'
    )
    return config


class Director(InProcessDirector):
    """An in-process proxying director, with its live transaction count."""

    def live(self) -> int:
        """Server and client transactions still in the tables."""
        service = self.service
        assert service.transactions is not None and service.proxy is not None
        return len(service.transactions) + len(service.proxy.clients)


def home_answer(forwarded: bytes, n: int) -> bytes:
    """bench/home_uas.xml's 200 to *forwarded*: every Via, From, To with a tag, Call-ID,
    CSeq, Expires."""
    lines = forwarded.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    copied = [line for line in lines if line.startswith(_COPIED)]
    to = next(line for line in lines if line.startswith(b"To:"))
    copied.insert(len(copied) - 2, to + b";tag=home%d" % n)
    return (
        b"SIP/2.0 200 OK\r\n" + b"\r\n".join(copied) + b"\r\nExpires: 3600\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def _timed(
    receive: Callable[[bytes, tuple[str, int]], None],
    datagrams: list[bytes],
    source: tuple[str, int],
) -> float:
    """CPU seconds to hand *datagrams* to the protocol."""
    start = time.thread_time()
    for datagram in datagrams:
        receive(datagram, source)
    return time.thread_time() - start


def one_round(
    director: Director,
    count: int,
    offset: int,
    users: int,
    window: int,
    profile: cProfile.Profile | None = None,
) -> tuple[float, float, float]:
    """CPU seconds per transaction for (request, response, timers)."""
    requests = [
        REGISTER.format(domain=DOMAIN, n=offset + n, user=user_name(offset + n, users)).encode()
        for n in range(count)
    ]
    sent, receive, reactor = director.sent, director.receive, director.reactor
    sent.clear()
    relayed: list[tuple[bytes, object]] = []
    request_time = response_time = 0.0
    gc.collect()
    gc.disable()
    if profile:
        profile.enable()
    for first in range(0, count, window):
        request_time += _timed(receive, requests[first : first + window], SIPP)
        forwarded = list(sent)
        sent.clear()
        assert forwarded and all(d == HOME for _, d in forwarded), forwarded[:1]
        assert forwarded[0][0].startswith(b"REGISTER "), forwarded[0][0][:200]
        answers = [home_answer(data, first + n) for n, (data, _) in enumerate(forwarded)]
        response_time += _timed(receive, answers, HOME)
        relayed += sent
        sent.clear()
    start = time.thread_time()
    reactor.advance(5.1)  # Timer K (T4)
    reactor.advance(28)  # Timer J (64*T1 = 32 s after the 200 went out)
    timer_time = time.thread_time() - start
    if profile:
        profile.disable()
    gc.enable()
    assert len(relayed) == count and all(d == SIPP for _, d in relayed), relayed[:1]
    assert all(data.startswith(b"SIP/2.0 200 ") for data, _ in relayed), relayed[0][0][:200]
    assert relayed[0][0].count(b"\r\nVia: ") == 2, relayed[0][0]
    assert director.live() == 0, "transactions left after their timers"
    return request_time / count, response_time / count, timer_time / count


def _line(label: str, values: list[float]) -> None:
    us = [v * 1e6 for v in values]
    print(f"  {label:52} {min(us):7.2f} / {statistics.median(us):7.2f} us")


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=5_000)
    options.add_argument("--repeat", type=int, default=7)
    options.add_argument("--users", type=int, default=10_000, help="assignment file entries")
    options.add_argument(
        "--window", type=int, default=50, help="REGISTERs forwarded before their 200s come back"
    )
    options.add_argument("--profile", action="store_true", help="cProfile one more round")
    options.add_argument("--sort", default="tottime", help="pstats order of --profile")
    args = options.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeredirect-proxy-costs-") as tmp:
        director = Director(write_config(Path(tmp), args.users))
    one_round(director, args.count, 0, args.users, args.window)  # warms caches, untimed
    runs = [
        one_round(director, args.count, run * args.count, args.users, args.window)
        for run in range(1, args.repeat + 1)
    ]
    print(f"{args.count} proxied REGISTERs x {args.repeat} runs, per transaction (best / median):")
    _line("request in -> forwarded (2 Vias, Path)", [r[0] for r in runs])
    _line("200 in -> relayed", [r[1] for r in runs])
    _line("Timer K + Timer J expiry", [r[2] for r in runs])
    _line("total (aim <= 80 us)", [sum(r) for r in runs])
    if args.profile:
        profile = cProfile.Profile()
        one_round(
            director, args.count, (args.repeat + 1) * args.count, args.users, args.window, profile
        )
        stats: Any = pstats.Stats(profile)
        stats.sort_stats(args.sort).print_stats(35)


if __name__ == "__main__":
    main()
