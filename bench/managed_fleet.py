"""A fleet of managed jobs on the `fake` provider for the benchmarks: submitting them, following
their states from the store, and how many launch at once (bench_managed_jobs, bench_queue)."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.common import Home, stix_home

LAUNCHING = ("STARTING", "RECOVERING")


def _say(text: str) -> None:
    print(text, flush=True)


def _task() -> Any:
    from stixproto.task.load import task_from_dict

    return task_from_dict({"name": "bench", "resources": {"infra": "fake"}, "run": "train"})


async def submit_jobs(home: Path, n: int, concurrency: int) -> None:
    """Submit `n` managed jobs on the fake provider, `concurrency` requests in flight."""
    from stixctl.aclient import acall
    from stixproto import messages as m

    task = _task()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await acall(home, m.JobsLaunch(tasks=[task], detach=True), autostart=False)

    await asyncio.gather(*(one() for _ in range(n)))


async def listed(home: Path) -> list[Any]:
    from stixctl.aclient import acall
    from stixproto import messages as m

    reply = await acall(home, m.JobsQueue(all=True), autostart=False)
    return list(reply.jobs)


class Census:
    """The managed jobs by state and their recoveries, as the daemon's store holds them.

    A read-only reader of the store's WAL costs the daemon nothing, so polling it often does
    not bend the figures it measures."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)

    def take(self) -> tuple[dict[str, int], int]:
        rows = self.conn.execute(
            "SELECT state, count(*), total(json_extract(data, '$.recoveries')) FROM actors "
            "WHERE kind = 'managed_job' GROUP BY state"
        ).fetchall()
        return {state: n for state, n, _ in rows}, int(sum(r for _, _, r in rows))

    def starting_seconds(self) -> float:
        """How long the managed jobs spent STARTING on average, from their first start to
        their first RUNNING (each job's history in the store)."""
        (mean,) = self.conn.execute(
            "SELECT avg(running - starting) FROM (SELECT "
            "min(CASE WHEN to_state = 'STARTING' THEN at END) AS starting, "
            "min(CASE WHEN to_state = 'RUNNING' THEN at END) AS running "
            "FROM events WHERE kind = 'managed_job' GROUP BY id)"
        ).fetchone()
        return float(mean or 0.0)

    def close(self) -> None:
        self.conn.close()

    async def until(
        self, done: Callable[[dict[str, int], int], bool], limit_s: float, every: float = 0.1
    ) -> tuple[float, int]:
        """Poll until `done(states, recoveries)`: (seconds, most launching at once seen)."""
        t0 = time.perf_counter()
        most = 0
        while True:
            states, recoveries = self.take()
            most = max(most, sum(states.get(s, 0) for s in LAUNCHING))
            if done(states, recoveries):
                return time.perf_counter() - t0, most
            if time.perf_counter() - t0 > limit_s:
                raise SystemExit(f"not done within {limit_s:g}s: {states}")
            await asyncio.sleep(every)


def all_running(total: int) -> Callable[[dict[str, int], int], bool]:
    return lambda states, _: states.get("RUNNING", 0) == total == sum(states.values())


def launching_bound(r: dict[str, Any], n: int, launch: float, concurrency: int) -> str:
    """What bounds the most jobs seen launching at once. Nothing caps them: it is how fast the
    daemon admits jobs times how long each stays STARTING (Little's law). A probe of the daemon
    (1,000 jobs, 2 s launches, 2026-12-06) found both set by the store while it wrote one
    transaction at a time in three trips to SQLite's thread (its lock held 83 % of the batch):
    676 at once. Writes waiting together now go in one trip and one commit
    (`stixd.store.commits`): all 1,000 at once, admitted 3.3x faster."""
    rate = n / r["submitted_s"]
    cpu = 100 * r["cpu_s"] / r["to_running_s"]
    overlap = min(n, rate * r["starting_s"])
    return (
        f"  what bounds that: no cap; the daemon admitted the {n:,} jobs at {rate:.0f}/s "
        f"({r['submitted_s']:.1f} s, {cpu:.0f} % of a core), and a job stayed STARTING "
        f"{r['starting_s']:.1f} s on average:\n    {launch:g} s of it the fake launch, the rest "
        f"waiting its turns at the store (see launching_bound);\n    so about {overlap:,.0f} "
        f"at once (Little's law). More "
        f"submissions in flight (--concurrency, {concurrency} here) get more of the store's "
        f"turns: more at once"
    )


def cloud_like(n: int, launch: float, args: argparse.Namespace) -> dict[str, Any]:
    """`n` managed jobs whose launches take `launch` seconds, as a cloud VM's do: how many
    launch at once when a launch outlasts the submissions (a fresh daemon)."""
    with stix_home() as home:
        home.env.update(
            {
                "STIX__FAKE__ENABLED": "true",
                "STIX__FAKE__LAUNCH_SECONDS": str(launch),
                "STIX__DAEMON__LOG_LEVEL": "warning",
            }
        )
        home.ctl("daemon", "start")
        out: dict[str, Any] = {"jobs": n, "launch_s": launch}

        async def go() -> None:
            with closing(Census(home.path / "state.db")) as census:
                t0 = time.perf_counter()
                submit = asyncio.create_task(submit_jobs(home.path, n, args.concurrency))
                submit.add_done_callback(
                    lambda _: out.setdefault("submitted_s", time.perf_counter() - t0)
                )
                _, out["launching_peak"] = await census.until(all_running(n), args.timeout)
                await submit
                out["to_running_s"] = time.perf_counter() - t0

        asyncio.run(go())
        stop_daemon(home, args.timeout)
    _say(
        f"\n{n:,} managed jobs, fake launches of {launch:g} s (a cloud VM's is tens of seconds): "
        f"{out['launching_peak']:,} launching at once (most seen); all submitted after "
        f"{out['submitted_s']:.1f} s, all RUNNING after {out['to_running_s']:.1f} s"
    )
    return out


def stop_daemon(home: Home, timeout: float) -> float:
    """Ask the daemon to stop and wait, up to `timeout` (the client gives up at 30 s), until the
    process is gone and its socket no longer answers: the seconds that took."""
    from stixctl.client import call, wait_gone
    from stixproto import messages as m

    pid = call(home.path, m.DaemonStatus(), autostart=False).pid
    t0 = time.perf_counter()
    call(home.path, m.Shutdown(), autostart=False)
    if not wait_gone(home.path, pid, timeout):
        raise SystemExit(f"the daemon did not stop within {timeout:g}s")
    return time.perf_counter() - t0
