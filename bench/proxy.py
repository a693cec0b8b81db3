"""The director as a transaction-stateful proxy, next to Kamailio's t_relay() (issue 4).

    .venv/bin/python bench/proxy.py --quick                      # smoke pass, ~1 min
    .venv/bin/python bench/proxy.py                              # full search, UDP and TCP
    .venv/bin/python bench/proxy.py --transports udp --targets director

SIPp (bench/proxy_register.xml) sends REGISTERs that carry a second, fake upstream Via, as
if they came through an edge, so the director (`via-count`) proxies each one, in a client
transaction, to the home server; a SIPp UAS (bench/home_uas.xml) stands in for the home
server and answers 200 at once; the 200 comes back through the proxy. Kamailio does the
same job with bench/kamailio_proxy.cfg (tm's `t_relay()`, `add_path()`), in the same run.
Both proxies add a Path header (the director with `[proxy] path = "always"`).

Pinning (2 CPUs): the proxy under test alone on `--server-cpu` (1), the SIPp client and
the SIPp home stand-in together on `--sipp-cpu` (0); the stand-in's work is the same for
both proxies.

Reuses bench/run.py's machinery unchanged (as bench/backends.py does): server start-up
and pinning, the open-rate search (doubling, bisection, confirming run) and its pass
criteria (every call answered 200, no retransmission, no loss, no backlog, the rate
really offered), latency from -trace_shortmsg and CPU from /proc/PID/stat. Its SIPp runs
are pointed at this scenario and at 200 by wrapping `run_sipp`; over TCP, SIPp's `-t u1`
becomes `-t t1` (one connection, reused) and the proxy's leg to the stand-in is TCP too,
on one reused connection.

TLS: Debian's SIPp 3.6.1 is built without TLS (`sipp -h` lists no `l1`), so neither the
client leg nor a home stand-in can speak TLS here; TCP measures the stream path (framing,
connection reuse) without the cipher. See bench/README.md.

Reported per transport and proxy:

- sustained: the highest open rate passing the harness's criteria, with p50/p99 there;
- at a fixed load (`--fixed-rate`, default 4,000/s: 80 % of the issue's 5,000/s aim),
  p50/p99 latency and the proxy's CPU microseconds per proxied REGISTER transaction
  (utime+stime of the whole process tree over the run, divided by the 200s SIPp got).

Latency is the client's: request sent to 200 received, through the proxy and the
stand-in. The stand-in's own time (a SIPp UAS answering at once, tens of microseconds)
is in it for both proxies alike; subtracting the same stand-in's time is what "added"
means here (both legs are loopback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import run as harness  # noqa: E402  (bench/run.py)

SCENARIO = BENCH_DIR / "proxy_register.xml"
HOME_UAS = BENCH_DIR / "home_uas.xml"
KAMAILIO_PROXY_CFG = BENCH_DIR / "kamailio_proxy.cfg"
AIMS = {"cpu_us": 80.0, "rate": 5000, "p99_ms": 5.0}
SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1"}


class ProxyChildren(harness.Children):
    """The harness's process group, with its SIPp client runs switched to *transport*."""

    sipp_transport = "u1"

    def start(self, argv: Any, cwd: Path, output: Any) -> Any:
        argv = list(argv)
        if "sipp" in argv and "-t" in argv:
            argv[argv.index("-t") + 1] = self.sipp_transport
        return super().start(argv, cwd, output)


_harness_run_sipp = harness.run_sipp


def _run_proxy_sipp(
    children: Any,
    target: Any,
    scenario: Path,
    users_csv: Path,
    rate: int,
    seconds: float,
    cpu: int,
    server_cpu: int,
    stepdir: Path,
    expected_code: str,
    probe: Any = None,
) -> Any:
    """`run.run_sipp` with this benchmark's scenario and its expected 200."""
    return _harness_run_sipp(
        children, target, SCENARIO, users_csv, rate, seconds, cpu, server_cpu, stepdir,
        expected_code="200", probe=probe,
    )  # fmt: skip


