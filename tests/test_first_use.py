"""First use from many clients: with no daemon, concurrent calls start one daemon and all work.

Also: the daemon is started so that the caller's working directory cannot shadow stix's own
modules (a project with its own `stixd/`, `stixctl/` or `stixproto/` package).
"""

from __future__ import annotations

import asyncio
import fcntl
import subprocess
import sys
import threading
from pathlib import Path

from stixctl.sdk import AsyncClient, Client
from tests.conftest import Stix, pid_alive, processes_mentioning, wait_until

CALLS = 12


def _daemons(stix: Stix) -> list[int]:
    return [
        p
        for p in processes_mentioning(f"--foreground --home {stix.home}")
        if pid_alive(p) and "stixd" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
    ]


def test_concurrent_first_calls_start_one_daemon_and_all_succeed(stix: Stix) -> None:
    procs = [stix.popen("status") for _ in range(CALLS)]
    results = [(p.wait(timeout=90), *p.communicate()) for p in procs]
    failed = [(code, err) for code, _out, err in results if code != 0]
    assert not failed, failed
    assert len(_daemons(stix)) == 1
    pid = stix.daemon_pid()
    assert pid and _daemons(stix) == [pid]


def test_concurrent_sdk_clients_start_one_daemon_and_all_succeed(stix: Stix) -> None:
    errors: list[BaseException] = []

    def sync_client() -> None:
        try:
            Client(stix.home).status()
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    async def async_clients() -> None:
        calls = asyncio.gather(*(AsyncClient(stix.home).status() for _ in range(CALLS // 2)))
        await asyncio.wait_for(calls, timeout=90)

    threads = [threading.Thread(target=sync_client) for _ in range(CALLS // 2)]
    for t in threads:
        t.start()
    asyncio.run(async_clients())
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    assert len(_daemons(stix)) == 1


def test_a_second_daemon_refuses_to_run_beside_the_first(stix: Stix) -> None:
    stix.run("daemon", "start", check=True)
    pid = stix.daemon_pid()
    second = subprocess.run(
        [sys.executable, "-m", "stixd", "--foreground", "--home", str(stix.home)],
        env=stix.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0 and "already running" in second.stderr
    assert stix.run("status").returncode == 0 and stix.daemon_pid() == pid
    # `stixd` (background start) with one running is a no-op that succeeds
    again = subprocess.run(
        [sys.executable, "-m", "stixd", "--home", str(stix.home)],
        env=stix.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 0 and "already running" in again.stdout
    assert _daemons(stix) == [pid]


def test_a_project_with_its_own_stix_packages_does_not_shadow_the_daemon(
    stix: Stix, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    for name in ("stixd", "stixctl", "stixproto"):
        package = project / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("raise SystemExit('the decoy was imported')\n")
        (package / "__main__.py").write_text("raise SystemExit('the decoy was imported')\n")
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "stixctl", "status"],
        env=stix.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr
    assert "decoy" not in proc.stderr
    wait_until(lambda: stix.daemon_pid(), timeout=10)


def test_a_start_waits_out_a_daemon_that_is_still_exiting(stix: Stix) -> None:
    stix.home.mkdir(parents=True, exist_ok=True)
    with (stix.home / "stixd.lock").open("a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as a daemon that is shutting down holds it
        start = subprocess.Popen(
            [sys.executable, "-m", "stixd", "--home", str(stix.home)],
            env=stix.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out = stix.home / "stixd.out"
        wait_until(lambda: out.exists() and "already running" in out.read_text(), timeout=30)
        assert start.poll() is None  # still waiting for the old daemon to go
    # the old daemon is gone: the waiting start brings up a new one
    _out, err = start.communicate(timeout=60)
    assert start.returncode == 0, err
    assert stix.run("status").returncode == 0
    assert len(_daemons(stix)) == 1


def test_a_home_that_cannot_exist_is_one_line_not_a_traceback(stix: Stix, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    stix.env["STIX_HOME"] = str(blocker / "home")
    proc = stix.run("status", cwd=tmp_path)
    assert proc.returncode == 8
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "STIX_HOME" in proc.stderr
