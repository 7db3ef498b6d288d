"""`stixctl status` tells the truth at a glance, and `-a` leaves what the daemon keeps up alone.

A real daemon on the `local` infra (and `fake` where an address must not be this machine's):
managed-job and pool clusters are listed apart and refused by `down`/`stop`/`autostop`; an INIT
cluster says why in the table; `--ip`/`--endpoints`/`--endpoint PORT` answer as `sky status`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from stixctl import render
from stixproto import messages as m
from tests.conftest import Stix, wait_until

LONG = f"sleep 300.{os.getpid()}"


def managed_status(stix: Stix, job_id: int) -> str:
    return {j["job_id"]: j for j in stix.json("jobs", "queue", "--all")}[job_id]["status"]


def section(text: str, title: str) -> str:
    """The lines of one section of `status`'s output (sections are split by a blank line)."""
    for part in text.split("\n\n"):
        if part.startswith(title):
            return part
    raise AssertionError(f"no section {title!r} in:\n{text}")


def test_down_all_leaves_a_running_managed_jobs_cluster_up_and_the_job_running(
    stix: Stix,
) -> None:
    stix.run("jobs", "launch", "-d", "-y", "-n", "train", LONG, check=True)
    stix.run("launch", "-y", "-c", "mine", "echo mine", check=True)
    wait_until(lambda: managed_status(stix, 1) == "RUNNING", timeout=60)

    table = stix.run("status", check=True).stdout
    assert "mine" in section(table, "Clusters") and "train-1" not in section(table, "Clusters")
    owned = section(table, "Managed job and pool clusters")
    assert "OWNER" in owned and "train-1  job 1" in owned
    assert stix.clusters()["train-1"]["owner"] == "job 1"

    for argv in (["down", "-a", "-y"], ["stop", "-a", "-y"], ["autostop", "-a", "-i", "1"]):
        assert stix.run(*argv).returncode == 0, argv
    clusters = stix.clusters()
    assert "mine" not in clusters  # -a did act, on the user's own cluster
    assert clusters["train-1"]["status"] == "UP"
    assert clusters["train-1"]["autostop_idle_minutes"] is None
    assert managed_status(stix, 1) == "RUNNING"

    for verb in ("down", "stop", "autostop"):
        refused = stix.run(verb, "-y", "train-1")
        assert refused.returncode == 2, refused
        assert refused.stderr.count("\n") == 1
        assert "managed job 1 runs on it" in refused.stderr
        assert "`stixctl jobs cancel 1`" in refused.stderr
    assert stix.clusters()["train-1"]["status"] == "UP"
    assert managed_status(stix, 1) == "RUNNING"


