"""Serving on SSH node pools, end to end with real parts: replicas are real HTTP servers on the
sshd hosts of tests/sshbed.py (each in a network namespace of its own, at its own address on a
private bridge), reached by the real balancer at the host's address and the service's port.

Each host holds one replica's cluster (SkyPilot's SSH node pools give a cluster hosts of its
own), so two replicas bind the same fixed port on two hosts; a replica that finds no free host
waits PROVISIONING for one to be released, as an on-demand launch with --retry-until-up does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Stix, wait_until
from tests.sshbed import Host, SshBed, bed_fixture
from tests.test_serve import SERVER, endpoint, free_port, replica_states, serving, status, up
from tests.test_serve_traffic import load, ready_ids

hosts = bed_fixture(2, scope="module")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stix_processes(host: Host) -> list[int]:
    """What runs on `host` besides its sshd: agents, jobs, replica servers."""
    return [p for p in host.pids() if _comm(p) not in ("sshd", "")]


def servers_on(host: Host) -> list[int]:
    return [p for p in host.pids() if "server.py" in _cmdline(p)]


@pytest.fixture
def bed(hosts: SshBed) -> Iterator[SshBed]:
    """The module's hosts, left as they were found whatever the test did: every process but
    sshd killed, stix's files under each home removed."""
    try:
        yield hosts
    finally:
        clean(hosts)


