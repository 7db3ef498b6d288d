"""Catalog loading: cold (CSV parsed, index built) and warm (index read), per cloud.

In-process figures are ratios to a plain ``csv.reader`` pass over the same file; whole-process
figures (a fresh Python that loads one cloud) are ratios to the floor, ``sys.executable -c pass``
of the same venv (bench.common.FLOOR). Both baselines
are measured in the same run. The shared catalogs are small, so a synthetic AWS catalog of 100x
its rows (about the size of the real one) is measured as well.

Run from the repository root: ``python -m bench.bench_catalog`` (``STIX_CATALOG_DIR`` defaults
to ``../shared/catalogs``).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import FLOOR, floor, median, ms, sample, wall
from stixd.planner.catalog import Catalog, open_catalog

REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def csv_pass(path: Path) -> None:
    with path.open(newline="") as f:
        for _ in csv.reader(f):
            pass


def fresh(root: Path, home: Path) -> Catalog:
    return open_catalog(home, {"STIX_CATALOG_DIR": str(root)})


def make_big_aws(shared: Path, root: Path, times: int) -> None:
    lines = (shared / "v8" / "aws" / "vms.csv").read_text().splitlines()
    out = root / "v8" / "aws" / "vms.csv"
    out.parent.mkdir(parents=True)
    with out.open("w") as f:
        f.write(lines[0] + "\n")
        for i in range(times):
            for line in lines[1:]:
                f.write(line.replace(",", f"-{i},", 1) + "\n")  # distinct instance types
    shutil.copytree(shared / "v8" / "common", root / "v8" / "common")


def measure(root: Path, cloud: str, runs: int) -> tuple[float, float, float, float, int]:
    path = root / "v8" / cloud / "vms.csv"
    home = Path(tempfile.mkdtemp(prefix="stxcat", dir="/tmp"))
    index = home / "catalogs" / "index" / "v8" / f"{cloud}.msgpack"
    try:

        def cold() -> float:
            index.unlink(missing_ok=True)
            return timed(lambda: fresh(root, home).offers(cloud))

        base = median(sample(lambda: timed(lambda: csv_pass(path)), runs))
        cold_t = median(sample(cold, runs))
        warm_t = median(sample(lambda: timed(lambda: fresh(root, home).offers(cloud)), runs))
        summ_t = median(sample(lambda: timed(lambda: fresh(root, home).summaries(cloud)), runs))
        n = len(fresh(root, home).offers(cloud))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return base, cold_t, warm_t, summ_t, n


def process_wall(root: Path, cloud: str, runs: int) -> float:
    home = tempfile.mkdtemp(prefix="stxcat", dir="/tmp")
    code = (
        "import sys; from pathlib import Path; from stixd.planner.catalog import open_catalog; "
        f"open_catalog(Path({home!r}), {{'STIX_CATALOG_DIR': {str(root)!r}}}).offers({cloud!r})"
    )
    try:
        wall([sys.executable, "-c", code])  # build the index once
        return median(sample(lambda: wall([sys.executable, "-c", code]), runs))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    shared = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")
    if not (shared / "v8").is_dir():
        sys.exit(f"no catalogs at {shared}; set STIX_CATALOG_DIR")
    big = Path(tempfile.mkdtemp(prefix="stxbig", dir="/tmp"))
    try:
        make_big_aws(shared, big, 100)
        targets = [(shared, c) for c in fresh(shared, big / "h").clouds()] + [(big, "aws")]
        print(f"in-process, median of {args.runs}; ratios to csv.reader over the same file")
        print(
            f"{'catalog':14s} {'offers':>7s} {'csv.reader':>11s} {'cold':>10s} {'ratio':>7s}"
            f" {'warm':>10s} {'ratio':>7s} {'summary':>10s}"
        )
        for root, cloud in targets:
            base, cold_t, warm_t, summ_t, n = measure(root, cloud, args.runs)
            label = cloud if root == shared else f"{cloud} x100"
            print(
                f"{label:14s} {n:7d} {ms(base):>11s} {ms(cold_t):>10s} {cold_t / base:6.1f}x"
                f" {ms(warm_t):>10s} {warm_t / base:6.1f}x {ms(summ_t):>10s}"
            )
        baseline = floor(args.runs)
        print(f"\nwhole process, warm index; floor {FLOOR}: {ms(baseline)}")
        imp = median(
            sample(lambda: wall([sys.executable, "-c", "import stixd.planner.catalog"]), args.runs)
        )
        print(f"{'import stixd.planner.catalog':34s} {ms(imp):>10s}  ratio {imp / baseline:.2f}x")
        for root, cloud in [(shared, "aws"), (shared, "gcp"), (big, "aws")]:
            t = process_wall(root, cloud, args.runs)
            label = f"load {cloud}" + ("" if root == shared else " x100")
            print(f"{label:34s} {ms(t):>10s}  ratio {t / baseline:.2f}x")
    finally:
        shutil.rmtree(big, ignore_errors=True)


if __name__ == "__main__":
    main()
