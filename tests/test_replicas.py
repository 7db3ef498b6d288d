"""Two stixd replicas on one PostgreSQL database (issue 18, item 4): real daemons on their own
homes and sockets, real local-provider nodes. Replica A launches; A is killed with SIGKILL
mid-launch, mid-job, or while a managed job recovers; replica B takes A's actors over within
the lease time and a sweep, and the cluster, its job and the managed job end as they would
have, nothing done twice. A replica paused (SIGSTOP) past its leases is refused its writes
once resumed and stands its actors down.

Both homes see the same local nodes: B's `clusters` folder is a link to A's (the local
provider keeps a cluster's nodes under `<home>/clusters`, as a cloud keeps them in an account
both replicas reach).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stix, kill_everything_under, pid_alive, wait_until
from tests.pg_server import PgServer
from tests.test_managed_jobs import kill_node, managed

LEASE = 2.0
"""Lease seconds of both replicas: a takeover is due within LEASE * 4/3 of A's last renewal."""


class Pair:
    def __init__(self, a: Stix, b: Stix, db: str, postgres: PgServer) -> None:
        self.a, self.b, self.db, self.postgres = a, b, db, postgres

    def sql(self, query: str) -> str:
        return self.postgres.psql(self.db, query)

    def owner(self, kind: str, id_: str) -> str:
        return self.sql(f"SELECT owner FROM leases WHERE kind = '{kind}' AND id = '{id_}'")

    @staticmethod
    def owner_name(s: Stix) -> str:
        return f"{socket.gethostname()}:{s.home}"

    def kill_a(self) -> float:
        """SIGKILL replica A; when it died (monotonic)."""
        self.a.kill_daemon()
        return time.monotonic()

    def taken_by_b(self, kind: str, id_: str) -> bool:
        return self.owner(kind, id_).endswith(str(self.b.home))


def _home() -> Path:
    return Path(tempfile.mkdtemp(prefix="stx", dir="/tmp"))


def _stop(s: Stix) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        pid = s.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGCONT)  # (a test may have paused it)
            subprocess.run(
                [sys.executable, "-m", "stixctl", "daemon", "stop"],
                env=s.env, capture_output=True, timeout=30,
            )  # fmt: skip


@pytest.fixture
def pair(postgres: PgServer) -> Iterator[Pair]:
    url = postgres.fresh()
    config = f"db: {url}\ndaemon:\n  lease_seconds: {LEASE}\nlocal:\n  network: host\n"
    a, b = Stix(_home()), Stix(_home())
    (a.home / "clusters").mkdir()
    (b.home / "clusters").symlink_to(a.home / "clusters")
    for s in (a, b):
        (s.home / "config.yaml").write_text(config)
        s.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"  # a lost node is found in a second
    try:
        a.run("daemon", "start", check=True)
        b.run("daemon", "start", check=True)
        yield Pair(a, b, url.rsplit("/", 1)[1], postgres)
    finally:
        for s in (b, a):
            _stop(s)
        for s in (a, b):
            kill_everything_under(s.home)
            shutil.rmtree(s.home, ignore_errors=True)


JOB = "for i in $(seq 1 {lines}); do echo line-$i; sleep {step}; done"


