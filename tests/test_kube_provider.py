"""The Kubernetes provider against the fake API server (tests/kube_fake): pods made with the
task's requests and GPU node selection, found again after a crash, an unschedulable request
failing over at once with the scheduler's words, lost pods, down leaving nothing, leaks.

Everything a test checks about the cluster it checks with kubectl, from outside stix. One fake
serves the module; each test has clusters of its own names and a stix home of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.agent_client import AgentClient
from stixd.providers.abilities import CannotStop, FindsLeaks, HasShell, ReportsLostNodes
from stixd.providers.base import CapacityError, NodeInfo, NodeStatus, ProvisionRequest
from stixd.providers.kubernetes.api import ATTEMPTS, KubeApi, KubeApiError, path
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.deferred import DeferredShell
from stixd.providers.kubernetes.pods import well_formed
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, LABEL_OWNER, pod_name
from stixd.providers.kubernetes.provider import KubernetesProvider
from stixd.providers.kubernetes.records import Where
from stixd.providers.kubernetes.seams import PodRef, PodShell
from stixproto.errors import ProvisionError
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import CONTEXT

pytestmark = pytest.mark.anyio
FAIL_OVER_WITHIN_S = 5.0


def no_shell(ref: PodRef) -> PodShell:
    raise AssertionError(f"these tests make pods without agents, yet {ref} was exec'd into")


@pytest.fixture
async def provider(kube: FakeProcess, tmp_path: Path) -> AsyncIterator[KubernetesProvider]:
    made = open_provider(kube, tmp_path)
    try:
        yield made
    finally:
        await made.aclose()


def open_provider(
    kube: FakeProcess, home: Path, *, agents: bool = False, **config: Any
) -> KubernetesProvider:
    """A provider as the daemon makes it (``agents``: with pod shells over exec)."""
    kubeconfig = read_kubeconfig({"KUBECONFIG": str(kube.kubeconfig)})
    clients = Clients(kubeconfig, home / "certs")
    shells = (lambda pod: DeferredShell(clients, pod)) if agents else no_shell
    return KubernetesProvider(home, KubernetesConfig(**config), kubeconfig, shells, clients=clients)


def request(
    cluster: str, nodes: int = 1, ports: tuple[int, ...] = (), **asked: Any
) -> ProvisionRequest:
    placement = {
        "request": {"cpus": 0.5, "memory_gb": 0.5, **asked},
        "launch_id": "L1",
        "ports": list(ports),
    }
    return ProvisionRequest(cluster, nodes, Path("/nonexistent/stix-agent-x.pyz"), placement)


def names(provider: KubernetesProvider, cluster: str, *ranks: int) -> list[str]:
    """The names the provider's home gives ``cluster``'s pods of ``ranks``."""
    return [pod_name(cluster, rank, provider.owner) for rank in ranks]


def pods_of(kube: FakeProcess, cluster: str) -> list[dict[str, Any]]:
    """The cluster's pods as kubectl lists them, those being deleted left out."""
    listed = kube.kubectl_json("get", "pods", "-l", f"{LABEL_CLUSTER}={cluster}")["items"]
    return [p for p in listed if not p["metadata"].get("deletionTimestamp")]


def everything_of(kube: FakeProcess, cluster: str) -> list[str]:
    found = kube.kubectl_json("get", "pods,services", "-l", f"{LABEL_CLUSTER}={cluster}")
    return [f"{o['kind']} {o['metadata']['name']}" for o in found["items"]]


async def gone(kube: FakeProcess, cluster: str, within: float = 15.0) -> list[str]:
    with anyio.move_on_after(within):
        while everything_of(kube, cluster):
            await anyio.sleep(0.1)
    return everything_of(kube, cluster)


# -- pods as nodes ------------------------------------------------------------------------------


