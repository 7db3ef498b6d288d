"""A cluster's ports exposed by each `kubernetes.ports` mode, on the fake API server, whose
services really forward: a request through the address `endpoints` gives reaches the head
pod's server. And the preflight that refuses ports a context cannot expose."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.providers.kubernetes.api import KubeApi, path
from stixd.providers.kubernetes.config import PortMode
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, LABEL_OWNER, LABEL_RANK, pod_name
from stixd.providers.kubernetes.ports import (
    PortsUnavailable,
    close_ports,
    endpoints,
    open_ports,
    preflight,
    service_name,
)
from tests.conftest import Stix, wait_until
from tests.kube_fake.process import FakeProcess

pytestmark = pytest.mark.anyio
NS = "default"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    with FakeProcess(tmp_path_factory.mktemp("kube-ports")) as made:
        yield made


@pytest.fixture(scope="module")
def blind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    """A cluster whose LoadBalancer services never get an address (no controller)."""
    with FakeProcess(tmp_path_factory.mktemp("kube-blind"), "--no-load-balancer") as made:
        yield made


async def api_of(fake: FakeProcess, home: Path) -> AsyncIterator[KubeApi]:
    config = read_kubeconfig({"KUBECONFIG": str(fake.kubeconfig)})
    clients = Clients(config, home / "certs")
    try:
        assert config.current is not None
        yield KubeApi(await clients.client(config.current), config.current, timeout=10)
    finally:
        await clients.aclose()


@pytest.fixture
async def api(fake: FakeProcess, tmp_path: Path) -> AsyncIterator[KubeApi]:
    async for made in api_of(fake, tmp_path):
        yield made


@pytest.fixture
async def blind_api(blind: FakeProcess, tmp_path: Path) -> AsyncIterator[KubeApi]:
    async for made in api_of(blind, tmp_path):
        yield made


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


OWNER = "0a1b2c3d"


async def head_pod(api: KubeApi, cluster: str, port: int) -> None:
    """The cluster's head pod, serving HTTP on ``port`` (pods share this machine's network)."""
    server = f"{sys.executable} -m http.server {port} --bind 127.0.0.1"
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(cluster, 0, OWNER),
            "labels": {LABEL_CLUSTER: cluster, LABEL_RANK: "0", LABEL_OWNER: OWNER},
        },
        "spec": {"containers": [{"name": "stix", "image": "x", "command": ["sh", "-c", server]}]},
    }
    await api.call("POST", path("namespaces", NS, "pods"), body=body)
    deadline = time.monotonic() + 20
    while True:
        pod = await api.call("GET", path("namespaces", NS, "pods", pod_name(cluster, 0, OWNER)))
        if (pod.get("status") or {}).get("phase") == "Running" and answers(f"127.0.0.1:{port}"):
            return
        assert time.monotonic() < deadline, f"the head pod of {cluster} never served"
        await anyio.sleep(0.05)


def answers(address: str) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(f"http://{address}/", timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


async def services(api: KubeApi, cluster: str) -> list[dict[str, Any]]:
    found = await api.call(
        "GET",
        path("namespaces", NS, "services"),
        query={"labelSelector": f"{LABEL_CLUSTER}={cluster}"},
    )
    return list(found.get("items") or [])


@pytest.mark.parametrize("mode", ["loadbalancer", "nodeport", "podip"])
async def test_a_port_is_reached_through_the_address_its_mode_gives(
    api: KubeApi, mode: PortMode
) -> None:
    cluster, port = f"ports-{mode}", free_port()
    await head_pod(api, cluster, port)
    await open_ports(api, NS, cluster, OWNER, [port], mode, {"team": "ml"}, {"cost": "42"})
    reached = await endpoints(api, NS, cluster, OWNER, [port], mode)
    assert answers(reached[port])
    made = await services(api, cluster)
    if mode == "podip":
        assert made == [] and reached[port] == f"127.0.0.1:{port}"
        return
    [service] = made
    assert service["metadata"]["name"] == service_name(cluster, OWNER)
    assert service["metadata"]["labels"]["team"] == "ml"
    assert service["metadata"]["annotations"]["cost"] == "42"  # custom_metadata's, as a pod's
    kind = {"loadbalancer": "LoadBalancer", "nodeport": "NodePort"}[mode]
    assert service["spec"]["type"] == kind
    if mode == "nodeport":
        assert reached[port] == f"127.0.0.1:{service['spec']['ports'][0]['nodePort']}"
    await open_ports(api, NS, cluster, OWNER, [port], mode)  # again: the same service is kept
    [again] = await services(api, cluster)
    assert again["metadata"]["uid"] == service["metadata"]["uid"]
    await close_ports(api, NS, cluster, OWNER)
    await close_ports(api, NS, cluster, OWNER)  # gone already: nothing to do
    assert await services(api, cluster) == []


@pytest.mark.parametrize("mode", ["loadbalancer", "nodeport"])
async def test_a_port_added_later_joins_the_same_service_at_the_same_address(
    api: KubeApi, mode: PortMode
) -> None:
    """The service is updated in place, not made again: a load balancer (and its public
    address) stays, as do the node ports of the ports it had."""
    cluster, first, second = f"ports-more-{mode}", free_port(), free_port()
    await head_pod(api, cluster, first)
    await open_ports(api, NS, cluster, OWNER, [first], mode)
    before = (await endpoints(api, NS, cluster, OWNER, [first], mode))[first]
    [made] = await services(api, cluster)
    await open_ports(api, NS, cluster, OWNER, [second], mode)
    [service] = await services(api, cluster)
    assert service["metadata"]["uid"] == made["metadata"]["uid"]
    assert service["status"] == made["status"]
    assert sorted(p["port"] for p in service["spec"]["ports"]) == sorted([first, second])
    assert service["spec"]["ports"][0] == made["spec"]["ports"][0]
    reached = await endpoints(api, NS, cluster, OWNER, [first, second], mode)
    assert reached[first] == before and answers(before)
    server = f"{sys.executable} -m http.server {second} --bind 127.0.0.1"
    serving = await anyio.open_process(server.split(), stdout=-3, stderr=-3)
    try:  # the head pod shares this machine's network: a second server is its second port
        await wait_for(lambda: answers(reached[second]))
    finally:
        serving.kill()
        await serving.aclose()
    await close_ports(api, NS, cluster, OWNER)


async def wait_for(check: Callable[[], bool], within: float = 15) -> None:
    with anyio.fail_after(within):
        while not await anyio.to_thread.run_sync(check):
            await anyio.sleep(0.05)


async def test_preflight_refuses_loadbalancer_ports_where_services_get_no_address(
    blind_api: KubeApi, api: KubeApi
) -> None:
    started = time.monotonic()
    with pytest.raises(PortsUnavailable) as refused:
        await preflight(blind_api, NS, "loadbalancer", wait_s=1.0)
    assert time.monotonic() - started < 8
    message = refused.value.message
    assert "\n" not in message and "kubernetes.ports" in message and "nodeport" in message
    leftover = await blind_api.call("GET", path("namespaces", NS, "services"))
    assert leftover.get("items") == []  # the probe service is gone
    await preflight(blind_api, NS, "nodeport", wait_s=1.0)  # a NodePort needs no controller
    await preflight(api, NS, "loadbalancer", wait_s=5.0)  # a cluster that gives addresses


def test_service_names_are_dns_labels_even_for_names_that_are_not() -> None:
    for cluster in ("c1", "1abc", "My_Cluster.x", "a" * 80):
        name = service_name(cluster, OWNER)
        assert len(name) <= 63 and name[0].isalpha() and name.endswith(f"{OWNER}-ports")
        assert name == name.lower() and all(c.isalnum() or c == "-" for c in name)
        assert name != service_name(cluster, "ffffffff")  # another home's is another service
    assert service_name("a" * 80, OWNER) != service_name("a" * 79, OWNER)


def launch_env(stix: Stix, fake: FakeProcess, mode: PortMode) -> None:
    stix.env["KUBECONFIG"] = str(fake.kubeconfig)
    (stix.home / "config.yaml").write_text(f"kubernetes:\n  ports: {mode}\n")


def test_a_launch_with_ports_a_context_cannot_expose_is_refused_before_any_pod(
    blind: FakeProcess, stix: Stix
) -> None:
    launch_env(stix, blind, "loadbalancer")
    started = time.monotonic()
    refused = stix.run("launch", "-c", "lb", "-y", "--infra", "k8s", "--ports", "8088", "true")
    assert refused.returncode != 0
    [said] = [line for line in refused.stderr.splitlines() if "LoadBalancer" in line]
    assert "kubernetes.ports to nodeport or podip" in said
    assert time.monotonic() - started < 30
    assert blind.kubectl_json("get", "pods")["items"] == []
    assert blind.kubectl_json("get", "services")["items"] == []


def test_a_launch_exposes_its_ports_as_a_nodeport_and_down_removes_the_service(
    fake: FakeProcess, stix: Stix
) -> None:
    launch_env(stix, fake, "nodeport")
    port = free_port()
    server = f"python3 -m http.server {port} --bind 127.0.0.1"
    args = ("launch", "-c", "np", "-y", "-d", "--infra", "k8s", "--ports", str(port), server)
    stix.run(*args, check=True)
    [service] = fake.kubectl_json("get", "services", "-l", f"{LABEL_CLUSTER}=np")["items"]
    assert service["spec"]["type"] == "NodePort"
    node_port = service["spec"]["ports"][0]["nodePort"]
    wait_until(lambda: answers(f"127.0.0.1:{node_port}"))
    stix.run("down", "-y", "np", check=True)
    assert fake.kubectl_json("get", "services", "-l", f"{LABEL_CLUSTER}=np")["items"] == []


def test_a_load_balancer_a_controller_took_on_counts_before_its_slow_address() -> None:
    from stixd.providers.kubernetes.ports import _handled

    finalizer = {"finalizers": ["service.kubernetes.io/load-balancer-cleanup"]}
    assert _handled({"metadata": finalizer, "status": {"loadBalancer": {}}})
    assert _handled({"metadata": {}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
    assert not _handled({"metadata": {}, "status": {"loadBalancer": {}}})


def test_kubectl_replace_of_a_service_keeps_its_address_and_refuses_a_stale_version(
    fake: FakeProcess,
) -> None:
    """The fake's PUT of a service, as the machine's kubectl sends it."""
    made = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "put-me"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": free_port()}]},
    }
    fake.kubectl("create", "-f", "-", input=json.dumps(made))
    try:
        first = fake.kubectl_json("get", "service", "put-me")
        added = {"port": free_port(), "name": "more"}
        first["spec"]["ports"][0]["name"] = "first"
        changed = {**first, "spec": {**first["spec"], "ports": [*first["spec"]["ports"], added]}}
        fake.kubectl("replace", "-f", "-", input=json.dumps(changed))
        after = fake.kubectl_json("get", "service", "put-me")
        assert after["metadata"]["uid"] == first["metadata"]["uid"]
        assert after["status"] == first["status"] and after["status"]["loadBalancer"]["ingress"]
        assert [p["port"] for p in after["spec"]["ports"]] == [
            first["spec"]["ports"][0]["port"],
            added["port"],
        ]
        stale = fake.kubectl("replace", "-f", "-", input=json.dumps(changed), check=False)
        assert stale.returncode != 0 and "the object has been modified" in stale.stderr
    finally:
        fake.kubectl("delete", "service", "put-me")


@pytest.fixture(scope="module")
def slow_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    """A cloud whose load balancer takes its controller's finalizer at once and gets its
    address only after the old launch's wait for it (10 s) had run out."""
    with FakeProcess(
        tmp_path_factory.mktemp("kube-slow-lb"), "--load-balancer-delay", "12"
    ) as made:
        yield made


