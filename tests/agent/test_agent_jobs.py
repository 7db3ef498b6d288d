"""Jobs on one real agent: running, failing, environment, idempotency, cancel, FIFO, tail."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from .conftest import Agents, eventually, pid_alive, wait_gone

FINISHED = {"SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_DRIVER", "CANCELLED"}


def _gate(path: Path) -> str:
    """A shell loop that waits until the test creates ``path``."""
    return f"while [ ! -e {path} ]; do sleep 0.02; done"


def test_job_runs_setup_then_run_and_succeeds_with_both_outputs_in_its_log(
    agents: Agents,
) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)

    submitted = client.ok(
        "submit",
        job_id=1,
        name="hello",
        setup="echo preparing",
        run="echo hello from run; echo to stderr >&2",
        envs={},
    )["job"]
    assert submitted["state"] == "PENDING"
    job = client.wait_state(1, FINISHED)

    assert job["state"] == "SUCCEEDED"
    assert job["exit_code"] == 0
    assert job["name"] == "hello"
    assert job["submitted_at"] <= job["started_at"] <= job["ended_at"]
    assert client.full_log(1) == "preparing\nhello from run\nto stderr\n"
    assert (node.node_dir / "logs" / "1.log").exists()


def test_failing_setup_is_failed_setup_and_the_run_never_starts(agents: Agents) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)

    client.ok("submit", job_id=1, setup="echo setting up; exit 3", run="echo RUN-STARTED")
    job = client.wait_state(1, FINISHED)

    assert (job["state"], job["exit_code"], job["started_at"]) == ("FAILED_SETUP", 3, None)
    assert client.full_log(1) == "setting up\n"


def test_failing_run_is_failed_with_its_exit_code(agents: Agents) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)

    client.ok("submit", job_id=1, run="echo trying; exit 7")
    job = client.wait_state(1, FINISHED)

    assert (job["state"], job["exit_code"]) == ("FAILED", 7)


def test_job_without_setup_or_run_succeeds(agents: Agents) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)

    client.ok("submit", job_id=1, setup=None, run=None)

    assert client.wait_state(1, FINISHED)["state"] == "SUCCEEDED"


def test_setup_and_run_see_the_node_environment_of_rank_one_of_two(agents: Agents) -> None:
    node = agents.node(cluster="envs", rank=1, num_gpus=1)
    agents.start(node)
    client = agents.client(node)
    workdir = node.root / "work" / "dir"
    dump = (
        f"{sys.executable} -c 'import json, os; "
        'print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(("SKYPILOT_", '
        '"STIX_", "MY_"))}))\''
    )
    cluster_info = {"num_nodes": 2, "provider": "local"}

    client.ok(
        "submit",
        job_id=5,
        name="envs",
        setup=f"echo SETUP; {dump}",
        run=f"echo RUN; pwd; {dump}",
        envs={"MY_VAR": "mine", "SKYPILOT_NODE_RANK": "99"},
        workdir=str(workdir),
        num_gpus=0.5,
        task_id="task-42",
        node_rank=1,
        node_ips=["10.0.0.1", "10.0.0.2"],
        num_nodes=2,
        cluster_info=cluster_info,
    )
    assert client.wait_state(5, FINISHED)["state"] == "SUCCEEDED"

    lines = client.full_log(5).splitlines()
    assert lines[0] == "SETUP" and lines[2] == "RUN"
    assert lines[3] == str(workdir)
    setup_env, run_env = json.loads(lines[1]), json.loads(lines[4])
    expected = {
        "NODE_RANK": "1",
        "NODE_IPS": "10.0.0.1\n10.0.0.2",
        "NUM_NODES": "2",
        "NUM_GPUS_PER_NODE": "1",
        "TASK_ID": "task-42",
        "JOB_ID": "5",
    }
    for env in (setup_env, run_env):
        assert env["MY_VAR"] == "mine"
        for prefix in ("SKYPILOT_", "STIX_"):
            for key, value in expected.items():
                assert env[prefix + key] == value, prefix + key
            assert json.loads(env[prefix + "CLUSTER_INFO"]) == cluster_info
    assert setup_env["SKYPILOT_SETUP_NODE_RANK"] == "1"
    assert setup_env["SKYPILOT_SETUP_NODE_IPS"] == "10.0.0.1\n10.0.0.2"
    assert setup_env["SKYPILOT_SETUP_NUM_GPUS_PER_NODE"] == "1"
    assert "SKYPILOT_SETUP_NODE_RANK" not in run_env


def test_submitting_a_job_id_again_returns_the_first_job_unchanged(agents: Agents) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)

    first = client.ok("submit", job_id=3, name="first", run="echo first")["job"]
    client.wait_state(3, FINISHED)
    again = client.ok("submit", job_id=3, name="second", run="echo second")["job"]

    assert again["name"] == "first"
    assert again["submitted_at"] == first["submitted_at"]
    assert again["state"] == "SUCCEEDED"
    assert [job["job_id"] for job in client.ok("jobs", job_ids=None)["jobs"]] == [3]
    assert client.full_log(3) == "first\n"


def test_cancel_kills_the_jobs_whole_process_group_including_grandchildren(
    agents: Agents,
) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)
    client.ok("submit", job_id=1, run="sleep 1000 & echo $!; sleep 1000 & echo $!; wait")
    runner_pid = client.wait_state(1, {"RUNNING"})["pid"]

    def two_pids() -> list[int]:
        data = client.ok("tail", job_id=1, offset=0, wait=0.5, max_bytes=1000)["data"]
        pids = [int(line) for line in data.split()]
        return pids if len(pids) == 2 else []

    sleepers = eventually(two_pids, 10, "the job to print its children's pids")
    assert all(pid_alive(pid) for pid in sleepers)

    assert client.ok("cancel", job_ids=[1], all=False)["cancelled"] == [1]

    assert client.job(1)["state"] == "CANCELLED"  # recorded at once, before the group is gone
    for pid in [*sleepers, runner_pid]:
        wait_gone(pid)
    assert client.ok("cancel", job_ids=[1], all=False)["cancelled"] == []


def test_cancel_all_cancels_pending_and_running_jobs(agents: Agents) -> None:
    node = agents.node(num_gpus=1)
    agents.start(node)
    client = agents.client(node)
    client.ok("submit", job_id=1, run="sleep 1000", num_gpus=1)
    client.ok("submit", job_id=2, run="sleep 1000", num_gpus=1)
    client.wait_state(1, {"RUNNING"})

    assert client.ok("cancel", job_ids=None, all=True)["cancelled"] == [1, 2]

    states = [job["state"] for job in client.ok("jobs", job_ids=None)["jobs"]]
    assert states == ["CANCELLED", "CANCELLED"]


def test_a_gpu_job_waits_behind_a_running_one_and_blocks_the_queue_behind_it(
    agents: Agents,
) -> None:
    node = agents.node(num_gpus=1)
    agents.start(node)
    client = agents.client(node)
    go = node.root / "go"

    client.ok("submit", job_id=1, run=_gate(go), num_gpus=1)
    client.ok("submit", job_id=2, run="echo two", num_gpus=1)
    client.ok("submit", job_id=3, run="echo three", num_gpus=0)
    client.wait_state(1, {"RUNNING"})

    still = client.ok("wait", job_id=2, state="PENDING", timeout=0.5)["job"]
    assert still["state"] == "PENDING"
    assert client.job(3)["state"] == "PENDING"  # FIFO: it may not pass the blocked job 2

    go.touch()
    assert client.wait_state(1, FINISHED)["state"] == "SUCCEEDED"
    assert client.wait_state(2, FINISHED)["state"] == "SUCCEEDED"
    assert client.wait_state(3, FINISHED)["state"] == "SUCCEEDED"
    assert client.job(2)["started_at"] >= client.job(1)["ended_at"]


def test_tail_returns_whole_lines_by_byte_offset_and_long_polls_for_more(agents: Agents) -> None:
    node = agents.node()
    agents.start(node)
    client = agents.client(node)
    go, go2 = node.root / "go", node.root / "go2"
    client.ok(
        "submit",
        job_id=1,
        run=f"echo first; {_gate(go)}; printf partial; {_gate(go2)}; "
        "printf ' line\\nh\\303\\251llo\\n'",
    )

    first = client.ok("tail", job_id=1, offset=0, wait=10, max_bytes=4096)
    assert (first["data"], first["offset"], first["eof"]) == ("first\n", 6, False)

    began = time.monotonic()
    idle = client.ok("tail", job_id=1, offset=6, wait=0.3, max_bytes=4096)
    assert (idle["data"], idle["offset"]) == ("", 6)
    assert time.monotonic() - began >= 0.25  # it waited for data instead of answering at once

    go.touch()
    log_file = node.node_dir / "logs" / "1.log"
    eventually(lambda: log_file.stat().st_size > 6, 10, "the partial line to be written")
    partial = client.ok("tail", job_id=1, offset=6, wait=0, max_bytes=4096)
    assert (partial["data"], partial["offset"]) == ("", 6)  # half a line is held back

    threading.Timer(0.2, go2.touch).start()
    rest, offset = "", 6
    while True:
        reply = client.ok("tail", job_id=1, offset=offset, wait=10, max_bytes=4096)
        rest, offset = rest + reply["data"], reply["offset"]
        if reply["eof"]:
            break
    assert rest == "partial line\nhéllo\n"
    assert reply["state"] == "SUCCEEDED"
    assert offset == log_file.stat().st_size

    hello_at = offset - len("héllo\n".encode())
    cut = client.ok("tail", job_id=1, offset=hello_at, wait=0, max_bytes=2)
    assert (cut["data"], cut["offset"], cut["eof"]) == ("h", hello_at + 1, False)
    char = client.ok("tail", job_id=1, offset=hello_at + 1, wait=0, max_bytes=2)
    assert (char["data"], char["offset"]) == ("é", hello_at + 3)
