"""Spot replicas preempted under load, end to end: a real daemon, the REAL balancer, replicas that
are real HTTP servers on the fake cloud's PROCESS nodes (`fake.nodes: process`: the fake's
regions, spot prices and preemptions, each node a local node running real processes), and
clients sending requests through the service's endpoint the whole time.

`stixctl fake preempt` kills every process of a replica's node at once, as a spot reclaim does;
no client sees a failed request, the replica is replaced on spot, and on-demand replicas stand in
or stay as the service's fallback policy says (SkyServe's rules, stixd/serve/autoscaler.py).
Spot launches take longer than on-demand ones (`fake.spot_launch_seconds`), so a stand-in is
READY before the spot replica it stands in for, every time.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from stixd.providers.local.netns import remove_under as remove_node_networks_under
from stixd.providers.local.netns import unavailable_reason
from tests.conftest import Stix, pid_alive, wait_until
from tests.test_serve import SERVER, endpoint
from tests.test_serve_scaling import fast_autoscaler, on_spot, replicas, states
from tests.test_serve_traffic import load, ready_ids, servers_of

CLIENTS = 3
SPOT_LAUNCH_SECONDS = 3.0
"""How much later a spot replica comes up than an on-demand one: the window in which only a
stand-in can answer for it."""


def settle(predicate: Callable[[], Any], timeout: float) -> Any:
    """``wait_until`` for a look through stixctl: a process each, so a few a second."""
    return wait_until(predicate, timeout=timeout, interval=0.2)


def ports_free_from(count: int) -> int:
    """A port below Linux's ephemeral range (32768 up) with the ``count`` after it free too:
    on this machine's network each replica serves on the service's port or the next free ones
    above it, and an ephemeral port there (a connection of another test) would hold a
    replica's port for the whole test."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 32000)
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no free ports below the ephemeral range")


def spot_service(
    stix: Stix,
    task_file: Callable[[str], Path],
    policy: str,
    spot_launch_seconds: float = SPOT_LAUNCH_SECONDS,
    network: str = "auto",
) -> Path:
    """A daemon whose fake cloud runs processes, and a spot service of real HTTP servers."""
    fast_autoscaler(stix)
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__NODES"] = "process"
    stix.env["STIX__FAKE__NETWORK"] = network
    stix.env["STIX__FAKE__SPOT_LAUNCH_SECONDS"] = str(spot_launch_seconds)
    server = task_file(SERVER).with_name("server.py")
    server.write_text(SERVER)
    return task_file(
        "resources: {infra: fake, use_spot: true}\n"
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 60, timeout_seconds: 2}\n"
        f"  replica_policy: {{min_replicas: 2, max_replicas: 2, {policy}}}\n"
        f"  ports: {ports_free_from(3)}\n"
        f"run: python3 {server}\n"
    )


def spot_of(stix: Stix, name: str) -> dict[int, bool]:
    """Each live replica's market, as the autoscaler ordered it."""
    found = replicas(stix, name)
    return {i: r["spot"] for i, r in found.items() if r["status"] != "PREEMPTED"}


def ready(stix: Stix, name: str) -> dict[int, bool]:
    """The READY replicas and whether each runs on spot (its cluster launched so)."""
    found = replicas(stix, name)
    launched = {i: on_spot(r) for i, r in found.items() if r["status"] == "READY"}
    assert all(found[i]["spot"] == spot for i, spot in launched.items()), found
    return launched


def preempt(stix: Stix, name: str, replica_id: int) -> list[int]:
    """Preempt the replica's node; returns its server processes, which must be gone."""
    servers = servers_of(stix, replica_id)
    assert servers, f"replica {replica_id} runs no server to preempt"
    stix.run("fake", "preempt", f"{name}-{replica_id}", check=True)
    assert not any(pid_alive(p) for p in servers)  # killed with the node, not after
    return servers


