"""The launch forms and flags SkyPilot users type daily, through the CLI against a real daemon:
an idle cluster from flags alone, a dry run from flags alone, `--workdir`, `--fast`,
`--retry-until-up` (on the fake provider, whose capacity appears after N launches), and
`cancel CLUSTER` with no job id."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import REPO, Stix, reap, wait_until

CATALOGS = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")


def test_launch_with_no_file_and_no_command_brings_up_an_idle_cluster_without_a_job(
    stix: Stix,
) -> None:
    out = stix.run("launch", "-c", "dev", "-y", "--cpus", "1", "-i", "30", check=True)
    assert "dev is UP with nothing to run" in out.stderr and "stixctl ssh dev" in out.stderr
    cluster = stix.clusters()["dev"]
    assert cluster["status"] == "UP" and cluster["autostop_idle_minutes"] == 30
    assert stix.jobs("dev") == {}
    # no job id was spent: the first job the cluster runs is job 1
    stix.run("exec", "dev", "-d", "true", check=True)
    assert list(stix.jobs("dev")) == [1]
    again = stix.run("launch", "-c", "dev", "-y", check=True)  # UP already: still no job
    assert "nothing to run" in again.stderr and list(stix.jobs("dev")) == [1]


def test_dryrun_plans_from_resource_flags_alone(stix: Stix) -> None:
    if (CATALOGS / "v8").is_dir():  # the daemon reads the catalogs it started with
        stix.env["STIX_CATALOG_DIR"] = str(CATALOGS)
    plan = stix.json("launch", "--dryrun", "--cpus", "1")
    assert plan["chosen"]["cloud"] == "local"
    if (CATALOGS / "v8").is_dir():
        out = stix.run("launch", "--dryrun", "--gpus", "A100:8", "--all-clouds", check=True)
        assert "A100:8" in out.stdout and "✔" in out.stdout
    assert stix.clusters() == {}


def test_workdir_flag_replaces_the_task_workdir(
    stix: Stix, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "from-file").mkdir()
    (tmp_path / "from-file" / "which").write_text("the file's workdir\n")
    (tmp_path / "from-flag").mkdir()
    (tmp_path / "from-flag" / "which").write_text("the flag's workdir\n")
    path = task_file(f"workdir: {tmp_path / 'from-file'}\nrun: cat which\n")
    out = stix.run("launch", "-c", "wd", "-y", str(path), "--workdir", "from-flag", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the flag's workdir" in out.stdout and "the file's" not in out.stdout
    bad = stix.run("launch", "-c", "wd", "-y", str(path), "--workdir", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "--workdir" in bad.stderr and "not a directory" in bad.stderr


def test_fast_skips_setup_and_sync_only_while_the_launch_is_unchanged(
    stix: Stix, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    count = tmp_path / "setups"
    work = tmp_path / "work"
    work.mkdir()
    (work / "code").write_text("v1\n")
    setup = f"setup: echo once >> {count}\nworkdir: {work}\nrun: cat code\n"
    path = task_file(setup)

    def launch(*flags: str, task: Path = path) -> subprocess.CompletedProcess[str]:
        out = stix.run("launch", "-c", "f", "-y", *flags, str(task))
        assert out.returncode == 0, out.stderr
        return out

    launch()
    assert count.read_text().count("once") == 1
    first = launch("--fast")
    assert "setup and file sync skipped" in first.stderr and "v1" in first.stdout
    assert count.read_text().count("once") == 1
    (work / "code").write_text("v2, edited\n")
    edited = launch("--fast")  # the code changed: synced again, setup still skipped
    assert "(--fast): setup skipped" in edited.stderr and "v2, edited" in edited.stdout
    assert count.read_text().count("once") == 1
    changed = task_file(setup.replace("echo once", "echo once more"))
    launch("--fast", task=changed)  # another setup: a normal launch
    assert count.read_text().count("once") == 2
    launch()  # without --fast, setup runs as SkyPilot's relaunch runs it
    assert count.read_text().count("once") == 3
    assert [j["status"] for j in stix.jobs("f").values()] == ["SUCCEEDED"] * 5


def test_detach_setup_follows_only_the_run_and_keeps_setup_in_the_log(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    path = task_file("setup: echo setup-said-this\nrun: echo run-said-this\n")
    attached = stix.run("launch", "-c", "s", "-y", str(path), check=True)
    assert "setup-said-this" in attached.stdout and "run-said-this" in attached.stdout
    out = stix.run("launch", "-c", "s", "-y", "-s", str(path), check=True)
    assert "run-said-this" in out.stdout and "setup-said-this" not in out.stdout
    assert "Setup runs detached (-s)" in out.stderr and "stixctl logs s 2" in out.stderr
    log = stix.run("logs", "s", "2", "--no-follow", check=True).stdout
    assert log.split() == ["setup-said-this", "run-said-this"]
    failing = task_file("setup: echo broke; exit 3\nrun: echo never\n")
    failed = stix.run("launch", "-c", "s", "-y", "--detach-setup", str(failing))
    assert failed.returncode == 100 and "FAILED_SETUP" in failed.stderr
    assert "broke" not in failed.stdout and "never" not in failed.stdout


def test_cancel_with_no_job_id_cancels_the_latest_running_job(stix: Stix) -> None:
    stix.run("launch", "-c", "q", "-y", "-d", "sleep 120", check=True)
    stix.run("exec", "q", "-d", "sleep 120", check=True)
    stix.run("exec", "q", "-d", "true", check=True)  # the latest job, but no longer running
    wait_until(
        lambda: (
            [j["status"] for j in stix.jobs("q").values()] == ["SUCCEEDED", "RUNNING", "RUNNING"]
        )
    )
    out = stix.run("cancel", "q", "-y", check=True)
    assert "Cancelled the latest running job on q: job 2." in out.stdout
    wait_until(lambda: stix.job_status("q", 2) == "CANCELLED")
    assert stix.job_status("q", 1) == "RUNNING"
    out = stix.run("cancel", "q", "-y", check=True)
    assert "job 1." in out.stdout
    wait_until(lambda: stix.job_status("q", 1) == "CANCELLED")
    assert "No running job" in stix.run("cancel", "q", "-y", check=True).stdout


# -- --retry-until-up on the fake provider -----------------------------------------------------


def fake_daemon(stix: Stix, refusals: int, gap: float = 0.2) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__NO_CAPACITY_LAUNCHES"] = str(refusals)
    stix.env["STIX__DAEMON__RETRY_UNTIL_UP_SECONDS"] = str(gap)
    stix.env["STIX__DAEMON__RETRY_UNTIL_UP_MAX_SECONDS"] = str(gap * 2)


FAKE_TASK = "resources:\n  infra: fake\nenvs:\n  STIX_FAKE_RUN_SECONDS: '0'\nrun: train\n"


def waiting(stix: Stix, name: str) -> dict[str, Any] | None:
    cluster = stix.clusters().get(name)
    error = (cluster or {}).get("last_error") or ""
    ok = cluster and cluster["status"] == "INIT" and "no capacity yet" in error
    return cluster if ok and "retrying in" in error else None


def test_retry_until_up_tries_the_whole_list_again_until_capacity_appears(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    # the plain launch is refused in fake-1..3 (3 refusals); the retrying one in fake-1..3,
    # then again in fake-1 on its second round, and comes up in fake-2
    fake_daemon(stix, refusals=3 + 4)
    path = task_file(FAKE_TASK)
    without = stix.run("launch", "-c", "once", "-y", "-d", str(path))
    assert without.returncode == 5 and "no capacity" in without.stderr
    out = stix.run("launch", "-c", "r", "-y", "-d", "--retry-until-up", str(path))
    assert out.returncode == 0, out.stderr
    assert "retrying in" in out.stderr and "round 2" in out.stderr
    cluster = stix.clusters()["r"]
    assert cluster["status"] == "UP" and cluster["last_error"] is None
    assert "fake/fake-2" in cluster["resources"]
    assert [e["event"] for e in stix.json("events", "r")].count("retry") == 1
    assert list(stix.jobs("r")) == [1]


def test_a_retrying_launch_shows_init_with_its_error_and_down_ends_it(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, refusals=10_000)
    client = stix.popen("launch", "-c", "w", "-y", "--retry-until-up", str(task_file(FAKE_TASK)))
    try:
        wait_until(lambda: waiting(stix, "w"), timeout=30, interval=0.2)
        refused = stix.run("launch", "-c", "w", "-y", str(task_file(FAKE_TASK)))
        assert refused.returncode == 4 and "still launching" in refused.stderr
        stix.run("down", "w", "-y", check=True)
        _, err = client.communicate(timeout=30)
    finally:
        reap(client)
    assert client.returncode == 5 and "stopped waiting for capacity" in err
    assert "w" not in stix.clusters()


def test_ctrl_c_of_a_retrying_launch_stops_its_retries(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, refusals=10_000)
    client = stix.popen("launch", "-c", "c", "-y", "--retry-until-up", str(task_file(FAKE_TASK)))
    try:
        wait_until(lambda: waiting(stix, "c"), timeout=30, interval=0.2)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=60)
    finally:
        reap(client)
    assert client.returncode == 130 and "stops retrying" in err

    def stopped() -> bool:
        error = stix.clusters()["c"]["last_error"] or ""
        return error.startswith("stopped retrying: the launch was interrupted")

    wait_until(stopped, timeout=15, interval=0.2)
    events = stix.json("events", "c")
    assert any("stopped retrying" in (e["why"] or "") for e in events)
    # a new launch may go again (its own retries), which the stopped one no longer blocks
    assert stix.clusters()["c"]["status"] == "INIT"


def test_a_restarted_daemon_goes_on_retrying_until_down(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, refusals=10_000)
    client = stix.popen("launch", "-c", "k", "-y", "--retry-until-up", str(task_file(FAKE_TASK)))
    try:
        wait_until(lambda: waiting(stix, "k"), timeout=30, interval=0.2)
        stix.kill_daemon()
        client.communicate(timeout=30)  # its daemon is gone: the client ends, the launch not
    finally:
        reap(client)

    def retries() -> int:
        return [e["event"] for e in stix.json("events", "k")].count("retry")

    seen = retries()  # starts the daemon again, which resumes the launch
    wait_until(lambda: retries() >= seen + 2, timeout=30, interval=0.3)
    assert stix.clusters()["k"]["status"] == "INIT"
    stix.run("down", "k", "-y", check=True)
    assert "k" not in stix.clusters()