class HomeStandIn:
    """The SIPp UAS answering 200 to every REGISTER, pinned to SIPp's core."""

    def __init__(self, children: harness.Children, workdir: Path, transport: str) -> None:
        self.children = children
        self.workdir = workdir
        self.transport = transport
        self.port = 0
        self.proc: Any = None

    def start(self, cpu: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = harness.free_udp_port()
        media = harness.free_udp_port_pair((self.port,))
        argv = [
            "taskset", "-c", str(cpu), "sipp", "-sf", str(HOME_UAS),
            "-i", harness.HOST, "-p", str(self.port), "-mp", str(media),
            "-t", SIPP_TRANSPORT[self.transport], "-nostdin", "-l", "1000000",
            "-buff_size", "4194304", "-max_recv_loops", "10000", "-max_sched_loops", "10000",
        ]  # fmt: skip
        with (self.workdir / "home_uas.out").open("wb") as out:
            # Not through ProxyChildren's rewrite: the stand-in's transport is set here.
            self.proc = harness.Children.start(self.children, argv, self.workdir, out)
        if self.transport == "udp":
            waited = harness.wait_until_answering(self.proc, self.port, 10.0, "probe")
            if waited is None:
                raise RuntimeError(f"the SIPp home stand-in did not answer; see {self.workdir}")
        else:
            time.sleep(0.5)  # bound before SIPp answers anything; no UDP probe for TCP

    def stop(self) -> None:
        if self.proc is not None:
            self.children.stop(self.proc)
            self.proc = None


class ProxyDirector(harness.DirectorTarget):
    """The director proxying every two-Via REGISTER to the stand-in."""

    home_port: int = 0
    transport: str = "udp"

    def command(self, config_dir: Path, assignments: int) -> list[str]:
        config = config_dir / "director.toml"
        listeners = f'[[listen]]\ntransport = "udp"\nhost = "{harness.HOST}"\nport = {self.port}\n'
        if self.transport == "tcp":
            listeners += (
                f'\n[[listen]]\ntransport = "tcp"\nhost = "{harness.HOST}"\nport = {self.port}\n'
            )
        homes = "".join(
            f'\n[home_servers."{home}"]\nhost = "{harness.HOST}"\nport = {self.home_port}\n'
            f'transport = "{self.transport}"\n'
            for home in harness.HOME_SERVERS
        )
        config.write_text(
            f"""# Generated by bench/proxy.py
[server]
role = "director"
fqdn = "director.example.com"
domains = ["{harness.DOMAIN}"]

{listeners}
[limits]
udp_receive_buffer = {harness.UDP_RECEIVE_BUFFER}

[assignments]
backend = "file"
path = "{config_dir / "assignments.csv"}"

[policy]
name = "via-count"

# Kamailio's add_path() adds Path to every REGISTER: so does the director.
[proxy]
path = "always"

# Errors only, like bench/kamailio_proxy.cfg (debug=-1).
[log]
level = "error"
{homes}"""
        )
        if self.command_template:
            return [a.replace("{config}", str(config)) for a in self.command_template.split()]
        return [str(self.twistd), "-n", "--pidfile=", "homeredirect", "--config", str(config)]


class ProxyKamailio(harness.KamailioTarget):
    """Kamailio relaying every REGISTER to the stand-in with t_relay()."""

    home_port: int = 0
    transport: str = "udp"

    def prepare(self, config_dir: Path, assignments: int) -> None:
        pass  # no assignment table: every user's home server is the stand-in

    def command(self, config_dir: Path, assignments: int) -> list[str]:
        rundir = config_dir / "run"
        rundir.mkdir(exist_ok=True)
        argv = [
            "kamailio", "-DD", "-E", "-f", str(KAMAILIO_PROXY_CFG),
            "-w", str(rundir), "-Y", str(rundir), "-m", "512",  # tm keeps 5 s of transactions
            "-A", f"LISTEN_PORT={self.port}",
        ]  # fmt: skip
        home = f"sip:{harness.HOST}:{self.home_port}"
        if self.transport == "tcp":
            argv += ["-A", "WITH_TCP"]
            home += ";transport=tcp"
        argv += ["-A", f'HOME_URI="{home}"']
        return argv


def measure(
    children: ProxyChildren,
    target: Any,
    plan: Any,
    users_csv: Path,
    workdir: Path,
    fixed_rate: int,
    search: bool,
) -> dict[str, Any]:
    """Start *target*, check it proxies, search its open rate, then the fixed load."""
    config_dir = workdir / target.name
    config_dir.mkdir(parents=True)
    out: dict[str, Any] = {}
    harness.log(f"== {target.name}")
    try:
        harness.start_server(children, target, config_dir, plan.users, plan.server_cpu)
        assert target.proc is not None
        out["command"] = target.proc.args
        sanity = harness.run_sipp(
            children, target, SCENARIO, users_csv, 100, 0.5, plan.sipp_cpu, plan.server_cpu,
            config_dir / "sanity", expected_code="200",
        )  # fmt: skip
        out["sanity"] = {"passed": sanity.passed, "reasons": sanity.reasons}
        harness.log(f"  proxied 200 for 50 REGISTERs: {harness.describe(sanity)}")
        if not sanity.passed:
            raise RuntimeError("; ".join(sanity.reasons))
        if search:
            out["rate_search"] = harness.search_max_rate(
                children, target, plan, users_csv, config_dir
            )
            out["capacity"] = harness.capacity(out)
        harness.wait_idle(target)
        harness.log(f"  fixed load {fixed_rate}/s for {plan.cpu_seconds:g} s")
        fixed = harness.run_sipp(
            children, target, SCENARIO, users_csv, fixed_rate, plan.cpu_seconds,
            plan.sipp_cpu, plan.server_cpu, config_dir / "fixed", expected_code="200",
        )  # fmt: skip
        harness.log(harness.describe(fixed))
        out["fixed_load"] = asdict(fixed)
        out["memory_after_load"] = harness.memory_kb(harness.process_tree(target.proc.pid))
    finally:
        harness.stop_server(children, target)
    return out


def fmt(value: object, digits: int = 1) -> str:
    return harness.fmt(value, digits)


def print_report(report: dict[str, Any]) -> None:
    fixed_rate = report["fixed_rate"]
    print(
        f"\nREGISTER proxied (2 Vias) to a SIPp home stand-in, {report['users']} users, "
        f"{'quick' if report['quick'] else 'full'} run"
    )
    header = (
        f"{'transport':<9} {'proxy':<10} {'sustained/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
        f"   @{fixed_rate}/s: {'p50 ms':>7} {'p99 ms':>7} {'CPU us/tx':>9} {'RSS MB':>7}  pass"
    )
    print(header)
    for transport, targets in report["results"].items():
        for name, result in targets.items():
            if "error" in result:
                print(f"{transport:<9} {name:<10} error: {result['error'].splitlines()[0]}")
                continue
            search = result.get("rate_search") or {}
            at_max = (search.get("at_max_rate") or {}).get("latency_ms", {})
            fixed = result["fixed_load"]
            lat = fixed.get("latency_ms", {})
            rss = result.get("memory_after_load", {}).get("rss_kb")
            print(
                f"{transport:<9} {name:<10} {fmt(result.get('capacity', '-'), 0):>11} "
                f"{fmt(at_max.get('p50', '-'), 3):>7} {fmt(at_max.get('p99', '-'), 3):>7}"
                f"   {' ' * len(str(fixed_rate))}  {fmt(lat.get('p50'), 3):>7} "
                f"{fmt(lat.get('p99'), 3):>7} {fmt(fixed.get('server_cpu_us_per_request')):>9} "
                f"{fmt(rss / 1024 if rss else None):>7}  {'yes' if fixed['passed'] else 'NO'}"
            )
    print(
        f"\nAims (issue 4, single process): <= {AIMS['cpu_us']:g} us CPU per proxied REGISTER, "
        f">= {AIMS['rate']:,}/s sustained, p99 < {AIMS['p99_ms']:g} ms at 80 % of that rate."
    )
    if report.get("noisy"):
        print(
            "Other work ran on the cores during some steps (see the [disturbed] marks in the "
            "log): treat these figures as noisy and rerun on a quiet machine."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default="udp,tcp", help="udp,tcp (in that order)")
    parser.add_argument(
        "--fixed-rate", type=int, default=4000, help="rate of the CPU/latency run (/s)"
    )
    parser.add_argument("--no-search", action="store_true", help="only the fixed-load run")
    args, rest = parser.parse_known_args(argv)
    # Everything else is bench/run.py's: --quick, --targets, --users, --max-rate,
    # --step-seconds, --confirm-seconds, --server-cpu, --sipp-cpu, --quiet-wait, --keep.
    options = harness.parse_args(rest)
    plan = harness.make_plan(options)
    if options.quiet_wait is not None:
        harness.QUIET_WAIT_LIMIT = max(0.0, options.quiet_wait)
    elif options.quick:
        harness.QUIET_WAIT_LIMIT = 5.0
    harness.run_sipp = _run_proxy_sipp  # the search's steps: this scenario, 200
    transports = [t for t in args.transports.split(",") if t]
    for transport in transports:
        if transport not in SIPP_TRANSPORT:
            parser.error(f"unknown transport {transport!r}: udp or tcp (see the docstring)")
    names = [n for n in options.targets.split(",") if n]
    children = ProxyChildren()
    report: dict[str, Any] = {
        "users": plan.users,
        "quick": plan.quick,
        "fixed_rate": args.fixed_rate,
        "machine": harness.machine_info(),
        "plan": asdict(plan),
        "results": {},
    }
    ok = True
    with harness.workspace(options.keep) as workdir:
        users_csv = workdir / "users.csv"
        harness.write_users_csv(users_csv, plan.users)
        try:
            for transport in transports:
                children.sipp_transport = SIPP_TRANSPORT[transport]
                home = HomeStandIn(children, workdir / f"home-{transport}", transport)
                home.start(plan.sipp_cpu)
                results: dict[str, Any] = {}
                try:
                    for name in names:
                        target: Any
                        if name == "director":
                            target = ProxyDirector(f"director-{transport}", workdir)
                            target.command_template = options.director_command
                        elif name == "kamailio":
                            target = ProxyKamailio(f"kamailio-{transport}", workdir)
                        else:
                            parser.error(f"unknown target {name!r}")
                        target.home_port, target.transport = home.port, transport
                        problem = target.check_available()
                        if problem:
                            harness.log(f"== {target.name}: skipped: {problem}")
                            results[name] = {"error": problem}
                            ok = False
                            continue
                        try:
                            results[name] = measure(
                                children, target, plan, users_csv, workdir,
                                args.fixed_rate, not args.no_search,
                            )  # fmt: skip
                        except (RuntimeError, OSError) as e:
                            harness.log(f"== {target.name}: ERROR {e}")
                            results[name] = {"error": str(e)}
                            ok = False
                finally:
                    home.stop()
                report["results"][transport] = results
        finally:
            children.stop_all()
    steps = [
        step
        for targets in report["results"].values()
        for result in targets.values()
        for step in (result.get("rate_search") or {}).get("steps", [])
        + ([result["fixed_load"]] if "fixed_load" in result else [])
    ]
    report["noisy"] = any(harness.disturbed(harness.StepResult(**s)) for s in steps)
    harness.RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = harness.RESULTS_DIR / f"proxy-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    print(f"\nFull results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
