"""Failover across infras: a launch whose choices on one infra all fail (Kubernetes contexts
whose scheduler says no, a fake cloud's regions without capacity) moves to the infra the
optimizer ranks next, unless the task pins its infra; real daemon, the fake Kubernetes API
server and the fake cloud (tests only), whose process nodes run the job for real."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stixd.planner.infra_meta import InfraMeta, Infras, Role
from stixd.planner.target import failover_infras
from stixproto.task import Task
from tests.awsbed import AwsBed, aws_fixtures
from tests.conftest import Stix, wait_until
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import CONTEXT
from tests.test_aws_e2e import CATALOGS
from tests.test_interrupt import machines
from tests.test_kube_e2e import hog, objects
from tests.test_managed_jobs import managed

KUBE_OR_FAKE = (
    "resources:\n  cpus: 2+\n  any_of:\n    - infra: k8s\n    - infra: fake\nrun: echo done\n"
)
NODES = {"cpu-1": 4, "cpu-2": 4, "cpu-3": 4, "gpu-1": 8}


def infras() -> Infras:
    metas = [
        InfraMeta("local", role=Role.MACHINE),
        InfraMeta("aws"),
        InfraMeta("fake", named_only=True),
        InfraMeta("kubernetes"),
    ]
    return Infras.of(metas, [m.name for m in metas])


def task(resources: str) -> Task:
    return Task.from_yaml(f"resources: {resources}\nrun: x\n")


@pytest.mark.parametrize(
    ("resources", "fits", "crosses"),
    [
        ("cpus: 2", True, ("aws", "kubernetes", "local")),
        ("cpus: 2", False, ("aws", "kubernetes")),  # the fake cloud only when named
        ("infra: k8s", True, ()),
        ("infra: aws/us-east-1", True, ()),
        ("any_of: [{infra: k8s}, {infra: fake}]", True, ("fake", "kubernetes")),
        ("any_of: [{infra: k8s}, {infra: local}]", False, ()),  # local does not fit
        ("any_of: [{infra: k8s}, {cpus: 2}]", True, ("aws", "kubernetes", "local")),
    ],
)
def test_a_task_crosses_to_the_infras_it_leaves_open_and_never_from_a_pinned_one(
    resources: str, fits: bool, crosses: tuple[str, ...]
) -> None:
    t = task(f"{{{resources}}}")
    usable = ("aws", "fake", "kubernetes")
    assert failover_infras(t, infras(), usable, machine_fits=fits) == crosses
    assert "aws" not in failover_infras(t, infras(), ("fake", "kubernetes"), machine_fits=fits)


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def hogged(kube: FakeProcess) -> Iterator[FakeProcess]:
    """Another team's pods hold every node of the context: the plan (from the nodes' sizes)
    puts a 2-CPU pod there, and its scheduler answers FailedScheduling, no autoscaler."""
    for node, cpus in NODES.items():
        kube.kubectl("apply", "-f", "-", input=json.dumps(hog(node, cpus)))
    try:
        yield kube
    finally:
        kube.kubectl("delete", "pods", "--all", "--wait=false")


def both(stix: Stix, kube: FakeProcess, **fake: object) -> Stix:
    stix.env["KUBECONFIG"] = str(kube.kubeconfig)
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__NODES"] = "process"
    stix.env["STIX__FAKE__PERSIST"] = "true"
    for key, value in fake.items():
        stix.env[f"STIX__FAKE__{key.upper()}"] = str(value)
    return stix


def launch(stix: Stix, path: Path, name: str) -> subprocess.CompletedProcess[str]:
    return stix.run("launch", "-y", "-c", name, str(path), timeout=120)


def test_an_unschedulable_pod_moves_the_launch_to_the_next_infra_where_the_job_runs(
    stix: Stix, hogged: FakeProcess, task_file: Callable[[str], Path]
) -> None:
    both(stix, hogged)
    started = time.monotonic()
    launched = launch(stix, task_file(KUBE_OR_FAKE), "xc")
    took = time.monotonic() - started
    try:
        said = launched.stdout + launched.stderr
        assert launched.returncode == 0, said
        assert f"kubernetes/{CONTEXT}" in said and "Insufficient cpu" in said, said
        assert "no choice left on kubernetes: trying 1x fake/fake-1 fake-node next." in said, said
        assert "done" in launched.stdout, said  # the job ran on the fake cloud's node
        assert stix.clusters()["xc"]["infra"].startswith("fake"), stix.clusters()["xc"]
        assert objects(hogged, "xc") == []
        assert [n["region"] for n in machines(stix)["xc"]] == ["fake-1"]
        moved = [e["why"] for e in stix.json("events", "xc") if "moved from" in e["why"]]
        assert moved == ["moved from kubernetes to 1x fake/fake-1 fake-node"], moved
        assert took < 30, took
        again = launch(stix, task_file(KUBE_OR_FAKE), "xc")  # UP where the task may run
        assert again.returncode == 0 and "done" in again.stdout, again.stderr
        assert "Provisioning" not in again.stderr, again.stderr
    finally:
        stix.run("down", "-y", "xc", timeout=60)
    assert "xc" not in machines(stix)


def test_a_task_pinned_to_kubernetes_never_crosses(
    stix: Stix, hogged: FakeProcess, task_file: Callable[[str], Path]
) -> None:
    both(stix, hogged)
    pinned = task_file("resources:\n  infra: k8s\n  cpus: 2+\nrun: echo never\n")
    launched = launch(stix, pinned, "pin")
    assert launched.returncode != 0, launched.stdout
    assert "every choice on kubernetes failed" in launched.stderr, launched.stderr
    assert "Insufficient cpu" in launched.stderr and "next" not in launched.stderr
    assert not (stix.home / "fake" / "machines.json").exists()  # the fake cloud made nothing
    assert objects(hogged, "pin") == []
    stix.run("down", "-y", "pin", timeout=60)


@pytest.mark.slow  # ~20 s, most of it two daemon starts
def test_a_daemon_killed_right_after_the_move_brings_the_cluster_up_on_the_new_infra(
    stix: Stix, hogged: FakeProcess, task_file: Callable[[str], Path]
) -> None:
    both(stix, hogged, launch_seconds=30)  # still launching on the fake cloud when killed
    client = stix.popen("launch", "-y", "-d", "-c", "kx", str(task_file(KUBE_OR_FAKE)))
    try:
        wait_until(lambda: stix.clusters().get("kx", {}).get("infra", "").startswith("fake"),
                   timeout=60, interval=0.1)  # fmt: skip
        stix.kill_daemon()
        client.communicate(timeout=30)
        assert objects(hogged, "kx") == []
        stix.env["STIX__FAKE__LAUNCH_SECONDS"] = "0"
        wait_until(lambda: stix.clusters()["kx"]["status"] == "UP", timeout=60, interval=0.2)
        assert stix.clusters()["kx"]["infra"].startswith("fake")
        assert objects(hogged, "kx") == []
        assert [n["running"] for n in machines(stix)["kx"]] == [True]
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate(timeout=30)
        stix.run("down", "-y", "kx", timeout=60)


def test_a_fake_cloud_without_capacity_anywhere_moves_to_this_machine(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    """No Kubernetes, no AWS: every fake region refuses, and this machine is next."""
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__NO_CAPACITY_REGIONS"] = json.dumps(["fake-1", "fake-2", "fake-3"])
    t = task_file("resources:\n  any_of:\n    - infra: fake\n    - infra: local\nrun: echo here\n")
    launched = launch(stix, t, "fl")
    try:
        said = launched.stdout + launched.stderr
        assert launched.returncode == 0, said
        for region in ("fake-1", "fake-2", "fake-3"):
            assert f"fake/{region}" in said, said
        assert "no choice left on fake: trying 1x local next." in said, said
        assert "here" in launched.stdout
        assert stix.clusters()["fl"]["infra"] == "local"
    finally:
        stix.run("down", "-y", "fl", timeout=60)


@pytest.mark.slow  # ~20 s, most of it the daemon's start and first plan
def test_a_retry_until_up_round_after_a_move_starts_again_on_the_first_infra(
    stix: Stix, hogged: FakeProcess, task_file: Callable[[str], Path]
) -> None:
    """Round 1: the fake cloud refuses in all three regions, Kubernetes' scheduler says no;
    round 2 starts on the fake cloud again (the first choice), where capacity has appeared."""
    both(stix, hogged, no_capacity_launches=3)
    stix.env["STIX__DAEMON__RETRY_UNTIL_UP_SECONDS"] = "0.2"
    stix.env["STIX__DAEMON__RETRY_UNTIL_UP_MAX_SECONDS"] = "0.4"
    t = "resources:\n  cpus: 2+\n  any_of:\n    - infra: fake\n    - infra: k8s\nrun: echo done\n"
    out = stix.run("launch", "-y", "-d", "-r", "-c", "rr", str(task_file(t)), timeout=120)
    try:
        said = out.stdout + out.stderr
        assert out.returncode == 0, said
        assert "no choice left on fake: trying 1x kubernetes/" in said, said
        assert "round 2" in said and "Insufficient cpu" in said, said
        assert "every choice on fake, kubernetes failed: 1x fake/fake-1" in said, said
        cluster = stix.clusters()["rr"]
        assert cluster["status"] == "UP" and cluster["infra"].startswith("fake"), cluster
        assert "fake/fake-1" in cluster["resources"]
        assert objects(hogged, "rr") == []
    finally:
        stix.run("down", "-y", "rr", timeout=60)


def test_a_managed_job_whose_kubernetes_pod_cannot_be_placed_runs_on_the_next_infra(
    stix: Stix, hogged: FakeProcess, task_file: Callable[[str], Path]
) -> None:
    both(stix, hogged)
    path = task_file(KUBE_OR_FAKE)
    stix.run("jobs", "launch", "-d", "-y", "-n", "mx", str(path), check=True, timeout=120)
    done = wait_until(lambda: (j := managed(stix, 1))["status"] == "SUCCEEDED" and j, 90)
    assert done["run_infras"] == ["fake/fake-1"], done
    assert done["recoveries"] == 0 and objects(hogged, done["cluster"]) == []


aws_server, aws = aws_fixtures()
AWS_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1")  # m6i.large's


@pytest.mark.slow  # ~40 s: every zone of AWS's four regions refuses first
def test_aws_without_capacity_in_any_region_moves_to_kubernetes(
    stix: Stix, aws: AwsBed, kube: FakeProcess, task_file: Callable[[str], Path]
) -> None:
    stix.env.update(aws.env)
    stix.env.update(
        {
            "STIX_CATALOG_DIR": str(CATALOGS),
            "AWS_SHARED_CREDENTIALS_FILE": str(stix.home / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(stix.home / "no-aws-config"),
            "KUBECONFIG": str(kube.kubeconfig),
        }
    )
    aws.fault("RunInstances", "InsufficientInstanceCapacity", status=500)
    t = (
        "resources:\n  any_of:\n    - infra: aws\n      instance_type: m6i.large\n"
        "    - infra: k8s\n      cpus: 2+\nrun: echo done\n"
    )
    launched = launch(stix, task_file(t), "ak")
    try:
        said = launched.stdout + launched.stderr
        assert launched.returncode == 0, said
        assert "1x aws/ap-northeast-1 m6i.large: " in said, said
        assert f"no choice left on aws: trying 1x kubernetes/{CONTEXT} " in said, said
        assert "done" in launched.stdout, said
        cluster = stix.clusters()["ak"]
        assert cluster["infra"] == "kubernetes" and CONTEXT in cluster["resources"], cluster
        assert all(aws.live_instances(region=r) == [] for r in AWS_REGIONS)
        assert [o["kind"] for o in objects(kube, "ak")] == ["Pod"]
    finally:
        stix.run("down", "-y", "ak", timeout=60)
    assert objects(kube, "ak") == []