async def test_pods_ask_for_the_tasks_resources_and_run_on_the_gpu_node(
    kube: FakeProcess, provider: KubernetesProvider
) -> None:
    made = await provider.make_pods(
        request("res", 2, cpus=1, memory_gb=2, accelerator="A100", accelerator_count=1)
    )
    assert sorted(made.pods) == names(provider, "res", 0, 1)
    for pod in pods_of(kube, "res"):
        [c] = pod["spec"]["containers"]
        asked = {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
        assert c["resources"] == {"requests": asked, "limits": asked}
        assert pod["spec"]["nodeName"] == "gpu-1"  # the one node labelled for the A100
        assert pod["status"]["phase"] == "Running"
        assert pod["metadata"]["labels"]["stix-launch"] == "L1"
    await provider.terminate("res")
    assert await gone(kube, "res") == []


# Each scheme labels a node with a GPU no other node of the module has, as that scheme spells it.
SCHEME_NODES = {
    "skypilot.co/accelerator": ("L4", "l4"),
    "cloud.google.com/gke-accelerator": ("T4", "nvidia-tesla-t4"),
    "nvidia.com/gpu.product": ("H100", "NVIDIA-H100-80GB-HBM3"),
    "karpenter.k8s.aws/instance-gpu-name": ("A10G", "a10g"),
    "gpu.nvidia.com/class": ("V100", "V100"),
}


@pytest.mark.parametrize("key", list(SCHEME_NODES))
async def test_a_gpu_pod_goes_to_the_node_labelled_for_it_by_each_scheme(
    kube: FakeProcess, provider: KubernetesProvider, key: str
) -> None:
    gpu, value = SCHEME_NODES[key]
    node = f"node-{gpu.lower()}"
    kube.admin("nodes", name=node, labels={key: value}, gpus=1, cpu="4", memory="16Gi")
    cluster = f"gpu-{gpu.lower()}"
    await provider.make_pods(request(cluster, accelerator=gpu, accelerator_count=1))
    [pod] = pods_of(kube, cluster)
    assert pod["spec"]["nodeName"] == node
    required = pod["spec"]["affinity"]["nodeAffinity"]
    terms = required["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchExpressions"] for t in terms] == [
        [{"key": key, "operator": "In", "values": [value]}]
    ]
    await provider.terminate(cluster)
    assert await gone(kube, cluster) == []


async def test_a_second_launch_after_a_crash_finds_the_pods_and_makes_no_duplicate(
    kube: FakeProcess, provider: KubernetesProvider, tmp_path: Path
) -> None:
    async with anyio.create_task_group() as tg:  # the daemon dies once the first pod exists
        tg.start_soon(provider.make_pods, request("again", 2))
        with anyio.fail_after(10):
            while not pods_of(kube, "again"):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    restarted = open_provider(kube, tmp_path)
    try:
        made = await restarted.make_pods(request("again", 2))
        uids = {p["metadata"]["uid"] for p in made.pods.values()}
        assert len(pods_of(kube, "again")) == 2
        remade = await restarted.make_pods(request("again", 2))
        assert {p["metadata"]["uid"] for p in remade.pods.values()} == uids
        assert {p["metadata"]["uid"] for p in pods_of(kube, "again")} == uids
    finally:
        await restarted.terminate("again")
        await restarted.aclose()
    assert await gone(kube, "again") == []


# -- failing over -------------------------------------------------------------------------------


async def test_an_unschedulable_request_fails_within_seconds_with_the_schedulers_reason(
    kube: FakeProcess, provider: KubernetesProvider
) -> None:
    started = time.monotonic()
    with pytest.raises(CapacityError) as failed:
        await provider.make_pods(request("huge", 2, cpus=64))
    assert time.monotonic() - started < FAIL_OVER_WITHIN_S
    message = failed.value.message
    assert "\n" not in message and "Insufficient cpu" in message and CONTEXT in message
    assert (failed.value.block.infra, failed.value.block.region) == ("kubernetes", CONTEXT)
    assert "Insufficient cpu" in failed.value.block.reason
    assert await gone(kube, "huge") == []  # the next context starts from a clean slate
    assert provider.records.where("huge") is None


async def test_with_an_autoscaler_the_launch_waits_telling_the_events_and_takes_a_new_node(
    kube: FakeProcess, tmp_path: Path
) -> None:
    provider = open_provider(kube, tmp_path, autoscaler="generic", provision_timeout=30)
    told: list[str] = []
    req = request("grow", cpus=12)
    req = ProvisionRequest(req.cluster, 1, req.agent_pyz, req.resources, progress=told.append)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(provider.make_pods, req)
            with anyio.fail_after(10):
                while not any("FailedScheduling" in t for t in told):
                    await anyio.sleep(0.05)
            assert any("Insufficient cpu" in t for t in told)
            kube.admin("nodes", name="big-1", cpu="16", memory="64Gi")  # the autoscaler's node
        [pod] = pods_of(kube, "grow")
        assert (pod["spec"]["nodeName"], pod["status"]["phase"]) == ("big-1", "Running")
    finally:
        await provider.terminate("grow")
        await provider.aclose()


