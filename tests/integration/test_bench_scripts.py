"""The in-process benchmark scripts still run against the current code.

They import the director's internals (transaction tables, flows, the UDP protocol), so
an internal change can break one without any other test noticing: bench/transaction_costs.py
once kept calling the server transaction table with its old signature. Each script runs
here once on a handful of requests, which also runs the checks each one makes of the
answers it gets (every REGISTER answered, the right status codes). No figure is compared:
speed is the harness's business (bench/README.md), not the suite's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

SCRIPTS = {
    "auth_costs.py": (["--count", "50", "--repeat", "1"], "plain / (challenge + authenticated)"),
    "proxy_costs.py": (
        ["--count", "50", "--repeat", "1", "--users", "100", "--window", "10"],
        "total (aim <= 80 us)",
    ),
    "parser_costs.py": (["--count", "50", "--repeat", "1"], "register-digest"),
    "transaction_costs.py": (["--count", "50", "--repeat", "1"], "Timer J expiry"),
    "gc_pause.py": (["--redirects", "200", "--proxied", "100", "--repeat", "1"], "gc.collect(2)"),
    "assignment_file_load.py": (["--users", "100", "--homes", "4", "--repeat", "1"], "peak RSS"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_in_process_benchmark_runs(script: str) -> None:
    arguments, expected = SCRIPTS[script]
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout, done.stdout[-2000:]
