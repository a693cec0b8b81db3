"""Digest-authenticated REGISTER rates next to plain REGISTER -> 301 rates, for the director
and, as a reference, Kamailio.

    .venv/bin/python bench/auth.py --quick                  # a smoke pass, about a minute
    .venv/bin/python bench/auth.py --step-seconds 2 --confirm-seconds 5 --quiet-wait 5
    .venv/bin/python bench/auth.py                          # the full search, both servers
    .venv/bin/python bench/auth.py --targets director       # the director alone

Issue "Authentication before redirect", Benchmark: REGISTER -> 401 -> REGISTER -> 301 with
Digest per second, aiming at no less than half the unauthenticated rate. One run measures
two jobs per server (`--targets`, bench/run.py's option: director, kamailio), on the same
machine in the same minutes:

- `plain`: REGISTER -> 301 (bench/run.py's director configuration; bench/kamailio.cfg).
- `digest`: the same server requiring Digest MD5 (SIPp computes MD5 alone) with qop=auth,
  each SIPp call a complete authenticated registration: REGISTER, 401 with a fresh nonce,
  REGISTER with credentials (nc=1), 301 whose Contact must name the user's home server
  (tests/data/sipp/register_digest_301.xml). SIPp takes one username and password for
  every call, so every call registers the same user. The director gets `[auth] required
  = true`, MD5 only; Kamailio runs bench/kamailio.cfg with `-A WITH_DIGEST` (the auth
  module's pv_www_authenticate against the same password, stateless www_challenge,
  nonce counts tracked: like the director, it accepts an nc once per nonce).

The figure for `digest` is completed authenticated registrations per second (each is two
SIP transactions, and two requests the server parses and answers); digest/plain is
printed per server, Kamailio's being what a C server reaches on this machine. Before
each search a probe checks the job's answers (for `digest`: 401, then 301 naming the home
server, then a replayed nc refused with 401). Uses bench/run.py's machinery (the server
pinned to one core, SIPp to the other, the open-rate search with its loss/retransmission/
backlog criteria, see bench/README.md); the only differences are the scenario and that a
401 is an expected answer next to the 301. The latency run.py reports for a `digest` call
is that of its first answer (the 401). Results go to bench/results/auth-*.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import run as harness  # noqa: E402  (bench/run.py)

DIGEST_SCENARIO = BENCH_DIR.parent / "tests" / "data" / "sipp" / "register_digest_301.xml"
USER = 1  # harness.user_name(USER) is the one user every authenticated call registers
PASSWORD = "bench-password"
AIM = 0.5  # the issue's: digest at least half the plain rate
JOBS = (  # name, what a SIPp call is, SIP transactions per call
    ("plain", "REGISTER -> 301", 1),
    ("digest", "REGISTER -> 401 -> REGISTER -> 301 (MD5)", 2),
)
_AUTH_PARAM = re.compile(r'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


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


class DigestKamailio(harness.KamailioTarget):
    """bench/kamailio.cfg's WITH_DIGEST branch: pv_www_authenticate against PASSWORD,
    stateless 401s with qop=auth, nonce counts tracked, then the plain job's 301."""

    def command(self, config_dir: Path, count: int) -> list[str]:
        return [
            *super().command(config_dir, count),
            "-A", "WITH_DIGEST",
            "-A", f'DIGEST_PASSWORD="{PASSWORD}"',
            # The nonces' MAC key, 32 characters (the module splits it in two halves).
            "-A", f'AUTH_SECRET="{secrets.token_hex(16)}"',
        ]  # fmt: skip


def make_target(server: str, job: str, workdir: Path, credentials: Path) -> harness.Target:
    """The `job` ("plain" or "digest") of `server` ("director" or "kamailio")."""
    name = f"{server}-{job}"
    if server == "kamailio":
        return (DigestKamailio if job == "digest" else harness.KamailioTarget)(name, workdir)
    if job == "plain":
        return harness.DirectorTarget(name, workdir)
    director = DigestDirector(name, workdir)
    director.credentials = credentials
    return director


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