async def test_with_an_autoscaler_a_node_that_never_comes_fails_over_after_the_timeout(
    kube: FakeProcess, tmp_path: Path
) -> None:
    provider = open_provider(kube, tmp_path, autoscaler="gke", provision_timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(CapacityError, match=r"no node came within 1 s.*Insufficient cpu"):
            await provider.make_pods(request("never-grows", cpus=128))
        assert 1 <= time.monotonic() - started < 1 + FAIL_OVER_WITHIN_S
        assert await gone(kube, "never-grows") == []
    finally:
        await provider.aclose()


# -- ports ---------------------------------------------------------------------------------------


async def test_a_launchs_ports_get_a_service_of_the_configured_kind_which_down_removes(
    kube: FakeProcess, tmp_path: Path
) -> None:
    provider = open_provider(kube, tmp_path, ports="nodeport")
    try:
        await provider.make_pods(request("ported", ports=(8080,)))
        [service] = [o for o in everything_of(kube, "ported") if o.startswith("Service")]
        found = kube.kubectl_json("get", "service", service.split()[1])
        assert found["spec"]["type"] == "NodePort"
        assert [p["port"] for p in found["spec"]["ports"]] == [8080]
        await provider.open_ports("ported", [9090])  # a port opened later joins it
        found = kube.kubectl_json("get", "service", service.split()[1])
        assert sorted(p["port"] for p in found["spec"]["ports"]) == [8080, 9090]
        await provider.terminate("ported")
        assert everything_of(kube, "ported") == []
    finally:
        await provider.aclose()


async def test_a_load_balancers_address_is_where_a_service_reaches_the_cluster(
    kube: FakeProcess, provider: KubernetesProvider
) -> None:
    await provider.make_pods(request("lb", ports=(8080,)))
    [service] = kube.kubectl_json("get", "services", "-l", f"{LABEL_CLUSTER}=lb")["items"]
    assert service["spec"]["type"] == "LoadBalancer"
    [ingress] = service["status"]["loadBalancer"]["ingress"]
    node = NodeInfo(0, "10.1.2.3", NodeStatus.RUNNING, "/s", "/w", "/h", address="x/y/lb-0")
    assert provider.reachable_address("lb", node) == ingress["ip"]
    await provider.terminate("lb")
    assert await gone(kube, "lb") == []


async def test_ports_a_context_cannot_expose_fail_over_before_any_pod_is_made(
    tmp_path: Path,
) -> None:
    with FakeProcess(tmp_path / "blind", "--no-load-balancer") as blind:
        provider = open_provider(blind, tmp_path / "home")  # ports: loadbalancer, the default
        try:
            with pytest.raises(CapacityError, match=r"kubernetes\.ports to nodeport") as refused:
                await provider.make_pods(request("unexposed", ports=(8080,)))
            assert refused.value.block.region == CONTEXT
            assert "\n" not in refused.value.message
            assert everything_of(blind, "unexposed") == []
            assert everything_of(blind, "stix-ports-probe") == []
        finally:
            await provider.aclose()


# -- the API misbehaving ------------------------------------------------------------------------


async def test_500_and_429_answers_are_retried_and_a_slow_api_fails_the_call_in_one_line(
    kube: FakeProcess, provider: KubernetesProvider
) -> None:
    api = await provider.api(CONTEXT)
    kube.admin("faults", fail_count=2, fail_code=500)
    assert "items" in await api.call("GET", path("namespaces", "default", "pods"))
    kube.admin("faults", fail_count=1, fail_code=429)
    assert "items" in await api.call("GET", path("nodes"))
    kube.admin("faults", fail_count=ATTEMPTS, fail_code=503)
    try:
        with pytest.raises(KubeApiError) as broken:
            await api.call("GET", path("nodes"))
        assert broken.value.status == 503 and "\n" not in broken.value.message
    finally:
        kube.admin("faults", fail_count=0)
    slow = KubeApi(api.client, CONTEXT, timeout=0.5)
    kube.admin("faults", delay=2)
    try:
        started = time.monotonic()
        with pytest.raises(KubeApiError, match=r"no answer within 0\.5 s"):
            await slow.call("GET", path("nodes"))
        assert time.monotonic() - started < 1.5
    finally:
        kube.admin("faults", delay=0)


# -- lifecycle ----------------------------------------------------------------------------------


async def test_stop_is_refused_in_one_sentence_naming_down(provider: KubernetesProvider) -> None:
    assert isinstance(provider, CannotStop)
    with pytest.raises(ProvisionError) as refused:
        await provider.stop("any")
    assert "\n" not in refused.value.message and "`stixctl down any`" in refused.value.message


async def test_a_pod_deleted_or_evicted_from_outside_is_a_lost_node(
    kube: FakeProcess, provider: KubernetesProvider
) -> None:
    assert isinstance(provider, ReportsLostNodes)
    await provider.make_pods(request("lose", 3))
    assert provider.lost_nodes("lose") == []
    first, second, third = names(provider, "lose", 0, 1, 2)
    kube.kubectl("delete", "pod", first, "--wait=false")
    kube.admin("evict", name=third)
    with anyio.fail_after(10):
        while len(provider.lost_nodes("lose")) < 2:
            nodes = await provider.query("lose")
            await anyio.sleep(0.05)
    lost = {x.rank: x for x in provider.lost_nodes("lose")}
    assert sorted(lost) == [0, 2]
    assert first in lost[0].why and not lost[0].preempted
    assert "Evicted" in lost[2].why and lost[2].preempted
    assert [(n.rank, n.status) for n in nodes] == [
        (0, NodeStatus.UNREACHABLE),
        (1, NodeStatus.STOPPED),  # the pod runs, with no agent in it
        (2, NodeStatus.UNREACHABLE),
    ]
    await provider.make_pods(request("lose", 3))  # a relaunch puts back what is missing
    assert sorted(p["metadata"]["name"] for p in pods_of(kube, "lose")) == [first, second, third]
    assert all(p["status"]["phase"] == "Running" for p in pods_of(kube, "lose"))
    await provider.query("lose")
    assert provider.lost_nodes("lose") == []
    await provider.terminate("lose")
    assert await gone(kube, "lose") == []


async def test_a_relaunch_that_cannot_place_a_lost_nodes_pod_leaves_the_live_ones(
    kube: FakeProcess, provider: KubernetesProvider
) -> None:
    req = request("keep", 2, accelerator="A100", accelerator_count=1)  # gpu-1's two GPUs
    await provider.make_pods(req)
    head, other = names(provider, "keep", 0, 1)
    kube.kubectl("delete", "pod", head, "--wait=true")
    hog = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-hog"},
        "spec": {
            "containers": [
                {
                    "name": "hog",
                    "image": "x",
                    "command": ["sleep", "600"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ]
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(hog))  # another team takes the GPU
    try:
        with pytest.raises(ProvisionError, match=r"Insufficient nvidia\.com/gpu") as failed:
            await provider.make_pods(req)
        # no failover: moving to another context would delete the live pod (terminate here)
        assert not isinstance(failed.value, CapacityError)
        assert f"keeps its running pods {other}" in failed.value.message
        assert [p["metadata"]["name"] for p in pods_of(kube, "keep")] == [other]
        assert provider.records.where("keep") is not None
    finally:
        kube.kubectl("delete", "pod", "gpu-hog", "--wait=true")
    await provider.make_pods(req)  # the GPU is free again: the node comes back
    assert sorted(p["metadata"]["name"] for p in pods_of(kube, "keep")) == [head, other]
    await provider.terminate("keep")
    assert await gone(kube, "keep") == []


async def test_down_leaves_nothing_and_a_second_down_is_harmless(
    kube: FakeProcess, provider: KubernetesProvider, tmp_path: Path
) -> None:
    await provider.make_pods(request("bye", 2))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "bye-ports",
            "labels": {LABEL_CLUSTER: "bye", LABEL_OWNER: provider.owner},
        },
        "spec": {"selector": {LABEL_CLUSTER: "bye"}, "ports": [{"port": 80}]},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(service))
    assert len(everything_of(kube, "bye")) == 3
    await provider.terminate("bye")
    assert everything_of(kube, "bye") == []  # terminate waits until the pods are gone
    assert await provider.query("bye") == []
    await provider.terminate("bye")
    restarted = open_provider(kube, tmp_path)
    await restarted.terminate("bye")
    await restarted.aclose()


async def test_stix_pods_no_cluster_owns_are_leaks_and_are_cleaned(
    kube: FakeProcess, provider: KubernetesProvider
) -> None:
    assert isinstance(provider, FindsLeaks)
    await provider.make_pods(request("owned"))
    ghost = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ghost-0",
            "labels": {LABEL_CLUSTER: "ghost", LABEL_OWNER: provider.owner},
        },
        "spec": {"containers": [{"name": "stix", "image": "x", "command": ["sleep", "60"]}]},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(ghost))
    try:
        leaks = await provider.leaks(provider.regions(), live={"owned"}, young_s=0)
        assert [(x.kind, x.cluster, x.id, x.region) for x in leaks] == [
            ("instance", "ghost", "default/ghost-0", CONTEXT)
        ]
        assert await provider.leaks(provider.regions(), live={"owned"}, young_s=3600) == []
        await provider.clean_leaks(leaks)
        assert pods_of(kube, "ghost") == []
        assert await provider.leaks(provider.regions(), live={"owned"}, young_s=0) == []
        assert len(pods_of(kube, "owned")) == 1
    finally:
        await provider.terminate("owned")
        kube.kubectl("delete", "pod", "ghost-0", "--ignore-not-found")


