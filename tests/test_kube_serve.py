"""A service whose replicas are pods: each replica's cluster is exposed by a LoadBalancer
service of the fake (its pods in network namespaces of their own, so two replicas bind one
port), and the balancer reaches each replica at its load balancer's address."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stixd.providers.kubernetes.podspec import LABEL_CLUSTER
from stixd.providers.local.netns import unavailable_reason
from tests.conftest import Stix, wait_until
from tests.kube_fake.process import FakeProcess
from tests.test_serve import SERVER, endpoint, serving, status, up
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
