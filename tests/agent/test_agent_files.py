"""The agent's own files deleted under it (a job's `rm -rf ~`): it puts them back and says why."""

from __future__ import annotations

import shutil

from .conftest import AgentClient, Agents, eventually, wait_gone

FINISHED = {"SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_DRIVER", "CANCELLED"}


def test_deleted_node_files_come_back_and_running_jobs_end_with_the_reason(
    agents: Agents,
) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)
    client.ok("submit", job_id=1, run="echo first")
    assert client.wait_state(1, FINISHED)["state"] == "SUCCEEDED"
    client.ok("submit", job_id=2, run="echo started; sleep 1000")
    running = client.wait_state(2, {"RUNNING"} | FINISHED)
    assert running["state"] == "RUNNING"

    shutil.rmtree(node.node_dir)

    ended = client.wait_state(2, FINISHED)
    assert ended["state"] == "FAILED_DRIVER"
    assert "were deleted while the job ran" in ended["reason"]
    wait_gone(running["pid"])
    assert (node.node_dir / "agent.db").is_file()
    assert client.job(1)["state"] == "SUCCEEDED"  # the queue's history was written back
    assert "were deleted while the job ran" in client.full_log(2)
    client.ok("submit", job_id=3, run="echo after")
    assert client.wait_state(3, FINISHED)["state"] == "SUCCEEDED"
    assert client.full_log(3) == "after\n"


def test_a_deleted_socket_is_bound_again_and_running_jobs_go_on(agents: Agents) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)
    client.ok("submit", job_id=1, run="sleep 1000")
    assert client.wait_state(1, {"RUNNING"} | FINISHED)["state"] == "RUNNING"
    node.socket.unlink()

    def answering() -> bool:
        try:
            with AgentClient(node.socket, timeout=2) as fresh:
                return bool(fresh.ok("hello"))
        except OSError:
            return False

    eventually(answering, 5.0, "the agent to answer on its socket again")
    with AgentClient(node.socket) as fresh:
        assert fresh.job(1)["state"] == "RUNNING"
