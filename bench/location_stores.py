#!/usr/bin/env python3
"""Throughput, latency and memory of the location stores (homeredirect.registrar).

For SQLite (a file in a temporary directory, the service's 4-thread pool) and Redis (a
throwaway redis-server from tests/servers.py, or --redis-url):

* ``modify()`` throughput, p50/p99 latency and this process's CPU time per modify (the
  figure that holds on a busy machine) for --aors AORs, each registered once (a new
  binding) and then refreshed once (the binding replaced), the way a REGISTER and its
  refresh use the store, with --window modifies in flight at a time;
* resident memory (RSS) of a process holding --rss-bindings bindings (one per AOR) in the
  memory and SQLite stores, each measured in a fresh child process: RSS after the writes
  minus RSS before them (the SQLite file size is printed too).

Standard library, Twisted and homeredirect only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import react
from twisted.python.threadpool import ThreadPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from homeredirect.redis_connection import RedisConnection
from homeredirect.registrar.location import Binding, ILocationStore
from homeredirect.registrar.memory_store import MemoryLocationStore
from homeredirect.registrar.redis_store import RedisLocationStore
from homeredirect.registrar.sqlite_store import SqliteLocationStore
from homeredirect.resolve.interfaces import AddressOfRecord


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_binding(aor: AddressOfRecord, n: int, now: float, cseq: int) -> Binding:
    return Binding(
        aor=aor,
        contact=f"sip:{aor.user}@192.0.2.{n % 250 + 1}:{5060 + n % 1000};transport=tcp",
        expires_at=now + 3600,
        call_id=f"{n:08x}-call@192.0.2.1",
        cseq=cseq,
        path=("<sip:edge.example.com;lr>",),
        instance=f'"<urn:uuid:00000000-0000-0000-0000-{n:012d}>"',
        reg_id=1,
        received=f"tcp:192.0.2.{n % 250 + 1}:{40000 + n % 20000}",
        user_agent="UCCAPI/16.0.0.0 OC/16.0.0.0 (Skype for Business)",
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_modifies(
    reactor: Any, store: ILocationStore, aors: list[AddressOfRecord], window: int, cseq: int
) -> dict[str, float]:
    """One modify per AOR (add or replace its binding), *window* in flight."""
    now = time.time()
    latencies: list[float] = []

    def one(n: int, aor: AddressOfRecord) -> Deferred[Any]:
        binding = make_binding(aor, n, now, cseq)

        def change(current: tuple[Binding, ...]) -> tuple[Binding, ...]:
            return (*(b for b in current if b.key != binding.key), binding)

        started = time.perf_counter()
        modified = store.modify(aor, change, now)
        return modified.addCallback(lambda _: latencies.append(time.perf_counter() - started))

    async def worker(work: Iterator[tuple[int, AddressOfRecord]]) -> None:
        # Workers share one iterator: *window* modifies in flight, and no Deferred made
        # ahead for every AOR (which would distort the memory measurement).
        for n, aor in work:
            await one(n, aor)

    work = iter(enumerate(aors))
    started, cpu_started = time.perf_counter(), time.process_time()
    await gatherResults([Deferred.fromCoroutine(worker(work)) for _ in range(window)])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "ops_per_s": round(len(aors) / elapsed),
        "cpu_us_per_op": round(cpu / len(aors) * 1e6),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


async def throughput(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    aors = [AddressOfRecord(f"user{n}", "example.com") for n in range(args.aors)]
    results: dict[str, Any] = {}
    backends: dict[str, Callable[[], tuple[ILocationStore, Callable[[], None]]]] = {}
    directory = Path(tempfile.mkdtemp(prefix="bench-location-"))
    pool = ThreadPool(minthreads=0, maxthreads=4, name="bench")
    pool.start()

    def sqlite() -> tuple[ILocationStore, Callable[[], None]]:
        return SqliteLocationStore(directory / "bindings.sqlite", reactor, pool), lambda: None

    def redis() -> tuple[ILocationStore, Callable[[], None]]:
        if args.redis_url:
            url, stop = args.redis_url, (lambda: None)
        else:
            from tests.servers import RedisServer

            server = RedisServer.start()
            url, stop = server.url, server.stop
        connection = RedisConnection(reactor, url, pool_size=args.redis_pool)
        return RedisLocationStore(connection, "bench:location:"), stop

    backends = {"sqlite": sqlite, "redis": redis}
    try:
        for name in args.backends.split(","):
            store, stop = backends[name]()
            try:
                register = await run_modifies(reactor, store, aors, args.window, 1)
                refresh = await run_modifies(reactor, store, aors, args.window, 2)
                results[name] = {"register": register, "refresh": refresh}
                print(name, json.dumps(results[name]), flush=True)
            finally:
                await store.close()
                stop()
    finally:
        pool.stop()
    return results


def measure_rss(backend: str, bindings: int) -> dict[str, Any]:
    """In this (fresh) process: RSS growth from storing *bindings* bindings."""
    result: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        directory = Path(tempfile.mkdtemp(prefix="bench-rss-"))
        pool = ThreadPool(minthreads=0, maxthreads=4, name="bench")
        pool.start()
        store: ILocationStore
        if backend == "memory":
            store = MemoryLocationStore()
        else:
            store = SqliteLocationStore(directory / "bindings.sqlite", reactor, pool)
        aors = [AddressOfRecord(f"user{n}", "example.com") for n in range(bindings)]
        gc.collect()
        before = rss_kib()
        await run_modifies(reactor, store, aors, 64, 1)
        gc.collect()
        result["rss_growth_mib"] = round((rss_kib() - before) / 1024, 1)
        result["rss_total_mib"] = round(rss_kib() / 1024, 1)
        if backend == "sqlite":
            size = sum(p.stat().st_size for p in directory.iterdir())
            result["file_mib"] = round(size / 2**20, 1)
        await store.close()
        pool.stop()
        print(json.dumps(result), flush=True)

    react(main)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=32, help="modifies in flight")
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--redis-url", help="an existing Redis (default: start one)")
    parser.add_argument("--redis-pool", type=int, default=4, help="Redis connections")
    parser.add_argument("--rss-bindings", type=int, default=100_000)
    parser.add_argument("--rss-only", choices=["memory", "sqlite"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_only:
        try:
            measure_rss(args.rss_only, args.rss_bindings)
        except SystemExit:
            pass
        return

    results: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        results.update(await throughput(reactor, args))

    try:
        react(run)
    except SystemExit as done:
        if done.code:
            raise
    for backend in ("memory", "sqlite"):
        child = subprocess.run(
            [sys.executable, __file__, "--rss-only", backend, "--rss-bindings",
             str(args.rss_bindings)],
            capture_output=True, text=True, check=True, env=os.environ,
        )  # fmt: skip
        results[f"rss_{backend}"] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"rss {backend}", child.stdout.strip().splitlines()[-1], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
