"""`stixctl exec` on an UP local cluster: from the client's start to the job RUNNING.

The RUNNING moment is the agent's own record (`started_at`, written when the run step begins),
so the figure covers client start, daemon, agent and the fork of the job. Baseline:
`python3 -c pass`, measured in the same run. Target: median <= 3x.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time

from bench.common import median, ms, p99, sample, stix_home, wall


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=40)
    args = p.parse_args()
    with stix_home() as home:
        home.ctl("launch", "-c", "b", "-y", "true")
        db = home.path / "clusters" / "b" / "node-0" / "agent.db"
        latencies = []
        for _ in range(args.runs):
            t0 = time.time()
            out = home.ctl("exec", "b", "-d", "--json", "true").stdout
            job_id = json.loads(out.strip().splitlines()[-1])["job_id"]
            started = None
            deadline = time.monotonic() + 30
            while started is None and time.monotonic() < deadline:
                with sqlite3.connect(db) as conn:
                    row = conn.execute(
                        "SELECT started_at FROM jobs WHERE job_id=?", (job_id,)
                    ).fetchone()
                started = row[0] if row and row[0] else None
                if started is None:
                    time.sleep(0.002)
            assert started is not None, f"job {job_id} never started"
            latencies.append(started - t0)
        baseline = sample(lambda: wall([sys.executable, "-c", "pass"]), args.runs)
    b = median(baseline)
    print(f"baseline python3 -c pass: {ms(b)} (median of {args.runs})")
    print(
        f"exec submit -> RUNNING: median {ms(median(latencies))} ({median(latencies) / b:.2f}x, "
        f"target <= 3x), p99 {ms(p99(latencies))} ({p99(latencies) / b:.2f}x)"
    )


if __name__ == "__main__":
    main()
