"""`stixctl status` with 100 clusters in the store, as whole-process wall time.

Target: <= 2x `python3 -c "import socket"` (the cost of starting Python at all).
Also prints the client's import time against the same baseline (STYLE.md: the thin client's
import time is measured).
"""

from __future__ import annotations

import argparse
import sys

import anyio

from bench.common import median, ms, sample, seed_stopped_clusters, stix_home, wall

CLUSTERS = 100


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    with stix_home() as home:
        anyio.run(seed_stopped_clusters, home.path, CLUSTERS)
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
