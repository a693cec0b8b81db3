"""The director's REGISTER -> 301 rate with each assignment backend, warm and cold cache.

    .venv/bin/python bench/backends.py --quick                    # ~1 min, a smoke pass
    .venv/bin/python bench/backends.py --step-seconds 1 --confirm-seconds 3 --quiet-wait 5
    .venv/bin/python bench/backends.py                            # file, sql, redis, ldap
    .venv/bin/python bench/backends.py --backends file,ldap       # issue 6: LDAP next to file

Uses bench/run.py's machinery unchanged (twistd pinned to one core, SIPp to the other, the
open-rate search with its loss/retransmission/backlog criteria; see bench/README.md) and
varies only the director's `[assignments]` and `[cache]`:

- `file`: the CSV file backend (an in-memory table; no cache).
- `sql warm` / `redis warm`: the backend behind the cache, every user looked up once before
  the search (a warm-up SIPp pass), `ttl` 300 s: the steady state of a busy director.
- `sql cold` / `redis cold`: `[cache] ttl = 0.001`, so that every REGISTER is a backend
  query (the cache still coalesces concurrent lookups of one user). SQLite runs in the
  director's thread pool; redis-server runs unpinned on the same machine.
- `ldap warm` / `ldap cold`: the LDAP backend (AD preset, simple bind as a read-only
  account) against a real slapd from tests/ldap_server.py (unpinned), loaded with one
  Lync-shaped entry per bench user: nine in ten homed on a pool by the DN of its service
  object (`msRTCSIP-PrimaryHomeServer`, the pool's FQDN in `dNSHostName`, resolved once and
  cached), one in ten on a plain FQDN. Cold: every REGISTER is one LDAP search, in the
  resolver's thread pool (`pool_size` connections).

Standard library plus the repository's tests/servers.py (redis-server) and
tests/ldap_server.py (slapd; the `ldap` extra, python-ldap, for the director).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import run as harness  # noqa: E402  (bench/run.py)
from tests.ldap_server import (  # noqa: E402
    BASE_DN,
    READER_DN,
    SECRET,
    SlapdServer,
    base_entries,
    service_dn,
    user_ldif,
)
from tests.servers import RedisServer  # noqa: E402

REDIS_PREFIX = "homeredirect:assignment:"
COLD_CACHE = "[cache]\nttl = 0.001\nnegative_ttl = 0.001\nrefresh_ahead = 0.001\n"
WARM_CACHE = "[cache]\nttl = 300\n"


def assignments(count: int) -> list[tuple[str, str]]:
    return [
        (f"{harness.user_name(i)}@{harness.DOMAIN}", harness.home_of(i))
        for i in range(1, count + 1)
    ]


class BackendDirector(harness.DirectorTarget):
    """The bench's director with another `[assignments]` table and a `[cache]` table."""

    assignments_toml: str = ""
    cache_toml: str = ""

    def prepare(self, config_dir: Path, count: int) -> None:
        pass  # the data is written once, before the targets run

    def command(self, config_dir: Path, count: int) -> list[str]:
        argv = super().command(config_dir, count)
        config = config_dir / "director.toml"
        text = config.read_text()
        start = text.index("[assignments]")
        end = text.index("[policy]")
        config.write_text(
            text[:start] + self.assignments_toml + "\n" + self.cache_toml + "\n" + text[end:]
        )
        return argv


def write_sql(path: Path, rows: list[tuple[str, str]]) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS assignments (user TEXT PRIMARY KEY, home_server TEXT)"
        )
        connection.executemany("INSERT OR REPLACE INTO assignments VALUES (?, ?)", rows)
    connection.close()


def ldap_entries(count: int) -> list[str]:
    """The bench users in the Lync shape (see the module docstring): `user0000001`... with
    `msRTCSIP-PrimaryUserAddress` `sip:user0000001@example.com`, enabled."""
    entries = list(base_entries())
    for i in range(1, count + 1):
        home = harness.home_of(i) if i % 10 == 9 else service_dn(f"pool{i % 3 + 1}")
        entries.append(user_ldif(harness.user_name(i), home=home))
    return entries


def ldap_table(slapd: SlapdServer) -> str:
    return (
        '[assignments]\nbackend = "ldap"\n'
        f'uris = ["{slapd.uri}"]\nbase_dn = "{BASE_DN}"\n'
        f'bind_dn = "{READER_DN}"\nbind_password = "{SECRET}"\npreset = "ad"\n'
    )


