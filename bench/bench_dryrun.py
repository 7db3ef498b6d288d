"""`stixctl launch --dryrun --all-clouds FILE` as whole processes, per corpus file (warm daemon).

Each file's runs are taken in turn with the floor, ``sys.executable -c pass`` of the same venv
(bench.common.FLOOR). Target (issue 15): a warm dryrun <= 3x the floor.
(SkyPilot 0.14 needs ~4.5 s warm for `sky launch --dryrun` on these machines, per the brief.)
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

from bench.common import FLOOR, beside_floor, median, ms, p99, stix_home, vs_floor, wall

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
        floors: list[float] = []
        for path in files:
            cmd = home.ctl_cmd("launch", "--dryrun", "--all-clouds", "--json", str(path))
            # a file that fits nowhere exits 5; it is timed all the same
            xs, base = beside_floor(
                {"dryrun": partial(wall, cmd, home.env, check=False)}, args.runs
            )
            per_file.append(median(xs["dryrun"]))
            floors.append(base)
    b = median(floors)
    ordered = sorted(per_file)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"floor {FLOOR}: {ms(b)} (median over the files, sampled in turn with each)")
    print(f"dryrun --all-clouds over {len(files)} corpus files (each its median of {args.runs}):")
    print(f"  median {vs_floor(median(per_file), b, 3.0)}")
    print(f"  p95    {vs_floor(p95, b)}")
    print(f"  max    {vs_floor(p99(per_file), b)}")


if __name__ == "__main__":
    main()
