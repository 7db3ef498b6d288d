"""Managed jobs recovering across the fake provider's regions: a real daemon, fake nodes.

The fake provider (for tests and benchmarks only) has regions fake-1 < fake-2 < fake-3 by
price; `stixctl fake preempt` makes a cluster's nodes vanish as a spot preemption does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Stix, wait_until


def fake_daemon(stix: Stix, **settings: str) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    for key, value in settings.items():
        stix.env[f"STIX__FAKE__{key.upper()}"] = value


def task(
    task_file: Callable[[str], Path], name: str, strategy: str | None = None, run_s: int = 3600
) -> Path:
    recovery = f"  job_recovery: {{strategy: {strategy}}}\n" if strategy else ""
    return task_file(
        f"name: {name}\n"
        f"resources:\n  infra: fake\n{recovery}"
        f"envs:\n  STIX_FAKE_RUN_SECONDS: '{run_s}'\n"
        "run: python train.py\n"
    )


def queue(stix: Stix) -> dict[int, dict[str, Any]]:
    return {j["job_id"]: j for j in stix.json("jobs", "queue", "--all")}


def running_on(stix: Stix, job_id: int, infra: str, recoveries: int) -> dict[str, Any] | None:
    job = queue(stix)[job_id]
    ok = job["status"] == "RUNNING" and job["infra"] == infra and job["recoveries"] == recoveries
    return job if ok else None


def test_eager_next_region_moves_a_preempted_job_to_the_next_region(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix)
    stix.run("jobs", "launch", "-d", "-y", str(task(task_file, "eager")), check=True)
    wait_until(lambda: running_on(stix, 1, "fake/fake-1", 0), timeout=30, interval=0.1)
    out = stix.run("fake", "preempt", "eager-1", check=True)
    assert "preempted eager-1 in fake-1" in out.stdout
    job = wait_until(lambda: running_on(stix, 1, "fake/fake-2", 1), timeout=30, interval=0.1)
    assert job["run_infras"] == ["fake/fake-1", "fake/fake-2"]
    assert "preempted in fake-1" in job["recovery_reasons"][0]
    assert "on fake/fake-1" in job["recovery_reasons"][0]
    assert any(e["event"] == "node_preempted" for e in stix.json("events", "eager-1"))
    # preempted again in fake-2: fake-1 is a region left to go to, so it goes back there
    stix.run("fake", "preempt", "eager-1", check=True)
    job = wait_until(lambda: running_on(stix, 1, "fake/fake-1", 2), timeout=30, interval=0.1)
    text = stix.run("jobs", "queue", check=True).stdout
    assert "Recoveries" in text and "fake/fake-1 -> fake/fake-2 -> fake/fake-1" in text
    controller = stix.run("jobs", "logs", "1", "--controller", "--no-follow", check=True).stdout
    assert "recovering by EAGER_NEXT_REGION" in controller
    assert "relaunching outside fake-1 unless nothing else is left" in controller


def test_failover_relaunches_a_preempted_job_in_the_same_region(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix)
    path = task(task_file, "fo", strategy="FAILOVER")
    stix.run("jobs", "launch", "-d", "-y", str(path), check=True)
    wait_until(lambda: running_on(stix, 1, "fake/fake-1", 0), timeout=30, interval=0.1)
    stix.run("fake", "preempt", "fo-1", check=True)
    job = wait_until(lambda: running_on(stix, 1, "fake/fake-1", 1), timeout=30, interval=0.1)
    assert job["run_infras"] == ["fake/fake-1", "fake/fake-1"]
    controller = stix.run("jobs", "logs", "1", "--controller", "--no-follow", check=True).stdout
    assert "recovering by FAILOVER" in controller
    assert "relaunching in fake-1 first" in controller


def test_a_region_without_capacity_is_skipped_at_launch_and_in_recovery(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, no_capacity_regions="[fake-1]")
    path = task(task_file, "fo", strategy="FAILOVER")
    stix.run("jobs", "launch", "-d", "-y", str(path), check=True)
    wait_until(lambda: running_on(stix, 1, "fake/fake-2", 0), timeout=30, interval=0.1)
    events = stix.json("events", "fo-1")
    assert any(e["event"] == "failover" and "fake-1" in e["why"] for e in events)
    # FAILOVER stays in fake-2; the eager job lost in fake-2 cannot use fake-1: fake-3
    stix.run("jobs", "launch", "-d", "-y", str(task(task_file, "eager")), check=True)
    wait_until(lambda: running_on(stix, 2, "fake/fake-2", 0), timeout=30, interval=0.1)
    stix.run("fake", "preempt", "fo-1", "eager-2", check=True)
    wait_until(lambda: running_on(stix, 1, "fake/fake-2", 1), timeout=30, interval=0.1)
    wait_until(lambda: running_on(stix, 2, "fake/fake-3", 1), timeout=30, interval=0.1)


def test_many_managed_jobs_recover_after_a_mass_preemption(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    n = 30
    fake_daemon(stix, launch_seconds="0.05")
    out = stix.run(
        "jobs", "launch", "-d", "-y", str(task(task_file, "many")), timeout=60, check=True
    )
    assert out.returncode == 0
    for _ in range(n - 1):
        stix.run("jobs", "launch", "-d", "-y", str(task(task_file, "many")), check=True)

    def all_running(recoveries: int) -> bool:
        jobs = queue(stix)
        return len(jobs) == n and all(
            j["status"] == "RUNNING" and j["recoveries"] == recoveries for j in jobs.values()
        )

    wait_until(lambda: all_running(0), timeout=60, interval=0.3)
    preempted = stix.json("fake", "preempt", "--count", str(n))
    assert len(preempted) == n
    wait_until(lambda: all_running(1), timeout=60, interval=0.3)
    assert {j["infra"] for j in queue(stix).values()} == {"fake/fake-2"}


def test_preempt_is_refused_without_the_fake_provider(stix: Stix) -> None:
    out = stix.run("fake", "preempt", "--count", "1")
    assert out.returncode != 0 and "fake provider is not enabled" in out.stderr
    out = stix.run("launch", "-y", "--infra", "fake", "echo hi")
    assert out.returncode != 0 and "'fake' is not available" in out.stderr


def test_the_fake_infra_is_planned_only_for_a_task_that_names_it(stix: Stix) -> None:
    fake_daemon(stix)
    plain = stix.run("launch", "--dryrun", "--all-clouds", "-y", "echo hi")
    assert "fake" not in plain.stdout.lower()
    named = stix.run("launch", "--dryrun", "--all-clouds", "--infra", "fake", "-y", "echo hi")
    assert named.returncode == 0 and "fake-1" in named.stdout, named.stderr
    launched = stix.run("launch", "-c", "plain", "-y", "--cpus", "1", "echo hi", check=True)
    assert "fake" not in launched.stdout
    assert stix.clusters()["plain"]["infra"] == "local"
