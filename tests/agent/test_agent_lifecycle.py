"""The agent process itself: restarts, kill -9, upgrade in place, autostop, bad input, shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from stixd.agent_bundle import build_agent_zipapp, build_id

from .conftest import AgentClient, Agents, eventually, pid_alive, wait_gone
from .test_agent_jobs import FINISHED, _gate

AGENT_SOURCE = Path(__file__).resolve().parents[2] / "stixd" / "agent"


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def test_agent_command_line_names_its_cluster_and_rank(agents: Agents) -> None:
    node = agents.node(cluster="named", rank=3)
    proc = agents.start(node)

    argv = _cmdline(proc.pid)

    assert argv[argv.index("--cluster") + 1] == "named"
    assert argv[argv.index("--rank") + 1] == "3"
    hello = agents.client(node).ok("hello")
    assert (hello["cluster"], hello["rank"], hello["pid"]) == ("named", 3, proc.pid)
    assert hello["build"] == build_id()
    assert (node.node_dir / "agent.pid").read_text().strip() == str(proc.pid)
    assert node.socket.stat().st_mode & 0o777 == 0o600


def test_jobs_outlive_a_killed_agent_and_a_restarted_agent_reports_their_result(
    agents: Agents,
) -> None:
    node = agents.node()
    first = agents.start(node)
    client = agents.client(node)
    go = node.root / "go"
    client.ok(
        "submit", job_id=1, run=f"echo before; {_gate(go)}; for i in 1 2 3; do echo line $i; done"
    )
    runner = client.wait_state(1, {"RUNNING"})["pid"]

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    go.touch()  # the job goes on, and finishes, while no agent runs
    wait_gone(runner)  # the job finished without an agent
    agents.start(node)
    client = agents.client(node)

    job = client.job(1)
    assert (job["state"], job["exit_code"]) == ("SUCCEEDED", 0)
    assert client.full_log(1) == "before\nline 1\nline 2\nline 3\n"


def test_a_job_whose_runner_died_while_the_agent_was_down_is_failed_driver(
    agents: Agents,
) -> None:
    node = agents.node()
    first = agents.start(node)
    client = agents.client(node)
    client.ok("submit", job_id=1, run="sleep 1000")
    runner = client.wait_state(1, {"RUNNING"})["pid"]

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    os.killpg(runner, signal.SIGKILL)
    wait_gone(runner)
    agents.start(node)

    job = agents.client(node).job(1)
    assert job["state"] == "FAILED_DRIVER"


def test_a_restarted_agent_starts_jobs_that_were_queued_when_it_died(agents: Agents) -> None:
    node = agents.node(num_gpus=1)
    first = agents.start(node)
    client = agents.client(node)
    go = node.root / "go"
    client.ok("submit", job_id=1, run=_gate(go), num_gpus=1)
    client.ok("submit", job_id=2, run="echo second", num_gpus=1)
    runner = client.wait_state(1, {"RUNNING"})["pid"]

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    go.touch()
    wait_gone(runner)
    agents.start(node)
    client = agents.client(node)

    assert client.wait_state(2, FINISHED)["state"] == "SUCCEEDED"
    assert client.full_log(2) == "second\n"


def test_sigterm_stops_the_agent_but_leaves_its_jobs_running(agents: Agents) -> None:
    node = agents.node()
    first = agents.start(node)
    client = agents.client(node)
    go = node.root / "go"
    client.ok("submit", job_id=1, run=f"{_gate(go)}; echo done")
    runner = client.wait_state(1, {"RUNNING"})["pid"]

    first.send_signal(signal.SIGTERM)

    assert first.wait(timeout=10) == 0
    assert not node.socket.exists()
    assert pid_alive(runner)
    agents.start(node)
    client = agents.client(node)
    assert client.job(1)["state"] == "RUNNING"
    go.touch()  # the job ends under an agent that is not its runner's parent
    assert client.wait_state(1, FINISHED)["state"] == "SUCCEEDED"
    assert client.full_log(1) == "done\n"


def test_upgrade_reexecs_a_new_build_in_place_and_running_jobs_carry_on(
    agents: Agents, tmp_path: Path
) -> None:
    changed_source = tmp_path / "agent"
    shutil.copytree(AGENT_SOURCE, changed_source, ignore=shutil.ignore_patterns("__pycache__"))
    with (changed_source / "__init__.py").open("a") as f:
        f.write("\n# a later build\n")
    new_pyz = build_agent_zipapp(tmp_path / "bundle", source=changed_source)
    node = agents.node(cluster="up")
    proc = agents.start(node)
    client = agents.client(node)
    old_build = client.ok("hello")["build"]
    go = node.root / "go"
    client.ok("submit", job_id=1, run=f"{_gate(go)}; echo survived")
    runner = client.wait_state(1, {"RUNNING"})["pid"]

    assert client.call("upgrade", pyz=str(new_pyz)) == {"ok": True}

    def new_build_answers() -> dict[str, Any] | None:
        try:
            with AgentClient(node.socket) as fresh:
                hello = fresh.ok("hello")
        except OSError:
            return None
        return hello if hello["build"] != old_build else None

    hello = eventually(new_build_answers, 15, "the upgraded agent to answer")
    assert hello["build"] == build_id(changed_source)
    assert hello["pid"] == proc.pid and proc.poll() is None
    assert str(new_pyz) in _cmdline(proc.pid)
    assert pid_alive(runner)
    client = agents.client(node)
    go.touch()
    assert client.wait_state(1, FINISHED)["state"] == "SUCCEEDED"
    assert client.full_log(1) == "survived\n"
    client.ok("submit", job_id=2, run="echo after upgrade")
    assert client.wait_state(2, FINISHED)["state"] == "SUCCEEDED"


def test_upgrade_to_something_that_is_not_a_zipapp_is_refused(agents: Agents) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)

    reply = client.call("upgrade", pyz=str(node.root / "missing.pyz"))

    assert (reply["ok"], reply["code"]) == (False, "bad_pyz")
    assert client.ok("hello")["ok"]


def test_idle_node_with_autostop_stops_itself_and_records_why(agents: Agents) -> None:
    node = agents.node()
    proc = agents.start(node)
    client = agents.client(node)

    reply = client.ok("autostop", idle_minutes=0.02, down=False, grace_minutes=0)

    assert reply["autostop"] == {"idle_minutes": 0.02, "down": False, "grace_minutes": 0.0}
    assert proc.wait(timeout=15) == 0
    record = json.loads((node.node_dir / "self_stopped.json").read_text())
    assert record["down"] is False and record["reason"]
    assert not node.socket.exists()


def test_idle_node_with_autostop_down_removes_its_node_directory(agents: Agents) -> None:
    node = agents.node()
    proc = agents.start(node)

    agents.client(node).ok("autostop", idle_minutes=0.01, down=True, grace_minutes=0.01)

    assert proc.wait(timeout=15) == 0
    assert not node.node_dir.exists()


def test_a_running_job_holds_off_autostop_until_it_ends(agents: Agents) -> None:
    node = agents.node()
    proc = agents.start(node)
    client = agents.client(node)
    go = node.root / "go"
    client.ok("submit", job_id=1, run=_gate(go))
    client.wait_state(1, {"RUNNING"})
    client.ok("autostop", idle_minutes=0.005, down=False, grace_minutes=0)

    assert client.ok("hello")["idle_since"] is None
    waited = client.ok("wait", job_id=1, state="RUNNING", timeout=1.0)["job"]
    assert waited["state"] == "RUNNING" and proc.poll() is None  # 1 s > the 0.3 s autostop

    go.touch()
    assert proc.wait(timeout=15) == 0
    assert (node.node_dir / "self_stopped.json").exists()


def test_cancelling_autostop_keeps_the_node_up(agents: Agents) -> None:
    node = agents.node()
    proc = agents.start(node)
    client = agents.client(node)
    client.ok("autostop", idle_minutes=0.01, down=False, grace_minutes=0)

    assert client.ok("autostop", idle_minutes=None)["autostop"] is None
    hello = client.ok("hello")
    assert hello["autostop"] is None and hello["idle_since"] is not None
    assert client.call("wait", job_id=99, state="PENDING", timeout=1.0)["code"] == "no_such_job"
    assert proc.poll() is None


def test_a_second_agent_for_the_same_node_exits_and_leaves_the_first_serving(
    agents: Agents,
) -> None:
    node = agents.node(cluster="twice")
    first = agents.start(node)

    second = agents.spawn(node)

    assert second.wait(timeout=15) == 0
    assert "already running" in (node.root / "agent-1.out").read_text()
    assert agents.client(node).ok("hello")["pid"] == first.pid
    assert first.poll() is None


def test_malformed_requests_get_error_replies_and_the_agent_keeps_serving(
    agents: Agents,
) -> None:
    node = agents.node()
    proc = agents.start(node)
    client = agents.client(node)

    def code_of(line: bytes) -> str:
        reply = client.send_line(line)
        assert reply is not None and reply["ok"] is False and reply["error"], reply
        return str(reply["code"])

    assert code_of(b"this is not json\n") == "bad_json"
    assert code_of(b"\xff\xfe\n") == "bad_json"
    assert code_of(b"[" * 50_000 + b"\n") == "bad_json"  # nested past the parser's depth
    assert code_of(b"[1, 2]\n") == "bad_request"
    assert code_of(b'{"no_op": 1}\n') == "bad_request"
    assert code_of(b'{"op": "fly"}\n') == "unknown_op"
    assert code_of(b'{"op": "submit", "job_id": "one"}\n') == "bad_request"
    assert code_of(b'{"op": "submit", "job_id": true}\n') == "bad_request"
    assert code_of(b'{"op": "submit", "job_id": 1, "envs": {"A": 1}}\n') == "bad_request"
    assert code_of(b'{"op": "wait", "job_id": 1, "state": "NAPPING", "timeout": 1}\n') == (
        "bad_request"
    )
    assert code_of(b'{"op": "tail", "job_id": 404, "offset": 0}\n') == "no_such_job"
    assert code_of(b'{"op": "tail", "job_id": 1, "offset": -5}\n') == "bad_request"
    assert code_of(b'{"op": "cancel"}\n') == "bad_request"
    assert client.ok("hello")["pid"] == proc.pid  # the same connection still works

    assert _reply_to_oversized_line(node.socket)["code"] == "line_too_long"
    assert agents.client(node).ok("hello")["pid"] == proc.pid
    assert proc.poll() is None


def _reply_to_oversized_line(path: Path) -> dict[str, Any]:
    """Send a 17 MiB line; the agent answers and hangs up before it has all been sent."""
    line = b'{"op": "hello", "pad": "' + b"x" * (17 * 1024 * 1024) + b'"}\n'
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))

        def send() -> None:
            with contextlib.suppress(OSError):  # the agent closes while we still write
                sock.sendall(line)

        sender = threading.Thread(target=send)
        sender.start()
        reply = sock.makefile("rb").readline()
        sender.join(timeout=30)
        try:
            rest = sock.recv(1)
        except ConnectionResetError:  # closed with our unread bytes still queued
            rest = b""
        assert rest == b"", "the agent should close the connection after a too-long line"
    decoded: dict[str, Any] = json.loads(reply)
    return decoded


def test_shutdown_with_kill_jobs_cancels_running_jobs_and_exits(agents: Agents) -> None:
    node = agents.node()
    proc = agents.start(node)
    client = agents.client(node)
    client.ok("submit", job_id=1, run="sleep 1000 & wait")
    runner = client.wait_state(1, {"RUNNING"})["pid"]

    assert client.call("shutdown", kill_jobs=True) == {"ok": True}

    assert proc.wait(timeout=15) == 0
    assert not pid_alive(runner)
    agents.start(node)
    assert agents.client(node).job(1)["state"] == "CANCELLED"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer", [b"not json\n", b"[1, 2]\n", b"[" * 50_000 + b"\n", b"\xff\xfe\n"]
)
async def test_whatever_answers_on_an_agent_s_socket_the_daemon_gets_one_agent_error(
    tmp_path: Path, answer: bytes
) -> None:
    """A job can put its own server where the agent's socket was: the daemon's client reads
    its garbage as one AgentError, never a crash of the caller."""
    from stixd.agent_client import AgentError, unix_agent

    path = str(tmp_path / "agent.sock")

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(answer)

    listener = await anyio.create_unix_listener(path)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        with pytest.raises(AgentError) as bad:
            await unix_agent(path).call("hello", deadline=5)
        assert bad.value.code == "bad_reply" and "\n" not in str(bad.value)
        tg.cancel_scope.cancel()
