"""Interrupting launches, on the `fake` provider (tests and benchmarks only).

1. `stixctl down` issued 3 s into a 20 s fake launch: the time from the request until the
   cluster is gone (goal: under 1 s), whether anything is left in the fake cloud, and when the
   launch's own client heard that it was interrupted. Before launches ran as phases, the
   `down` waited for the whole launch (issue 14 measured 17 s).
2. `stixctl status --refresh`, whole process, while 20 fake launches of 20 s run at once, as
   a ratio to the floor (``sys.executable -c pass`` of the same venv, bench.common.FLOOR),
   beside the same `status --refresh` once those 20 are UP.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import FLOOR, Home, floor, median, ms, sample, stix_home, wall

LAUNCH_S = 20.0
DOWN_AFTER_S = 3.0
CONCURRENT = 20
TASK = "resources:\n  infra: fake\nenvs:\n  STIX_FAKE_RUN_SECONDS: '3600'\nrun: train\n"


def fake_home(home: Home) -> None:
    home.env.update(
        STIX__FAKE__ENABLED="true",
        STIX__FAKE__PERSIST="true",
        STIX__FAKE__LAUNCH_SECONDS=str(LAUNCH_S),
    )
    home.ctl("daemon", "start")


def left_in_cloud(home: Home) -> list[str]:
    path = home.path / "fake" / "machines.json"
    return sorted(json.loads(path.read_text())["clusters"]) if path.is_file() else []


def clusters(home: Home) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(home.ctl("status", "--json", "-a").stdout)}


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("the benchmark's cluster never got there")
        time.sleep(0.05)


def down_during_launch(home: Home, task: Path, name: str) -> tuple[float, float, str, list[str]]:
    """Seconds from the `down` request until the cluster is gone, until the launch's client
    ended; how that client ended; what the fake cloud still holds."""
    launch = subprocess.Popen(
        home.ctl_cmd("launch", "-c", name, "-y", str(task)),
        env=home.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    began = time.monotonic()
    wait_for(lambda: clusters(home).get(name, {}).get("activity") == "launching")
    time.sleep(max(0.0, began + DOWN_AFTER_S - time.monotonic()))
    asked = time.monotonic()
    home.ctl("down", name, "-y")
    gone = time.monotonic() - asked
    _, err = launch.communicate(timeout=LAUNCH_S * 2)
    heard = time.monotonic() - asked
    assert clusters(home)[name]["status"] == "TERMINATED"
    return gone, heard, err.strip().splitlines()[-1], left_in_cloud(home)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3, help="downs during a launch")
    p.add_argument("--runs", type=int, default=10, help="status --refresh samples")
    args = p.parse_args()
    baseline = floor(args.runs)
    print(f"floor {FLOOR}: {ms(baseline)} (median of {args.runs})")
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "task.yaml"
        task.write_text(TASK)
        with stix_home() as home:
            fake_home(home)
            print(f"\n1. down {DOWN_AFTER_S:g} s into a {LAUNCH_S:g} s fake launch (goal < 1 s)")
            for i in range(args.rounds):
                gone, heard, said, left = down_during_launch(home, task, f"d{i}")
                print(
                    f"  round {i + 1}: cluster gone {ms(gone)} after the request "
                    f"({gone / baseline:.1f}x floor, whole down process); launch "
                    f"client ended after {ms(heard)}; left in the cloud: {left or 'nothing'}"
                )
            print(f"  the launch's client said: {said}")
        with stix_home() as home:
            fake_home(home)
            print(f"\n2. status --refresh while {CONCURRENT} fake launches of {LAUNCH_S:g} s run")
            names = [f"c{i:02d}" for i in range(CONCURRENT)]
            launches = [
                subprocess.Popen(
                    home.ctl_cmd("launch", "-c", n, "-y", "-d", str(task)),
                    env=home.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for n in names
            ]
            wait_for(
                lambda: (
                    sum(c.get("activity") == "launching" for c in clusters(home).values())
                    == CONCURRENT
                )
            )
            during = sample(lambda: wall(home.ctl_cmd("status", "--refresh"), home.env), args.runs)
            still = sum(c.get("activity") == "launching" for c in clusters(home).values())
            for launch in launches:
                launch.wait(timeout=LAUNCH_S * 3)
            after = sample(lambda: wall(home.ctl_cmd("status", "--refresh"), home.env), args.runs)
            for label, xs in (
                (f"during {CONCURRENT} launches", during),
                (f"once the {CONCURRENT} are UP", after),
            ):
                print(
                    f"  status --refresh {label:26s} median {ms(median(xs)):>9s}  "
                    f"max {ms(max(xs)):>9s}  ratio {median(xs) / baseline:.2f}x floor"
                )
            print(f"  launches still running after the samples during them: {still}/{CONCURRENT}")


if __name__ == "__main__":
    main()
