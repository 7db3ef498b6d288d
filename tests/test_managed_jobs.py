"""Managed jobs on the local provider: real daemon, real agents, real processes killed."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stix, processes_mentioning, wait_until

LONG = f"sleep 300.{os.getpid()}"
"""A command that outlives the test unless stopped, and that no concurrent test run shares (the
checks for leftovers look at every process of the machine)."""


def managed(stix: Stix, job_id: int) -> dict[str, Any]:
    return {j["job_id"]: j for j in stix.json("jobs", "queue", "--all")}[job_id]


def kill_node(stix: Stix, cluster: str, rank: int = 0) -> int:
    """A preemption on the local infra: every process of the node (agent, runners, the job)."""
    pids = processes_mentioning(f"--node-dir {stix.state_dir(cluster, rank)} ")
    for pid in pids:
        for kill in (
            lambda p: os.killpg(os.getpgid(p), signal.SIGKILL),
            lambda p: os.kill(p, signal.SIGKILL),
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid)
    return len(pids)


def fast_health(stix: Stix) -> None:
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"


def test_a_running_managed_job_holds_no_descriptor_of_its_log_copy(stix: Stix) -> None:
    stix.run("jobs", "launch", "-n", "quiet", "-d", "-y", "echo first-line; sleep 60", check=True)
    wait_until(lambda: "first-line" in stix.run("jobs", "logs", "1", "--no-follow").stdout)
    pid = stix.daemon_pid()
    assert pid is not None and managed(stix, 1)["status"] == "RUNNING"
    held = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir() if f.is_symlink()]
    assert not [f for f in held if f.endswith(".log") and "run-" in f], held
    stix.run("jobs", "cancel", "-y", "1", check=True)


def test_the_daemon_raises_its_soft_descriptor_limit_to_the_hard_one(stix: Stix) -> None:
    def low_limits() -> None:  # a login shell's soft limit under a roomier hard one
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    subprocess.run(
        [sys.executable, "-m", "stixctl", "daemon", "start"],
        env=stix.env,
        check=True,
        timeout=60,
        preexec_fn=low_limits,
    )
    pid = stix.daemon_pid()
    assert pid is not None
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    files = next(line for line in limits if line.startswith("Max open files")).split()
    assert files[3:5] == ["4096", "4096"], files


def test_a_managed_job_runs_to_success_and_its_logs_outlive_its_cluster(stix: Stix) -> None:
    out = stix.run("jobs", "launch", "-n", "hello", "-y", "echo hi-from-$SKYPILOT_TASK_ID")
    assert out.returncode == 0, out.stderr
    assert "hi-from-sky-managed-" in out.stdout and "_hello_1-0" in out.stdout
    job = managed(stix, 1)
    assert job["status"] == "SUCCEEDED" and job["recoveries"] == 0
    assert job["name"] == "hello" and job["cluster"] is None
    wait_until(lambda: stix.clusters().get("hello-1") is None)  # torn down at the end
    logs = stix.run("jobs", "logs", "1", "--no-follow", check=True)
    assert "hi-from-sky-managed-" in logs.stdout
    controller = stix.run("jobs", "logs", "1", "--controller", "--no-follow", check=True)
    assert "STARTING: launching cluster hello-1" in controller.stdout
    assert "SUCCEEDED: the task succeeded" in controller.stdout
    text = stix.run("jobs", "queue", check=True).stdout
    assert "hello" in text and "SUCCEEDED" in text


def test_a_killed_node_is_recovered_and_the_task_resumes_from_its_checkpoint(
    stix: Stix, tmp_path: Path, task_file: Any
) -> None:
    fast_health(stix)
    ck = tmp_path / "ck"
    ck.mkdir()
    path = task_file(
        "name: train\n"
        "run: |\n"
        f"  n=$(cat {ck}/step 2>/dev/null || echo 0)\n"
        f'  echo "start=$n task=$SKYPILOT_TASK_ID" >> {ck}/history\n'
        "  while [ $n -lt 8 ]; do\n"
        f"    n=$((n+1)); echo $n > {ck}/step; echo step $n; sleep 0.4\n"
        "  done\n"
    )
    stix.run("jobs", "launch", "-d", "-y", str(path), check=True)
    wait_until(lambda: (ck / "step").exists() and int((ck / "step").read_text()) >= 2, timeout=30)
    assert kill_node(stix, "train-1") > 0
    wait_until(lambda: managed(stix, 1)["recoveries"] == 1, timeout=20, interval=0.2)
    job = wait_until(
        lambda: (j := managed(stix, 1))["status"] in ("SUCCEEDED", "FAILED") and j,
        timeout=60,
        interval=0.3,
    )
    assert job["status"] == "SUCCEEDED", stix.run("jobs", "logs", "1", "--controller").stdout
    assert job["recoveries"] == 1 and "cluster lost" not in (job["failure_reason"] or "")
    assert job["recovery_reasons"] and "cluster found STOPPED" in job["recovery_reasons"][0]
    starts = (ck / "history").read_text().splitlines()
    assert len(starts) == 2 and starts[0].startswith("start=0 ")
    first_task, second_task = (line.split("task=")[1] for line in starts)
    assert first_task == second_task  # the same SKYPILOT_TASK_ID: user code can resume
    assert int(starts[1].split()[0].split("=")[1]) >= 2  # resumed from its checkpoint
    assert (ck / "step").read_text().strip() == "8"
    logs = stix.run("jobs", "logs", "1", "--no-follow", check=True).stdout
    assert "step 8" in logs and "step 1" in logs
    wait_until(lambda: stix.clusters().get("train-1") is None)


def test_max_restarts_on_errors_reruns_a_failing_task(stix: Stix, task_file: Any) -> None:
    path = task_file(
        "name: flaky\n"
        "resources:\n  job_recovery:\n    max_restarts_on_errors: 2\n"
        "run: echo attempt; exit 3\n"
    )
    out = stix.run("jobs", "launch", "-y", str(path), timeout=90)
    assert out.returncode == 100, out.stderr  # SkyPilot's exit code for a failed job
    job = managed(stix, 1)
    assert job["status"] == "FAILED" and job["restarts"] == 2 and job["recoveries"] == 0
    assert "exit code 3" in job["failure_reason"]
    assert out.stdout.count("attempt") == 3


def test_cancel_a_running_managed_job_tears_its_cluster_down(stix: Stix) -> None:
    stix.run("jobs", "launch", "-n", "long", "-d", "-y", LONG, check=True)
    wait_until(lambda: managed(stix, 1)["status"] == "RUNNING", timeout=30, interval=0.2)
    assert managed(stix, 1)["cluster"] == "long-1"
    [row] = [r for r in stix.run("jobs", "queue", check=True).stdout.splitlines() if " long " in r]
    assert " long-1 " in row and " local " in row and "RUNNING" in row
    out = stix.run("jobs", "cancel", "1", check=True)
    assert "cancelling" in out.stdout
    wait_until(lambda: managed(stix, 1)["status"] == "CANCELLED", timeout=30, interval=0.2)
    wait_until(lambda: stix.clusters().get("long-1") is None)
    assert not processes_mentioning(LONG)
    again = stix.run("jobs", "cancel", "-n", "long", check=True)
    assert "already ended CANCELLED" in again.stdout
    missing = stix.run("jobs", "cancel", "7")
    assert missing.returncode == 3 and "no managed job 7" in missing.stderr


def test_a_task_that_cannot_run_anywhere_is_refused_before_anything_starts(
    stix: Stix, task_file: Any
) -> None:
    path = task_file("resources:\n  accelerators: H100:8\n  infra: local\nrun: echo x\n")
    out = stix.run("jobs", "launch", "-y", str(path))
    assert out.returncode != 0 and "H100" in out.stderr
    assert stix.json("jobs", "queue", "--all") == []


def test_a_pipeline_runs_task_by_task_and_a_failure_fails_the_rest(
    stix: Stix, tmp_path: Path, task_file: Any
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    path = task_file(
        "name: pipe\n"
        "---\n"
        f"name: prep\nrun: echo prep-ran; touch {marks}/prep\n"
        "---\n"
        f"name: train\nrun: echo train-ran; touch {marks}/train; exit 7\n"
        "---\n"
        f"name: eval\nrun: touch {marks}/eval\n"
    )
    out = stix.run("jobs", "launch", "-y", str(path), timeout=90)
    assert out.returncode == 100, out.stderr
    assert "prep-ran" in out.stdout and "train-ran" in out.stdout
    job = managed(stix, 1)
    assert job["name"] == "pipe" and job["status"] == "FAILED" and job["tasks"] == 3
    assert job["task"] == 1 and "exit code 7" in job["failure_reason"]
    assert sorted(p.name for p in marks.iterdir()) == ["prep", "train"]  # eval never ran
    wait_until(lambda: stix.clusters().get("pipe-1") is None)


def test_cancel_while_starting_stops_the_setup_and_leaves_no_cluster(
    stix: Stix, task_file: Any
) -> None:
    path = task_file(f"name: slow\nsetup: {LONG}\nrun: echo never\n")
    stix.run("jobs", "launch", "-d", "-y", str(path), check=True)
    wait_until(lambda: processes_mentioning(LONG), timeout=30)
    assert managed(stix, 1)["status"] == "STARTING"  # setup is part of starting, as in SkyPilot
    stix.run("jobs", "cancel", "--all", check=True)
    wait_until(lambda: managed(stix, 1)["status"] == "CANCELLED", timeout=30, interval=0.2)
    wait_until(lambda: stix.clusters().get("slow-1") is None)
    wait_until(lambda: not processes_mentioning(LONG), timeout=10)
    assert "never" not in stix.run("jobs", "logs", "1", "--no-follow", check=True).stdout


@pytest.mark.parametrize("phase", ["STARTING", "RUNNING", "RECOVERING"])
def test_kill9_of_the_daemon_resumes_the_managed_job_without_running_it_twice(
    stix: Stix, tmp_path: Path, task_file: Any, phase: str
) -> None:
    fast_health(stix)
    ck = tmp_path / "ck"
    ck.mkdir()
    path = task_file(
        "name: tough\n"
        f"setup: echo setup >> {ck}/setups; sleep 1\n"
        "run: |\n"
        f'  echo "run $SKYPILOT_TASK_ID" >> {ck}/runs\n'
        f"  for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done\n"
    )
    stix.run("jobs", "launch", "-d", "-y", str(path), check=True)
    if phase == "STARTING":
        wait_until(lambda: (ck / "setups").exists(), timeout=30)
    else:
        wait_until(lambda: (ck / "runs").exists(), timeout=30)
    if phase == "RECOVERING":
        assert kill_node(stix, "tough-1") > 0
        wait_until(lambda: managed(stix, 1)["status"] == "RECOVERING", timeout=20, interval=0.05)
    stix.kill_daemon()
    stix.run("daemon", "start", check=True)
    job = wait_until(
        lambda: (j := managed(stix, 1))["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") and j,
        timeout=90,
        interval=0.3,
    )
    assert job["status"] == "SUCCEEDED", stix.run("jobs", "logs", "1", "--controller").stdout
    runs = (ck / "runs").read_text().splitlines()
    assert len(runs) == (2 if phase == "RECOVERING" else 1)  # never a second run at once
    assert len(set(runs)) == 1
    assert job["recoveries"] == (1 if phase == "RECOVERING" else 0)
    assert "tick 6" in stix.run("jobs", "logs", "1", "--no-follow", check=True).stdout
    wait_until(lambda: stix.clusters().get("tough-1") is None)
    assert not stix.agents("tough-1")


def test_a_job_the_controller_cannot_handle_ends_failed_controller(stix: Stix) -> None:
    """A stored job the daemon keeps crashing on (here: a task from no known format) is not
    left looking alive: after the restart intensity it is FAILED_CONTROLLER, with the reason."""
    import json
    import sqlite3
    import time

    stix.run("jobs", "launch", "-n", "ok", "-y", "true", check=True)  # makes the store
    stix.run("daemon", "stop", check=True)
    spec = {"name": "odd", "tasks": [{"no_such_key": 1}], "config": [], "submitted_at": 1.0}
    with sqlite3.connect(stix.home / "state.db") as db:
        db.execute(
            "INSERT INTO actors (kind, id, parent, state, terminal, spec, data, version, "
            "created_at, updated_at) VALUES ('managed_job', '2', NULL, 'STARTING', 0, ?, '{}', "
            "1, ?, ?)",
            (json.dumps(spec), time.time(), time.time()),
        )
    stix.env["STIX__DAEMON__RESTART_INTENSITY__MAX_RESTARTS"] = "2"
    stix.run("daemon", "start", check=True)
    job = wait_until(
        lambda: (j := managed(stix, 2))["status"] == "FAILED_CONTROLLER" and j, timeout=30
    )
    assert "crashed 3 times" in job["failure_reason"]
    assert managed(stix, 1)["status"] == "SUCCEEDED"  # the others are untouched


def test_a_pool_of_two_workers_takes_five_jobs_two_at_a_time(
    stix: Stix, tmp_path: Path, task_file: Any
) -> None:
    log = tmp_path / "log"
    log.mkdir()
    pool = task_file(f"pool:\n  workers: 2\nsetup: echo set-up >> {log}/setups\n")
    out = stix.run("jobs", "pool", "apply", "-p", "gpus", str(pool), check=True, timeout=60)
    assert "2 worker(s)" in out.stdout
    wait_until(lambda: stix.json("jobs", "pool", "status")[0]["status"] == "READY", timeout=60)
    assert len((log / "setups").read_text().splitlines()) == 2  # once per worker
    job = task_file(
        "name: shard\n"
        "run: |\n"
        f'  echo "start $SKYPILOT_JOB_RANK/$SKYPILOT_NUM_JOBS $(date +%s.%N)" >> {log}/events\n'
        "  sleep 1\n"
        f'  echo "end $SKYPILOT_JOB_RANK $(date +%s.%N)" >> {log}/events\n'
    )
    launched = stix.json("jobs", "launch", "--pool", "gpus", "--num-jobs", "5", "-y", str(job))
    assert launched["job_ids"] == [1, 2, 3, 4, 5]
    rows = wait_until(
        lambda: (
            (q := stix.json("jobs", "queue")) and all(j["status"] == "SUCCEEDED" for j in q) and q
        ),
        timeout=90,
        interval=0.3,
    )
    assert {j["pool"] for j in rows} == {"gpus"}
    assert all(j["started_at"] and j["ended_at"] for j in rows)
    events = [line.split() for line in (log / "events").read_text().splitlines()]
    assert sorted(e[1] for e in events if e[0] == "start") == [f"{r}/5" for r in range(5)]
    # never more than two at once: replay the starts and ends in time order
    running = peak = 0
    for kind, *_rest in sorted(events, key=lambda e: float(e[-1])):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    status = stix.json("jobs", "pool", "status", "gpus")[0]
    assert status["ready"] == 2 and all(w["job_id"] is None for w in status["workers"])
    assert len((log / "setups").read_text().splitlines()) == 2  # jobs ran no setup
    unknown = stix.run("jobs", "launch", "--pool", "nope", "-y", "true")
    assert unknown.returncode == 2 and "no pool 'nope' (pools: gpus)" in unknown.stderr
    stix.run("jobs", "pool", "down", "gpus", check=True)
    wait_until(lambda: stix.json("jobs", "pool", "status") == [], timeout=60)
    wait_until(lambda: not {"gpus-0", "gpus-1"} & set(stix.clusters()), timeout=60)


def test_cancel_while_recovering_and_while_pending_for_a_worker(
    stix: Stix, tmp_path: Path, task_file: Any
) -> None:
    fast_health(stix)
    # RECOVERING: the relaunch's setup holds it there
    mark = tmp_path / "relaunched"
    path = task_file(
        "name: rec\n"
        f"setup: if [ -e {mark}.first ]; then touch {mark}; {LONG}; fi; touch {mark}.first\n"
        f"run: {LONG}\n"
    )
    stix.run("jobs", "launch", "-d", "-y", str(path), check=True)
    wait_until(lambda: managed(stix, 1)["status"] == "RUNNING", timeout=30, interval=0.2)
    assert kill_node(stix, "rec-1") > 0
    wait_until(mark.exists, timeout=30)
    assert managed(stix, 1)["status"] == "RECOVERING"
    stix.run("jobs", "cancel", "1", check=True)
    wait_until(lambda: managed(stix, 1)["status"] == "CANCELLED", timeout=30, interval=0.2)
    wait_until(lambda: stix.clusters().get("rec-1") is None)
    wait_until(lambda: not processes_mentioning(LONG), timeout=10)
    # PENDING: the pool's one worker is busy, the second job waits for it
    pool = task_file("pool:\n  workers: 1\n")
    stix.run("jobs", "pool", "apply", "-p", "one", str(pool), check=True)
    wait_until(lambda: stix.json("jobs", "pool", "status")[0]["status"] == "READY", timeout=60)
    stix.run("jobs", "launch", "--pool", "one", "-d", "-y", LONG, check=True)
    stix.run("jobs", "launch", "--pool", "one", "-d", "-y", "echo second", check=True)
    wait_until(lambda: managed(stix, 2)["status"] == "RUNNING", timeout=30, interval=0.2)
    assert managed(stix, 3)["status"] == "PENDING"
    assert stix.json("jobs", "pool", "status")[0]["queued_jobs"] == [3]
    stix.run("jobs", "cancel", "3", check=True)
    wait_until(lambda: managed(stix, 3)["status"] == "CANCELLED", timeout=30, interval=0.2)
    stix.run("jobs", "cancel", "2", check=True)
    wait_until(lambda: managed(stix, 2)["status"] == "CANCELLED", timeout=30, interval=0.2)
    status = wait_until(
        lambda: (s := stix.json("jobs", "pool", "status")[0])["workers"][0]["job_id"] is None and s,
        timeout=30,
    )
    assert status["queued_jobs"] == [] and status["workers"][0]["status"] == "UP"
    wait_until(lambda: not processes_mentioning(LONG), timeout=10)
    stix.run("jobs", "pool", "down", "one", check=True)
