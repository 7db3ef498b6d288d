"""Nothing is lost: kill -9 of the daemon at any moment, autostop with nobody watching."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from stixd.agent_bundle import build_agent_zipapp, build_id
from tests.conftest import Stix, pid_alive, wait_until

COUNTING = """
setup: |
  echo setup-start
  sleep {setup_sleep}
  echo setup-end
run: |
  for i in $(seq 1 {lines}); do echo line-$i; sleep {step}; done
"""


def _assert_consistent(stix: Stix, cluster: str, nodes: int = 1) -> None:
    """One agent per node, one record per job, every job final and its log complete."""
    assert len(stix.agents(cluster)) == nodes
    clusters = stix.clusters()
    assert clusters[cluster]["status"] == "UP"
    assert clusters[cluster]["num_nodes"] == nodes


@pytest.mark.parametrize("phase", ["setup", "run"])
def test_kill9_during_a_job_loses_nothing(stix: Stix, task_file, phase: str) -> None:
    path = task_file(COUNTING.format(setup_sleep=1.5, lines=8, step=0.25))
    stix.run("launch", "-c", "k", "-d", "-y", str(path), check=True)
    wanted = "SETTING_UP" if phase == "setup" else "RUNNING"
    wait_until(lambda: stix.job_status("k", 1) == wanted)
    stix.kill_daemon()
    log = stix.state_dir("k") / "logs" / "1.log"
    size = log.stat().st_size if log.exists() else 0
    # the job goes on without the daemon: its log keeps growing
    wait_until(lambda: log.exists() and log.stat().st_size > size, timeout=10)
    wait_until(lambda: stix.job_status("k", 1) == "SUCCEEDED", timeout=30)  # restarts stixd
    _assert_consistent(stix, "k")
    assert list(stix.jobs("k")) == [1]
    out = stix.run("logs", "k", "1", "--no-follow", check=True).stdout.split()
    assert out == ["setup-start", "setup-end"] + [f"line-{i}" for i in range(1, 9)]
    events = [e for e in stix.json("events", "k") if e["id"].endswith("/1")]
    assert [e["to_state"] for e in events if e["to_state"]][-1] == "SUCCEEDED"


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.25, 0.5])
def test_kill9_during_launch_finishes_or_never_started(stix: Stix, task_file, delay: float) -> None:
    path = task_file("num_nodes: 2\nrun: echo done-$SKYPILOT_NODE_RANK\n")
    stix.run("daemon", "start", check=True)
    client = stix.popen("launch", "-c", "kl", "-y", str(path))
    time.sleep(delay)
    stix.kill_daemon()
    client.communicate(timeout=30)
    stix.run("daemon", "start", check=True)
    clusters = {c["name"]: c for c in stix.json("status", "--all")}
    if "kl" not in clusters or clusters["kl"]["status"] == "TERMINATED":
        assert not stix.agents("kl")  # the request never got far enough to make anything
        return
    wait_until(lambda: stix.clusters()["kl"]["status"] == "UP", timeout=30)
    wait_until(lambda: stix.job_status("kl", 1) == "SUCCEEDED", timeout=30)
    _assert_consistent(stix, "kl", nodes=2)
    assert list(stix.jobs("kl")) == [1]
    logs = stix.run("logs", "kl", "1", "--no-follow", check=True).stdout
    assert "done-0" in logs and "done-1" in logs


def test_daemon_restart_upgrades_an_old_agent_without_killing_its_job(
    stix: Stix, tmp_path: Path
) -> None:
    stix.run("launch", "-c", "up", "-y", "true", check=True)
    stix.run("exec", "up", "-d", "for i in 1 2 3 4 5 6; do echo u$i; sleep 0.3; done", check=True)
    wait_until(lambda: stix.job_status("up", 2) == "RUNNING")
    # turn the running agent into another build, as if it came from an older stix
    bundle = sys.modules["stixd.agent_bundle"].__file__
    assert bundle is not None
    source = Path(bundle).parent / "agent"
    old_src = tmp_path / "agent"
    shutil.copytree(source, old_src)
    with (old_src / "__init__.py").open("a") as f:
        f.write("\n# an older build\n")
    old_pyz = build_agent_zipapp(tmp_path / "old", source=old_src)
    assert build_id(old_src) != build_id()
    [agent] = stix.agents("up")
    sock = str(stix.state_dir("up") / "agent.sock")
    import socket

    def call(op: dict) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(json.dumps(op).encode() + b"\n")
            return json.loads(s.makefile().readline())

    call({"op": "upgrade", "pyz": str(old_pyz)})
    wait_until(lambda: _safe(call, {"op": "hello"}).get("build") == build_id(old_src))
    stix.run("daemon", "stop", check=True)
    stix.run("daemon", "start", check=True)
    wait_until(lambda: _safe(call, {"op": "hello"}).get("build") == build_id(), timeout=20)
    assert stix.agents("up") == [agent]  # same process, upgraded in place
    wait_until(lambda: stix.job_status("up", 2) == "SUCCEEDED", timeout=30)
    out = stix.run("logs", "up", "2", "--no-follow", check=True).stdout.split()
    assert out == [f"u{i}" for i in range(1, 7)]
    assert any(e["event"] == "agent_upgraded" for e in stix.json("events", "up"))


def _safe(fn, arg) -> dict:
    try:
        return fn(arg)
    except OSError:
        return {}


def test_autostop_stops_an_idle_cluster_and_status_says_when(stix: Stix) -> None:
    stix.run("launch", "-c", "as", "-y", "-i", "0.04", "sleep 1", check=True)
    record = stix.clusters()["as"]
    assert record["autostop_idle_minutes"] == pytest.approx(0.04)
    wait_until(lambda: stix.clusters()["as"]["status"] == "STOPPED", timeout=30)
    wait_until(lambda: not stix.agents("as"))
    events = [e for e in stix.json("events", "as") if e["id"] == "as"]
    assert [e["to_state"] for e in events][-2:] == ["AUTOSTOPPING", "STOPPED"]


def test_an_autostopped_cluster_stops_accruing_active_time(stix: Stix) -> None:
    stix.run("launch", "-c", "ac2", "-y", "-i", "0.02", "true", check=True)
    wait_until(lambda: stix.clusters()["ac2"]["status"] == "STOPPED", timeout=30)

    def duration() -> float:
        rows = {r["name"]: r for r in stix.json("cost-report")["rows"]}
        return float(rows["ac2"]["duration_seconds"])

    stopped = duration()
    assert stopped > 0.0  # its UP interval was counted
    later = time.monotonic() + 1.0
    wait_until(lambda: time.monotonic() > later)
    assert duration() == stopped


def test_autostop_waits_for_a_busy_cluster(stix: Stix) -> None:
    stix.run("launch", "-c", "busy", "-y", "true", check=True)
    stix.run("exec", "busy", "-d", "sleep 4", check=True)
    stix.run("autostop", "busy", "-i", "0.02", "-y", check=True)
    wait_until(lambda: stix.job_status("busy", 2) == "RUNNING")
    time.sleep(2.0)  # longer than the limit: a running job keeps the cluster up
    assert stix.clusters()["busy"]["status"] == "UP"
    wait_until(lambda: stix.clusters()["busy"]["status"] == "STOPPED", timeout=30)
    assert stix.jobs("busy")[2]["status"] == "SUCCEEDED"


def test_autostop_down_tears_the_cluster_down(stix: Stix) -> None:
    stix.run("launch", "-c", "ad", "-y", "-i", "0.02", "--down", "true", check=True)
    wait_until(lambda: "ad" not in stix.clusters(), timeout=30)
    assert not stix.node_dir("ad").exists()


def test_autostop_cancel(stix: Stix) -> None:
    stix.run("launch", "-c", "ac", "-y", "-i", "0.5", "true", check=True)
    stix.run("autostop", "ac", "--cancel", "-y", check=True)
    assert stix.clusters()["ac"]["autostop_idle_minutes"] is None


def test_dead_mans_switch_stops_nodes_with_the_daemon_gone(stix: Stix) -> None:
    stix.env["STIX__AUTOSTOP__GRACE_MINUTES"] = "0"
    stix.run("launch", "-c", "dm", "-y", "-i", "0.05", "--num-nodes", "2", "true", check=True)
    agents = stix.agents("dm")
    assert len(agents) == 2
    stix.run("daemon", "stop", check=True)
    wait_until(lambda: not any(pid_alive(p) for p in agents), timeout=30)
    for rank in (0, 1):
        assert (stix.state_dir("dm", rank) / "self_stopped.json").exists()
    refreshed = {c["name"]: c for c in stix.json("status", "--refresh")}
    assert refreshed["dm"]["status"] == "STOPPED"
    # the nodes stopped themselves: the daemon only found it out, it did not autostop them
    changes = [e["event"] for e in stix.json("events", "dm") if e["id"] == "dm"]
    assert "found_stopped" in changes and "autostop" not in changes


def test_stopped_daemon_leaves_jobs_running_and_sigterm_is_clean(stix: Stix) -> None:
    stix.run("launch", "-c", "bg", "-y", "true", check=True)
    stix.run("exec", "bg", "-d", "sleep 1.5; echo finished", check=True)
    wait_until(lambda: stix.job_status("bg", 2) == "RUNNING")
    pid = stix.daemon_pid()
    stix.run("daemon", "stop", check=True)
    assert pid is not None and not pid_alive(pid)
    assert "stopped" in (stix.home / "stixd.log").read_text().splitlines()[-1]
    wait_until(lambda: "finished" in (stix.state_dir("bg") / "logs" / "2.log").read_text())
    wait_until(lambda: stix.job_status("bg", 2) == "SUCCEEDED")
