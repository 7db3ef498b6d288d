"""The stix home keeps its secrets: 0700 folders and 0600 files whatever the umask or the home's
earlier mode, and a home that belongs to someone else is refused, not used."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import Stix, kill_everything_under, wait_until


def _stixctl(stix: Stix, *args: str, umask: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stixctl", *args],
        env=stix.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=stix.home,
        umask=umask,
        check=False,
    )


def _too_open(home: Path) -> list[str]:
    """Everything under `home` (itself included) that is not a 0700 folder or a 0600 file."""
    found = []
    for path in [home, *home.rglob("*")]:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # removed while we looked (a managed job's cluster going down)
        want = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if stat.S_IMODE(info.st_mode) != want:
            found.append(f"{oct(stat.S_IMODE(info.st_mode))} {path.relative_to(home)}")
    return found


def test_every_folder_and_file_in_a_wide_home_is_private_after_a_launch_with_umask_000(
    stix: Stix, tmp_path: Path
) -> None:
    stix.home.chmod(0o755)
    (stix.home / "stixd.log").write_text("written by an earlier stix\n")
    (stix.home / "stixd.log").chmod(0o666)
    (stix.home / "clusters").mkdir(mode=0o777)
    (stix.home / "clusters").chmod(0o777)
    seen = tmp_path / "umask-the-job-saw"

    launched = _stixctl(stix, "launch", "-c", "c1", "-y", "-d", f"umask > {seen}", umask=0)
    assert launched.returncode == 0, launched.stderr
    managed = _stixctl(stix, "jobs", "launch", "-n", "mj", "-y", "-d", "true", umask=0)
    assert managed.returncode == 0, managed.stderr
    wait_until(lambda: stix.job_status("c1", 1) == "SUCCEEDED")
    wait_until(lambda: stix.json("jobs", "queue", "--all")[0]["status"] == "SUCCEEDED", 60)

    assert _too_open(stix.home) == []
    assert seen.read_text().strip() == "0000"  # the job itself keeps the user's umask


def test_a_home_that_belongs_to_another_user_is_refused_with_the_reason(
    stix: Stix, tmp_path: Path
) -> None:
    if os.getuid() == 0:
        home = tmp_path / "theirs"
        home.mkdir()
        os.chown(home, 65534, 65534)
    else:
        home = Path("/")
    env = {**stix.env, "STIX_HOME": str(home)}
    try:
        daemon, client = _start_in(home, env)
    finally:
        if home != Path("/"):
            kill_everything_under(home)  # had it started, it must not outlive the test

    assert daemon.returncode == 2
    assert "belongs to uid" in daemon.stderr and "STIX_HOME" in daemon.stderr
    assert client.returncode != 0 and "belongs to uid" in client.stderr
    assert len(client.stderr.strip().splitlines()) == 1
    assert home == Path("/") or list(home.iterdir()) == []


def _start_in(
    home: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    daemon = subprocess.run(
        [sys.executable, "-m", "stixd", "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    client = subprocess.run(
        [sys.executable, "-m", "stixctl", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return daemon, client
