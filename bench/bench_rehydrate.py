"""10,000 actors rehydrated at daemon start: time until the socket answers, and the RSS.

The store is seeded with 10,000 live cluster rows (STOPPED, each with its node directory, so
every actor's reconcile really looks at the infra). Baseline: the same daemon start on an empty
store, measured in the same run. Targets: ready <= 5 s, RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import anyio

from bench.common import seed_stopped_clusters, status_mb, stix_home


def _start_and_time(home: Path, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stixd", "--foreground", "--home", str(home)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        ok = subprocess.run(
            [sys.executable, "-m", "stixctl", "daemon", "status"],
            env=env,
            capture_output=True,
        )
        if ok.returncode == 0:
            return time.perf_counter() - t0, proc.pid
        if proc.poll() is not None:
            raise SystemExit("stixd exited during start")
        time.sleep(0.01)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--actors", type=int, default=10_000)
    p.add_argument("--settle", type=float, default=5.0, help="seconds to watch RSS after ready")
    args = p.parse_args()
    with stix_home() as empty:
        base_t, base_pid = _start_and_time(empty.path, empty.env)
        base_rss = status_mb(base_pid)
        empty.ctl("daemon", "stop")
    with stix_home() as home:
        anyio.run(seed_stopped_clusters, home.path, args.actors)
        ready, pid = _start_and_time(home.path, home.env)
        rss_ready = status_mb(pid)
        peak = rss_ready
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            peak = max(peak, status_mb(pid))
            time.sleep(0.1)
        info = home.ctl("daemon", "status").stdout.strip()
        home.ctl("daemon", "stop")
    print(f"baseline (empty store): ready in {base_t:.2f} s, RSS {base_rss:.0f} MB")
    print(
        f"{args.actors} actors: ready in {ready:.2f} s ({ready / base_t:.1f}x baseline, "
        f"target <= 5 s); RSS {rss_ready:.0f} MB at ready, peak {peak:.0f} MB over "
        f"{args.settle:g} s ({peak / base_rss:.1f}x baseline, target <= 300 MB)"
    )
    print(f"daemon: {info}")


if __name__ == "__main__":
    main()
