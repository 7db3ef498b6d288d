"""A service whose replicas are pods: each replica's cluster is exposed by a LoadBalancer
service of the fake (its pods in network namespaces of their own, so two replicas bind one
port), and the balancer reaches each replica at its load balancer's address."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER
from stixd.providers.kubernetes.ports import service_name
from stixd.providers.local.netns import unavailable_reason
from tests.conftest import Stix, wait_until
from tests.kube_fake.process import FakeProcess
from tests.test_serve import SERVER, endpoint, get, replica_states, serving, status, up
from tests.test_serve_traffic import load, ready_ids


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    why = unavailable_reason()
    if why:
        pytest.skip(f"pods need network namespaces of their own here: {why}")
    with FakeProcess(tmp_path_factory.mktemp("kube"), "--pod-network", "namespace") as fake:
        yield fake
    assert fake.pod_processes() == []


def test_two_replicas_on_pods_serve_one_port_through_their_load_balancers(
    stix: Stix, kube: FakeProcess, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    serving(stix)
    stix.env["KUBECONFIG"] = str(kube.kubeconfig)
    work = tmp_path / "work"
    work.mkdir()
    (work / "server.py").write_text(SERVER)
    port = 8080
    path = task_file(
        "resources: {infra: k8s, cpus: 1}\n"
        f"workdir: {work}\n"
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 60, timeout_seconds: 2}\n"
        "  replicas: 2\n"
        f"  ports: {port}\n"
        "run: python3 server.py\n"
    )
    up(stix, path, "web")  # two launches at once: one ports preflight, then both pass it
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=30)
    record = status(stix, "web")
    assert record is not None
    services = kube.kubectl_json("get", "services", "-l", LABEL_CLUSTER)["items"]
    ingress = {s["status"]["loadBalancer"]["ingress"][0]["ip"] for s in services}
    urls = {r["endpoint"] for r in record["replicas"]}
    assert urls == {f"http://{ip}:{port}" for ip in ingress}, (urls, json.dumps(services)[:500])
    with load(endpoint(stix, "web") + "/") as running:
        running.more(20)
    assert running.failed == [], running.failed[:5]
    assert set(running.bodies()) == {"hello 1", "hello 2"}
    stix.run("serve", "down", "-y", "web", check=True, timeout=60)

    wait_until(lambda: status(stix, "web") is None, timeout=60)
    left = kube.kubectl_json("get", "pods,services", "-l", LABEL_CLUSTER)["items"]
    assert [o for o in left if not o["metadata"].get("deletionTimestamp")] == []


def replicas(stix: Stix, name: str) -> dict[int, dict[str, Any]]:
    record = status(stix, name)
    return {r["replica_id"]: r for r in record["replicas"]} if record else {}


def test_a_replica_waits_starting_for_its_load_balancers_address_and_one_never_given_is_replaced(
    stix: Stix, kube: FakeProcess, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    serving(stix)
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "0.3"  # the provider looks the address up
    stix.env["KUBECONFIG"] = str(kube.kubeconfig)
    work = tmp_path / "work"
    work.mkdir()
    (work / "server.py").write_text(SERVER)
    delay = 5
    path = task_file(
        "resources: {infra: k8s, cpus: 1}\n"
        f"workdir: {work}\n"
        "service:\n"
        f"  readiness_probe: {{path: /, initial_delay_seconds: {delay}, timeout_seconds: 2}}\n"
        "  replicas: 1\n"
        "  ports: 8080\n"
        "run: python3 server.py\n"
    )
    kube.admin("load_balancer", hold=True)  # the cloud makes no address until told
    try:
        up(stix, path, "pend")
        wait_until(lambda: replicas(stix, "pend").get(1, {}).get("status") == "STARTING", 30)
        first = replicas(stix, "pend")[1]
        assert first["endpoint"] is None  # not the pod's IP meanwhile, and not a failure
        assert "is pending" in (first["failure_reason"] or ""), first
        started = time.monotonic()
        wait_until(lambda: replicas(stix, "pend")[1]["status"] == "FAILED_PROVISION", 30)
        assert time.monotonic() - started <= delay + 5
        why = replicas(stix, "pend")[1]["failure_reason"]
        service = f"service {service_name('pend-1', owner_of(stix.home))}"
        assert service in why and f"initial_delay_seconds ({delay})" in why and "\n" not in why, why
        # the service launches another replica, though no replica of the version was ever READY
        wait_until(lambda: replicas(stix, "pend").get(2, {}).get("status") == "STARTING", 30)
        assert kube.admin("load_balancer", hold=False)["given"] >= 1  # the address comes now
        wait_until(lambda: replicas(stix, "pend")[2]["status"] == "READY", 20)
    finally:
        kube.admin("load_balancer", hold=False)
    services = kube.kubectl_json("get", "services", "-l", f"{LABEL_CLUSTER}=pend-2")["items"]
    ingress = services[0]["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert replicas(stix, "pend")[2]["endpoint"] == f"http://{ingress}:8080"
    assert get(endpoint(stix, "pend") + "/") == "hello 2"
    stix.run("serve", "down", "-y", "pend", check=True, timeout=60)
    wait_until(lambda: status(stix, "pend") is None, timeout=60)


def test_a_replica_waiting_for_its_address_waits_on_after_a_daemon_restart(
    stix: Stix, kube: FakeProcess, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    serving(stix)
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "0.3"
    stix.env["KUBECONFIG"] = str(kube.kubeconfig)
    work = tmp_path / "work"
    work.mkdir()
    (work / "server.py").write_text(SERVER)
    path = task_file(
        "resources: {infra: k8s, cpus: 1}\n"
        f"workdir: {work}\n"
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 120, timeout_seconds: 2}\n"
        "  replicas: 1\n"
        "  ports: 8080\n"
        "run: python3 server.py\n"
    )
    kube.admin("load_balancer", hold=True)
    try:
        up(stix, path, "later")
        wait_until(lambda: replicas(stix, "later").get(1, {}).get("status") == "STARTING", 30)
        stix.kill_daemon()
        assert replica_states(stix, "later") == {1: "STARTING"}  # restarts it
        kube.admin("load_balancer", hold=False)
        wait_until(lambda: replicas(stix, "later")[1]["status"] == "READY", 20)
    finally:
        kube.admin("load_balancer", hold=False)
    assert replicas(stix, "later")[1]["failure_reason"] is None
    assert get(endpoint(stix, "later") + "/") == "hello 1"
    stix.run("serve", "down", "-y", "later", check=True, timeout=60)
    wait_until(lambda: status(stix, "later") is None, timeout=60)