def check_redirects(port: int, count: int) -> list[str]:
    """A sample of users must get 301 (their home, whatever it is) and an unknown one 404."""
    problems = []
    for i in sorted({1, 2, 9, 19, count // 2, count} - {0}):
        code = harness.probe_register(port, harness.user_name(i), timeout=2.0)
        if code != 301:
            problems.append(f"{harness.user_name(i)}: {code} instead of 301")
    code = harness.probe_register(port, "nobody0000001", timeout=2.0)
    if code != 404:
        problems.append(f"nobody0000001: {code} instead of 404")
    return problems


def write_redis(server: RedisServer, rows: list[tuple[str, str]]) -> None:
    for first in range(0, len(rows), 1000):
        pairs: list[str] = []
        for user, home in rows[first : first + 1000]:
            pairs += (REDIS_PREFIX + user, home)
        server.command("MSET", *pairs)


def measure(
    children: Any,
    target: BackendDirector,
    plan: Any,
    users_csv: Path,
    workdir: Path,
    warm: bool,
) -> dict[str, Any]:
    config_dir = workdir / target.name.replace(" ", "-")
    config_dir.mkdir()
    harness.log(f"== {target.name}")
    try:
        harness.start_server(children, target, config_dir, plan.users, plan.server_cpu)
        problems = check_redirects(target.port, plan.users)
        harness.log(f"  answers for sample users: {'; '.join(problems) or 'ok'}")
        if problems:
            raise RuntimeError("wrong answers: " + "; ".join(problems))
        if warm:
            # One pass over every user at a modest rate, so that the search sees a warm cache.
            rate = 1000
            harness.run_sipp(
                children, target, harness.SCENARIO_301, users_csv, rate,
                plan.users / rate, plan.sipp_cpu, plan.server_cpu,
                config_dir / "warmup", expected_code="301",
            )  # fmt: skip
        search = harness.search_max_rate(children, target, plan, users_csv, config_dir)
        return {"rate_search": search, "capacity": harness.capacity({"rate_search": search})}
    finally:
        harness.stop_server(children, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="file,sql,redis,ldap", help="which, in that order")
    args, rest = parser.parse_known_args(argv)
    # Everything else is bench/run.py's: --quick, --users, --max-rate, --step-seconds,
    # --confirm-seconds, --server-cpu, --sipp-cpu, --quiet-wait.
    options = harness.parse_args(rest)
    plan = harness.make_plan(options)
    if options.quiet_wait is not None:
        harness.QUIET_WAIT_LIMIT = max(0.0, options.quiet_wait)
    elif options.quick:
        harness.QUIET_WAIT_LIMIT = 5.0
    rows = assignments(plan.users)
    children = harness.Children()
    results: dict[str, dict[str, Any]] = {}
    redis: RedisServer | None = None
    slapd: SlapdServer | None = None
    with tempfile.TemporaryDirectory(prefix="homeredirect-bench-backends-") as tmp:
        workdir = Path(tmp)
        users_csv = workdir / "users.csv"
        harness.write_users_csv(users_csv, plan.users)
        cases: list[tuple[str, str, str, bool]] = []
        for backend in args.backends.split(","):
            if backend == "file":
                harness.write_assignments_csv(workdir / "assignments.csv", plan.users)
                table = f'[assignments]\nbackend = "file"\npath = "{workdir}/assignments.csv"\n'
                cases.append(("file", table, "", True))
            elif backend == "sql":
                write_sql(workdir / "assignments.sqlite", rows)
                table = f'[assignments]\nbackend = "sql"\npath = "{workdir}/assignments.sqlite"\n'
                cases += [
                    ("sql warm", table, WARM_CACHE, True),
                    ("sql cold", table, COLD_CACHE, False),
                ]
            elif backend == "redis":
                redis = RedisServer.start()
                write_redis(redis, rows)
                table = f'[assignments]\nbackend = "redis"\nurl = "{redis.url}"\n'
                cases += [
                    ("redis warm", table, WARM_CACHE, True),
                    ("redis cold", table, COLD_CACHE, False),
                ]
            elif backend == "ldap":
                slapd = SlapdServer(workdir / "slapd")
                slapd.setup(ldap_entries(plan.users))
                slapd.start()
                cases += [
                    ("ldap warm", ldap_table(slapd), WARM_CACHE, True),
                    ("ldap cold", ldap_table(slapd), COLD_CACHE, False),
                ]
            else:
                parser.error(f"unknown backend {backend!r}")
        try:
            for name, table, cache, warm in cases:
                target = BackendDirector(name, workdir / name)
                target.assignments_toml, target.cache_toml = table, cache
                try:
                    results[name] = measure(children, target, plan, users_csv, workdir, warm)
                except (RuntimeError, OSError) as e:
                    harness.log(f"== {name}: ERROR {e}")
                    results[name] = {"error": str(e)}
        finally:
            children.stop_all()
            if redis is not None:
                redis.stop()
            if slapd is not None:
                slapd.stop()
    print(f"\nREGISTER -> 301, {plan.users} users, {'quick' if plan.quick else 'full'} search")
    print(f"load average at the end: {os.getloadavg()}")
    print(f"{'backend':<12} {'sustained /s':>13}  note")
    for name, result in results.items():
        if "error" in result:
            print(f"{name:<12} {'-':>13}  {result['error'].splitlines()[0]}")
            continue
        search = result["rate_search"]
        note = "hit --max-rate" if search.get("possibly_limited_by_sipp_or_cap") else ""
        print(f"{name:<12} {result['capacity']:>13,}  {note}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