def test_a_launch_does_not_wait_for_a_slow_load_balancer_and_status_finds_its_address(
    slow_lb: FakeProcess, stix: Stix
) -> None:
    launch_env(stix, slow_lb, "loadbalancer")
    port = free_port()
    server = f"python3 -m http.server {port} --bind 127.0.0.1"
    launched = stix.run("launch", "-c", "slow", "-y", "-d", "--infra", "k8s", "--ports",
                        str(port), server)  # fmt: skip
    try:
        assert launched.returncode == 0, launched.stderr
        assert "LoadBalancer address of slow is pending" in launched.stderr
        assert stix.clusters()["slow"]["status"] == "UP"
        pending = stix.run("status", "--endpoints", "slow")  # not the pod's IP meanwhile
        assert pending.returncode != 0 and "is pending" in pending.stderr, pending.stdout
        [service] = slow_lb.kubectl_json("get", "services", "-l", f"{LABEL_CLUSTER}=slow")["items"]
        records = stix.home / "kubernetes" / "clusters.json"

        def address() -> str:
            stix.run("status", "-r", "slow", check=True)  # asks the provider about the cluster
            return str(json.loads(records.read_text())["slow"].get("reached") or "")

        wait_until(lambda: bool(address()), timeout=30)
        [after] = slow_lb.kubectl_json("get", "services", "-l", f"{LABEL_CLUSTER}=slow")["items"]
        assert after["metadata"]["uid"] == service["metadata"]["uid"]
        assert address() == after["status"]["loadBalancer"]["ingress"][0]["ip"]
        shown = stix.run("status", "--endpoints", "slow", check=True).stdout.strip()
        assert shown == f"{port}: {address()}:{port}"
    finally:
        stix.run("down", "-y", "slow")