@pytest.mark.slow
def test_a_request_for_a_cluster_the_other_replica_runs_is_answered_by_that_replica(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    a.run("launch", "-c", "f1", "-y", "echo first", check=True)
    ran = b.run("exec", "f1", "echo through-b", check=True)  # followed by B, run by A
    assert "through-b" in ran.stdout
    assert pair.owner("cluster", "f1").endswith(str(a.home))
    assert "forwarded" in (b.home / "stixd.log").read_text()
    assert b.job_status("f1", 2) == "SUCCEEDED" and sorted(a.jobs("f1")) == [1, 2]
    b.run("down", "f1", "-y", check=True)
    assert "f1" not in b.clusters() and not a.agents("f1")

    a.run("jobs", "launch", "-d", "-y", "-n", "held", f"sleep 300.{os.getpid()}", check=True)
    wait_until(lambda: managed(b, 1)["status"] == "RUNNING", timeout=40, interval=0.2)
    assert "cancel" in b.run("jobs", "cancel", "1", "-y", check=True).stdout.lower()
    wait_until(lambda: managed(b, 1)["status"] == "CANCELLED", timeout=30, interval=0.2)
    assert pair.owner("managed_job", "1") in ("", pair.owner_name(a))  # ended, or A's still
    forwarded = [ln for ln in (b.home / "stixd.log").read_text().splitlines() if "forwarded" in ln]
    assert any("managed_job" in ln for ln in forwarded), forwarded


@pytest.mark.slow
def test_replica_killed_mid_job_has_its_job_finished_once_by_the_other(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.run("launch", "-c", "r1", "-d", "-y", JOB.format(lines=12, step=0.4), check=True)
    wait_until(lambda: b.job_status("r1", 1) == "RUNNING", timeout=30)  # read by B
    assert pair.owner("cluster", "r1").endswith(str(a.home))
    died = pair.kill_a()
    wait_until(lambda: pair.taken_by_b("cluster", "r1"), timeout=LEASE * 4)
    taken = time.monotonic() - died
    assert taken < LEASE * 4 / 3 + 1.0  # the lease, a sweep, and the test's own polling
    wait_until(lambda: pair.taken_by_b("job", "r1/" + _uid(pair, "r1") + "/1"), timeout=10)
    wait_until(lambda: b.job_status("r1", 1) == "SUCCEEDED", timeout=30)
    assert list(b.jobs("r1")) == [1]  # one job, run once
    assert b.clusters()["r1"]["status"] == "UP"
    assert len(b.agents("r1")) == 0 and len(a.agents("r1")) == 1  # the one node A made
    out = b.run("logs", "r1", "1", "--no-follow", check=True).stdout.split()
    assert out == [f"line-{i}" for i in range(1, 13)]
    b.run("exec", "r1", "echo after-takeover", check=True)  # B runs the cluster now
    assert sorted(b.jobs("r1")) == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["row_made", "first_node_up"])
def test_replica_killed_mid_launch_leaves_one_cluster_the_other_finishes(
    pair: Pair, moment: str
) -> None:
    a, b = pair.a, pair.b
    client = a.popen(
        "launch", "-c", "r2", "-y", "--num-nodes", "2", "echo done-$SKYPILOT_NODE_RANK"
    )
    try:
        state = "SELECT state FROM actors WHERE kind = 'cluster' AND id = 'r2'"
        wait_until(lambda: pair.sql(state) == "INIT", timeout=30, interval=0.01)
        if moment == "first_node_up":
            wait_until(lambda: a.agents("r2"), timeout=30, interval=0.01)
        pair.kill_a()
        assert pair.sql(state) != "UP", "the launch ended before the kill"
    finally:
        client.communicate(timeout=30)
    wait_until(lambda: pair.taken_by_b("cluster", "r2"), timeout=LEASE * 4)
    wait_until(lambda: b.clusters().get("r2", {}).get("status") == "UP", timeout=45)
    wait_until(lambda: b.job_status("r2", 1) == "SUCCEEDED", timeout=30)
    assert list(b.jobs("r2")) == [1]
    assert len(a.agents("r2")) + len(b.agents("r2")) == 2  # two nodes, each made once
    assert b.clusters()["r2"]["num_nodes"] == 2
    logs = b.run("logs", "r2", "1", "--no-follow", check=True).stdout
    assert "done-0" in logs and "done-1" in logs


@pytest.mark.slow
def test_a_paused_replica_is_refused_its_writes_and_stands_its_actors_down(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.run("launch", "-c", "r3", "-d", "-y", JOB.format(lines=10, step=0.4), check=True)
    wait_until(lambda: b.job_status("r3", 1) == "RUNNING", timeout=30)
    pid = a.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: pair.taken_by_b("cluster", "r3"), timeout=LEASE * 4)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: b.job_status("r3", 1) == "SUCCEEDED", timeout=30)
    assert pair.taken_by_b("cluster", "r3")  # A did not take it back
    wait_until(lambda: "lease_lost" in (a.home / "stixd.log").read_text(), timeout=LEASE * 2)
    assert pid_alive(pid)  # A lives on, without the actors
    assert list(b.jobs("r3")) == [1]


@pytest.mark.slow
def test_replica_killed_while_a_managed_job_recovers_has_it_finished_by_the_other(
    pair: Pair, tmp_path: Path, task_file: Any
) -> None:
    a, b = pair.a, pair.b
    ck = tmp_path / "ck"
    ck.mkdir()
    path = task_file(
        "name: tough\n"
        f"setup: echo setup >> {ck}/setups; sleep 1\n"
        "run: |\n"
        f'  echo "run $SKYPILOT_TASK_ID" >> {ck}/runs\n'
        "  for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done\n"
    )
    a.run("jobs", "launch", "-d", "-y", str(path), check=True)
    wait_until(lambda: (ck / "runs").exists(), timeout=30)
    assert kill_node(a, "tough-1") > 0
    wait_until(lambda: managed(b, 1)["status"] == "RECOVERING", timeout=20, interval=0.05)
    pair.kill_a()
    wait_until(lambda: pair.taken_by_b("managed_job", "1"), timeout=LEASE * 4)
    job = wait_until(
        lambda: (j := managed(b, 1))["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") and j,
        timeout=50,
        interval=0.3,
    )
    assert job["status"] == "SUCCEEDED", b.run("jobs", "logs", "1", "--controller").stdout
    runs = (ck / "runs").read_text().splitlines()
    assert len(runs) == 2 and len(set(runs)) == 1  # the first run, and the one recovery
    assert job["recoveries"] == 1
    assert "tick 6" in b.run("jobs", "logs", "1", "--no-follow", check=True).stdout
    wait_until(lambda: b.clusters().get("tough-1") is None, timeout=20)
    assert not a.agents("tough-1") and not b.agents("tough-1")


def _uid(pair: Pair, cluster: str) -> str:
    ids = pair.sql(f"SELECT id FROM actors WHERE kind = 'job' AND id LIKE '{cluster}/%'")
    return ids.splitlines()[0].split("/")[1]


@pytest.mark.slow
def test_a_replica_stopped_cleanly_hands_its_actors_over_at_the_next_sweep(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.run("launch", "-c", "r4", "-d", "-y", JOB.format(lines=8, step=0.4), check=True)
    wait_until(lambda: b.job_status("r4", 1) == "RUNNING", timeout=30)
    a.run("daemon", "stop", check=True)
    held_by_a = f"SELECT count(*) FROM leases WHERE owner = '{pair.owner_name(a)}'"
    assert pair.sql(held_by_a) == "0"  # handed back: none has to expire first
    wait_until(lambda: pair.taken_by_b("cluster", "r4"), timeout=LEASE, interval=0.02)
    wait_until(lambda: b.job_status("r4", 1) == "SUCCEEDED", timeout=30)
    assert list(b.jobs("r4")) == [1]