async def test_the_shell_command_is_kubectl_exec_into_the_pods_container(
    provider: KubernetesProvider,
) -> None:
    assert isinstance(provider, HasShell)
    node = NodeInfo(0, "10.0.0.1", NodeStatus.RUNNING, "/s", "/w", "/h", address="c/ns/p-0")
    argv, cwd, env = provider.shell_command(node, None)
    assert argv[:9] == ["kubectl", "--context", "c", "-n", "ns", "exec", "-it", "p-0", "-c"]
    assert argv[9:12] == ["stix", "--", "sh"] and cwd is None
    assert env["KUBECONFIG"] == str(provider.kubeconfig.paths[0])
    assert provider.shell_command(node, "true")[0][6] == "-i"


# -- the agent in the pod -----------------------------------------------------------------------


async def job_output(agent: AgentClient, job_id: int) -> str:
    """The whole log of a job, once it has finished."""
    for state in ("PENDING", "RUNNING"):
        await agent.call("wait", deadline=40, job_id=job_id, state=state, timeout=30)
    text, offset = "", 0
    while True:
        chunk = await agent.call("tail", deadline=40, job_id=job_id, offset=offset, wait=30)
        text, offset = text + str(chunk["data"]), int(chunk["offset"])
        if chunk["eof"]:
            return text


