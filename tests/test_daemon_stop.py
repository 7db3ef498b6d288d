"""A daemon stopped with many live managed jobs closes its store whole and ends; a new one
lists every job at once and brings each back to RUNNING (a real daemon on the fake provider)."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

from stixctl.aclient import acall
from stixproto import messages as m
from stixproto.task.load import task_from_dict
from tests.conftest import Stix, pid_alive, wait_until
from tests.test_managed_jobs_fake import fake_daemon

JOBS = 40


async def _submit(home: Path, n: int) -> None:
    task = task_from_dict({"name": "many", "resources": {"infra": "fake"}, "run": "train"})
    gate = asyncio.Semaphore(8)

    async def one() -> None:
        async with gate:
            await acall(home, m.JobsLaunch(tasks=[task], detach=True), autostart=False)

    await asyncio.gather(*(one() for _ in range(n)))


def _stored(home: Path) -> dict[tuple[str, str], tuple[str, int]]:
    """Every row's (state, version), read as another process would."""
    with closing(sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT kind, id, state, version FROM actors").fetchall()
    return {(kind, id_): (state, version) for kind, id_, state, version in rows}


def _states(stix: Stix) -> list[str]:
    return [job["status"] for job in stix.json("jobs", "queue", "--all")]


def test_a_stop_with_many_live_jobs_keeps_every_row_and_a_restart_brings_each_back(
    stix: Stix,
) -> None:
    fake_daemon(stix, launch_seconds="0.2")
    stix.run("daemon", "start", check=True)
    asyncio.run(_submit(stix.home, JOBS))
    wait_until(lambda: _states(stix) == ["RUNNING"] * JOBS, timeout=90, interval=0.2)
    pid = stix.daemon_pid()
    assert pid is not None
    before = _stored(stix.home)
    assert sum(kind == "managed_job" for kind, _ in before) == JOBS

    stix.run("daemon", "stop", check=True)  # returns once the daemon is gone
    assert not pid_alive(pid)
    # closed, not killed: the last connection's close folded the write-ahead log in
    assert not (stix.home / "state.db-wal").exists()
    assert '"event": "stopped"' in (stix.home / "stixd.log").read_text()
    after = _stored(stix.home)
    assert after.keys() == before.keys()
    for key, (state, version) in before.items():
        assert after[key][1] >= version, key  # nothing undone; writes meanwhile are whole
        if key[0] == "managed_job":
            assert after[key][0] == state == "RUNNING", key

    stix.run("daemon", "start", check=True)
    assert len(_states(stix)) == JOBS  # listed at once, from the store
    # the fake provider's machines died with the daemon: each job recovers to RUNNING
    wait_until(lambda: _states(stix) == ["RUNNING"] * JOBS, timeout=120, interval=0.3)
