"""Jobs cannot harm stix: on `local` they see none of stix's Python, stix's node files sit out of
their way, and a job that deletes them anyway ends with a reason and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from stixd.providers.shared.bootstrap import RemoteFacts, _layout
from tests.conftest import REPO, Stix, pid_alive, processes_mentioning, wait_until
from tests.sshbed import SshBed, bed_fixture

ssh_host = bed_fixture(1, scope="module")


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds ``entry`` exactly."""
    wanted = entry.encode()
    return [
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit() and wanted in _environ(int(name)) and pid_alive(int(name))
    ]


def test_a_job_on_local_sees_nothing_of_stixs_virtualenv(stix: Stix, tmp_path: Path) -> None:
    # stix run from a real virtualenv, activated as a user would, with PYTHONPATH set
    env_dir = tmp_path / "stixvenv"
    venv.create(env_dir, system_site_packages=True, with_pip=False, symlinks=True)
    stix_venv = str(env_dir.resolve())
    env = {
        **stix.env,
        "VIRTUAL_ENV": stix_venv,
        "PATH": f"{stix_venv}/bin{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }
    job = "python3 -c 'import sys; print(\"prefix=\" + sys.prefix)'; env"
    proc = subprocess.run(
        [f"{stix_venv}/bin/python", "-m", "stixctl", "launch", "-c", "venv", "-y", job],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=stix.home,
    )
    assert proc.returncode == 0, proc.stderr
    seen = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    prefix = os.path.realpath(seen["prefix"])
    assert not prefix.startswith(stix_venv), (
        "a job's python3 is stix's venv: pip would install there"
    )
    assert "VIRTUAL_ENV" not in seen
    assert "PYTHONPATH" not in seen and "PYTHONHOME" not in seen
    assert not any(stix_venv in os.path.realpath(p) for p in seen["PATH"].split(os.pathsep))
    markers = {"STIX_LOCAL_NODE", "STIX_NODE_DIR"}  # how stop and down find a node's processes
    internal = [k for k in seen if k.startswith("STIX_") and k not in markers]
    # only the job's own variables (the SKYPILOT_* twins), none of the daemon's configuration
    assert "STIX_HOME" not in internal and not [k for k in internal if k.startswith("STIX__")]
    assert set(internal) <= {
        "STIX_" + k[len("SKYPILOT_") :] for k in seen if k.startswith("SKYPILOT_")
    }
    assert seen["HOME"] == str(stix.node_dir("venv"))


def test_cleaning_logs_and_home_leaves_every_jobs_log_readable(stix: Stix) -> None:
    stix.run("launch", "-c", "tidy", "-y", "echo output-of-the-first-job", check=True)
    cleaner = "rm -rf ~/logs ~/*; echo cleaned"
    assert "cleaned" in stix.run("exec", "tidy", cleaner, check=True).stdout
    first = stix.run("logs", "tidy", "1", "--no-follow", check=True).stdout
    assert "output-of-the-first-job" in first
    assert "ok" in stix.run("exec", "tidy", "echo ok", check=True).stdout
    state = stix.node_dir("tidy") / ".stix"
    assert (state / "agent.db").is_file() and (state / "logs" / "1.log").is_file()
    assert not (stix.node_dir("tidy") / "agent.db").exists()


@pytest.mark.parametrize("deletion", ["rm -rf ~/.stix", "rm -rf ~"])
def test_a_job_deleting_stixs_node_files_ends_with_a_reason_and_down_leaves_nothing(
    stix: Stix, deletion: str
) -> None:
    stix.run("launch", "-c", "wipe", "-y", "true", check=True)
    node = stix.node_dir("wipe")
    marker = f"STIX_LOCAL_NODE={node}"
    # a detached child (its own session: no job group reaches it), then the deletion
    job = f"setsid sleep 4321 < /dev/null > /dev/null 2>&1 & {deletion}; sleep 4321"
    stix.run("exec", "wipe", "-d", job, check=True)
    wait_until(lambda: stix.job_status("wipe", 2) == "FAILED_DRIVER", timeout=30)
    events = stix.json("events", "wipe")
    reasons = [e["why"] for e in events if e["id"].startswith("wipe/")]
    assert any("deleted" in r for r in reasons), events
    # its log says so (written again if the deletion, still running, took it too)
    note = f"stix's node files in {node}/.stix were deleted"
    wait_until(lambda: note in stix.run("logs", "wipe", "2", "--no-follow").stdout, timeout=5)
    # the node still answers: new jobs run, and its files are back in place
    assert "alive" in stix.run("exec", "wipe", "echo alive", check=True).stdout
    assert (node / ".stix" / "agent.db").is_file()

    detached = [p for p in processes_with_env(marker) if "4321" in _cmd(p)]
    assert detached, "the detached child should still run before down"
    stix.run("down", "wipe", "-y", check=True, timeout=60)
    assert not processes_with_env(marker)
    assert not [p for p in processes_mentioning(str(node)) if pid_alive(p)]
    assert not any(pid_alive(p) for p in detached)


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_node_of_the_earlier_layout_is_used_where_it_is_and_moved_on_restart(
    stix: Stix,
) -> None:
    stix.run("launch", "-c", "old", "-y", "echo from-the-old-layout", check=True)
    node = stix.node_dir("old")
    stix.run("daemon", "stop", check=True)
    for pid in stix.agents("old"):
        os.kill(pid, 9)
    wait_until(lambda: not stix.agents("old"))
    # make the node what an earlier version left: its files in the node directory itself
    for path in (node / ".stix").iterdir():
        if path.name != "agent.sock":
            path.rename(node / path.name)
    shutil.rmtree(node / ".stix")  # with the socket the killed agent left
    with sqlite3.connect(stix.home / "state.db") as db:  # and the addresses it recorded
        for column in ("spec", "data"):
            moved = f"replace({column}, '/.stix/agent.sock', '/agent.sock')"
            db.execute(f"UPDATE actors SET {column} = {moved}")
    pyz = next((stix.home).rglob("stix-agent-*.pyz"))
    argv = [sys.executable, str(pyz), "serve", "--node-dir", str(node)]
    argv += ["--socket", str(node / "agent.sock"), "--cluster", "old", "--rank", "0"]
    legacy_agent = subprocess.Popen(
        argv,
        env={**os.environ, "HOME": str(node)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: (node / "agent.sock").exists())
    [legacy] = wait_until(lambda: stix.agents("old"))

    assert stix.clusters()["old"]["status"] == "UP"
    assert "still-served" in stix.run("exec", "old", "echo still-served", check=True).stdout
    assert "from-the-old-layout" in stix.run("logs", "old", "1", "--no-follow", check=True).stdout
    assert pid_alive(legacy) and not (node / ".stix").exists()

    stix.run("stop", "old", "-y", check=True)
    wait_until(lambda: not pid_alive(legacy))
    legacy_agent.wait(timeout=10)
    stix.run("start", "old", "-y", check=True)
    assert (node / ".stix" / "agent.db").is_file() and not (node / "agent.db").exists()
    assert "from-the-old-layout" in stix.run("logs", "old", "1", "--no-follow", check=True).stdout
    assert "new-home" in stix.run("exec", "old", "echo new-home", check=True).stdout


def test_ssh_and_cloud_nodes_keep_their_files_in_a_hidden_directory() -> None:
    facts = RemoteFacts(home="/home/u", uid=1000, python="/usr/bin/python3", python_version=(3, 8))
    where = _layout(facts, "c1", 0, "b1", None)
    for path in (where.node_dir, where.pyz):
        assert path.startswith("/home/u/.stix/"), path
    assert where.socket_path == "/home/u/.stix/nodes/c1-0/agent.sock"


def test_on_an_ssh_host_node_files_are_hidden_and_survive_a_job_that_deletes_them(
    stix: Stix, ssh_host: SshBed
) -> None:
    [host] = ssh_host.hosts
    (stix.home / "ssh_node_pools.yaml").write_text(
        f"bed:\n  user: root\n  identity_file: {ssh_host.key}\n  hosts:\n    - {host.ip}\n"
    )
    stix.run("launch", "-c", "sh", "--infra", "ssh/bed", "-y", "echo first", check=True, timeout=90)
    state = host.home / ".stix" / "nodes" / "sh-0"
    assert (state / "agent.db").is_file() and (state / "logs" / "1.log").is_file()
    stix.run("exec", "sh", "rm -rf ~/logs ~/*", check=True, timeout=60)
    assert "first" in stix.run("logs", "sh", "1", "--no-follow", check=True).stdout

    job = "setsid sleep 4322 < /dev/null > /dev/null 2>&1 & rm -rf ~/.stix; sleep 4321"
    stix.run("exec", "sh", "-d", job, check=True, timeout=60)
    wait_until(lambda: stix.job_status("sh", 3) == "FAILED_DRIVER", timeout=30)
    reasons = [e["why"] for e in stix.json("events", "sh") if e["id"].startswith("sh/")]
    assert any("were deleted while the job ran" in r for r in reasons)
    assert (state / "agent.db").is_file()
    assert any("sleep 4322" in _cmd(p) for p in host.pids())  # detached: outlived its job
    stix.run("down", "sh", "-y", check=True, timeout=60)

    def leftovers() -> list[str]:
        found = [_cmd(p) for p in host.pids()]
        return [c for c in found if "stix-agent" in c or "sleep 432" in c]

    wait_until(lambda: not leftovers(), timeout=10)