# --------------------------------------------------------------------------
# The digest job's answers, checked once before the load


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def register_once(s: socket.socket, port: int, cseq: int, authorization: str) -> list[str]:
    """Send the bench user's REGISTER (a new branch: a new transaction) from `s`, with
    `authorization` as a header line if not empty; the answer's start line and header
    lines, or [] if none came."""
    user, lport = harness.user_name(USER), s.getsockname()[1]
    branch = f"z9hG4bK-auth-{secrets.token_hex(8)}"
    extra = f"Authorization: {authorization}\r\n" if authorization else ""
    s.sendto(
        (
            f"REGISTER sip:{harness.DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {harness.HOST}:{lport};branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{harness.DOMAIN}>;tag=auth-probe\r\n"
            f"To: <sip:{user}@{harness.DOMAIN}>\r\n"
            f"Call-ID: auth-probe-{os.getpid()}@{harness.HOST}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{harness.HOST}:{lport}>\r\n"
            f"{extra}Expires: 3600\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        (harness.HOST, port),
    )
    try:
        data = s.recv(65535)
    except OSError:
        return []
    return data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")


def header_values(head: list[str], *names: str) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in head[1:]
        if ":" in line and line.split(":", 1)[0].strip().lower() in names
    ]


def md5_challenge(head: list[str]) -> dict[str, str] | None:
    """The parameters of the answer's first Digest challenge with MD5 and qop=auth."""
    for value in header_values(head, "www-authenticate"):
        if not value.lower().startswith("digest "):
            continue
        params = {k.lower(): quoted or bare for k, quoted, bare in _AUTH_PARAM.findall(value)}
        qops = [q.strip() for q in params.get("qop", "").split(",")]
        if params.get("algorithm", "MD5").upper() == "MD5" and "auth" in qops:
            return params
    return None


def digest_authorization(params: dict[str, str]) -> str:
    """RFC 7616 §3.4's answer to a challenge with `params` for the bench user, MD5,
    qop=auth, nc=00000001."""
    user, uri, cnonce, nc = harness.user_name(USER), f"sip:{harness.DOMAIN}", "0a4f113b", "00000001"
    ha1 = _md5(f"{user}:{params['realm']}:{PASSWORD}")
    ha2 = _md5(f"REGISTER:{uri}")
    response = _md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc}, '
        f'cnonce="{cnonce}"{opaque}'
    )


def check_digest_answers(port: int) -> list[str]:
    """What differs from the digest job's expected answers: 401 with an MD5 qop=auth
    challenge to a REGISTER without credentials; 301 naming the user's home server to the
    answer; 401 to the same credentials again (the nc used once, RFC 7616 §3.4.5)."""
    expected = f"<sip:{harness.home_of(USER)}:5061;transport=tls>"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((harness.HOST, 0))
        s.settimeout(1.0)
        head = register_once(s, port, 1, "")
        challenge = md5_challenge(head)
        if not head or not head[0].startswith("SIP/2.0 401 ") or challenge is None:
            return [f"no credentials: {head} instead of a 401 with MD5, qop=auth"]
        authorization = digest_authorization(challenge)
        head = register_once(s, port, 2, authorization)
        contacts = header_values(head, "contact", "m")
        problems = []
        if not head or not head[0].startswith("SIP/2.0 301 "):
            problems.append(f"credentials: {head[:1]} instead of 301")
        elif not contacts or not contacts[0].lower().startswith(expected):
            problems.append(f"credentials: Contact {contacts} instead of {expected}")
        head = register_once(s, port, 3, authorization)
        if not head or not head[0].startswith("SIP/2.0 401 "):
            problems.append(f"the same nc again: {head[:1]} instead of 401")
    return problems


# --------------------------------------------------------------------------
# Runs and report


def measure(
    children: Any,
    target: harness.Target,
    plan: Any,
    users_csv: Path,
    workdir: Path,
    digest: bool,
) -> dict[str, Any]:
    """Start `target`, check its answers, search its highest open rate, stop it."""
    config_dir = workdir / target.name
    config_dir.mkdir()
    harness.log(f"== {target.name}")
    try:
        harness.start_server(children, target, config_dir, plan.users, plan.server_cpu)
        problems = (
            check_digest_answers(target.port)
            if digest
            else harness.check_answers(target.port, plan.users)
        )
        harness.log(f"  answers: {'ok' if not problems else 'WRONG ' + '; '.join(problems)}")
        search = harness.search_max_rate(children, target, plan, users_csv, config_dir)
        return {
            "answers_checked": {"passed": not problems, "problems": problems},
            "rate_search": search,
            "capacity": harness.capacity({"rate_search": search}),
        }
    finally:
        harness.stop_server(children, target)