@pytest.mark.slow  # some 15 s alone, past 20 s on a busy machine
def test_a_preempted_spot_replica_has_an_on_demand_stand_in_until_its_spot_replacement_is_ready(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    path = spot_service(stix, task_file, "dynamic_ondemand_fallback: true")
    stix.run("serve", "up", "-y", "-n", "sp", str(path), check=True)
    # the stand-ins that covered the spot replicas' start are gone once both are READY on spot
    settle(lambda: spot_of(stix, "sp") == {1: True, 2: True} == ready(stix, "sp"), timeout=40)
    settle(lambda: sorted(ready_ids(stix, "sp")) == [1, 2], timeout=10)
    first = set(replicas(stix, "sp"))
    with load(endpoint(stix, "sp") + "/", clients=CLIENTS) as running:
        wait_until(lambda: {"hello 1", "hello 2"} <= set(running.bodies()), timeout=20)
        preempt(stix, "sp", 1)
        # an on-demand stand-in is READY while the spot replacement is still coming up
        standing: dict[str, Any] = {}

        def stand_in_ready_before_spot() -> bool:
            now = replicas(stix, "sp")
            new = {i: r for i, r in now.items() if i not in first}
            od = [i for i, r in new.items() if not r["spot"] and r["status"] == "READY"]
            spot = [i for i, r in new.items() if r["spot"]]
            if od and spot and all(new[i]["status"] != "READY" for i in spot):
                standing.update(stand_in=od[0], spot=spot[0])
            return bool(standing)

        settle(stand_in_ready_before_spot, timeout=30)
        stand_in, replacement = standing["stand_in"], standing["spot"]
        wait_until(lambda: f"hello {stand_in}" in running.bodies(), timeout=10)  # it serves
        # the spot replacement READY: the stand-in goes, the service is all spot again
        settle(lambda: ready(stix, "sp") == {2: True, replacement: True}, timeout=30)
        settle(lambda: stand_in not in spot_of(stix, "sp"), timeout=30)
        wait_until(lambda: f"hello {replacement}" in running.bodies(), timeout=10)
        running.more(20)
    assert running.failed == [], running.failed[:5]
    assert states(stix, "sp")[1] == "PREEMPTED"
    assert f"sp-{stand_in}" not in stix.clusters()
    # what the preemption left of the node (its files, its namespace) goes with its replica
    wait_until(lambda: not (stix.home / "fake" / "clusters" / "sp-1").exists(), timeout=20)
    assert remove_node_networks_under(stix.home / "fake" / "clusters" / "sp-1") == 0
    print(f"{len(running.answers)} requests, none failed")


@pytest.mark.parametrize("network", ["auto", "host"])
def test_base_on_demand_replica_stays_while_a_preempted_spot_one_is_replaced_on_spot(
    stix: Stix, task_file: Callable[[str], Path], network: str
) -> None:
    policy = "base_ondemand_fallback_replicas: 1"
    path = spot_service(stix, task_file, policy, spot_launch_seconds=0.5, network=network)
    stix.run("serve", "up", "-y", "-n", "bs", str(path), check=True)
    settle(lambda: ready(stix, "bs") == {1: False, 2: True}, timeout=40)
    settle(lambda: sorted(ready_ids(stix, "bs")) == [1, 2], timeout=10)
    hosts = {urlsplit(r["endpoint"]) for r in replicas(stix, "bs").values()}
    if network == "auto" and unavailable_reason() is None:
        # a namespace per node: both replicas bind the service's port, each at its own address
        assert len({h.hostname for h in hosts}) == 2 and len({h.port for h in hosts}) == 1
    else:  # this machine's network: one address, a port of its own for each replica
        assert {h.hostname for h in hosts} == {"127.0.0.1"} and len({h.port for h in hosts}) == 2
    with load(endpoint(stix, "bs") + "/", clients=CLIENTS) as running:
        wait_until(lambda: {"hello 1", "hello 2"} <= set(running.bodies()), timeout=20)
        preempt(stix, "bs", 2)
        settle(lambda: ready(stix, "bs") == {1: False, 3: True}, timeout=30)
        wait_until(lambda: "hello 3" in running.bodies(), timeout=10)
        running.more(20)
    assert running.failed == [], running.failed[:5]
    assert states(stix, "bs") == {1: "READY", 2: "PREEMPTED", 3: "READY"}  # no stand-in


def test_a_managed_job_on_process_nodes_runs_its_command_and_is_recovered_after_a_preemption(
    stix: Stix, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__NODES"] = "process"
    runs = tmp_path / "runs"
    path = task_file(
        f"name: real\nresources: {{infra: fake}}\nrun: echo $$ >> {runs}; exec sleep 600\n"
    )
    stix.run("jobs", "launch", "-d", "-y", str(path), check=True)

    def pids() -> list[int]:
        lines = runs.read_text().splitlines() if runs.exists() else []
        return [int(line.split()[0]) for line in lines]

    first = wait_until(pids, timeout=30)[0]
    assert pid_alive(first)
    settle(lambda: running_job(stix, "fake/fake-1", 0), timeout=30)
    stix.run("fake", "preempt", "real-1", check=True)
    assert not pid_alive(first)  # the command died with its node
    job = settle(lambda: running_job(stix, "fake/fake-2", 1), timeout=40)
    second = wait_until(lambda: pids()[1:], timeout=20)[0]
    assert second != first and pid_alive(second)
    assert "preempted in fake-1" in job["recovery_reasons"][0]


def running_job(stix: Stix, infra: str, recoveries: int) -> dict[str, Any] | None:
    job: dict[str, Any] = stix.json("jobs", "queue", "--all")[0]
    ok = job["status"] == "RUNNING" and job["infra"] == infra and job["recoveries"] == recoveries
    return job if ok else None