@pytest.mark.parametrize("nodes", [1, 2])
async def test_a_cluster_of_pods_runs_a_command_through_each_pods_agent(
    kube: FakeProcess, tmp_path: Path, pyz: Path, nodes: int
) -> None:
    provider = open_provider(kube, tmp_path, agents=True)
    cluster = f"agents-{nodes}"
    req = ProvisionRequest(cluster, nodes, pyz, request(cluster).resources)
    try:
        launched = await provider.launch(req)
        assert [(n.rank, n.status) for n in launched] == [
            (r, NodeStatus.RUNNING) for r in range(nodes)
        ]
        for node in launched:
            agent = provider.connector(node)
            hello = await agent.call("hello", deadline=10)
            assert (hello["cluster"], hello["rank"]) == (cluster, node.rank)
            await agent.call(
                "submit",
                job_id=1,
                run='echo "rank $SKYPILOT_NODE_RANK on $STIX_POD_NAME"; test -d ~/sky_workdir',
                node_rank=node.rank,
                node_ips=[n.ip for n in launched],
                num_nodes=nodes,
            )
            said = await job_output(agent, 1)
            [name] = names(provider, cluster, node.rank)
            assert said.splitlines() == [f"rank {node.rank} on {name}"]
            job = (await agent.call("jobs", job_ids=[1]))["jobs"][0]
            assert job["state"] == "SUCCEEDED"
        again = await provider.launch(req)  # the agents are found, not started again
        assert [(n.rank, n.pid) for n in again] == [(n.rank, n.pid) for n in launched]
        assert [(n.rank, n.status) for n in await provider.query(cluster)] == [
            (r, NodeStatus.RUNNING) for r in range(nodes)
        ]
    finally:
        await provider.terminate(cluster)
        await provider.aclose()
    assert everything_of(kube, cluster) == []


def test_list_answers_are_read_as_hostile() -> None:
    answer: dict[str, Any] = {
        "items": [
            {"metadata": {"name": "ok"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "bare"}},  # no status: one is given
            {"metadata": {"name": 3}},
            {"metadata": "x"},
            "not an object",
            {},
        ]
    }
    assert [(i["metadata"]["name"], i["status"]) for i in well_formed(answer)] == [
        ("ok", {"phase": "Running"}),
        ("bare", {}),
    ]
    assert well_formed({"items": "many"}) == [] and well_formed({}) == []


async def test_down_of_a_cluster_whose_context_was_removed_forgets_it(
    kube: FakeProcess, tmp_path: Path
) -> None:
    """The user dropped the context from the kubeconfig: stix cannot reach its pods any more,
    and `down` must not fail forever."""
    provider = open_provider(kube, tmp_path)
    try:
        provider.records.place("elsewhere", Where("removed-context", "default", 1))
        await provider.terminate("elsewhere")
        assert provider.records.where("elsewhere") is None
        assert await provider.query("elsewhere") == []
    finally:
        await provider.aclose()