def clean(bed: SshBed) -> None:
    """Every process but sshd killed on the bed's hosts, stix's files under each home removed
    (as the end of a machine does, for hosts that stand in for cloud instances)."""
    for host in bed.hosts:
        for pid in stix_processes(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for name in (".stix", "sky_workdir"):
            shutil.rmtree(host.home / name, ignore_errors=True)


def pool(stix: Stix, bed: SshBed, hosts: list[Host] | None = None) -> None:
    ips = "".join(f"    - {h.ip}\n" for h in hosts or bed.hosts)
    (stix.home / "ssh_node_pools.yaml").write_text(
        f"bed:\n  user: root\n  identity_file: {bed.key}\n  hosts:\n{ips}"
    )


def ssh_service(
    task_file: Callable[[str], Path], tmp_path: Path, port: int, *, replicas: int
) -> Path:
    """A service of `replicas` real HTTP servers on pool `bed`, all on the fixed `port`: the
    server is synced in the workdir and binds every address of its host."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "server.py").write_text(SERVER)
    return task_file(
        "resources: {infra: ssh/bed}\n"
        f"workdir: {work}\n"
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 60, timeout_seconds: 2}\n"
        f"  replicas: {replicas}\n"
        f"  ports: {port}\n"
        "run: python3 server.py\n"
    )


def test_replicas_on_two_ssh_hosts_serve_one_fixed_port_through_the_balancer(
    stix: Stix, bed: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    serving(stix)
    pool(stix, bed)
    port = 8080  # as SkyPilot's examples: each host is a network of its own, so it is free
    up(stix, ssh_service(task_file, tmp_path, port, replicas=2), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    record = status(stix, "web")
    assert record is not None
    urls = sorted(r["endpoint"] for r in record["replicas"])
    assert urls == sorted(f"http://{h.ip}:{port}" for h in bed.hosts)
    with load(endpoint(stix, "web") + "/") as running:
        running.more(40)
    assert running.failed == [], running.failed[:5]
    assert set(running.bodies()) == {"hello 1", "hello 2"}
    stix.run("serve", "down", "-y", "web", check=True, timeout=60)
    wait_until(lambda: status(stix, "web") is None, timeout=60)
    assert not {"web-1", "web-2"} & set(stix.clusters())
    for host in bed.hosts:
        assert stix_processes(host) == [], host.name
    assert replica_states(stix, "web") == {}


def quick_retries(stix: Stix) -> Stix:
    """A launch waiting for a free host looks again within a second (30 s by default)."""
    stix.env["STIX__DAEMON__RETRY_UNTIL_UP_SECONDS"] = "0.5"
    stix.env["STIX__DAEMON__RETRY_UNTIL_UP_MAX_SECONDS"] = "1"
    return stix


def endpoints(stix: Stix, name: str) -> dict[int, str | None]:
    record = status(stix, name)
    return {r["replica_id"]: r["endpoint"] for r in record["replicas"]} if record else {}


def test_a_replica_killed_under_load_fails_no_request_and_is_replaced_on_the_freed_host(
    stix: Stix, bed: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    serving(stix)
    # a replacement that found no free host is woken when the host is released, not at its
    # launch's next retry (here minutes away)
    stix.env["STIX__DAEMON__RETRY_UNTIL_UP_SECONDS"] = "300"
    pool(stix, bed)
    port = free_port()
    up(stix, ssh_service(task_file, tmp_path, port, replicas=2), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    where = endpoints(stix, "web")
    [victim] = [h for h in bed.hosts if where[1] == f"http://{h.ip}:{port}"]
    with load(endpoint(stix, "web") + "/") as running:
        wait_until(lambda: {"hello 1", "hello 2"} <= set(running.bodies()), timeout=20)
        killed = servers_on(victim)
        assert killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        running.more(50)  # answered by replica 2 meanwhile
        # the pool has no third host: replica 3 takes replica 1's once it is released
        wait_until(lambda: ready_ids(stix, "web") == [2, 3], timeout=60)
        wait_until(lambda: "hello 3" in running.bodies(), timeout=20)
    assert running.failed == [], running.failed[:5]
    assert replica_states(stix, "web") == {1: "FAILED", 2: "READY", 3: "READY"}
    assert endpoints(stix, "web")[3] == where[1]
    waited = [e for e in stix.json("events", "web-3") if e["event"] == "retry"]
    print(f"{len(running.answers)} requests, none failed; replica 3 waited {len(waited)} round(s)")
    stix.run("serve", "down", "-y", "web", check=True, timeout=60)
    wait_until(lambda: status(stix, "web") is None, timeout=60)
    for host in bed.hosts:
        assert stix_processes(host) == [], host.name


def test_a_replica_without_a_free_host_waits_provisioning_until_one_is_released(
    stix: Stix, bed: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    quick_retries(serving(stix))
    pool(stix, bed)
    stix.run("launch", "-c", "hold", "--infra", "ssh/bed", "-y", "true", check=True, timeout=60)
    port = free_port()
    up(stix, ssh_service(task_file, tmp_path, port, replicas=2), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1], timeout=60)

    def waiting() -> str:
        record = status(stix, "web")
        assert record is not None
        [second] = [r for r in record["replicas"] if r["replica_id"] == 2]
        assert second["status"] == "PROVISIONING", second
        return str(second["failure_reason"] or "")

    why = wait_until(waiting, timeout=20)
    assert why.startswith("waiting for capacity: ssh pool bed:"), why
    assert "0 of its 2 are free" in why
    assert status(stix, "web")["status"] == "READY"  # type: ignore[index]
    shown = stix.run("serve", "status", "-v", "web", check=True).stdout
    assert "PROVISIONING" in shown and "waiting for capacity" in shown
    # the host the other cluster held is released: the waiting replica takes it
    stix.run("down", "hold", "-y", check=True, timeout=60)
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    record = status(stix, "web")
    assert record is not None
    assert [r["failure_reason"] for r in record["replicas"]] == [None, None]
    assert sorted(endpoints(stix, "web").values()) == sorted(  # type: ignore[type-var]
        f"http://{h.ip}:{port}" for h in bed.hosts
    )
    stix.run("serve", "down", "-y", "web", check=True, timeout=60)
    wait_until(lambda: status(stix, "web") is None, timeout=60)
    assert stix.clusters() == {}


def test_a_host_behind_a_jump_host_cannot_serve_and_says_why(
    stix: Stix, bed: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    from tests.sshbed import INNER_PORT

    serving(stix)
    jump = bed.hosts[1]  # its own loopback's sshd: only a hop through it reaches that address
    (stix.home / "ssh_node_pools.yaml").write_text(
        "bed:\n"
        "  user: root\n"
        f"  identity_file: {bed.key}\n"
        f"  jump_host: root@{jump.ip}\n"
        f"  hosts:\n    - {{ip: 127.0.0.1, port: {INNER_PORT}}}\n"
    )
    up(stix, ssh_service(task_file, tmp_path, free_port(), replicas=1), "web")
    wait_until(lambda: replica_states(stix, "web") == {1: "FAILED_PROVISION"}, timeout=60)
    record = status(stix, "web")
    assert record is not None and record["status"] == "FAILED"
    [replica] = record["replicas"]
    assert "reached through a jump host" in replica["failure_reason"], replica
    assert replica["endpoint"] is None  # never probed at the daemon's own 127.0.0.1
    assert "web-1" not in stix.clusters()


@pytest.mark.slow  # some 30 s: three probes time out, the teardown waits out the cut host
def test_a_host_cut_off_under_load_fails_no_request_and_its_replacement_reaps_what_it_left(
    stix: Stix, bed: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    quick_retries(serving(stix))
    pool(stix, bed)
    port = free_port()
    up(stix, ssh_service(task_file, tmp_path, port, replicas=2), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    where = endpoints(stix, "web")
    [victim] = [h for h in bed.hosts if where[1] == f"http://{h.ip}:{port}"]
    orphans = servers_on(victim)
    with load(endpoint(stix, "web") + "/") as running:
        wait_until(lambda: {"hello 1", "hello 2"} <= set(running.bodies()), timeout=20)
        victim.link_down()
        try:
            # out of rotation, failed, its cluster torn down as far as an unreachable host
            # allows (the host is released; its server runs on there, holding the port)
            wait_until(lambda: replica_states(stix, "web").get(1) == "FAILED_PROBING", 60)
            wait_until(lambda: replica_states(stix, "web").get(3) == "PROVISIONING", 20)
            assert all(p in servers_on(victim) for p in orphans)
            running.more(50)
        finally:
            victim.link_up()
        # the replacement takes the host back, ends what the old cluster left, binds the port
        wait_until(lambda: ready_ids(stix, "web") == [2, 3], timeout=60)
        wait_until(lambda: "hello 3" in running.bodies(), timeout=20)
    assert running.failed == [], running.failed[:5]
    assert replica_states(stix, "web") == {1: "FAILED_PROBING", 2: "READY", 3: "READY"}
    assert endpoints(stix, "web")[3] == where[1]
    assert not any(p in servers_on(victim) for p in orphans)
    assert not (stix.home / "ssh_leftovers.json").exists() or (
        (stix.home / "ssh_leftovers.json").read_text().strip() == "{}"
    )
    stix.run("serve", "down", "-y", "web", check=True, timeout=60)
    wait_until(lambda: status(stix, "web") is None, timeout=60)
    for host in bed.hosts:
        assert stix_processes(host) == [], host.name


def test_serve_down_ends_a_replica_still_waiting_for_a_host(
    stix: Stix, bed: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    quick_retries(serving(stix))
    pool(stix, bed, bed.hosts[:1])  # one host for two replicas
    up(stix, ssh_service(task_file, tmp_path, free_port(), replicas=2), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1], timeout=60)
    wait_until(lambda: "0 of its 1 are free" in str(status(stix, "web")), timeout=20)
    assert replica_states(stix, "web") == {1: "READY", 2: "PROVISIONING"}
    stix.run("serve", "down", "-y", "web", check=True, timeout=60)
    wait_until(lambda: status(stix, "web") is None, timeout=60)
    assert stix.clusters() == {}
    assert all(r["cluster"] is None for r in stix.json("ssh", "status"))
    assert stix_processes(bed.hosts[0]) == []


def test_a_replica_waits_for_a_host_across_a_daemon_restart_and_takes_one_added_to_the_pool(
    stix: Stix, bed: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    quick_retries(serving(stix))
    pool(stix, bed, bed.hosts[:1])
    port = free_port()
    up(stix, ssh_service(task_file, tmp_path, port, replicas=2), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1], timeout=60)
    wait_until(lambda: "0 of its 1 are free" in str(status(stix, "web")), timeout=20)
    stix.kill_daemon()
    assert replica_states(stix, "web") == {1: "READY", 2: "PROVISIONING"}  # restarts it
    pool(stix, bed)  # the pool grows by a host: the waiting replica takes it
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    first, second = bed.hosts
    assert endpoints(stix, "web") == {
        1: f"http://{first.ip}:{port}",
        2: f"http://{second.ip}:{port}",
    }
    history = stix.json("events", "--kind", "service", "web")
    assert [e["id"] for e in history if e["event"] == "decided"] == ["web/1", "web/2"]
    stix.run("serve", "down", "-y", "web", check=True, timeout=60)
    wait_until(lambda: status(stix, "web") is None, timeout=60)
    assert stix.clusters() == {}
