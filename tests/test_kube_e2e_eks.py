"""`launch --infra k8s` end to end on a context named as EKS names them (an ARN, holding "/"),
and autostop on a pod with the daemon away: stixctl → stixd → the fake Kubernetes API server
(tests/kube_fake) → pods whose agents stix started over exec. Checked with kubectl."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, pod_name
from tests.conftest import Stix, wait_until
from tests.kube_fake.process import FakeProcess

ARN = "arn:aws:eks:us-east-1:123456789012:cluster/prod"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    with FakeProcess(tmp_path_factory.mktemp("eks"), "--context", ARN) as made:
        yield made
    assert made.pod_processes() == []


@pytest.fixture
def k8s(stix: Stix, fake: FakeProcess) -> Stix:
    stix.env["KUBECONFIG"] = str(fake.kubeconfig)
    checked = stix.run("check", check=True, timeout=60)  # lists the context's nodes for the plan
    assert f"{ARN}: reachable" in checked.stdout, checked.stdout
    return stix


def pods_of(fake: FakeProcess, cluster: str) -> list[dict[str, Any]]:
    return fake.kubectl_json("get", "pods", "-l", f"{LABEL_CLUSTER}={cluster}")["items"]


def test_a_cluster_on_a_context_named_by_an_arn_runs_execs_takes_a_shell_and_goes_down(
    k8s: Stix, fake: FakeProcess
) -> None:
    launched = k8s.run("launch", "-y", "-c", "eks", "--infra", "k8s", "--cpus", "1",
                       "echo first-on-$STIX_POD_NAME", timeout=120)  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    pod = pod_name("eks", 0, owner_of(k8s.home))
    assert f"first-on-{pod}" in launched.stdout
    again = k8s.run("exec", "eks", "echo again-on-$STIX_POD_NAME", timeout=60)
    assert again.returncode == 0 and f"again-on-{pod}" in again.stdout, again.stderr
    shell = k8s.run("ssh", "eks", "echo", "in-$STIX_POD_NAME", timeout=60)
    assert (shell.returncode, shell.stdout.strip()) == (0, f"in-{pod}"), shell.stderr
    assert k8s.clusters()["eks"]["status"] == "UP"
    k8s.run("down", "-y", "eks", check=True, timeout=60)
    wait_until(lambda: pods_of(fake, "eks") == [], timeout=30)
    assert "eks" not in k8s.clusters()


def test_the_agent_ends_its_pod_when_autostop_is_due_and_the_daemon_is_gone(
    k8s: Stix, fake: FakeProcess
) -> None:
    """The dead-man's switch on a pod: with no daemon to take the cluster down, the agent ends
    the container's command, so the pod ends and gives back what it holds; the daemon, back,
    finds the cluster gone (it did not autostop it itself) and deletes the ended pod."""
    k8s.env["STIX__AUTOSTOP__GRACE_MINUTES"] = "0"
    k8s.run("daemon", "stop", timeout=30)  # started by `check` without the setting
    # 6 s idle: the daemon, which would take the cluster down itself, is gone well before
    k8s.run("launch", "-y", "-c", "dm", "--infra", "k8s", "-i", "0.1", "true",
            check=True, timeout=120)  # fmt: skip
    k8s.run("daemon", "stop", check=True, timeout=30)
    phase = wait_until(
        lambda: (p := pods_of(fake, "dm")) and p[0]["status"].get("phase") != "Running" and p,
        timeout=60,
    )
    assert phase[0]["status"]["phase"] == "Succeeded", phase[0]["status"]
    refreshed = {c["name"]: c for c in k8s.json("status", "--refresh")}
    assert refreshed.get("dm", {}).get("status", "TERMINATED") == "TERMINATED", refreshed
    changes = [e["event"] for e in k8s.json("events", "dm") if e["id"] == "dm"]
    assert "autostop" not in changes, changes
    wait_until(lambda: pods_of(fake, "dm") == [], timeout=30)
