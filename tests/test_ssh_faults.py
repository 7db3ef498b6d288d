"""Faults on SSH node pools, through stixctl and a real stixd on real namespace sshd hosts.

One module-scoped bed of 3 hosts serves every test but the missing-python3 one, which has a
small bed of its own. Every test uses its own cluster names, restores any sshd it killed and
downs its clusters in ``finally``, so a failure in one never leaks into the next (the one test
that cannot down promptly leaves its agents to the bed's teardown).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stix, wait_until
from tests.sshbed import Host, SshBed, bed_fixture, start_sshd

hosts = bed_fixture(3, scope="module")
hosts_one_without_python = bed_fixture(2, nopy=[2], scope="module")


def _pool(stix: Stix, bed: SshBed, *, key: Path | None = None, name: str = "bed") -> None:
    ips = "".join(f"    - {h.ip}\n" for h in bed.hosts)
    (stix.home / "ssh_node_pools.yaml").write_text(
        f"{name}:\n  user: root\n  identity_file: {key or bed.key}\n  hosts:\n{ips}"
    )


@pytest.fixture
def pool(stix: Stix, hosts: SshBed) -> Iterator[Stix]:
    """A daemon with the bed as pool ``bed``; every cluster left is downed at the end."""
    _pool(stix, hosts)
    try:
        yield stix
    finally:
        for h in hosts.hosts:
            if not h.sshd_pids():
                start_sshd(h)
            h.link_up()
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            for name in stix.clusters():
                stix.run("down", name, "-y", timeout=60)


def _launch(stix: Stix, cluster: str, nodes: int, *extra: str) -> None:
    stix.run(
        "launch",
        "-c",
        cluster,
        "--infra",
        "ssh/bed",
        "--num-nodes",
        str(nodes),
        "-y",
        *extra,
        "true",
        check=True,
        timeout=90,
    )


def _commands(host: Host) -> list[str]:
    found = []
    for pid in host.pids():
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            found.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _running(bed: SshBed, text: str) -> list[str]:
    return [f"{h.name}: {c}" for h in bed.hosts for c in _commands(h) if text in c]


def _status(stix: Stix, cluster: str) -> dict:
    return {r["name"]: r for r in stix.json("status", "--refresh")}[cluster]


# -- gang failures -----------------------------------------------------------------------


def test_setup_failing_on_one_node_fails_the_job_before_run_starts_anywhere(
    pool: Stix, hosts: SshBed, task_file
) -> None:
    for h in hosts.hosts:
        (h.home / "ran-setupfail").unlink(missing_ok=True)
    path = task_file(
        "num_nodes: 3\n"
        "resources:\n  infra: ssh/bed\n"
        'setup: test "$SKYPILOT_NODE_RANK" != 1\n'
        "run: touch ~/ran-setupfail\n"
    )
    out = pool.run("launch", "-c", "sf", "-y", str(path), timeout=90)
    assert out.returncode != 0
    assert pool.job_status("sf", 1) == "FAILED_SETUP"
    why = [e["why"] for e in pool.json("events", "sf") if e["to_state"] == "FAILED_SETUP"]
    assert any("rank 1 ended FAILED_SETUP" in w for w in why), why
    # the other ranks set up fine, but the gang is never released: nobody ran `run`
    wait_until(lambda: not _running(hosts, "ran-setupfail"), timeout=15)
    assert not [h.name for h in hosts.hosts if (h.home / "ran-setupfail").exists()]
    assert pool.clusters()["sf"]["status"] == "UP"


def test_cancel_stops_the_job_on_every_node(pool: Stix, hosts: SshBed) -> None:
    _launch(pool, "cx", 3)
    pool.run("exec", "cx", "-d", "--num-nodes", "3", "sleep 313", check=True)
    wait_until(lambda: pool.job_status("cx", 2) == "RUNNING", timeout=30)
    wait_until(lambda: len(_running(hosts, "sleep 313")) >= 3, timeout=15)
    pool.run("cancel", "cx", "2", "-y", check=True, timeout=30)
    wait_until(lambda: pool.job_status("cx", 2) == "CANCELLED", timeout=30)
    wait_until(lambda: not _running(hosts, "sleep 313"), timeout=15)
    # the cluster is still fine: the next job runs on every node
    again = pool.run("exec", "cx", "--num-nodes", "3", "echo after-$SKYPILOT_NODE_RANK", timeout=60)
    assert again.returncode == 0, again.stderr
    assert all(f"after-{r}" in again.stdout for r in range(3))


# -- file sync ---------------------------------------------------------------------------


def test_exec_resyncs_a_changed_workdir_to_every_node_and_only_what_changed(
    pool: Stix, hosts: SshBed, task_file, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "changing.txt").write_text("version-1\n")
    (work / "steady.txt").write_text("unchanged\n" * 100)
    path = task_file(
        f"num_nodes: 2\nworkdir: {work}\nresources:\n  infra: ssh/bed\nrun: cat changing.txt\n"
    )
    first = pool.run("launch", "-c", "ws", "-y", str(path), timeout=90)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("version-1") == 2
    nodes = hosts.hosts[:2]
    steady = [(h.home / "sky_workdir" / "steady.txt").stat() for h in nodes]

    (work / "changing.txt").write_text("version-2, longer\n")
    again = pool.run("exec", "ws", str(path), timeout=60)
    assert again.returncode == 0, again.stderr
    assert "(head, rank=0) version-2, longer" in again.stdout
    assert "(worker1, rank=1) version-2, longer" in again.stdout
    assert "2 file(s) changed" in again.stderr  # changing.txt, once per node
    for h, before in zip(nodes, steady, strict=True):
        assert (h.home / "sky_workdir" / "changing.txt").read_text() == "version-2, longer\n"
        after = (h.home / "sky_workdir" / "steady.txt").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), h.name


# -- sshd killed mid-job ----------------------------------------------------------------


def _sshd_killed_mid_job(
    pool: Stix, hosts: SshBed, grace: float, cluster: str, ticks: int = 30
) -> tuple[Host, float]:
    """A 2-node job running; host 2's whole sshd killed; the cluster seen INIT naming it.
    Returns that host and when its sshd was killed."""
    pool.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
    pool.env["STIX__DAEMON__NODE_GRACE_SECONDS"] = f"{grace:g}"
    _launch(pool, cluster, 2)
    job = f"for i in $(seq 1 {ticks}); do echo tick-$i; sleep 0.25; done"
    pool.run("exec", cluster, "-d", "--num-nodes", "2", job, check=True)
    wait_until(lambda: pool.job_status(cluster, 2) == "RUNNING", timeout=30)
    lost = hosts.hosts[1]
    killed_at = time.time()
    lost.kill_sshd()

    def init_naming_the_node() -> bool:
        c = _status(pool, cluster)
        return c["status"] == "INIT" and lost.ip in (c["last_error"] or "")

    wait_until(init_naming_the_node, timeout=30, interval=0.5)
    return lost, killed_at


def test_sshd_back_within_the_grace_period_reattaches_the_job(pool: Stix, hosts: SshBed) -> None:
    lost, _ = _sshd_killed_mid_job(pool, hosts, grace=60, cluster="sk")
    assert pool.job_status("sk", 2) == "RUNNING"
    start_sshd(lost)
    wait_until(lambda: pool.job_status("sk", 2) == "SUCCEEDED", timeout=40, interval=0.5)
    wait_until(lambda: _status(pool, "sk")["status"] == "UP", timeout=30, interval=0.5)
    assert pool.clusters()["sk"]["last_error"] is None
    logs = pool.run("logs", "sk", "2", "--no-follow", check=True, timeout=30).stdout
    worker = [ln for ln in logs.splitlines() if ln.startswith("(worker1, rank=1) ")]
    assert worker == [f"(worker1, rank=1) tick-{i}" for i in range(1, 31)], logs


def test_sshd_gone_past_the_grace_period_fails_the_job_naming_the_node(
    pool: Stix, hosts: SshBed
) -> None:
    lost, killed_at = _sshd_killed_mid_job(pool, hosts, grace=3, cluster="sg", ticks=400)
    wait_until(lambda: pool.job_status("sg", 2) == "FAILED_DRIVER", timeout=30, interval=0.25)
    [failed] = [e for e in pool.json("events", "sg") if e["to_state"] == "FAILED_DRIVER"]
    assert "unreachable" in failed["why"] and lost.ip in failed["why"], failed
    # at the end of the grace period, not stretched by the SSH reconnect backoff
    assert failed["at"] - killed_at < 3 + 2.5, failed["at"] - killed_at
    head = hosts.hosts[0]
    # a gang fails together: the rank that still answers is stopped at once ...
    wait_until(lambda: not [c for c in _commands(head) if "tick-$i" in c], timeout=15)
    assert [c for c in _commands(lost) if "tick-$i" in c]  # ... the lost one ran on unseen
    start_sshd(lost)
    wait_until(lambda: _status(pool, "sg")["status"] == "UP", timeout=30, interval=0.5)
    # ... and is stopped when its host is back: the node's truth matches the record again
    wait_until(lambda: not _running(hosts, "tick-$i"), timeout=15)
    assert pool.job_status("sg", 2) == "FAILED_DRIVER"
    stopped = [e["why"] for e in pool.json("events", "sg") if e["event"] == "ended_jobs_stopped"]
    assert stopped == ["node 1: job(s) 2 ended while it was away"], stopped


def test_status_refresh_and_down_answer_promptly_during_an_outage(
    stix: Stix, hosts: SshBed
) -> None:
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
    stix.env["STIX__DAEMON__NODE_GRACE_SECONDS"] = "120"
    _pool(stix, hosts)
    _launch(stix, "out", 2)
    lost = hosts.hosts[1]
    lost.kill_sshd()
    began = time.monotonic()
    try:
        while time.monotonic() - began < 12:
            refresh = stix.run("status", "--refresh", "--json", check=True, timeout=5)
            c = {r["name"]: r for r in json.loads(refresh.stdout)}["out"]
            assert c["status"] == "INIT" and lost.ip in (c["last_error"] or ""), c
        stix.run("down", "out", "-y", check=True, timeout=10)
        assert all(r["cluster"] is None for r in stix.json("ssh", "status"))
    finally:
        start_sshd(lost)  # no `down` here: it would wait out the backoff; the bed ends the agents


# -- the daemon killed mid-job ----------------------------------------------------------


@pytest.mark.parametrize("phase", ["SETTING_UP", "RUNNING"])
def test_daemon_kill9_mid_job_on_ssh_hosts_loses_no_line(
    pool: Stix, hosts: SshBed, task_file, phase: str
) -> None:
    cluster = f"dk{phase[0].lower()}"
    path = task_file(
        "num_nodes: 2\n"
        "resources:\n  infra: ssh/bed\n"
        "setup: |\n  echo setup-start\n  sleep 2\n  echo setup-end\n"
        "run: |\n  for i in $(seq 1 16); do echo line-$i; sleep 0.25; done\n"
    )
    pool.run("launch", "-c", cluster, "-d", "-y", str(path), check=True, timeout=90)
    wait_until(lambda: pool.job_status(cluster, 1) == phase, timeout=30)
    pool.kill_daemon()
    # the job goes on without the daemon on both hosts (a gang in setup waits for its release)
    assert len(_running(hosts, "setup-start" if phase == "SETTING_UP" else "line-$i")) >= 2
    wait_until(lambda: pool.job_status(cluster, 1) == "SUCCEEDED", timeout=40, interval=0.5)
    assert pool.clusters()[cluster]["status"] == "UP"
    assert list(pool.jobs(cluster)) == [1]
    out = pool.run("logs", cluster, "1", "--no-follow", check=True, timeout=30).stdout
    for label in ("(head, rank=0)", "(worker1, rank=1)"):
        mine = [ln.removeprefix(f"{label} ") for ln in out.splitlines() if ln.startswith(label)]
        assert mine == ["setup-start", "setup-end"] + [f"line-{i}" for i in range(1, 17)], out


# -- bad hosts ---------------------------------------------------------------------------


def test_a_wrong_key_fails_the_launch_naming_the_host_and_holds_nothing(
    stix: Stix, hosts: SshBed, tmp_path: Path
) -> None:
    key = tmp_path / "id_wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    _pool(stix, hosts, key=key)  # a key that no host accepts
    try:
        out = stix.run("launch", "-c", "wk", "--infra", "ssh/bed", "-y", "true", timeout=90)
        assert out.returncode != 0
        assert hosts.hosts[0].ip in out.stderr and "authentication" in out.stderr, out.stderr
        assert stix.clusters().get("wk", {}).get("status") != "UP"
        assert all(r["cluster"] is None for r in stix.json("ssh", "status"))
        up = stix.run("ssh", "up", "bed", timeout=60)
        assert up.returncode == 1 and "Pool bed: 0/3 host(s) ready" in up.stdout
        for h in hosts.hosts:
            [line] = [ln for ln in up.stdout.splitlines() if h.ip in ln]
            assert "authentication" in line, line
        # the user names the right key in the pool: the same hosts work, without a daemon
        # restart, for a new cluster as for the one that failed
        _pool(stix, hosts)
        for name in ("ok", "wk"):
            fine = stix.run("launch", "-c", name, "--infra", "ssh/bed", "-y", "hostname")
            assert fine.returncode == 0, fine.stderr
    finally:
        _pool(stix, hosts)
        for name in stix.clusters():
            stix.run("down", name, "-y", timeout=60)


def test_a_changed_identity_file_in_the_pool_takes_effect_without_a_restart(
    stix: Stix, hosts: SshBed, tmp_path: Path
) -> None:
    _pool(stix, hosts)
    try:
        stix.run("launch", "-c", "k1", "--infra", "ssh/bed", "-y", "true", check=True, timeout=60)
        stix.run("down", "k1", "-y", check=True, timeout=60)
        revoked = tmp_path / "id_revoked"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(revoked)], check=True
        )
        _pool(stix, hosts, key=revoked)  # the pool now says: log in with a key no host takes
        out = stix.run("launch", "-c", "k2", "--infra", "ssh/bed", "-y", "true", timeout=60)
        assert out.returncode != 0 and "authentication" in out.stderr, out.stderr
    finally:
        _pool(stix, hosts)
        for name in stix.clusters():
            stix.run("down", name, "-y", timeout=60)


@pytest.mark.parametrize("problem", ["missing", "stale-pub"])
def test_an_unusable_identity_file_is_a_clear_error_naming_the_host(
    stix: Stix, hosts: SshBed, tmp_path: Path, problem: str
) -> None:
    key = tmp_path / "id_unusable"
    if problem == "stale-pub":  # the private key was replaced, its old .pub left beside it
        shutil.copyfile(hosts.key, key)
        other = tmp_path / "other"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True
        )
        shutil.copyfile(other.with_suffix(".pub"), key.with_suffix(".pub"))
    _pool(stix, hosts, key=key)
    try:
        out = stix.run("launch", "-c", "nk", "--infra", "ssh/bed", "-y", "true", timeout=60)
        assert out.returncode != 0
        assert "internal error" not in out.stderr, out.stderr
        assert hosts.hosts[0].ip in out.stderr and str(key) in out.stderr, out.stderr
        assert all(r["cluster"] is None for r in stix.json("ssh", "status"))
    finally:
        for name in stix.clusters():
            stix.run("down", name, "-y", timeout=60)
