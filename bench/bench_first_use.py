"""The first-use race: 20 concurrent `stixctl status` with no daemon running.

Target: all 20 succeed and exactly one daemon runs. The wall time of the whole race (start of
the first call to the end of the last) is printed as a ratio to one `python -c pass` and to
one warm `stixctl status`, both measured in the same run; beside them, the race's floor: one
cold `stixctl status` (it starts the daemon) and the same 20 calls with the daemon warm.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from bench.common import FLOOR, Home, floor, median, ms, sample, stix_home, wall


def daemons_started(home: Path) -> int:
    """Daemons that came up in this home: each logs one `ready` line."""
    log = home / "stixd.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if json.loads(line).get("event") == "ready")


def daemons_alive(home: Path) -> int:
    needle = f"--foreground --home {home}".encode()
    alive = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            zombie = (proc / "stat").read_text().rsplit(") ", 1)[-1][:1] == "Z"
        except OSError:
            continue
        alive += needle in cmd and not zombie
    return alive


def race(home: Home, calls: int) -> tuple[int, float]:
    """Start `calls` clients at once; how many succeeded, and the race's wall time."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            home.ctl_cmd("status"),
            env=home.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(calls)
    ]
    codes = [p.wait(timeout=120) for p in procs]
    return sum(code == 0 for code in codes), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="races, each in a fresh stix home")
    p.add_argument("--runs", type=int, default=10, help="samples of each baseline")
    args = p.parse_args()
    results = []
    for _ in range(args.rounds):
        with stix_home() as home:
            ok, took = race(home, args.calls)
            results.append((ok, daemons_started(home.path), daemons_alive(home.path), took))
            warm = sample(lambda: wall(home.ctl_cmd("status"), home.env), args.runs)
            _, warm_race = race(home, args.calls)
    with stix_home() as home:
        cold = wall(home.ctl_cmd("status"), home.env)
    base = floor(args.runs)
    status = median(warm)
    print(f"floor {FLOOR}: {ms(base)}; warm stixctl status: {ms(status)} (medians)")
    print(
        f"floor of the race: one cold stixctl status {ms(cold)}, "
        f"{args.calls} concurrent warm status {ms(warm_race)}"
    )
    for i, (ok, started, alive, took) in enumerate(results, 1):
        print(
            f"race {i}: {ok}/{args.calls} succeeded, {started} daemon(s) started, {alive} alive; "
            f"wall {ms(took)} = {took / base:.1f}x floor, "
            f"{took / status:.1f}x warm status"
        )
    all_ok = all(ok == args.calls and started == alive == 1 for ok, started, alive, _ in results)
    print(f"target (all {args.calls} succeed, one daemon): {'met' if all_ok else 'MISSED'}")


if __name__ == "__main__":
    main()
