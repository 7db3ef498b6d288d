"""One daemon carrying 1,000 managed jobs on the `fake` provider (tests and benchmarks only).

Measures, on a real daemon with the fake provider enabled (each launch takes
``--launch-seconds``, in-memory nodes, jobs that run until preempted):

1. 1,000 managed jobs submitted -> all RUNNING: wall time (as a ratio to one fake launch, the
   floor), the most jobs seen launching at once, daemon CPU seconds and RSS;
2. 100 clusters preempted at once -> all 100 jobs RUNNING again (ratio to one fake launch);
3. ``stixctl jobs queue --json --all`` with 1,000 jobs, whole process, as a ratio to
   ``python3 -c pass`` (both measured in this run).

SkyPilot 0.14's own limits are printed beside ours, as its source sets them in
``sky/jobs/scheduler.py``: ``MAX_TOTAL_RUNNING_JOBS = 2000`` (running jobs on the whole jobs
controller), ``LAUNCHES_PER_WORKER = 8`` launches at a time per controller process of
``JOB_MEMORY_MB = 400``, and ``MAX_CONTROLLERS = 512 // LAUNCHES_PER_WORKER`` ("hard to handle
more than 512 launches at once").

Run: ``python -m bench.bench_managed_jobs [--jobs 1000] [--preempt 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Home, cpu_seconds, median, status_mb, stix_home, wall

SKYPILOT = {
    "running jobs per controller": "2,000 (MAX_TOTAL_RUNNING_JOBS)",
    "launches at once": "8 per controller process of ~400 MB (LAUNCHES_PER_WORKER, JOB_MEMORY_MB)",
    "launches at most": "512 (MAX_CONTROLLERS = 512 // LAUNCHES_PER_WORKER)",
}


def _task() -> Any:
    from stixproto.task.load import task_from_dict

    return task_from_dict({"name": "bench", "resources": {"infra": "fake"}, "run": "train"})


async def _submit(home: Path, n: int, concurrency: int) -> None:
    from stixctl.aclient import acall
    from stixproto import messages as m

    task = _task()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await acall(home, m.JobsLaunch(tasks=[task], detach=True), autostart=False)

    await asyncio.gather(*(one() for _ in range(n)))


async def _queue(home: Path) -> list[Any]:
    from stixctl.aclient import acall
    from stixproto import messages as m

    reply = await acall(home, m.JobsQueue(all=True), autostart=False)
    return list(reply.jobs)


async def _until(
    home: Path, done: Any, limit_s: float, every: float = 0.5
) -> tuple[float, int, list[float]]:
    """Poll `jobs queue` until `done(jobs)`: (seconds, most STARTING/RECOVERING seen, the
    queue's own answer times)."""
    t0 = time.perf_counter()
    most, answers = 0, []
    while True:
        q0 = time.perf_counter()
        jobs = await _queue(home)
        answers.append(time.perf_counter() - q0)
        most = max(most, sum(j.status in ("STARTING", "RECOVERING") for j in jobs))
        if done(jobs):
            return time.perf_counter() - t0, most, answers
        if time.perf_counter() - t0 > limit_s:
            states: dict[str, int] = {}
            for j in jobs:
                states[j.status] = states.get(j.status, 0) + 1
            raise SystemExit(f"not done within {limit_s:g}s: {states}")
        await asyncio.sleep(every)


async def _scenario(home: Home, args: argparse.Namespace) -> dict[str, Any]:
    from stixctl.aclient import acall
    from stixproto import messages as m

    pid = home.daemon_pid()
    cpu0, out = cpu_seconds(pid), {}
    t0 = time.perf_counter()
    submit = asyncio.create_task(_submit(home.path, args.jobs, args.concurrency))

    def all_running(jobs: list[Any]) -> bool:
        return len(jobs) == args.jobs and all(j.status == "RUNNING" for j in jobs)

    await asyncio.sleep(0.2)
    _, most, _ = await _until(home.path, all_running, args.timeout)
    await submit
    out["to_running_s"] = time.perf_counter() - t0
    out["launching_peak"] = most
    out["cpu_s"] = cpu_seconds(pid) - cpu0
    out["rss_mb"] = status_mb(pid)
    out["hwm_mb"] = status_mb(pid, "VmHWM")
    idle0 = cpu_seconds(pid)
    await asyncio.sleep(args.idle)
    out["idle_cpu_pct"] = 100 * (cpu_seconds(pid) - idle0) / args.idle

    cpu1 = cpu_seconds(pid)
    t1 = time.perf_counter()
    await acall(home.path, m.FakePreempt(count=args.preempt), autostart=False)

    def recovered(jobs: list[Any]) -> bool:
        return all_running(jobs) and sum(j.recoveries for j in jobs) >= args.preempt

    _, out["recovering_peak"], answers = await _until(home.path, recovered, args.timeout)
    out["recover_s"] = time.perf_counter() - t1
    out["recover_cpu_s"] = cpu_seconds(pid) - cpu1
    out["queue_in_daemon_s"] = median(answers)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--preempt", type=int, default=100)
    p.add_argument("--launch-seconds", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=64, help="submissions in flight")
    p.add_argument("--idle", type=float, default=10.0, help="seconds to watch idle CPU")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the daemon here")
    args = p.parse_args()
    with stix_home() as home:
        home.env.update(
            {
                "STIX__FAKE__ENABLED": "true",
                "STIX__FAKE__LAUNCH_SECONDS": str(args.launch_seconds),
                "STIX__DAEMON__LOG_LEVEL": "warning",
            }
        )
        if args.profile:
            home.env["STIX_PROFILE"] = str(Path(args.profile).resolve())
        home.ctl("daemon", "start")
        r = asyncio.run(_scenario(home, args))
        base = median([wall(["python3", "-c", "pass"]) for _ in range(5)])
        q_cmd = [sys.executable, "-m", "stixctl", "jobs", "queue", "--json", "--all"]
        queue = median([wall(q_cmd, env=home.env) for _ in range(5)])
        rows = subprocess.run(q_cmd, env=home.env, capture_output=True, text=True).stdout
        home.ctl("daemon", "stop")  # a profile is written as the daemon stops
    launch = args.launch_seconds
    print(f"fake provider, one daemon, {args.jobs} managed jobs, launch latency {launch:g} s")
    print(
        f"  submitted -> all RUNNING     {r['to_running_s']:7.1f} s  = "
        f"{r['to_running_s'] / launch:5.1f} x one launch; "
        f"{r['launching_peak']} launching at once (most seen)"
    )
    print(
        f"  daemon CPU for that          {r['cpu_s']:7.1f} s  = "
        f"{1000 * r['cpu_s'] / args.jobs:.1f} ms per job; RSS {r['rss_mb']:.0f} MB "
        f"(peak {r['hwm_mb']:.0f} MB), {1024 * r['rss_mb'] / args.jobs:.0f} KB per job"
    )
    print(f"  idle with all RUNNING        {r['idle_cpu_pct']:7.1f} % of one core")
    print(
        f"  {args.preempt} preempted -> RUNNING   {r['recover_s']:7.1f} s  = "
        f"{r['recover_s'] / launch:5.1f} x one launch; "
        f"{r['recovering_peak']} recovering at once; CPU {r['recover_cpu_s']:.1f} s"
    )
    print(
        f"  jobs queue --json (process)  {queue * 1000:7.0f} ms = "
        f"{queue / base:5.1f} x python3 -c pass ({base * 1000:.0f} ms); "
        f"in the daemon {r['queue_in_daemon_s'] * 1000:.0f} ms; {len(rows)} bytes"
    )
    print("SkyPilot 0.14 (sky/jobs/scheduler.py):")
    for what, limit in SKYPILOT.items():
        print(f"  {what:28s} {limit}")


if __name__ == "__main__":
    main()