def measure_server(
    children: Any, server: str, plan: Any, workdir: Path, data: dict[str, Path]
) -> dict[str, Any]:
    """Both jobs of one server, and digest/plain when both have a rate."""
    out: dict[str, Any] = {}
    for job, _what, _transactions in JOBS:
        target = make_target(server, job, workdir / f"{server}-{job}", data["credentials"])
        problem = target.check_available()
        if problem:
            harness.log(f"== {target.name}: skipped: {problem}")
            return {"error": problem}
        try:
            if job == "digest":
                with two_step_calls(data["scenario"]):
                    out[job] = measure(children, target, plan, data["injection"], workdir, True)
            else:
                out[job] = measure(children, target, plan, data["users"], workdir, False)
        except (RuntimeError, OSError) as e:
            harness.log(f"== {target.name}: ERROR {e}")
            out[job] = {"error": str(e)}
    plain, digest = out["plain"].get("capacity"), out["digest"].get("capacity")
    out["digest_per_plain"] = round(digest / plain, 3) if plain and digest is not None else None
    out["cost_ratio_at_equal_rates"] = cost_ratios(out["plain"], out["digest"])
    out["lowest_cost_ratio"] = lowest_cost_ratio(out["plain"], out["digest"])
    return out


def call_costs(result: dict[str, Any]) -> list[tuple[int, float]]:
    """(offered rate, server CPU seconds per completed call) of each passed step of a
    job's search, its confirming runs included, in order (a Digest call answers twice)."""
    return [
        (step["rate"], float(step["server_cpu_seconds"]) / step["successful"])
        for step in result.get("rate_search", {}).get("steps", [])
        if step.get("passed") and step.get("successful") and step.get("server_cpu_seconds")
    ]


def cost_ratios(plain: dict[str, Any], digest: dict[str, Any]) -> dict[str, float]:
    """Server CPU per plain REGISTER over server CPU per Digest registration, at each
    offered rate where a step of both jobs passed (the first such step of each).

    The searches' sustained rates move a great deal from run to run on a shared VM (a step
    that fails by chance ends a search early), while the CPU one call costs at a rate both
    jobs hold moves much less: it says what the ratio of rates would be if both were
    limited by the server's CPU alone at that load.
    """

    def cost_by_rate(result: dict[str, Any]) -> dict[int, float]:
        costs: dict[int, float] = {}
        for rate, cost in call_costs(result):
            costs.setdefault(rate, cost)
        return costs

    plain_costs, digest_costs = cost_by_rate(plain), cost_by_rate(digest)
    return {
        str(rate): round(plain_costs[rate] / digest_costs[rate], 3)
        for rate in sorted(plain_costs.keys() & digest_costs.keys())
    }


def lowest_cost_ratio(plain: dict[str, Any], digest: dict[str, Any]) -> dict[str, float]:
    """Least server CPU per plain REGISTER over least server CPU per Digest registration,
    over the passed steps of each job, with both costs in microseconds.

    A call costs least near the rate the server can hold, where its CPU is nearly full
    and each reactor wake-up reads several datagrams; that cost is what limits the rate.
    So this estimates digest/plain as if only the server's CPU limited both jobs, which
    matters where SIPp, not the server, stops a search (Kamailio's plain job here): the
    ratio of rates then overstates the server's, and this does not.
    """
    plain_costs, digest_costs = call_costs(plain), call_costs(digest)
    if not plain_costs or not digest_costs:
        return {}
    plain_cost = min(cost for _, cost in plain_costs)
    digest_cost = min(cost for _, cost in digest_costs)
    return {
        "plain_us": round(plain_cost * 1e6, 1),
        "digest_us": round(digest_cost * 1e6, 1),
        "ratio": round(plain_cost / digest_cost, 3),
    }


