"""The daemon's cold start: CPU seconds from exec until it is ready, and modules loaded.

Each round starts `stixd --foreground` in a fresh stix home, waits for its `ready` line (its
socket listens, its actors are booted) and reads the daemon's CPU time (utime + stime) from
/proc. The figure is printed as a ratio to the CPU time of `python -c pass` of the same
interpreter, measured in the same run. Every first command of a user (and every test's daemon)
pays this start. Beside it: how many modules a daemon imports before it serves (counted in a
child that imports `stixd.daemon`).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

from bench.bench_first_use import daemons_started
from bench.common import Home, cpu_seconds, median, stix_home


def pass_cpu(runs: int) -> float:
    """Median CPU seconds of `python -c pass` (the child's rusage)."""
    samples = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return median(samples)


def one_start(home: Home) -> float:
    """CPU seconds of a daemon from its exec to its `ready` line."""
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "stixd", "--foreground", "--home", str(home.path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while daemons_started(home.path) == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the daemon did not answer within 60 s")
            time.sleep(0.05)
        return cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def modules_at_start() -> int:
    code = "import sys, stixd.daemon; print(len(sys.modules))"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True)
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="cold starts, each in a fresh home")
    parser.add_argument("--runs", type=int, default=10, help="samples of the baseline")
    args = parser.parse_args()
    base = pass_cpu(args.runs)
    starts = []
    for _ in range(args.rounds):
        with stix_home() as home:
            starts.append(one_start(home))
    cpu = median(starts)
    print(f"baseline {sys.executable} -c pass: {base * 1000:.0f} ms CPU (median)")
    print(
        f"daemon cold start to ready: {cpu * 1000:.0f} ms CPU (median of {args.rounds})"
        f" = {cpu / base:.1f}x python -c pass; {modules_at_start()} modules imported"
    )


if __name__ == "__main__":
    main()
