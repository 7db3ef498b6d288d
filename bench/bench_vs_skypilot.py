"""Planning the same task with SkyPilot 0.14 and with stix, on the same catalog: time and pick.

SkyPilot runs on the Python named by `--skypilot-python` or `$STIX_SKYPILOT_PYTHON`; with
neither, the benchmark installs SkyPilot 0.14.1 into a venv of its own on first use and reuses it
(`bench/skypilot_venv.py`: under `$STIX_BENCH_CACHE`, default `~/.cache/stix-bench`). SkyPilot
gets a throw-away HOME whose `~/.sky/catalogs/v8` holds a copy of the shared catalogs (so it fetches
nothing) and AWS, GCP and Azure as its enabled clouds; stix plans over the same three clouds
(`allowed_clouds`). Each side is timed as whole processes per file, in the same run; the
figures are ratios, and the picks (cloud, instance type, region) are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import median, stix_home
from bench.skypilot_venv import skypilot_python

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STIX_SHARED") or REPO.parent / "shared")
CLOUDS = ["aws", "gcp", "azure"]

SKY_PLAN = """
import json, sys
import sky
from sky import check, clouds, optimizer
enabled = [clouds.AWS(), clouds.GCP(), clouds.Azure()]
check.get_cached_enabled_clouds_or_refresh = lambda *a, **k: enabled
dag = sky.Dag()
# SkyPilot refuses envs left null even to plan; stix plans them: give SkyPilot a value
import yaml
envs = [(k, "x") for k in json.loads(sys.argv[2])]
with open(sys.argv[1]) as f:
    task = sky.Task.from_yaml_config(yaml.safe_load(f), env_overrides=envs)
dag.add(task)
try:
    optimizer.Optimizer.optimize(dag, quiet=True)
except Exception as exc:  # no fit: report it like stix's chosen = null
    print(json.dumps({"error": type(exc).__name__})); sys.exit(0)
r = task.best_resources
print(json.dumps({"cloud": str(r.cloud).lower(), "instance_type": r.instance_type,
                  "region": r.region}))
"""


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, out.stdout.strip().splitlines()[-1] if out.stdout else ""


def _null_envs(path: Path) -> str:
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    return json.dumps([k for k, v in (doc.get("envs") or {}).items() if v is None])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--skypilot-python", help="a Python with skypilot (else installs one)")
    p.add_argument("--files", type=int, default=12, help="corpus files to compare (single-task)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    args.skypilot_python = skypilot_python(args.skypilot_python)
    catalogs = Path(os.environ.get("STIX_CATALOG_DIR") or SHARED / "catalogs")
    corpus = sorted((SHARED / "compat" / "skypilot-yamls").glob("*.y*ml"))
    files = [f for f in corpus if "---" not in f.read_text()][: args.files]
    sky_home = Path(tempfile.mkdtemp(prefix="skyhome"))
    try:
        shutil.copytree(catalogs / "v8", sky_home / ".sky" / "catalogs" / "v8")
        sky_env = {**os.environ, "HOME": str(sky_home)}
        with stix_home() as home:
            home.env["STIX_CATALOG_DIR"] = str(catalogs)
            home.env["STIX__ALLOWED_CLOUDS"] = "[" + ", ".join(CLOUDS) + "]"
            home.ctl("daemon", "start")
            rows = []
            for path in files:
                sky_t, stix_t, sky_pick, stix_pick = [], [], "", ""
                for _ in range(args.runs):
                    sky_cmd = [args.skypilot_python, "-c", SKY_PLAN, str(path), _null_envs(path)]
                    t, sky_pick = _timed(sky_cmd, sky_env)
                    sky_t.append(t)
                    cmd = home.ctl_cmd("launch", "--dryrun", "--all-clouds", "--json", str(path))
                    t, stix_pick = _timed(cmd, home.env)
                    stix_t.append(t)
                rows.append((path.name, median(sky_t), median(stix_t), sky_pick, stix_pick))
    finally:
        shutil.rmtree(sky_home, ignore_errors=True)
    agree = 0
    for name, sky_s, stix_s, sky_pick, stix_pick in rows:
        chosen = (json.loads(stix_pick).get("chosen") if stix_pick.startswith("{") else None) or {}
        theirs = json.loads(sky_pick) if sky_pick.startswith("{") else {}
        same = (theirs.get("error") and not chosen) or all(
            theirs.get(k) == chosen.get(k) for k in ("cloud", "instance_type", "region")
        )
        agree += bool(same)
        print(
            f"{name:60s} sky {sky_s * 1000:7.0f} ms  stix {stix_s * 1000:5.0f} ms  "
            f"{sky_s / stix_s:5.1f}x  {'same pick' if same else f'DIFFERENT: {theirs} vs {chosen}'}"
        )
    ratios = [r[1] / r[2] for r in rows]
    print(
        f"median speed-up {median(ratios):.1f}x (target >= 10x) over {len(rows)} files; "
        f"same pick on {agree}/{len(rows)}"
    )


if __name__ == "__main__":
    main()
