#!/usr/bin/env python3
"""CPU cost of the director's Digest-authenticated REGISTER next to a plain one, in-process.

The in-process counterpart of bench/auth.py (issue "Authentication before redirect",
Benchmark: Digest registrations per second at least half the plain REGISTER -> 301 rate).
Two directors are built with `makeService` from configurations like bench/run.py's
(file assignments, via-count policy, `[log] level = "error"`); the second adds
bench/auth.py's `[auth]`: Digest required, MD5 only, one user in a credentials CSV.
Datagrams are fed to the real UDP protocol (`SipDatagramProtocol.datagramReceived`, as the
reactor calls it) on a fake port whose socket records what is sent, with a `task.Clock`
as the reactor; nothing touches the network.

Timed per request, over `--count` requests, best and median of `--repeat` runs:

* plain: REGISTER -> 301 (users cycled through the assignments);
* challenge: REGISTER -> 401 with a fresh nonce (the same user each time, as SIPp does);
* authenticated: REGISTER with an `Authorization` SIPp would compute from that 401
  (MD5, qop=auth, nc=00000001, a fresh nonce per registration) -> 301.

The ratio plain / (challenge + authenticated) estimates bench/auth.py's digest/plain
figure (the aim is at least 0.5), without the kernel's and the reactor's share of each
datagram, which SIPp's figure includes. Times are the process's CPU time
(`time.process_time`), so that other work on a shared machine counts less; still, compare
best values over several runs. `--profile` runs one round of each Digest step under
cProfile and prints the top functions. Transactions are left to expire (Timer J) between
rounds, untimed. Standard library and homeredirect only.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from inprocess import InProcessDirector

DOMAIN = "example.com"
HOMES = ("home1.example.com", "home2.example.com", "home3.example.com", "home4.example.com")
USERS = 1000
DIGEST_USER = "user0000001"
PASSWORD = "bench-password"
DIRECTOR = ("127.0.0.1", 5070)
SIPP = ("127.0.0.1", 5071)

# What SIPp sends (tests/data/sipp/register_digest_301.xml); {auth} is empty or a header.
REGISTER = (
    "REGISTER sip:{domain} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-{n}-{cseq}-0;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@{domain}>;tag=4242SIPpTag00{n}\r\n"
    "To: <sip:{user}@{domain}>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    "Contact: <sip:{user}@127.0.0.1:5071;transport=UDP>\r\n"
    "{auth}"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
_CHALLENGE_PARAM = re.compile(r'(nonce|opaque|realm)="([^"]*)"')


def _write_config(directory: Path, digest: bool) -> Path:
    """bench/run.py's director configuration, plus bench/auth.py's `[auth]` for `digest`."""
    assignments = directory / "assignments.csv"
    assignments.write_text(
        "user,home_server\n"
        + "".join(f"user{i:07d}@{DOMAIN},{HOMES[i % len(HOMES)]}\n" for i in range(1, USERS + 1))
    )
    homes = "".join(f'\n[home_servers."{h}"]\nport = 5061\ntransport = "tls"\n' for h in HOMES)
    auth = ""
    if digest:
        credentials = directory / "credentials.csv"
        credentials.write_text(f"user,password\n{DIGEST_USER}@{DOMAIN},{PASSWORD}\n")
        auth = (
            f'\n[auth]\nrequired = true\nrealm = "{DOMAIN}"\nschemes = ["digest"]\n'
            f'algorithms = ["MD5"]\ncredentials = "{credentials}"\n'
        )
    config = directory / ("digest.toml" if digest else "plain.toml")
    config.write_text(
        f'[server]\nrole = "director"\nfqdn = "director.example.com"\ndomains = ["{DOMAIN}"]\n'
        f'\n[[listen]]\ntransport = "udp"\nhost = "{DIRECTOR[0]}"\nport = {DIRECTOR[1]}\n'
        f'\n[assignments]\nbackend = "file"\npath = "{assignments}"\n'
        f'\n[policy]\nname = "via-count"\n\n[log]\nlevel = "error"\n{homes}{auth}'
    )
    return config


class Director(InProcessDirector):
    """An in-process director whose rounds are cleared between measurements."""

    def expire(self) -> None:
        """Let Timer J remove the round's transactions (RFC 3261 §17.2.2)."""
        self.reactor.advance(33)
        self.sent.clear()


