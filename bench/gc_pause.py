#!/usr/bin/env python3
"""The full cyclic-GC pause that live SIP transactions cause in the director, in-process.

A running director turns CPython's automatic collector off and collects every generation
every five minutes (homeredirect.collector). That full collection walks every GC-tracked
object in the process, so its pause grows with the objects each live transaction keeps:
a completed non-INVITE server transaction lives for Timer J (64*T1 = 32 s over UDP,
RFC 3261 §17.2.2), so at 2,000 REGISTER/s there are 64,000 of them at any moment, and a
proxied one also has a client transaction for Timer K (T4 = 5 s, §17.1.2.2). This
script measures, for a director built with `makeService` and fed datagrams on a fake UDP
port (bench/inprocess.py; nothing touches the network):

* redirect: `--redirects` (64,000) REGISTER -> 301 transactions, all completed and
  waiting for Timer J;
* proxied: `--proxied` (32,000) REGISTERs with two Vias, forwarded to the home stand-in
  of bench/proxy_costs.py, whose 200 is fed back and relayed, so that both transactions
  complete; measured twice, while the client transactions wait for Timer K, and after it
  (server transactions only, as for the other 27 s of Timer J).

For each: GC-tracked objects added per transaction (``len(gc.get_objects())`` after a
collection, against the same director before the batch, warmed up with one batch that
was left to expire), the types that make them up, and the time of ``gc.collect(2)``
(best of `--repeat`) with the transactions live and without them, on a process that
holds nothing else of note. The pause figures are wall-clock time and noisy on a shared
machine; the object counts are exact. Standard library and homeredirect only.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from inprocess import InProcessDirector
from proxy_costs import DOMAIN, HOME, SIPP, home_answer, user_name, write_config
from proxy_costs import REGISTER as PROXIED

USERS = 10_000
CLIENT = SIPP
WINDOW = 50  # requests forwarded before their answers come back (bench/proxy_costs.py)
TIMER_K = 5.1  # T4 and a little: the client transactions end (RFC 3261 §17.1.2.2)
TIMER_J = 33.0  # 64*T1 and a little: the server transactions end (§17.2.2)

# bench/register_301.xml's REGISTER (one Via: redirected by the via-count policy); the
# proxied one is bench/proxy_costs.py's (bench/proxy_register.xml's, a second Via below).
REDIRECTED = (
    "REGISTER sip:{domain} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-4242-{n}-0;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@{domain}>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:{user}@{domain}>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:{user}@127.0.0.1:5071;transport=UDP>\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def _user(n: int) -> str:
    return user_name(n, USERS)


def redirect_batch(director: InProcessDirector, first: int, count: int) -> None:
    """*count* REGISTERs answered 301, left in Completed for Timer J."""
    receive, sent = director.receive, director.sent
    for n in range(first, first + count):
        receive(REDIRECTED.format(domain=DOMAIN, n=n, user=_user(n)).encode(), CLIENT)
        assert sent[-1][0].startswith(b"SIP/2.0 301 "), sent[-1][0][:80]
        sent.clear()


def proxied_batch(director: InProcessDirector, first: int, count: int) -> None:
    """*count* REGISTERs forwarded and answered 200 by the home stand-in, relayed back:
    the server transactions wait for Timer J, the client transactions for Timer K."""
    receive, sent = director.receive, director.sent
    for start in range(first, first + count, WINDOW):
        for n in range(start, min(start + WINDOW, first + count)):
            receive(PROXIED.format(domain=DOMAIN, n=n, user=_user(n)).encode(), CLIENT)
        forwarded = [data for data, _ in sent]
        sent.clear()
        assert all(data.startswith(b"REGISTER ") for data in forwarded), forwarded[:1]
        for n, data in enumerate(forwarded, start):
            receive(home_answer(data, n), HOME)
        assert all(data.startswith(b"SIP/2.0 200 ") for data, _ in sent), sent[:1]
        sent.clear()


def tracked() -> Counter[str]:
    """The GC-tracked objects of the process by type, after a full collection."""
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def full_pause(repeat: int) -> float:
    """Seconds of ``gc.collect(2)``, best of *repeat*."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        gc.collect(2)
        best = min(best, time.perf_counter() - start)
    return best


def live(director: InProcessDirector) -> tuple[int, int]:
    """Server and client transactions in the director's tables."""
    service = director.service
    assert service.transactions is not None and service.proxy is not None
    return len(service.transactions), len(service.proxy.clients)


def report(label: str, count: int, before: Counter[str], repeat: int, idle: float) -> None:
    """Print tracked objects per transaction (by type) and the full pause for *label*."""
    added = tracked()
    added.subtract(before)
    pause = full_pause(repeat)
    print(f"{label}:")
    print(f"  tracked objects per transaction {added.total() / count:8.2f}")
    for name, number in added.most_common():
        if abs(number) >= count // 10:
            print(f"    {name:38} {number / count:8.2f}")
    print(f"  gc.collect(2)  {pause * 1e3:8.1f} ms  (without them {idle * 1e3:.1f} ms)")


def measure(
    director: InProcessDirector,
    batch: Callable[[InProcessDirector, int, int], None],
    count: int,
) -> Counter[str]:
    """Warm *director* up with one expired batch, then run a batch of *count*; return the
    tracked objects of the process before it."""
    was_enabled = gc.isenabled()
    gc.disable()  # as homeredirect.collector does; the figures are taken after collections
    try:
        batch(director, 0, min(count, 2 * USERS))  # assignment caches, per-user values
        director.reactor.advance(TIMER_J)
        assert live(director) == (0, 0), live(director)
        before = tracked()
        batch(director, count, count)
        return before
    finally:
        if was_enabled:
            gc.enable()


def _bounded(high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to *high* (the run's memory stays bounded)."""

    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between 1 and {high}")
        return value

    return parse


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument(
        "--redirects",
        type=_bounded(500_000),
        default=64_000,
        help="REGISTER -> 301 transactions (default 64,000)",
    )
    options.add_argument(
        "--proxied",
        type=_bounded(250_000),
        default=32_000,
        help="proxied REGISTER transactions (default 32,000)",
    )
    options.add_argument(
        "--repeat", type=_bounded(50), default=5, help="gc.collect(2) runs, best taken (default 5)"
    )
    args = options.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeredirect-gc-pause-") as tmp:
        config = write_config(Path(tmp), USERS)
        redirecting = InProcessDirector(config)
        proxying = InProcessDirector(config)
    idle = full_pause(args.repeat)

    before = measure(redirecting, redirect_batch, args.redirects)
    assert live(redirecting) == (args.redirects, 0), live(redirecting)
    report(
        f"{args.redirects} REGISTER -> 301, Completed", args.redirects, before, args.repeat, idle
    )
    redirecting.reactor.advance(TIMER_J)
    assert live(redirecting) == (0, 0)

    before = measure(proxying, proxied_batch, args.proxied)
    assert live(proxying) == (args.proxied, args.proxied), live(proxying)
    report(
        f"{args.proxied} proxied REGISTER, server and client Completed",
        args.proxied,
        before,
        args.repeat,
        idle,
    )
    proxying.reactor.advance(TIMER_K)
    assert live(proxying) == (args.proxied, 0), live(proxying)
    report(
        f"{args.proxied} proxied REGISTER, after Timer K (server only)",
        args.proxied,
        before,
        args.repeat,
        idle,
    )


if __name__ == "__main__":
    main()
