"""Launches are interruptible, and stop and down write their intent before the provider is
called: a real daemon, the fake provider (tests only) with slow launches, stops and
terminates, and its machines kept in a file so they outlive a `kill -9` as a cloud's do."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from tests.conftest import Stix, wait_until

LAUNCH_S = 20.0
"""A launch this slow is still provisioning whenever the tests below act on it."""
TASK = "resources:\n  infra: fake\nenvs:\n  STIX_FAKE_RUN_SECONDS: '3600'\nrun: train\n"


def fake_daemon(stix: Stix, **settings: object) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__PERSIST"] = "true"
    for key, value in settings.items():
        stix.env[f"STIX__FAKE__{key.upper()}"] = str(value)


def machines(stix: Stix) -> dict[str, list[dict[str, Any]]]:
    """What the fake cloud holds, as its machines file says (written at every change)."""
    path = stix.home / "fake" / "machines.json"
    clusters: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())["clusters"]
    return clusters


def launching(stix: Stix, name: str) -> dict[str, Any] | None:
    cluster = stix.clusters().get(name)
    return cluster if cluster and cluster["activity"] == "launching" else None


def start_slow_launch(
    stix: Stix, task_file: Callable[[str], Path], name: str
) -> subprocess.Popen[str]:
    fake_daemon(stix, launch_seconds=LAUNCH_S)
    client = stix.popen("launch", "-c", name, "-y", str(task_file(TASK)))
    wait_until(lambda: launching(stix, name), timeout=30, interval=0.1)
    return client


def ended(client: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = client.communicate(timeout=30)
    return client.returncode, err


def test_down_during_a_launch_ends_it_at_once_and_leaves_nothing(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    began = time.monotonic()
    client = start_slow_launch(stix, task_file, "x")
    stix.run("down", "x", "-y", check=True)
    code, err = ended(client)
    assert time.monotonic() - began < LAUNCH_S, "down waited for the launch to end"
    assert code == 130 and "the launch of 'x' was interrupted: down requested" in err
    assert "x" not in stix.clusters() and "x" not in machines(stix)
    events = stix.json("events", "x")
    assert [e["to_state"] for e in events if e["to_state"]][-3:] == [
        "INIT",
        "TERMINATING",
        "TERMINATED",
    ]
    assert "down requested during its launch" in events[-1]["why"]


def test_status_refresh_answers_while_a_launch_runs(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    client = start_slow_launch(stix, task_file, "x")
    try:
        out = stix.run("status", "--refresh", check=True, timeout=LAUNCH_S / 2).stdout
        assert client.poll() is None, "status answered only once the launch was over"
        assert "INIT" in out and "launching" in out
    finally:
        stix.run("down", "x", "-y", check=True)
        ended(client)


def test_stop_during_a_launch_stops_it_and_ends_its_job_with_a_reason(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    began = time.monotonic()
    client = start_slow_launch(stix, task_file, "x")
    stix.run("stop", "x", "-y", check=True)
    code, err = ended(client)
    assert time.monotonic() - began < LAUNCH_S, "stop waited for the launch to end"
    assert code == 130 and "the launch of 'x' was interrupted: stop requested" in err
    assert stix.clusters()["x"]["status"] == "STOPPED"
    assert not [n for n in machines(stix).get("x", []) if n["running"]]
    assert all(j["status"] == "CANCELLED" for j in stix.jobs("x").values())


def test_requests_during_a_launch_wait_for_it_and_run_in_order(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, launch_seconds=3)
    launch = stix.popen("launch", "-c", "x", "-y", "-d", str(task_file(TASK)))
    wait_until(lambda: launching(stix, "x"), timeout=30, interval=0.1)
    exec_ = stix.run("exec", "x", "-d", str(task_file(TASK)), check=True)
    out, err = launch.communicate(timeout=30)
    assert launch.returncode == 0, (out, err)
    assert "ID: 2" in exec_.stdout + exec_.stderr
    assert stix.clusters()["x"]["status"] == "UP"
    assert sorted(stix.jobs("x")) == [1, 2]


def test_a_down_killed_while_the_provider_terminates_is_finished_after_restart(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, terminate_seconds=60)
    stix.run("launch", "-c", "x", "-y", "-d", str(task_file(TASK)), check=True)
    down = stix.popen("down", "x", "-y")
    wait_until(lambda: stix.clusters()["x"]["activity"] == "terminating", interval=0.1)
    assert stix.clusters()["x"]["status"] == "INIT"  # SkyPilot's name: may be live or down
    stix.kill_daemon()
    down.communicate(timeout=30)
    assert "x" in machines(stix), "the terminate was not in flight"
    stix.env["STIX__FAKE__TERMINATE_SECONDS"] = "0.5"
    wait_until(lambda: "x" not in stix.clusters(), timeout=30, interval=0.2)  # restarts it
    assert machines(stix) == {}
    events = stix.json("events", "x")
    ends = [e["why"] for e in events if e["kind"] == "cluster" and e["to_state"] == "TERMINATED"]
    assert "after a daemon restart" in ends[-1]
    assert [e["to_state"] for e in events if e["kind"] == "job"][-1] == "CANCELLED"


def test_a_stop_killed_while_the_provider_stops_is_finished_after_restart(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, stop_seconds=60)
    stix.run("launch", "-c", "x", "-y", "-d", str(task_file(TASK)), check=True)
    stop = stix.popen("stop", "x", "-y")
    wait_until(lambda: stix.clusters()["x"]["activity"] == "stopping", interval=0.1)
    stix.kill_daemon()
    stop.communicate(timeout=30)
    assert machines(stix)["x"][0]["running"], "the stop was not in flight"
    stix.env["STIX__FAKE__STOP_SECONDS"] = "0.5"
    wait_until(lambda: stix.clusters()["x"]["status"] == "STOPPED", timeout=30, interval=0.2)
    assert [n["running"] for n in machines(stix)["x"]] == [False]
    assert stix.jobs("x")[1]["status"] == "CANCELLED"


def test_the_table_says_what_is_under_way_in_the_reason_of_an_init_cluster() -> None:
    from stixctl import render
    from stixproto import messages as m

    c = m.ClusterRecord(
        name="c", status="INIT", infra="fake", num_nodes=1, resources="1x fake",
        launched_at=0.0, updated_at=0.0, activity="terminating",
    )  # fmt: skip
    assert render.clusters([c]).splitlines()[2].endswith("terminating")
    failed = msgspec.structs.replace(c, activity="launching", last_error="no capacity in fake-1")
    assert render.init_reason(failed) == "launching: no capacity in fake-1"


def test_an_autostop_killed_while_the_provider_stops_is_finished_after_restart(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, stop_seconds=60)
    quick = TASK.replace("'3600'", "'0'")
    stix.run("launch", "-c", "x", "-y", "-d", "-i", "0", str(task_file(quick)), check=True)
    wait_until(lambda: stix.clusters()["x"]["status"] == "AUTOSTOPPING", interval=0.1)
    stix.kill_daemon()
    assert machines(stix)["x"][0]["running"], "the stop was not in flight"
    stix.env["STIX__FAKE__STOP_SECONDS"] = "0.5"
    wait_until(lambda: stix.clusters()["x"]["status"] == "STOPPED", timeout=30, interval=0.2)
    assert [n["running"] for n in machines(stix)["x"]] == [False]
    why = [e["why"] for e in stix.json("events", "x") if e["to_state"] == "STOPPED"]
    assert why == ["autostop: finishing it after a daemon restart"]


def test_a_second_down_joins_the_first_and_a_stop_meanwhile_is_refused(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, terminate_seconds=3)
    stix.run("launch", "-c", "x", "-y", "-d", str(task_file(TASK)), check=True)
    first = stix.popen("down", "x", "-y")
    wait_until(lambda: stix.clusters()["x"]["activity"] == "terminating", interval=0.1)
    stop = stix.run("stop", "x", "-y")
    assert stop.returncode == 4 and "is being terminated" in stop.stderr
    second = stix.run("down", "x", "-y", check=True)
    assert "x" not in stix.clusters()  # the second answered once the cluster was gone
    assert "cluster x terminated" in second.stdout + second.stderr
    first.communicate(timeout=30)
    assert first.returncode == 0
    assert "x" not in machines(stix)


def test_down_during_a_round_of_a_retrying_launch_ends_it_as_between_rounds(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    began = time.monotonic()
    fake_daemon(stix, launch_seconds=LAUNCH_S, no_capacity_launches=10_000)
    client = stix.popen("launch", "-c", "x", "-y", "--retry-until-up", str(task_file(TASK)))
    wait_until(lambda: launching(stix, "x"), timeout=30, interval=0.1)
    stix.run("down", "x", "-y", check=True)
    code, err = ended(client)
    assert time.monotonic() - began < LAUNCH_S, "down waited for the round to end"
    assert code == 5 and "interrupted: down requested" in err
    assert "stopped waiting for capacity" in err
    assert "x" not in stix.clusters()
