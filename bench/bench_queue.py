"""`stixctl queue`, `stixctl jobs queue` and `stixctl status` with many jobs in the store, as
whole processes, each a ratio to the floor (``sys.executable -c pass`` of the same venv,
bench.common.FLOOR), sampled in turn with it.

One stix home with the fake provider enabled (launches of 0 s): a local cluster with
``--cluster-jobs`` finished jobs (``queue``), ``--jobs`` managed jobs RUNNING on fake clusters
(``jobs queue``) and ``--clusters`` more STOPPED clusters in the store (``status``).

Targets (issue 15): ``queue`` and ``jobs queue`` with 1,000 managed jobs <= 2x the floor (the
default run); with 10,000 managed jobs and 1,000 clusters (``--jobs 10000 --clusters 1000``)
the default views of ``jobs queue`` and ``status`` <= 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections.abc import Callable
from contextlib import closing
from functools import partial

import anyio

from bench.common import (
    FLOOR,
    Home,
    beside_floor,
    median,
    ms,
    seed_stopped_clusters,
    stix_home,
    vs_floor,
    wall,
)
from bench.managed_fleet import Census, all_running, submit_jobs

CLUSTER = "q"


def _cluster_jobs(home: Home, n: int, at_once: int = 8) -> None:
    """`n` jobs on the local cluster, submitted `at_once` clients at a time; waits for them."""
    cmd = home.ctl_cmd("exec", CLUSTER, "-d", "true")
    for start in range(0, n, at_once):
        batch = [
            subprocess.Popen(cmd, env=home.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(min(at_once, n - start))
        ]
        for proc in batch:
            _, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"exec failed: {err.decode().strip()}")


async def _managed_jobs(home: Home, n: int, limit_s: float) -> None:
    with closing(Census(home.path / "state.db")) as census:
        await submit_jobs(home.path, n, 64)
        await census.until(all_running(n), limit_s, every=0.5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=1000, help="managed jobs, all RUNNING")
    p.add_argument("--clusters", type=int, default=0, help="more STOPPED clusters")
    p.add_argument("--cluster-jobs", type=int, default=100, help="jobs of the one local cluster")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args()
    at_scale = args.jobs >= 10_000
    with stix_home() as home:
        home.env.update(
            {
                "STIX__FAKE__ENABLED": "true",
                "STIX__FAKE__LAUNCH_SECONDS": "0",
                "STIX__DAEMON__LOG_LEVEL": "warning",
            }
        )
        anyio.run(seed_stopped_clusters, home.path, args.clusters)
        home.ctl("daemon", "start")
        home.ctl("launch", "-c", CLUSTER, "-y", "true")
        _cluster_jobs(home, args.cluster_jobs)
        asyncio.run(_managed_jobs(home, args.jobs, args.timeout))
        views: dict[str, tuple[list[str], float | None]] = {
            f"queue {CLUSTER} ({args.cluster_jobs + 1} jobs)": (["queue", CLUSTER], 2.0),
            f"jobs queue ({args.jobs:,} RUNNING)": (["jobs", "queue"], 3.0 if at_scale else 2.0),
            "jobs queue --all --json": (["jobs", "queue", "--all", "--json"], None),
            f"status (the jobs' clusters, +{args.clusters:,} stopped)": (
                ["status"],
                3.0 if at_scale else None,
            ),
        }
        timings: dict[str, Callable[[], float]] = {
            label: partial(wall, home.ctl_cmd(*argv), home.env)
            for label, (argv, _) in views.items()
        }
        xs, base = beside_floor(timings, args.runs)
    print(f"floor {FLOOR}: {ms(base)} (median of {args.runs}, sampled in turn with the rest)")
    for label, (_, target) in views.items():
        print(f"{label:42s} {vs_floor(median(xs[label]), base, target)}")


if __name__ == "__main__":
    main()
