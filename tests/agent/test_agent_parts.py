"""The agent's parts on their own: the state table, conditional writes, log reading, bundling."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

from stixd.agent.logs import read_log
from stixd.agent.spec import JobSpec, job_environment
from stixd.agent.states import ACTIVE, TERMINAL, TRANSITIONS, JobState
from stixd.agent.store import JobStore
from stixd.agent_bundle import AGENT_SOURCE, build_agent_zipapp, build_id

from .conftest import AGENT_PYTHON

S = JobState
DESIGNED_MOVES = {
    (S.INIT, S.PENDING),
    (S.PENDING, S.SETTING_UP),
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.SUCCEEDED),
    (S.SETTING_UP, S.RUNNING),
    (S.SETTING_UP, S.SUCCEEDED),
    (S.SETTING_UP, S.FAILED_SETUP),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    *((source, abort) for source in ACTIVE for abort in (S.CANCELLED, S.FAILED_DRIVER)),
}


BASE_SPEC = JobSpec(
    job_id=1,
    name=None,
    setup=None,
    run="true",
    envs={},
    workdir=None,
    num_gpus=0.0,
    task_id="t",
    node_rank=0,
    node_ips=["10.0.0.1"],
    num_nodes=1,
    cluster_info={},
)


def _spec(**changes: Any) -> JobSpec:
    return dataclasses.replace(BASE_SPEC, **changes)


def _state(store: JobStore, job_id: int) -> JobState:
    row = store.job(job_id)
    assert row is not None
    return row.state


def test_every_state_pair_is_allowed_exactly_as_designed() -> None:
    for source in JobState:
        for target in JobState:
            allowed = target in TRANSITIONS[source]
            assert allowed == ((source, target) in DESIGNED_MOVES), (source, target)


def test_terminal_states_are_the_last_five_and_lead_nowhere() -> None:
    assert {s.value for s in TERMINAL} == {
        "SUCCEEDED",
        "FAILED",
        "FAILED_SETUP",
        "FAILED_DRIVER",
        "CANCELLED",
    }
    assert all(not TRANSITIONS[state] for state in TERMINAL)


def test_a_cancelled_job_is_never_overwritten_by_its_runner(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "agent.db", create=True)
    store.insert_job(_spec(), time.time())
    assert store.record_launch(1, pid=4242, token="99")

    assert store.transition(1, S.CANCELLED, ended_at=time.time())
    assert not store.transition(1, S.RUNNING, runner_pid=4242, started_at=time.time())
    assert not store.transition(1, S.SUCCEEDED, runner_pid=4242, exit_code=0)
    assert _state(store, 1) == S.CANCELLED


def test_only_the_runner_that_claimed_a_job_may_move_it(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "agent.db", create=True)
    store.insert_job(_spec(), time.time())
    assert store.record_launch(1, pid=100, token="1")

    assert not store.record_launch(1, pid=200, token="2")
    assert not store.transition(1, S.RUNNING, runner_pid=200)
    assert store.transition(1, S.RUNNING, runner_pid=100)


def test_submitting_an_existing_job_id_changes_nothing(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "agent.db", create=True)
    assert store.insert_job(_spec(name="first"), 1.0)

    assert not store.insert_job(_spec(name="second"), 2.0)
    row = store.job(1)
    assert row is not None and row.name == "first"


def test_user_envs_cannot_override_the_node_variables() -> None:
    spec = _spec(envs={"SKYPILOT_NODE_RANK": "7", "STIX_JOB_ID": "x", "OWN": "y"}, node_rank=2)

    env = job_environment(spec, {"PATH": "/bin"}, setup=False)

    assert (env["SKYPILOT_NODE_RANK"], env["STIX_JOB_ID"], env["OWN"]) == ("2", "1", "y")
    assert env["PATH"] == "/bin"


def test_read_log_holds_back_an_unfinished_line_until_the_job_ends(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_bytes(b"done\nhalf")

    running = read_log(log, 0, 1024, finished=False)
    finished = read_log(log, 5, 1024, finished=True)

    assert (running.data, running.next_offset) == (b"done\n", 5)
    assert (finished.data, finished.next_offset, finished.file_size) == (b"half", 9, 9)


def test_read_log_never_splits_a_character_when_cut_short(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_bytes("a€b".encode())  # € is three bytes

    chunks, offset = [], 0
    while offset < 5:
        chunk = read_log(log, offset, 2, finished=True)
        chunks.append(chunk.data.decode())
        offset = chunk.next_offset

    assert chunks == ["a", "€", "b"]  # the lone € is returned whole though it exceeds 2 bytes


def test_read_log_of_a_job_without_a_log_yet_is_empty(tmp_path: Path) -> None:
    chunk = read_log(tmp_path / "missing.log", 0, 1024, finished=False)

    assert (chunk.data, chunk.next_offset, chunk.file_size) == (b"", 0, 0)


def test_bundle_is_named_by_build_and_runs_as_stix_agent(tmp_path: Path) -> None:
    pyz = build_agent_zipapp(tmp_path)

    assert pyz.name == f"stix-agent-{build_id()}.pyz"
    with zipfile.ZipFile(pyz) as archive:
        names = set(archive.namelist())
        assert archive.read("stix_agent/_build.txt").decode().strip() == build_id()
    assert {"__main__.py", "stix_agent/cli.py", "stix_agent/__init__.py"} <= names
    printed = subprocess.run(
        [AGENT_PYTHON, str(pyz), "build"], capture_output=True, text=True, check=True
    )
    assert printed.stdout.strip() == build_id()
    assert build_agent_zipapp(tmp_path) == pyz  # reused, not rebuilt


def test_any_change_to_the_agent_source_is_a_new_build(tmp_path: Path) -> None:
    copy = tmp_path / "agent"
    shutil.copytree(AGENT_SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert build_id(copy) == build_id()

    with (copy / "idle.py").open("a") as f:
        f.write("\n")

    assert build_id(copy) != build_id()
