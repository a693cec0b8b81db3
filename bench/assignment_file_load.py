"""Time and size of loading a large assignment file (not a test: run it by hand).

    python bench/assignment_file_load.py [--users 1000000] [--homes 4] [--repeat 3]

Prints CPU seconds per load and the process's resident memory before and after, so the
table's footprint is the difference. Numbers depend on the machine; quote them with
`nproc` and the CPU model.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from homeredirect.resolve.file_source import read_assignment_file


def resident_mib() -> float:
    """Current resident set size, from /proc (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_file(path: Path, users: int, homes: int) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write("user,home_server\n")
        file.writelines(
            f"user{n}@example.com,home{n % homes + 1}.example.com\n" for n in range(users)
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--homes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "assignments.csv"
        write_file(path, options.users, options.homes)
        size = path.stat().st_size / 2**20
        print(f"{options.users} users, {options.homes} homes, file {size:.1f} MiB")
        for _ in range(options.repeat):
            gc.collect()
            before = resident_mib()
            started = time.process_time()
            table = read_assignment_file(path)
            elapsed = time.process_time() - started
            after = resident_mib()
            shared = len({id(assignment) for assignment in table.values()})
            footprint = (sys.getsizeof(table) + sum(map(sys.getsizeof, table))) / 2**20
            print(
                f"load: {elapsed:.2f} s CPU, {len(table)} users, {shared} Assignment objects, "
                f"table {footprint:.0f} MiB (dict + keys), "
                f"RSS {before:.0f} -> {after:.0f} MiB (+{after - before:.0f})"
            )
            del table
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
