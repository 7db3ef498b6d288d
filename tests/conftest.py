"""Fixtures that run the real thing: a stix home, a real stixd, real stixctl processes.

Every process a test starts (daemon, agents, their jobs) is found by the test's home path in
its command line and killed at teardown, with its process group, so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from stixd.agent_bundle import build_agent_zipapp
from stixd.providers.local.netns import remove_under as remove_node_networks_under
from stixd.store.chosen import open_postgres
from stixd.store.db import Store, open_store
from tests import pg_server
from tests.kube_fake.process import FakeProcess
from tests.shared_data import check_marks, in_ci

# The suite is a gate: property tests draw the same examples on every run, so a run fails only
# for a change, never for a lucky draw. Hunt with `HYPOTHESIS_PROFILE=hunt` (random draws).
settings.register_profile("gate", derandomize=True)
settings.register_profile("hunt", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))

REPO = Path(__file__).resolve().parents[1]


def pytest_runtest_setup(item: pytest.Item) -> None:
    check_marks(item)  # a test that needs ../shared: skipped without it, failed under CI


def reap(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc`` if it still runs, wait for it and close its pipes: a test's ``finally``
    that only kills leaves a running child and open pipes, whose warnings land on a later
    test of the same worker."""
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
        proc.communicate(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            pids.append(int(entry))
    return pids


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def kill_everything_under(home: Path) -> None:
    """Every process of ``home`` killed, and its local nodes' network namespaces removed."""
    _kill_processes_under(home)
    remove_node_networks_under(home)


def _kill_processes_under(home: Path) -> None:
    for _ in range(3):
        pids = processes_mentioning(str(home))
        if not pids:
            return
        for pid in pids:
            for kill in (
                lambda p: os.killpg(os.getpgid(p), signal.SIGKILL),
                lambda p: os.kill(p, signal.SIGKILL),
            ):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid)
        time.sleep(0.1)


YES = "y\n"
"""What stixctl reads on stdin unless a test says otherwise: the answer `yes |` gives in a
script, so a command that asks `Proceed?` proceeds (tests/test_confirm.py asks on a terminal)."""


def yes_stdin() -> int:
    """A pipe that gives `YES` and then ends, to hand to a child as its stdin."""
    read, write = os.pipe()
    os.write(write, YES.encode())
    os.close(write)
    return read


class Stix:
    """A stix home with helpers to run stixctl in it and read its state."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "STIX_HOME": str(home), "STIX__AUTOSTOP__GRACE_MINUTES": "10"}
        self.env.pop("STIX_CATALOG_DIR", None)
        self.argv = [sys.executable, "-m", "stixctl"]
        """How stixctl is run (tests/as_user.py runs it as another user)."""

    def run(
        self,
        *args: str,
        timeout: float = 60,
        check: bool = False,
        cwd: Path | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.argv, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or self.home,
            input=YES if input is None else input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"stixctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        stdin = yes_stdin()
        try:
            return subprocess.Popen(
                [*self.argv, *args],
                env=self.env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=self.home,
            )
        finally:
            os.close(stdin)

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json", check=True).stdout)

    def clusters(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.json("status")}

    def jobs(self, cluster: str) -> dict[int, dict[str, Any]]:
        return {j["job_id"]: j for j in self.json("queue", cluster)}

    def job_status(self, cluster: str, job_id: int) -> str | None:
        job = self.jobs(cluster).get(job_id)
        return job["status"] if job else None

    def daemon_pid(self) -> int | None:
        try:
            text = (self.home / "stixd.lock").read_text().strip()
        except OSError:
            return None
        pid = int(text) if text.isdigit() else None
        return pid if pid and pid_alive(pid) else None

    def kill_daemon(self) -> None:
        pid = self.daemon_pid()
        assert pid, "no daemon to kill"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), timeout=10)

    def agents(self, cluster: str) -> list[int]:
        """Agent processes of the cluster; a job's runner is forked from its agent (same command
        line), so processes whose parent is one of them are runners, not agents."""
        found = [
            p
            for p in processes_mentioning(f"--cluster {cluster} ")
            if pid_alive(p) and f"{self.home}/" in _cmdline(p) and " serve " in _cmdline(p)
        ]
        return [p for p in found if _ppid(p) not in found]

    def node_dir(self, cluster: str, rank: int = 0) -> Path:
        return self.home / "clusters" / cluster / f"node-{rank}"

    def state_dir(self, cluster: str, rank: int = 0) -> Path:
        """stix's own files of a local node (queue, socket, logs), hidden in the node's home."""
        return self.node_dir(cluster, rank) / ".stix"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiosqlite and the daemon run on asyncio


@pytest.fixture
def stix() -> Iterator[Stix]:
    home = Path(tempfile.mkdtemp(prefix="stx", dir="/tmp"))
    s = Stix(home)
    try:
        yield s
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-m", "stixctl", "daemon", "stop"],
                env=s.env,
                capture_output=True,
                timeout=30,
            )
        kill_everything_under(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def task_file(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1000))

    def write(text: str) -> Path:
        path = tmp_path / f"task{next(counter)}.yaml"
        path.write_text(text)
        return path

    return write


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    """One fake Kubernetes API server for a test module, leaving no pod process behind."""
    with FakeProcess(tmp_path_factory.mktemp("kube")) as fake:
        yield fake
    assert fake.pod_processes() == []


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's zipapp, built once for a test module."""
    return build_agent_zipapp(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PgServer]:
    """A throw-away PostgreSQL server for the session (stopped, its folder removed, at the
    end). Without PostgreSQL's binaries: skipped on a developer's machine, failed under CI."""
    found = pg_server.binaries()
    if found is None:
        reason = "no PostgreSQL here (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    server = pg_server.start(found)
    try:
        yield server
    finally:
        server.stop()


OpenStore = Callable[[], AbstractAsyncContextManager[Store]]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_any(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens the test's store, on each engine in turn: a file in `tmp_path`, or a fresh
    database of the session's PostgreSQL server (each call opens the same one again)."""
    if request.param == "sqlite":
        return lambda: open_store(tmp_path / "s.db")
    url = request.getfixturevalue("postgres").fresh()
    return lambda: open_postgres(url)
