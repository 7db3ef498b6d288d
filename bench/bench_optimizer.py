"""The optimizer, warm: every task file of the compat corpus planned on every catalog cloud.

One process builds the catalog index once and plans each file once to warm up, then times
``--runs`` plans per file (a pipeline file is one ``plan_pipeline`` call). Printed per file:
median and p95 of one plan, with the ratio to the floor (``sys.executable -c pass`` of the same
venv) measured in the same run
(a warm plan should be a small fraction of starting Python), then the same over all files.

Run from the repository root: ``python -m bench.bench_optimizer`` (``STIX_CATALOG_DIR``
defaults to ``../shared/catalogs``, ``STIX_COMPAT_DIR`` to ``../shared/compat``). The YAML
adapter is the test suite's stand-in for the task model's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.common import FLOOR, floor, median, ms, sample
from stixd.planner.catalog import open_catalog
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan, plan_pipeline
from stixd.providers.all import infras
from tests.test_optimizer_corpus import CLOUDS, FILES, task_requests

REPO = Path(__file__).resolve().parents[1]


def p95(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    shared = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")
    if not (shared / "v8").is_dir():
        sys.exit(f"no catalogs at {shared}; set STIX_CATALOG_DIR")
    if not FILES:
        sys.exit("no compat corpus; set STIX_COMPAT_DIR to the directory holding skypilot-yamls")
    home = Path(tempfile.mkdtemp(prefix="stxopt", dir="/tmp"))
    try:
        index = OfferIndex(open_catalog(home, {"STIX_CATALOG_DIR": str(shared)}), infras())
        jobs: list[tuple[str, Callable[[], object]]] = []
        for path in FILES:
            tasks = task_requests(path)
            if len(tasks) == 1:
                t = tasks[0]
                jobs.append((path.name, partial(plan, t, index, enabled_clouds=CLOUDS)))
            else:
                jobs.append(
                    (path.name, partial(plan_pipeline, tasks, index, enabled_clouds=CLOUDS))
                )
        cold = sum(timed(fn) for _, fn in jobs)  # loads and indexes every catalog once
        baseline = floor(15)
        print(f"floor {FLOOR}: {ms(baseline)}; first pass over the corpus: {ms(cold)}")
        print(f"warm, {args.runs} runs per file; ratios to the baseline")
        print(f"{'file':62s} {'median':>9s} {'p95':>9s} {'ratio':>8s}")
        every: list[float] = []
        for name, fn in jobs:
            xs = sample(partial(timed, fn), args.runs)
            every += xs
            m = median(xs)
            print(f"{name[:62]:62s} {m * 1e3:7.2f}ms {p95(xs) * 1e3:7.2f}ms {m / baseline:7.3f}x")
        m = median(every)
        print(f"{'all files':62s} {m * 1e3:7.2f}ms {p95(every) * 1e3:7.2f}ms {m / baseline:7.3f}x")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
