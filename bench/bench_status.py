"""`stixctl status` with 100 clusters in the store, as whole-process wall time.

Target: <= 2x `python3 -c "import socket"` (the cost of starting Python at all).
Also prints the client's import time against the same baseline (STYLE.md: the thin client's
import time is measured).
"""

from __future__ import annotations

import argparse
import sys

import anyio

from bench.common import median, ms, sample, stix_home, wall
from stixd.store.db import Row, open_store

CLUSTERS = 100


async def _seed(home_path, n: int) -> None:
    async with open_store(home_path / "state.db") as store:
        for i in range(n):
            name = f"c{i:03d}"
            (home_path / "clusters" / name / "node-0").mkdir(parents=True)
            await store.insert(
                Row(
                    kind="cluster",
                    id=name,
                    state="STOPPED",
                    version=0,
                    spec={"provider": "local", "num_nodes": 1, "resources": "1x local"},
                    data={"uid": f"u{i}", "next_job_id": 1, "launched_at": 1.0, "nodes": []},
                ),
                "created",
            )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    with stix_home() as home:
        anyio.run(_seed, home.path, CLUSTERS)
        home.ctl("daemon", "start")
        out = home.ctl("status").stdout
        assert out.count("STOPPED") == CLUSTERS, out[:500]
        baseline = sample(lambda: wall([sys.executable, "-c", "import socket"]), args.runs)
        status = sample(lambda: wall(home.ctl_cmd("status"), home.env), args.runs)
        status_json = sample(lambda: wall(home.ctl_cmd("status", "--json"), home.env), args.runs)
        imports = sample(lambda: wall([sys.executable, "-c", "import stixctl.main"]), args.runs)
    b = median(baseline)
    rows = [
        (f"stixctl status, {CLUSTERS} clusters", status, " (target <= 2x)"),
        ("stixctl status --json", status_json, ""),
        ("import stixctl.main (library import)", imports, ""),
    ]
    print(f"baseline python3 -c 'import socket': {ms(b)} (median of {args.runs})")
    for label, xs, note in rows:
        print(f"{label:40s} {ms(median(xs)):>9s}  ratio {median(xs) / b:.2f}x{note}")


if __name__ == "__main__":
    main()
