"""A job's end is told the same way everywhere: a finish line and SkyPilot's exit code (0
SUCCEEDED, 100 failed, 101 not finished, 103 CANCELLED), whoever ended it. Real daemon, real
agents on the local infra."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from tests.conftest import Stix, processes_mentioning, wait_until

LONG = f"sleep 300.{os.getpid()}"
"""Outlives the test unless stopped; no concurrent test run shares it."""
STUBBORN = f"trap '' TERM; {LONG}"
"""Ignores SIGTERM: stopping it takes the agent's kill grace, so a teardown takes seconds."""


def managed(stix: Stix, job_id: int) -> dict[str, Any]:
    return {j["job_id"]: j for j in stix.json("jobs", "queue", "--all")}[job_id]


def ended(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_a_job_cancelled_elsewhere_ends_every_follower_with_cancelled_and_103(stix: Stix) -> None:
    stix.run("launch", "-c", "c1", "-y", "-d", LONG, check=True)
    wait_until(lambda: stix.job_status("c1", 1) == "RUNNING")
    follower = stix.popen("logs", "c1", "1")
    launcher = stix.popen("exec", "c1", LONG)
    wait_until(lambda: stix.job_status("c1", 2) == "RUNNING")
    stix.run("cancel", "c1", "1", "2", check=True)
    code, err = ended(follower)
    assert code == 103 and "✗ Job 1 on c1 finished: CANCELLED" in err.splitlines(), err
    code, err = ended(launcher)
    assert code == 103 and "✗ Job 2 on c1 finished: CANCELLED" in err.splitlines(), err
    # a job that was cancelled never exited by itself: it has no exit code, not 0
    jobs = stix.jobs("c1")
    assert [(jobs[i]["status"], jobs[i]["exit_code"]) for i in (1, 2)] == [("CANCELLED", None)] * 2
    # following a job that already ended says the same
    again = stix.run("logs", "c1", "1")
    assert again.returncode == 103 and "finished: CANCELLED" in again.stderr
    assert stix.run("logs", "c1", "1", "--status").returncode == 103
    done = stix.run("exec", "c1", "echo fine")
    assert done.returncode == 0 and "✓ Job 3 on c1 finished: SUCCEEDED" in done.stderr
    assert stix.jobs("c1")[3]["exit_code"] == 0


def test_the_rank_that_failed_a_gang_is_named_with_its_exit_code(stix: Stix, task_file) -> None:
    path = task_file(f"num_nodes: 2\nrun: |\n  [ $SKYPILOT_NODE_RANK = 1 ] && exit 7\n  {LONG}\n")
    proc = stix.run("launch", "-c", "gang", "-y", str(path), timeout=40)
    line = "✗ Job 1 on gang finished: FAILED (rank 1 exited with code 7)"
    assert proc.returncode == 100 and line in proc.stderr.splitlines(), proc.stderr
    job = stix.jobs("gang")[1]
    assert (job["status"], job["exit_code"], job["failed_rank"]) == ("FAILED", 7, 1)
    logs = stix.run("logs", "gang", "1")
    assert logs.returncode == 100 and line in logs.stderr.splitlines(), logs.stderr
    one = stix.run("exec", "gang", "--num-nodes", "1", "exit 3")
    assert one.returncode == 100
    assert "✗ Job 2 on gang finished: FAILED (exit code 3)" in one.stderr.splitlines()
    wait_until(lambda: not processes_mentioning(LONG), timeout=10)


def test_events_take_the_job_id_queue_shows(stix: Stix) -> None:
    stix.run("launch", "-c", "ev", "-y", "echo one", check=True)
    stix.run("exec", "ev", "exit 2")
    queued = {j["job_id"] for j in stix.json("queue", "ev")}
    assert queued == {1, 2}
    first = stix.json("events", "ev", "1")
    assert first and {e["kind"] for e in first} == {"job"}
    assert first[-1]["to_state"] == "SUCCEEDED" and first[-1]["id"].endswith("/1")
    assert stix.json("events", "--kind", "job", "ev", "2")[-1]["to_state"] == "FAILED"
    latest = stix.json("events", "--kind", "job", "ev")  # as `logs ev`: the latest job
    assert latest[-1]["to_state"] == "FAILED" and latest[-1]["id"].endswith("/2")
    by_record = stix.json("events", "--kind", "job", first[-1]["id"])  # the full id still works
    assert by_record == first
    missing = stix.run("events", "ev", "9")
    assert missing.returncode == 3 and "has no job 9" in missing.stderr
    mixed = stix.run("events", "ev", "1", "--kind", "cluster")
    assert mixed.returncode == 2 and "--kind job" in mixed.stderr


def test_jobs_logs_exits_by_the_managed_jobs_state(stix: Stix) -> None:
    stix.run("jobs", "launch", "-n", "bad", "-d", "-y", "echo out; exit 4", check=True)
    wait_until(lambda: managed(stix, 1)["status"] == "FAILED", timeout=60, interval=0.2)
    status = stix.run("jobs", "logs", "1", "--status")
    assert status.returncode == 100 and status.stdout.strip() == "Managed job 1: FAILED"
    follow = stix.run("jobs", "logs", "1")
    assert follow.returncode == 100 and "out" in follow.stdout
    assert "✗ Managed job 1 finished: FAILED" in follow.stderr
    stix.run("jobs", "launch", "-n", "long", "-d", "-y", LONG, check=True)
    wait_until(lambda: managed(stix, 2)["status"] == "RUNNING", timeout=60, interval=0.2)
    assert stix.run("jobs", "logs", "2", "--status").returncode == 101
    follower = stix.popen("jobs", "logs", "2")
    stix.run("jobs", "cancel", "2", check=True)
    code, err = ended(follower)
    assert code == 103 and "✗ Managed job 2 finished: CANCELLED" in err, err
    assert stix.run("jobs", "logs", "2", "--status").returncode == 103
    wait_until(lambda: not processes_mentioning(LONG), timeout=10)


def test_pool_down_cancels_its_running_jobs_and_a_reapply_meanwhile_is_told_to_wait(
    stix: Stix, task_file
) -> None:
    pool = task_file("pool:\n  workers: 2\n")
    stix.run("jobs", "pool", "apply", "-p", "pl", str(pool), check=True)
    wait_until(lambda: stix.json("jobs", "pool", "status")[0]["status"] == "READY", timeout=60)
    stix.run("jobs", "launch", "--pool", "pl", "--num-jobs", "3", "-d", "-y", STUBBORN, check=True)
    wait_until(
        lambda: [managed(stix, i)["status"] for i in (1, 2, 3)] == ["RUNNING"] * 2 + ["PENDING"],
        timeout=60,
        interval=0.2,
    )
    down = stix.run("jobs", "pool", "down", "pl", check=True)
    assert "cancelling its job(s) 1, 2, 3" in down.stdout
    again = stix.run("jobs", "pool", "apply", "-p", "pl", str(pool))
    assert again.returncode == 2, again.stderr
    assert again.stderr.strip() == (
        "stixctl: pool pl is still shutting down; apply it again once "
        "`stixctl jobs pool status` no longer lists it"
    )
    wait_until(lambda: stix.json("jobs", "pool", "status") == [], timeout=60)
    assert [managed(stix, i)["status"] for i in (1, 2, 3)] == ["CANCELLED"] * 3
    wait_until(lambda: not processes_mentioning(LONG), timeout=10)
    # the pool's actor lived through it: the same name comes back and takes jobs again
    stix.run("jobs", "pool", "apply", "-p", "pl", str(pool), check=True)
    wait_until(lambda: stix.json("jobs", "pool", "status")[0]["status"] == "READY", timeout=60)
    stix.run("jobs", "launch", "--pool", "pl", "-d", "-y", LONG, check=True)
    wait_until(lambda: managed(stix, 4)["status"] == "RUNNING", timeout=60, interval=0.2)
    # SkyPilot's way to empty a pool before its down: `jobs cancel -p POOL`
    assert "managed job 4 is cancelling" in stix.run("jobs", "cancel", "-p", "pl").stdout
    wait_until(lambda: managed(stix, 4)["status"] == "CANCELLED", timeout=30, interval=0.2)
    assert "actor_crashed" not in (stix.home / "stixd.log").read_text()
