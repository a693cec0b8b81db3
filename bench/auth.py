"""The director's Digest-authenticated REGISTER rate next to its plain REGISTER -> 301 rate.

    .venv/bin/python bench/auth.py --quick                  # a smoke pass, well under a minute
    .venv/bin/python bench/auth.py --step-seconds 2 --confirm-seconds 5 --quiet-wait 5
    .venv/bin/python bench/auth.py                          # the full search for both

Issue "Authentication before redirect", Benchmark: REGISTER -> 401 -> REGISTER -> 301 with
Digest per second, aiming at no less than half the unauthenticated rate. One run measures
both, on the same machine in the same minutes:

- `plain`: the bench director (bench/run.py's configuration), REGISTER -> 301.
- `digest`: the same director with `[auth] required = true` and Digest MD5 only (SIPp
  computes MD5 alone), each SIPp call a complete authenticated registration: REGISTER,
  401 with a fresh nonce, REGISTER with credentials (nc=1), 301 whose Contact must name
  the user's home server (tests/data/sipp/register_digest_301.xml). SIPp takes one
  username and password for every call, so every call registers the same user.

The figure for `digest` is completed authenticated registrations per second (each is two
SIP transactions, and two requests the director parses and answers). Uses bench/run.py's
machinery (twistd pinned to one core, SIPp to the other, the open-rate search with its
loss/retransmission/backlog criteria, see bench/README.md); the only differences are the
scenario and that a 401 is an expected answer next to the 301. The latency run.py reports
for a `digest` call is that of its first answer (the 401).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import run as harness  # noqa: E402  (bench/run.py)

DIGEST_SCENARIO = BENCH_DIR.parent / "tests" / "data" / "sipp" / "register_digest_301.xml"
USER = 1  # harness.user_name(USER) is the one user every authenticated call registers
PASSWORD = "bench-password"


class DigestDirector(harness.DirectorTarget):
    """The bench's director with Digest required, offering MD5 only."""

    credentials: Path

    def command(self, config_dir: Path, count: int) -> list[str]:
        argv = super().command(config_dir, count)
        config = config_dir / "director.toml"
        config.write_text(
            config.read_text()
            + f"""
[auth]
required = true
realm = "{harness.DOMAIN}"
schemes = ["digest"]
algorithms = ["MD5"]
credentials = "{self.credentials}"
"""
        )
        return argv


def write_digest_data(workdir: Path) -> tuple[Path, Path, Path]:
    """The director's credentials file, SIPp's injection file (user, domain, home) and
    the scenario with the user's credentials in its `[authentication]` keyword."""
    user = harness.user_name(USER)
    credentials = workdir / "credentials.csv"
    credentials.write_text(f"user,password\n{user}@{harness.DOMAIN},{PASSWORD}\n")
    injection = workdir / "digest-users.csv"
    injection.write_text(f"SEQUENTIAL\n{user};{harness.DOMAIN};{harness.home_of(USER)}\n")
    scenario = workdir / "register_digest_301.xml"
    scenario.write_text(
        DIGEST_SCENARIO.read_text().replace(
            "[authentication]", f"[authentication username={user} password={PASSWORD}]"
        )
    )
    return credentials, injection, scenario


@contextlib.contextmanager
def two_step_calls(scenario: Path) -> Iterator[None]:
    """Make bench/run.py's search drive `scenario`, where each call is answered 401 and
    then 301: the 401s are expected, as many as there are 301s."""
    run_sipp, scenario_301 = harness.run_sipp, harness.SCENARIO_301

    def run_two_step(*args: Any, **kwargs: Any) -> harness.StepResult:
        result = run_sipp(*args, **kwargs)
        codes = result.response_codes
        if codes.get("401", 0) == codes.get("301", 0) and set(codes) <= {"301", "401"}:
            result.reasons[:] = [r for r in result.reasons if not r.startswith("responses other")]
            result.passed = not result.reasons
        return result

    harness.run_sipp, harness.SCENARIO_301 = run_two_step, scenario
    try:
        yield
    finally:
        harness.run_sipp, harness.SCENARIO_301 = run_sipp, scenario_301


def measure(
    children: Any, target: harness.DirectorTarget, plan: Any, users_csv: Path, workdir: Path
) -> dict[str, Any]:
    config_dir = workdir / target.name
    config_dir.mkdir()
    harness.log(f"== {target.name}")
    try:
        harness.start_server(children, target, config_dir, plan.users, plan.server_cpu)
        search = harness.search_max_rate(children, target, plan, users_csv, config_dir)
        return {"rate_search": search, "capacity": harness.capacity({"rate_search": search})}
    finally:
        harness.stop_server(children, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args, rest = parser.parse_known_args(argv)
    del args
    # Everything else is bench/run.py's: --quick, --users, --max-rate, --step-seconds,
    # --confirm-seconds, --server-cpu, --sipp-cpu, --quiet-wait.
    options = harness.parse_args(rest)
    plan = harness.make_plan(options)
    if options.quiet_wait is not None:
        harness.QUIET_WAIT_LIMIT = max(0.0, options.quiet_wait)
    elif options.quick:
        harness.QUIET_WAIT_LIMIT = 5.0
    children = harness.Children()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="homeredirect-bench-auth-") as tmp:
        workdir = Path(tmp)
        users_csv = workdir / "users.csv"
        harness.write_users_csv(users_csv, plan.users)
        credentials, injection, scenario = write_digest_data(workdir)
        try:
            plain = harness.DirectorTarget("plain", workdir / "plain")
            results["plain"] = measure(children, plain, plan, users_csv, workdir)
            digest = DigestDirector("digest", workdir / "digest")
            digest.credentials = credentials
            with two_step_calls(scenario):
                results["digest"] = measure(children, digest, plan, injection, workdir)
        except (RuntimeError, OSError) as e:
            harness.log(f"ERROR {e}")
            results.setdefault("error", {"error": str(e)})
        finally:
            children.stop_all()
    print(f"\n{'quick' if plan.quick else 'full'} search; load average {os.getloadavg()}")
    print(f"{'director':<8} {'sustained /s':>13}  {'SIP transactions /s':>20}  what a call is")
    rates = {name: r.get("capacity", 0) for name, r in results.items() if "error" not in r}
    for name, what, transactions in (
        ("plain", "REGISTER -> 301", 1),
        ("digest", "REGISTER -> 401 -> REGISTER -> 301 (MD5)", 2),
    ):
        if name in rates:
            rate = rates[name]
            print(f"{name:<8} {rate:>13,}  {rate * transactions:>20,}  {what}")
    if rates.get("plain") and "digest" in rates:
        ratio = rates["digest"] / rates["plain"]
        verdict = "meets" if ratio >= 0.5 else "misses"
        print(f"digest/plain = {ratio:.2f} ({verdict} the aim of at least 0.5)")
    return 0 if "error" not in results and len(rates) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
