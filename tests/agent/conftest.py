"""Real agent processes for the agent tests, and a small synchronous JSON-lines client.

Every agent and every job process group started here is killed at teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stixd.agent_bundle import build_agent_zipapp

T = TypeVar("T")
START_WITHIN_S = 15.0
AGENT_PYTHON = os.environ.get("STIX_TEST_AGENT_PYTHON", sys.executable)
"""The interpreter agents run under; nodes may have an older python3 than the daemon's."""


def eventually(check: Callable[[], T | None], within: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2] not in "ZX"


def wait_gone(pid: int, within: float = 10.0) -> None:
    eventually(lambda: not pid_alive(pid), within, f"process {pid} to be gone")


class AgentClient:
    """One connection to an agent; ``call`` sends one request line and reads one reply line."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(path))
        except OSError:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rwb")

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = self.send_line(json.dumps({"op": op, **fields}).encode() + b"\n")
        assert reply is not None, f"the agent closed the connection on {op}"
        return reply

    def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = self.call(op, **fields)
        assert reply["ok"], reply
        return reply

    def send_line(self, line: bytes) -> dict[str, Any] | None:
        """Send raw bytes; the reply, or None if the agent closed the connection."""
        self._file.write(line)
        self._file.flush()
        reply = self._file.readline()
        if not reply:
            return None
        decoded: dict[str, Any] = json.loads(reply)
        return decoded

    def job(self, job_id: int) -> dict[str, Any]:
        (job,) = self.ok("jobs", job_ids=[job_id])["jobs"]
        assert isinstance(job, dict)
        return job

    def wait_state(self, job_id: int, wanted: set[str], within: float = 15.0) -> dict[str, Any]:
        """The job once its state is in ``wanted``, following it with the agent's long-poll."""
        deadline = time.monotonic() + within
        job = self.job(job_id)
        while job["state"] not in wanted:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"job {job_id} still {job['state']}, wanted {sorted(wanted)}"
            job = self.ok("wait", job_id=job_id, state=job["state"], timeout=min(remaining, 5))[
                "job"
            ]
        return job

    def full_log(self, job_id: int, within: float = 15.0) -> str:
        """The whole log of a job, read with ``tail`` until end of file."""
        deadline = time.monotonic() + within
        offset, parts = 0, []
        while True:
            reply = self.ok("tail", job_id=job_id, offset=offset, wait=1.0, max_bytes=65536)
            parts.append(reply["data"])
            offset = reply["offset"]
            if reply["eof"]:
                return "".join(parts)
            assert time.monotonic() < deadline, f"log of job {job_id} never reached eof"

    def close(self) -> None:
        self._file.close()
        self._sock.close()


@dataclasses.dataclass(frozen=True)
class Node:
    """Where one agent keeps its state; ``root`` is short so the socket path fits in 107 bytes."""

    root: Path
    cluster: str
    rank: int
    num_gpus: float

    @property
    def node_dir(self) -> Path:
        return self.root / "node"

    @property
    def socket(self) -> Path:
        return self.root / "s"

    def argv(self, pyz: Path) -> list[str]:
        return [
            AGENT_PYTHON,
            str(pyz),
            "serve",
            "--node-dir",
            str(self.node_dir),
            "--socket",
            str(self.socket),
            "--cluster",
            self.cluster,
            "--rank",
            str(self.rank),
            "--num-gpus",
            str(self.num_gpus),
        ]


class Agents:
    """Starts agents for tests and guarantees they and their jobs are gone afterwards."""

    def __init__(self, pyz: Path) -> None:
        self.pyz = pyz
        self._nodes: list[Node] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._clients: list[AgentClient] = []

    def node(self, *, cluster: str = "tc", rank: int = 0, num_gpus: float = 0.0) -> Node:
        node = Node(Path(tempfile.mkdtemp(prefix="stx", dir="/tmp")), cluster, rank, num_gpus)
        self._nodes.append(node)
        return node

    def spawn(self, node: Node, *, pyz: Path | None = None) -> subprocess.Popen[bytes]:
        """Start an agent process without waiting for it."""
        out = open(node.root / f"agent-{len(self._procs)}.out", "wb")  # noqa: SIM115
        with out:
            proc = subprocess.Popen(
                node.argv(pyz or self.pyz),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def start(self, node: Node, *, pyz: Path | None = None) -> subprocess.Popen[bytes]:
        """Start an agent and return once it answers ``hello``."""
        proc = self.spawn(node, pyz=pyz)

        def answering() -> bool:
            assert proc.poll() is None, f"agent exited with {proc.returncode}"
            try:
                with AgentClient(node.socket) as client:
                    client.ok("hello")
            except OSError:
                return False
            return True

        eventually(answering, START_WITHIN_S, "the agent to answer hello")
        return proc

    def client(self, node: Node) -> AgentClient:
        client = AgentClient(node.socket)
        self._clients.append(client)
        return client

    def cleanup(self) -> None:
        for client in self._clients:
            client.close()
        for node in self._nodes:
            for pgid in _recorded_runner_pids(node.node_dir / "agent.db"):
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        texts = [log.read_text() for log in self._agent_logs()]
        tracebacks = [text for text in texts if "Traceback" in text]
        for node in self._nodes:
            shutil.rmtree(node.root, ignore_errors=True)
        assert not tracebacks, "an agent logged a traceback:\n" + "\n".join(texts)

    def _agent_logs(self) -> list[Path]:
        found = [node.node_dir / "agent.log" for node in self._nodes]
        found += [out for node in self._nodes for out in node.root.glob("agent-*.out")]
        return [path for path in found if path.exists()]


def _recorded_runner_pids(db: Path) -> list[int]:
    if not db.exists():
        return []
    conn = sqlite3.connect(str(db), timeout=5)
    try:
        return [pid for (pid,) in conn.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL")]
    finally:
        conn.close()


@pytest.fixture(scope="session")
def agent_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_zipapp(tmp_path_factory.mktemp("agent-bundle"))


@pytest.fixture
def agents(agent_pyz: Path) -> Iterator[Agents]:
    manager = Agents(agent_pyz)
    try:
        yield manager
    finally:
        manager.cleanup()
