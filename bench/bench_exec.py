"""`stixctl exec` on an UP local cluster: from the client's start to the job RUNNING.

The RUNNING moment is the agent's own record (`started_at`, written when the run step begins),
so the figure covers client start, daemon, agent and the fork of the job. Each submission is
followed by one run of the floor, ``sys.executable -c pass`` of the same venv
(bench.common.FLOOR). Target (issue 15): median <= 2x.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

from bench.common import FLOOR, FLOOR_CMD, median, ms, p99, stix_home, vs_floor, wall


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=40)
    args = p.parse_args()
    with stix_home() as home:
        home.ctl("launch", "-c", "b", "-y", "true")
        db = home.path / "clusters" / "b" / "node-0" / ".stix" / "agent.db"
        if not db.is_file():
            raise SystemExit(f"no agent queue at {db}: the local node's layout changed")
        latencies, baseline = [], []
        for _ in range(args.runs):
            t0 = time.time()
            out = home.ctl("exec", "b", "-d", "--json", "true").stdout
            job_id = json.loads(out.strip().splitlines()[-1])["job_id"]
            started = None
            deadline = time.monotonic() + 30
            while started is None and time.monotonic() < deadline:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    row = conn.execute(
                        "SELECT started_at FROM jobs WHERE job_id=?", (job_id,)
                    ).fetchone()
                started = row[0] if row and row[0] else None
                if started is None:
                    time.sleep(0.002)
            assert started is not None, f"job {job_id} never started"
            latencies.append(started - t0)
            baseline.append(wall(FLOOR_CMD))
    b = median(baseline)
    print(f"floor {FLOOR}: {ms(b)} (median of {args.runs}, one after each submission)")
    print(f"exec submit -> RUNNING: median {vs_floor(median(latencies), b, 2.0)}")
    print(f"                        p99    {vs_floor(p99(latencies), b)}")


if __name__ == "__main__":
    main()