def passed(result: dict[str, Any]) -> bool:
    """Every job of a server ran, answered correctly and has a sustained rate."""
    jobs = [result.get(job, {"error": "missing"}) for job, _w, _t in JOBS]
    return all("error" not in r and r["answers_checked"]["passed"] and r["capacity"] for r in jobs)


def capped(result: dict[str, Any]) -> bool:
    """True if a job's search was stopped by the rate cap or by SIPp, not by the server."""
    return any(
        result[job]["rate_search"]["possibly_limited_by_sipp_or_cap"]
        for job, _w, _t in JOBS
        if "rate_search" in result.get(job, {})
    )


def print_report(report: dict[str, Any]) -> None:
    start, end = (
        " ".join(f"{v:.2f}" for v in report[key])
        for key in ("load_average_at_start", "load_average_at_end")
    )
    print(
        f"\n{'quick' if report['plan']['quick'] else 'full'} search; load average "
        f"(1, 5, 15 min) {start} at the start, {end} at the end"
    )
    print(f"{'server':<9} {'job':<7} {'sustained /s':>13}  {'SIP transactions /s':>20}  a call")
    for server, result in report["targets"].items():
        if "error" in result:
            print(f"{server:<9} {'':<7} error: {result['error'].splitlines()[0]}")
            continue
        for job, what, transactions in JOBS:
            r = result[job]
            if "error" in r:
                print(f"{server:<9} {job:<7} error: {r['error'].splitlines()[0]}")
                continue
            wrong = "" if r["answers_checked"]["passed"] else "  WRONG ANSWERS"
            rate = r["capacity"]
            print(f"{server:<9} {job:<7} {rate:>13,}  {rate * transactions:>20,}  {what}{wrong}")
    for server, result in report["targets"].items():
        ratio = result.get("digest_per_plain")
        if ratio is not None:
            verdict = f"{'meets' if ratio >= AIM else 'misses'} the aim of at least {AIM}"
            note = verdict if server == "director" else f"reference; {verdict}"
            if capped(result):
                note += "; a search may have stopped at --max-rate or SIPp's limit"
            print(f"{server} digest/plain = {ratio:.2f} ({note})")
        costs = result.get("cost_ratio_at_equal_rates")
        if costs:
            at = ", ".join(f"{ratio:.2f} at {int(rate):,}/s" for rate, ratio in costs.items())
            print(f"{server} CPU per plain REGISTER / per Digest registration: {at}")
        lowest = result.get("lowest_cost_ratio")
        if lowest:
            print(
                f"{server} least CPU per plain REGISTER {lowest['plain_us']:.0f} us, per Digest"
                f" registration {lowest['digest_us']:.0f} us: {lowest['ratio']:.2f}"
            )
    print(f"JSON: {report['json_path']}")


def main(argv: list[str] | None = None) -> int:
    # All options are bench/run.py's: --quick, --targets, --users, --max-rate,
    # --step-seconds, --confirm-seconds, --server-cpu, --sipp-cpu, --quiet-wait, --keep.
    options = harness.parse_args(argv)
    plan = harness.make_plan(options)
    servers = [n.strip() for n in options.targets.split(",") if n.strip()]
    unknown = set(servers) - {"director", "kamailio"}
    if unknown:
        harness.log(f"unknown targets: {sorted(unknown)}")
        return 2
    harness.KEEP_TRACES = options.keep
    if options.quiet_wait is not None:
        harness.QUIET_WAIT_LIMIT = max(0.0, options.quiet_wait)
    elif options.quick:
        harness.QUIET_WAIT_LIMIT = 5.0
    harness.DirectorTarget.command_template = options.director_command
    children = harness.Children()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": harness.machine_info(),
        "plan": asdict(plan),
        "load_average_at_start": os.getloadavg(),
        "targets": {},
    }
    with harness.workspace(options.keep) as workdir:
        data = {"users": workdir / "users.csv"}
        harness.write_users_csv(data["users"], plan.users)
        data["credentials"], data["injection"], data["scenario"] = write_digest_data(workdir)
        try:
            for server in servers:
                report["targets"][server] = measure_server(children, server, plan, workdir, data)
        finally:
            children.stop_all()
    report["load_average_at_end"] = os.getloadavg()
    harness.save_report(report, "auth-", plan.quick)
    print_report(report)
    return 0 if all(passed(r) for r in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
