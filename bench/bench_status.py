"""`stixctl status` with 100 clusters in the store, as whole-process wall time: `status --all`
lists all 100; the default `status` lists the newest 50 and a line saying 50 more are hidden.

Target: <= 2x the floor, ``sys.executable -c pass`` of the same venv (bench.common.FLOOR),
sampled in turn with the client in the same run. Also prints the client's import time against
the same floor (STYLE.md: the thin client's import time is measured).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial

import anyio

from bench.common import (
    FLOOR,
    beside_floor,
    median,
    ms,
    seed_stopped_clusters,
    stix_home,
    vs_floor,
    wall,
)

CLUSTERS = 100


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    with stix_home() as home:
        anyio.run(seed_stopped_clusters, home.path, CLUSTERS)
        home.ctl("daemon", "start")
        out = home.ctl("status", "--all").stdout
        assert out.count("STOPPED") == CLUSTERS, out[:500]
        timings: dict[str, Callable[[], float]] = {
            f"stixctl status --all, {CLUSTERS} clusters": partial(
                wall, home.ctl_cmd("status", "--all"), home.env
            ),
            "stixctl status --all --json": partial(
                wall, home.ctl_cmd("status", "--all", "--json"), home.env
            ),
            "stixctl status (default: newest 50)": partial(wall, home.ctl_cmd("status"), home.env),
            "import stixctl.main (library import)": partial(
                wall, [sys.executable, "-c", "import stixctl.main"]
            ),
        }
        xs, base = beside_floor(timings, args.runs)
    targets = {f"stixctl status --all, {CLUSTERS} clusters": 2.0}
    print(f"floor {FLOOR}: {ms(base)} (median of {args.runs}, sampled in turn with the rest)")
    for label, times in xs.items():
        print(f"{label:40s} {vs_floor(median(times), base, targets.get(label))}")


if __name__ == "__main__":
    main()