def _timed(
    director: Director, datagrams: list[bytes], profile: cProfile.Profile | None = None
) -> float:
    """Seconds per datagram handled (under `profile`, if given); every one must be answered."""
    receive, sent = director.receive, director.sent
    before = len(sent)
    gc.collect()
    gc.disable()
    if profile:
        profile.enable()
    start = time.process_time()
    for datagram in datagrams:
        receive(datagram, SIPP)
    elapsed = time.process_time() - start
    if profile:
        profile.disable()
    gc.enable()
    assert len(sent) - before == len(datagrams), "a request was not answered"
    return elapsed / len(datagrams)


def _status(response: bytes) -> int:
    return int(response[8:11])


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _authorization(challenge: bytes, n: int) -> str:
    """The header SIPp writes for a 401 (its createAuthHeaderMD5: qop=auth, nc=1, its
    `uri` the peer's address)."""
    params = dict(_CHALLENGE_PARAM.findall(challenge.decode()))
    uri = f"sip:{DIRECTOR[0]}:{DIRECTOR[1]}"
    cnonce = f"{n * 2654435761 % 2**32:08x}"
    ha1 = _md5(f"{DIGEST_USER}:{params['realm']}:{PASSWORD}")
    ha2 = _md5(f"REGISTER:{uri}")
    response = _md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
    return (
        f'Authorization: Digest username="{DIGEST_USER}",realm="{params["realm"]}",'
        f'cnonce="{cnonce}",nc=00000001,qop=auth,uri="{uri}",nonce="{params["nonce"]}",'
        f'response="{response}",algorithm=MD5,opaque="{params["opaque"]}"\r\n'
    )


def _register(n: int, user: str, cseq: int = 1, auth: str = "") -> bytes:
    return REGISTER.format(domain=DOMAIN, n=n, user=user, cseq=cseq, auth=auth).encode()


def plain_round(director: Director, count: int, offset: int) -> float:
    datagrams = [_register(offset + n, f"user{n % USERS + 1:07d}") for n in range(count)]
    per_request = _timed(director, datagrams)
    assert all(_status(r) == 301 for r, _ in director.sent)
    director.expire()
    return per_request


def digest_round(
    director: Director, count: int, offset: int, profile: cProfile.Profile | None = None
) -> tuple[float, float]:
    """Seconds per (challenge, authenticated) transaction."""
    first = [_register(offset + n, DIGEST_USER) for n in range(count)]
    challenge = _timed(director, first, profile)
    challenges = [data for data, _ in director.sent]
    assert all(_status(r) == 401 for r in challenges)
    director.sent.clear()
    second = [
        _register(offset + n, DIGEST_USER, 2, _authorization(c, offset + n))
        for n, c in enumerate(challenges)
    ]
    authenticated = _timed(director, second, profile)
    assert all(_status(r) == 301 for r, _ in director.sent), director.sent[0][0].decode()
    director.expire()
    return challenge, authenticated


def _line(label: str, values: list[float]) -> None:
    us = [v * 1e6 for v in values]
    print(f"  {label:44} {min(us):7.2f} / {statistics.median(us):7.2f} us")


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=5_000)
    options.add_argument("--repeat", type=int, default=7)
    options.add_argument("--profile", action="store_true", help="cProfile one Digest round")
    args = options.parse_args()
    with tempfile.TemporaryDirectory(prefix="homeredirect-auth-costs-") as tmp:
        plain = Director(_write_config(Path(tmp), digest=False))
        digest = Director(_write_config(Path(tmp), digest=True))
    # One untimed round each warms caches (as a running director's are).
    plain_round(plain, args.count, 0)
    digest_round(digest, args.count, 0)
    plains: list[float] = []
    rounds: list[tuple[float, float]] = []
    for run in range(1, args.repeat + 1):
        plains.append(plain_round(plain, args.count, run * args.count))
        rounds.append(digest_round(digest, args.count, run * args.count))
    print(f"{args.count} requests x {args.repeat} runs, per transaction (best / median):")
    _line("plain REGISTER -> 301", plains)
    _line("challenge REGISTER -> 401", [c for c, _ in rounds])
    _line("authenticated REGISTER -> 301", [a for _, a in rounds])
    _line("digest registration (both)", [c + a for c, a in rounds])
    best = min(plains) / min(c + a for c, a in rounds)
    median = statistics.median(plains) / statistics.median(c + a for c, a in rounds)
    print(f"plain / (challenge + authenticated): {best:.2f} best, {median:.2f} median (aim 0.5)")
    if args.profile:
        profile = cProfile.Profile()
        digest_round(digest, args.count, (args.repeat + 1) * args.count, profile)
        stats: Any = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
