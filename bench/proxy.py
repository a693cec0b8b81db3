"""The director as a transaction-stateful proxy, next to Kamailio's t_relay() (issue 4).

    .venv/bin/python bench/proxy.py --quick                      # smoke pass, ~1 min
    .venv/bin/python bench/proxy.py                              # full search, UDP, TCP, TLS
    .venv/bin/python bench/proxy.py --transports udp --targets director
    .venv/bin/python bench/proxy.py --transports tls --targets director   # TLS to the home

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

TLS (`--transports tls`): Debian's SIPp 3.6.1 is built without TLS (`sipp -h` lists no
`l1`), so neither the client leg nor a SIPp home stand-in can speak TLS. The client still
talks UDP to the director, and the director forwards over TLS, on one reused, verified
connection (RFC 5922 §7.2: the certificate must name the home's FQDN), to our own home
server as the stand-in: `twistd -n homeredirect` with `role = "home"`, an in-memory
location store and a TLS listener whose test certificate (homeredirect.tools.certs) names
every `[home_servers]` FQDN, pinned to SIPp's core. It is a real registrar, so it costs
more than the SIPp UAS and may cap the sustained rate before the director does; its CPU
per REGISTER is reported next to the director's. Kamailio is not measured over TLS: its
`tls` module (Debian's kamailio-tls-modules) is not installed. See bench/README.md.

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
import os
import socket
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
# The SIPp client's transport to the proxy, per measured transport of the proxy -> home
# leg: over TLS, the client leg stays UDP (SIPp has no TLS here, see the docstring).
SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1", "tls": "u1"}
KAMAILIO_NO_TLS = (
    "not measured over TLS: Kamailio's tls module (kamailio-tls-modules) is not installed"
)


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
    """`run.run_sipp` with this benchmark's scenario and its expected 200.

    On the TLS leg our home server shares SIPp's core: its CPU over the step is added to
    SIPp's share (`sipp_cpu_percent`: the work of SIPp's core), so that the harness does not
    count it as other work and mark the step disturbed.
    """
    home = HOME_ON_SIPP_CORE
    before = home.cpu_seconds() if home is not None else 0.0
    result = _harness_run_sipp(
        children, target, SCENARIO, users_csv, rate, seconds, cpu, server_cpu, stepdir,
        expected_code="200", probe=probe,
    )  # fmt: skip
    if home is not None and result.wall_seconds > 0:
        used = home.cpu_seconds() - before
        result.sipp_cpu_percent = round(
            result.sipp_cpu_percent + 100.0 * used / result.wall_seconds, 1
        )
    return result


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


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that binding port 0 hands out (never 5060/5061)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((harness.HOST, 0))
            port = int(s.getsockname()[1])
        if port not in (5060, 5061):
            return port
    raise RuntimeError("no free TCP port found")


def established_connections(port: int) -> int:
    """Established TCP connections whose local port is *port* (/proc/net/tcp): the
    connections a listener on *port* has accepted, to show that one is reused."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "01":  # 01: ESTABLISHED
            count += 1
    return count


class TlsFiles:
    """The test PKI of the TLS leg: a CA, the home's certificate (naming every
    `[home_servers]` FQDN, as the stand-in answers for all of them) and the director's."""

    def __init__(self, directory: Path) -> None:
        from homeredirect.tools.certs import ensure_leaf, ensure_test_pki

        pki = ensure_test_pki(directory, list(harness.HOME_SERVERS), [harness.HOST])
        self.ca = pki.ca_certificate
        self.home = pki.server
        self.director = ensure_leaf(pki, "director.example.com", ips=[harness.HOST])


# The home server stand-in sharing SIPp's core during the TLS leg (None otherwise).
HOME_ON_SIPP_CORE: HomeServerStandIn | None = None