def test_a_pool_worker_is_listed_apart_and_refused_with_the_pool_down_command(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    pool = task_file("pool:\n  workers: 1\n")
    stix.run("jobs", "pool", "apply", "-p", "one", str(pool), check=True)
    wait_until(lambda: stix.json("jobs", "pool", "status")[0]["status"] == "READY", timeout=60)

    assert stix.run("down", "-a", "-y").returncode == 0
    assert stix.clusters()["one-0"]["status"] == "UP"
    assert "one-0  pool one" in section(stix.run("status", check=True).stdout, "Managed job")
    refused = stix.run("down", "-y", "one-0")
    assert refused.returncode == 2
    assert "worker of pool one" in refused.stderr
    assert "`stixctl jobs pool down one`" in refused.stderr
    assert stix.clusters()["one-0"]["status"] == "UP"


def test_an_init_cluster_says_why_in_the_table(stix: Stix) -> None:
    stix.run("launch", "-y", "-c", "pair", "--num-nodes", "2", "echo ok", check=True)
    workers = [p for p in stix.agents("pair") if "node-1" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 1
    os.kill(workers[0], 9)
    wait_until(lambda: stix.json("status", "--refresh")[0]["status"] == "INIT", timeout=30)

    lines = stix.run("status", check=True).stdout.splitlines()
    assert lines[1].split()[-1] == "REASON"
    row = next(line for line in lines if line.startswith("pair "))
    assert "INIT" in row and re.search(r"node 1 \([0-9.]+\) does not answer", row)


def test_an_init_reason_is_one_line_and_cut_to_the_tables_width() -> None:
    long_error = "node 3 (10.0.0.3) is unreachable: \x1b[31mconnection refused\n" + "x" * 300
    c = m.ClusterRecord(
        name="c", status="INIT", infra="local", num_nodes=1, resources="1x local",
        launched_at=0.0, updated_at=0.0, last_error=long_error,
    )  # fmt: skip
    text = render.clusters([c])
    row = text.splitlines()[2]
    assert "\x1b" not in row and "\\x1b[31m" in row
    reason = render.init_reason(c)
    assert len(reason) == render.REASON_WIDTH and reason.endswith("…")
    assert row.endswith(reason)
    assert "REASON" not in render.clusters([msgspec_replace(c, status="UP")])


def msgspec_replace(c: m.ClusterRecord, **changes: object) -> m.ClusterRecord:
    import msgspec

    return msgspec.structs.replace(c, **changes)


def test_ip_and_endpoints_answer_as_sky_status_on_local(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    web = task_file("resources:\n  ports: [8080, 9000-9001]\nrun: echo up\n")
    stix.run("launch", "-y", "-c", "web", str(web), check=True)
    stix.run("launch", "-y", "-c", "bare", "echo bare", check=True)

    # the node's address: its own namespace's, or this machine's where nodes share it
    ip, bare = (stix.clusters()[name]["head_ip"] for name in ("web", "bare"))
    assert stix.run("status", "--ip", "web", check=True).stdout == f"{ip}\n"
    out = stix.run("status", "--endpoints", "web", check=True).stdout
    assert out == f"8080: {ip}:8080\n9000: {ip}:9000\n9001: {ip}:9001\n"
    assert stix.run("status", "--endpoint", "9001", "web", check=True).stdout == (f"{ip}:9001\n")
    # this machine reaches every port of a local node
    assert stix.run("status", "bare", "--endpoint", "5555", check=True).stdout == (f"{bare}:5555\n")
    none = stix.run("status", "--endpoints", "bare")
    assert none.returncode == 1 and "no endpoint found for cluster 'bare'" in none.stderr

    refusals = {
        ("--ip",): (2, "No cluster specified; name an existing cluster"),
        ("--ip", "web", "bare"): (2, "2 clusters specified; name a single cluster"),
        ("--endpoints", "nope"): (3, "cluster 'nope' not found"),
        ("--ip", "--endpoints", "web"): (2, "cannot give both --ip and --endpoint(s)"),
        ("--endpoint", "80", "--endpoints", "web"): (2, "both --endpoint and --endpoints"),
        ("--ip", "--refresh", "web"): (2, "refresh first"),
        ("--endpoint", "70000", "web"): (2, "a port is from 1 to 65535"),
    }
    for argv, (code, words) in refusals.items():
        refused = stix.run("status", *argv)
        assert refused.returncode == code and words in refused.stderr, (argv, refused)
        assert refused.stdout == "" and refused.stderr.count("\n") == 1

    stix.run("stop", "-y", "bare", check=True)
    stopped = stix.run("status", "--ip", "bare")
    assert stopped.returncode == 4 and "'bare' is not in UP status" in stopped.stderr


def test_an_endpoint_off_this_machine_is_only_a_declared_port(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__RUN_SECONDS"] = "0"
    web = task_file("resources:\n  infra: fake\n  ports: 8080\nrun: echo up\n")
    stix.run("launch", "-y", "-c", "far", str(web), check=True)
    head = stix.run("status", "--ip", "far", check=True).stdout.strip()
    assert head and head != "127.0.0.1"
    assert stix.run("status", "--endpoint", "8080", "far", check=True).stdout == f"{head}:8080\n"
    other = stix.run("status", "--endpoint", "5555", "far")
    assert other.returncode == 1
    assert "endpoint 5555 not found for cluster 'far'; its exposed ports: 8080" in other.stderr


def test_status_of_an_unknown_cluster_says_so(stix: Stix) -> None:
    stix.run("launch", "-y", "-c", "real", "echo real", check=True)
    alone = stix.run("status", "ghost", check=True)
    assert alone.stdout == "Cluster 'ghost' not found.\n"
    both = stix.run("status", "real", "ghost", "spook", check=True).stdout
    assert "real" in section(both, "Clusters")
    assert both.endswith("Clusters 'ghost', 'spook' not found.\n")
    assert stix.json("status", "ghost") == []


def test_all_with_nothing_to_act_on_succeeds_quietly(stix: Stix) -> None:
    stix.run("status", check=True)  # the daemon is up: its start says nothing below
    for argv in (["down", "-a", "-y"], ["stop", "-a", "-y"], ["autostop", "-a", "-i", "5"]):
        out = stix.run(*argv)
        assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), argv
    nothing = stix.run("down", "-y")
    assert nothing.returncode == 2 and "name at least one cluster, or pass --all" in nothing.stderr
