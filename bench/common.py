"""Shared pieces of the benchmarks: a throw-away stix home, timing, and cleanup.

Every figure is printed as a ratio against a baseline measured in the same run, because these
machines are noisy; no benchmark asserts on time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


def wall(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=check)
    return time.perf_counter() - t0


def sample(fn: Callable[[], float], n: int) -> list[float]:
    return [fn() for _ in range(n)]


FLOOR_CMD = [sys.executable, "-c", "pass"]
FLOOR = f"{sys.executable} -c pass"
"""What every client figure is a ratio to: the interpreter the client runs on (this venv's, the
one ``Home.ctl_cmd`` starts), doing nothing. Never a ``python3`` from PATH: a shim or another
install starts slower and would flatter the ratio."""


def floor(runs: int) -> float:
    """The floor's median wall time over `runs` processes."""
    return median(sample(lambda: wall(FLOOR_CMD), runs))


def beside_floor(
    fns: Mapping[str, Callable[[], float]], runs: int
) -> tuple[dict[str, list[float]], float]:
    """`runs` rounds of each timing in `fns` and one of the floor, taken in turn so a change in
    the machine's load falls on all alike: (each one's timings, the floor's median)."""
    xs: dict[str, list[float]] = {name: [] for name in fns}
    base: list[float] = []
    for _ in range(runs):
        for name, fn in fns.items():
            xs[name].append(fn())
        base.append(wall(FLOOR_CMD))
    return xs, median(base)


def vs_floor(x: float, base: float, target: float | None = None) -> str:
    """``12.3 ms = 1.85x floor`` and, with a target, whether it is met."""
    said = f"{ms(x)} = {x / base:.2f}x floor"
    if target is not None:
        said += f" (target <= {target:g}x: {'met' if x <= target * base else 'MISSED'})"
    return said


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p99(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


_compiled = False


def as_installed() -> None:
    """Write the bytecode of stix's packages, as `pip install .` does at install time. From a
    source checkout with PYTHONDONTWRITEBYTECODE set (as on the CI machines), every client
    process would otherwise compile its modules from source: a cost no installed client pays."""
    global _compiled
    if _compiled:
        return
    import compileall
    import importlib.util

    for package in ("stixproto", "stixctl", "stixd"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            for where in spec.submodule_search_locations:
                compileall.compile_dir(where, quiet=1)
    _compiled = True


class Home:
    def __init__(self, path: Path) -> None:
        as_installed()
        self.path = path
        self.env = {**os.environ, "STIX_HOME": str(path)}

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stixctl", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
        )

    def ctl_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "stixctl", *args]

    def daemon_pid(self) -> int:
        found = re.search(r"pid (\d+)", self.ctl("daemon", "status").stdout)
        if not found:
            raise SystemExit("cannot find the daemon's pid")
        return int(found.group(1))

    def events(self, cluster: str) -> list[dict[str, Any]]:
        """The cluster's history and its jobs' (``stixctl events --json``)."""
        events: list[dict[str, Any]] = json.loads(
            self.ctl("events", cluster, "--json", "--limit", "1000").stdout
        )
        return events


def event_at(events: list[dict[str, Any]], kind: str, to_state: str) -> float:
    """When the first ``kind`` (cluster, job) event into ``to_state`` happened."""
    found = [e["at"] for e in events if e["kind"] == kind and e["to_state"] == to_state]
    if not found:
        seen = [(e["kind"], e["from_state"], e["to_state"], e["why"]) for e in events]
        raise SystemExit(f"no {kind} event to {to_state} among {seen}")
    return float(found[0])


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_mb(pid: int, key: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {key} for pid {pid}")


def _kill_under(path: Path) -> None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd:
            for kill in (
                lambda p: os.killpg(os.getpgid(p), signal.SIGKILL),
                lambda p: os.kill(p, 9),
            ):
                with suppress(ProcessLookupError, PermissionError):
                    kill(int(entry))


@contextmanager
def stix_home() -> Iterator[Home]:
    path = Path(tempfile.mkdtemp(prefix="stxb", dir="/tmp"))
    home = Home(path)
    try:
        yield home
    finally:
        home.ctl("daemon", "stop", check=False)
        _kill_under(path)
        shutil.rmtree(path, ignore_errors=True)


async def seed_stopped_clusters(home: Path, n: int) -> None:
    """Put `n` STOPPED local clusters in the store, each with its (agent-less) node directory,
    so every actor's reconcile at boot really looks at the infra and keeps the row live."""
    from stixd.store.db import Row, open_store

    async with open_store(home / "state.db") as store:
        for i in range(n):
            name = f"c{i:05d}"
            (home / "clusters" / name / "node-0").mkdir(parents=True)
            await store.insert(
                Row(
                    kind="cluster",
                    id=name,
                    state="STOPPED",
                    version=0,
                    spec={"provider": "local", "num_nodes": 1, "resources": "1x local"},
                    data={"uid": f"u{i}", "next_job_id": 1, "launched_at": 1.0, "nodes": []},
                ),
                "created",
            )
