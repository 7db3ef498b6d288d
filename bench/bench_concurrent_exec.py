"""200 concurrent `stixctl exec` submissions to one cluster: none lost, none run twice.

Each job appends its own number to a file on the node; the run is right when the file holds
every number exactly once and the queue shows every job SUCCEEDED. Prints the wall time
against the baseline of 200 concurrent ``sys.executable -c pass`` processes
(bench.common.FLOOR) in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections import Counter

from bench.common import FLOOR, FLOOR_CMD, stix_home


def _concurrent(cmds: list[list[str]], env: dict[str, str] | None) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for cmd in cmds
    ]
    codes = [p.wait() for p in procs]
    for p in procs:
        assert p.stderr is not None
        p.stderr.close()
    return time.perf_counter() - t0, codes


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=200)
    args = p.parse_args()
    n = args.jobs
    base, _ = _concurrent([FLOOR_CMD] * n, None)
    with stix_home() as home:
        home.ctl("launch", "-c", "burst", "-y", "true")
        cmds = [home.ctl_cmd("exec", "burst", "-d", f"echo {i} >> ~/ran.txt") for i in range(n)]
        took, codes = _concurrent(cmds, home.env)
        rejected = sum(1 for c in codes if c != 0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = json.loads(home.ctl("queue", "burst", "--json").stdout)
            if sum(1 for j in jobs if j["status"] == "SUCCEEDED") == n + 1:
                break
            time.sleep(0.2)
        ran = (home.path / "clusters" / "burst" / "node-0" / "ran.txt").read_text().split()
        counts = Counter(map(int, ran))
        ids = sorted(j["job_id"] for j in jobs)
    lost = [i for i in range(n) if counts[i] == 0]
    twice = [i for i, c in counts.items() if c > 1]
    print(f"baseline: {n} concurrent {FLOOR} in {base:.2f} s")
    print(
        f"{n} concurrent exec submissions in {took:.2f} s ({took / base:.1f}x baseline): "
        f"{n - rejected} accepted, {len(lost)} lost, {len(twice)} run twice, "
        f"job ids unique: {ids == list(range(1, n + 2))}"
    )
    if rejected or lost or twice:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