class HomeServerStandIn:
    """Our own home server (`twistd -n homeredirect`, `role = "home"`) as the TLS stand-in,
    pinned to SIPp's core: a registrar with an in-memory location store answering 200."""

    def __init__(self, children: harness.Children, workdir: Path, tls: TlsFiles) -> None:
        self.children = children
        self.workdir = workdir
        self.tls = tls
        self.port = 0  # TLS
        self.udp_port = 0  # only to tell when it answers
        self.proc: Any = None

    def config(self) -> str:
        return f"""# Generated by bench/proxy.py: the home server stand-in of the TLS leg
[server]
role = "home"
fqdn = "{harness.HOME_SERVERS[0]}"
domains = ["{harness.DOMAIN}"]

[[listen]]
transport = "udp"
host = "{harness.HOST}"
port = {self.udp_port}

[[listen]]
transport = "tls"
host = "{harness.HOST}"
port = {self.port}
certificate = "{self.tls.home.certificate}"
private_key = "{self.tls.home.private_key}"
ca = "{self.tls.ca}"

[location]
backend = "memory"

[log]
level = "error"
"""

    def start(self, cpu: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.udp_port = harness.free_udp_port()
        self.port = free_tcp_port()
        config = self.workdir / "home.toml"
        config.write_text(self.config())
        twistd = harness.DirectorTarget.twistd
        argv = [
            "taskset", "-c", str(cpu), str(twistd), "-n", "--pidfile=", "homeredirect",
            "--config", str(config),
        ]  # fmt: skip
        with (self.workdir / "home.log").open("wb") as out:
            self.proc = harness.Children.start(self.children, argv, self.workdir, out)
        # A REGISTER probe over UDP: any answer means both listeners are up.
        waited = harness.wait_until_answering(self.proc, self.udp_port, 60.0, "probe")
        if waited is None:
            tail = (self.workdir / "home.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the home server stand-in did not answer; log tail:\n{tail}")

    def cpu_seconds(self) -> float:
        return harness.cpu_seconds(harness.process_tree(self.proc.pid)) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc is not None:
            self.children.stop(self.proc)
            self.proc = None


class ProxyDirector(harness.DirectorTarget):
    """The director proxying every two-Via REGISTER to the stand-in."""

    home_port: int = 0
    transport: str = "udp"
    tls: TlsFiles | None = None

    def command(self, config_dir: Path, assignments: int) -> list[str]:
        config = config_dir / "director.toml"
        listeners = f'[[listen]]\ntransport = "udp"\nhost = "{harness.HOST}"\nport = {self.port}\n'
        if self.transport == "tcp":
            listeners += (
                f'\n[[listen]]\ntransport = "tcp"\nhost = "{harness.HOST}"\nport = {self.port}\n'
            )
        if self.transport == "tls":
            # A TLS listener is what gives the director a TLS transport to send on; the
            # client stays on UDP. [tls_client] ca verifies the home by its FQDN.
            assert self.tls is not None
            listeners += (
                f'\n[[listen]]\ntransport = "tls"\nhost = "{harness.HOST}"\n'
                f"port = {free_tcp_port()}\n"
                f'certificate = "{self.tls.director.certificate}"\n'
                f'private_key = "{self.tls.director.private_key}"\n'
                f'ca = "{self.tls.ca}"\n'
                f'\n[tls_client]\nca = "{self.tls.ca}"\n'
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
    home: HomeServerStandIn | None = None,
) -> dict[str, Any]:
    """Start *target*, check it proxies, search its open rate, then the fixed load.

    With *home* (our own home server, the TLS leg), the fixed load also reports the home's
    CPU per REGISTER and how many TLS connections it holds (1: the director reused one).
    """
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
        home_before = home.cpu_seconds() if home else 0.0
        fixed = harness.run_sipp(
            children, target, SCENARIO, users_csv, fixed_rate, plan.cpu_seconds,
            plan.sipp_cpu, plan.server_cpu, config_dir / "fixed", expected_code="200",
        )  # fmt: skip
        harness.log(harness.describe(fixed))
        out["fixed_load"] = asdict(fixed)
        if home is not None:
            answered = sum(fixed.response_codes.values())
            home_used = home.cpu_seconds() - home_before
            out["home"] = {
                "cpu_seconds": round(home_used, 3),
                "cpu_us_per_request": round(1e6 * home_used / answered, 2) if answered else None,
                "tls_connections": established_connections(home.port),
            }
            harness.log(
                f"  home server: {out['home']['cpu_us_per_request']} us CPU per REGISTER, "
                f"{out['home']['tls_connections']} TLS connection(s) from the director"
            )
        out["memory_after_load"] = harness.memory_kb(harness.process_tree(target.proc.pid))
    finally:
        harness.stop_server(children, target)
    return out


def fmt(value: object, digits: int = 1) -> str:
    return harness.fmt(value, digits)


def print_report(report: dict[str, Any]) -> None:
    fixed_rate = report["fixed_rate"]
    print(
        f"\nREGISTER proxied (2 Vias) to a home stand-in (SIPp over udp/tcp; our home server "
        f"over tls, the client leg udp), {report['users']} users, "
        f"{'quick' if report['quick'] else 'full'} run"
    )
    header = (
        f"{'transport':<9} {'proxy':<10} {'sustained/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
        f"   @{fixed_rate}/s: {'p50 ms':>7} {'p99 ms':>7} {'CPU us/tx':>9} {'RSS MB':>7}  pass"
    )
    print(header)
    for transport, targets in report["results"].items():
        for name, result in targets.items():
            if "skipped" in result:
                print(f"{transport:<9} {name:<10} {result['skipped']}")
                continue
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
            if "home" in result:
                home = result["home"]
                print(
                    f"{'':<20} home server stand-in: {fmt(home['cpu_us_per_request'])} us CPU "
                    f"per REGISTER, {home['tls_connections']} TLS connection(s) at the end"
                )
    print(
        f"\nAims (issue 4, single process): <= {AIMS['cpu_us']:g} us CPU per proxied REGISTER, "
        f">= {AIMS['rate']:,}/s sustained, p99 < {AIMS['p99_ms']:g} ms at 80 % of that rate."
    )
    print(
        "Load average (1, 5, 15 min): "
        f"{' '.join(f'{v:.2f}' for v in report['load_average_at_start'])} at the start, "
        f"{' '.join(f'{v:.2f}' for v in report['load_average_at_end'])} at the end."
    )
    if report.get("noisy"):
        print(
            "Other work ran on the cores during some steps (see the [disturbed] marks in the "
            "log): treat these figures as noisy and rerun on a quiet machine."
        )


def main(argv: list[str] | None = None) -> int:
    global HOME_ON_SIPP_CORE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--transports",
        default="udp,tcp,tls",
        help="udp,tcp,tls: the director -> home leg (over tls, the client leg stays udp)",
    )
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
            parser.error(f"unknown transport {transport!r}: udp, tcp or tls (see the docstring)")
    names = [n for n in options.targets.split(",") if n]
    children = ProxyChildren()
    report: dict[str, Any] = {
        "users": plan.users,
        "quick": plan.quick,
        "fixed_rate": args.fixed_rate,
        "machine": harness.machine_info(),
        "plan": asdict(plan),
        "load_average_at_start": os.getloadavg(),
        "results": {},
    }
    ok = True
    with harness.workspace(options.keep) as workdir:
        users_csv = workdir / "users.csv"
        harness.write_users_csv(users_csv, plan.users)
        try:
            for transport in transports:
                children.sipp_transport = SIPP_TRANSPORT[transport]
                home: HomeStandIn | HomeServerStandIn
                tls: TlsFiles | None = None
                if transport == "tls":
                    tls = TlsFiles(workdir / "pki")
                    home = HomeServerStandIn(children, workdir / "home-tls", tls)
                else:
                    home = HomeStandIn(children, workdir / f"home-{transport}", transport)
                home.start(plan.sipp_cpu)
                HOME_ON_SIPP_CORE = home if isinstance(home, HomeServerStandIn) else None
                results: dict[str, Any] = {}
                try:
                    for name in names:
                        target: Any
                        if name == "director":
                            target = ProxyDirector(f"director-{transport}", workdir)
                            target.command_template = options.director_command
                            target.tls = tls
                        elif name == "kamailio":
                            if transport == "tls":
                                harness.log(f"== kamailio-tls: {KAMAILIO_NO_TLS}")
                                results[name] = {"skipped": KAMAILIO_NO_TLS}
                                continue
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
                                home if isinstance(home, HomeServerStandIn) else None,
                            )  # fmt: skip
                        except (RuntimeError, OSError) as e:
                            harness.log(f"== {target.name}: ERROR {e}")
                            results[name] = {"error": str(e)}
                            ok = False
                finally:
                    HOME_ON_SIPP_CORE = None
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
    report["load_average_at_end"] = os.getloadavg()
    path = harness.save_report(report, "proxy-", False)
    print_report(report)
    print(f"\nFull results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
