"""`stixctl launch --dryrun --all-clouds FILE` as whole processes, per corpus file (warm daemon).

Baseline: `python3 -c pass` in the same run. Target: a warm dryrun <= 3x the baseline.
(SkyPilot 0.14 needs ~4.5 s warm for `sky launch --dryrun` on these machines, per the brief.)
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

from bench.common import median, ms, p99, sample, stix_home, wall

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STIX_SHARED") or REPO.parent / "shared")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5, help="runs per corpus file")
    args = p.parse_args()
    catalogs = Path(os.environ.get("STIX_CATALOG_DIR") or SHARED / "catalogs")
    files = sorted((SHARED / "compat" / "skypilot-yamls").glob("*.y*ml"))
    if not files or not (catalogs / "v8").is_dir():
        raise SystemExit(f"needs the corpus and catalogs under {SHARED}")
    with stix_home() as home:
        home.env["STIX_CATALOG_DIR"] = str(catalogs)
        home.ctl("daemon", "start")
        home.ctl("launch", "--dryrun", "--all-clouds", str(files[0]), check=False)  # warm up
        per_file: list[float] = []
        for path in files:
            cmd = home.ctl_cmd("launch", "--dryrun", "--all-clouds", "--json", str(path))
            # a file that fits nowhere exits 5; it is timed all the same
            per_file.append(median(sample(partial(wall, cmd, home.env, check=False), args.runs)))
        baseline = sample(lambda: wall([sys.executable, "-c", "pass"]), 20)
    b = median(baseline)
    ordered = sorted(per_file)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"baseline python3 -c pass: {ms(b)}")
    print(
        f"dryrun --all-clouds over {len(files)} corpus files: median {ms(median(per_file))} "
        f"({median(per_file) / b:.2f}x, target <= 3x), p95 {ms(p95)} ({p95 / b:.2f}x), "
        f"max {ms(p99(per_file))}"
    )


if __name__ == "__main__":
    main()
