"""Parse and validate the whole SkyPilot corpus N times in one process.

Prints files/second for stix's loader (YAML text → validated Task or Dag) against, as the
baseline measured in the same run, plain `yaml.safe_load_all` of the same files. Also shown:
the model alone (already-loaded documents → validated Task/Dag) and the libyaml loader stix
uses when PyYAML has it, so the split between YAML and model is visible. Times are this
process's CPU time: the work is single-threaded, and wall time on a shared machine mostly
measures the neighbours.

    python -m bench.bench_parse [--rounds 20] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.common import median
from stixproto.task import from_yaml
from stixproto.task.load import documents_to

REPO = Path(__file__).resolve().parents[1]


def _per_second(fn: Callable[[], None], files: int, rounds: int, samples: int) -> float:
    fn()  # warm up: imports, caches
    times = []
    for _ in range(samples):
        t0 = time.process_time()
        for _ in range(rounds):
            fn()
        times.append(time.process_time() - t0)
    return files * rounds / median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=20, help="passes over the corpus per sample")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--shared", default=os.environ.get("STIX_SHARED", str(REPO.parent / "shared")))
    args = p.parse_args()
    corpus = Path(args.shared) / "compat" / "skypilot-yamls"
    texts = [(f.name, f.read_text()) for f in sorted(corpus.glob("*.y*ml"))]
    if not texts:
        sys.exit(f"no corpus at {corpus}; pass --shared or set STIX_SHARED")
    loaded = [
        (name, [d for d in yaml.safe_load_all(text) if d is not None]) for name, text in texts
    ]

    def stix() -> None:
        for name, text in texts:
            from_yaml(text, name)

    def plain_yaml() -> None:
        for _, text in texts:
            list(yaml.safe_load_all(text))

    def libyaml() -> None:
        for _, text in texts:
            list(yaml.load_all(text, Loader=yaml.CSafeLoader))

    def model_only() -> None:
        for name, docs in loaded:
            documents_to(docs, name)

    n, rounds, samples = len(texts), args.rounds, args.samples
    base = _per_second(plain_yaml, n, rounds, samples)
    rows = [("stix from_yaml (parse + validate)", _per_second(stix, n, rounds, samples))]
    if getattr(yaml, "__with_libyaml__", False):
        rows.append(("yaml.load_all, CSafeLoader", _per_second(libyaml, n, rounds, samples)))
    rows.append(("stix model only (loaded docs)", _per_second(model_only, n, rounds, samples)))
    print(f"corpus: {n} files from {corpus}, {rounds} rounds x {samples} samples")
    print(f"{'baseline yaml.safe_load_all':40s} {base:10.0f} files/s")
    for label, rate in rows:
        print(f"{label:40s} {rate:10.0f} files/s  ratio {rate / base:.2f}x")


if __name__ == "__main__":
    main()
