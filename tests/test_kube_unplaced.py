"""Not every pod the scheduler cannot place is short of capacity: the scheduler's reasons read
against one table (stixd/providers/kubernetes/unplaced.py), first as sentences, then as the
fake API server says them of pods a launch made (a node selector no node matches, a taint not
tolerated, an unbound volume claim, a resource no node offers, a node full of pods)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.providers.base import CapacityError
from stixd.providers.kubernetes.api import KubeApiError
from stixd.providers.kubernetes.pods import PodFailed
from stixd.providers.kubernetes.provider import KubernetesProvider
from stixd.providers.kubernetes.unplaced import PodMisconfigured, classify, refused_as_made
from stixproto.errors import ProvisionError
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import CONTEXT
from tests.test_kube_provider import FAIL_OVER_WITHIN_S, gone, open_provider, request

pytestmark = pytest.mark.anyio
TAIL = " preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod."
SELECTOR = "node(s) didn't match Pod's node affinity/selector"


def said(*reasons: str) -> str:
    return f"0/4 nodes are available: {', '.join(reasons)}.{TAIL}"


@pytest.mark.parametrize(
    "message",
    [
        said("4 Insufficient cpu"),
        said("2 Insufficient memory", "2 Insufficient cpu"),
        said("1 Insufficient nvidia.com/gpu", f"3 {SELECTOR}"),  # the GPU node is full
        said("4 Too many pods"),
        said("4 node(s) didn't have free ports for the requested pod ports"),
        said("4 node(s) had untolerated taint {node.kubernetes.io/not-ready: }"),
        said("3 node(s) were unschedulable", f"1 {SELECTOR}"),  # cordoned for a while
        said("4 node(s) said something no scheduler said before"),
        "no nodes available to schedule pods",
        "",
    ],
)
def test_a_shortage_of_room_is_capacity_with_or_without_an_autoscaler(message: str) -> None:
    for autoscaler in (False, True):
        verdict = classify(message, autoscaler=autoscaler, offered={"cpu", "nvidia.com/gpu"})
        assert verdict.capacity, (message, verdict)


@pytest.mark.parametrize(
    ("message", "fix", "autoscaler_may_fix"),
    [
        (said(f"4 {SELECTOR}"), "spec.nodeSelector", True),
        (said("4 node(s) had untolerated taint {dedicated: infra}"), "dedicated", True),
        (said(f"3 {SELECTOR}", "1 node(s) had untolerated taint {team: a}"), "{team}", True),
        (said("pod has unbound immediate PersistentVolumeClaims"), "not bound", False),
        (said('persistentvolumeclaim "data" not found'), "does not exist", False),
        (said("4 Insufficient example.com/fpga"), "example.com/fpga", True),
        (said("4 node(s) had volume node affinity conflict"), "PersistentVolumes", True),
    ],
)
def test_a_pod_no_node_can_take_as_configured_is_a_configuration_error_naming_the_fix(
    message: str, fix: str, autoscaler_may_fix: bool
) -> None:
    offered = {"cpu", "memory", "pods", "nvidia.com/gpu"}
    verdict = classify(message, autoscaler=False, offered=offered)
    assert not verdict.capacity and fix.strip("{}") in verdict.fix, verdict
    assert "\n" not in verdict.fix
    # a node an autoscaler adds may bring the labels, taints or resource; never the volume
    assert classify(message, autoscaler=True, offered=offered).capacity is autoscaler_may_fix


def test_an_insufficient_resource_is_capacity_when_a_node_offers_it_or_none_are_known() -> None:
    message = said("4 Insufficient example.com/fpga")
    assert classify(message, autoscaler=False, offered={"example.com/fpga"}).capacity
    assert classify(message, autoscaler=False, offered=None).capacity


# -- the fake's scheduler says it ----------------------------------------------------------------


@pytest.fixture
async def provider(kube: FakeProcess, tmp_path: Path) -> AsyncIterator[KubernetesProvider]:
    made = open_provider(kube, tmp_path)
    try:
        yield made
    finally:
        await made.aclose()


async def refused(
    kube: FakeProcess, home: Path, cluster: str, pod_config: dict[str, Any], **config: Any
) -> CapacityError:
    """The launch's error, within seconds, its pods gone (the next context starts clean)."""
    provider = open_provider(kube, home / cluster, pod_config=pod_config, **config)
    started = time.monotonic()
    try:
        with pytest.raises(CapacityError) as failed:
            await provider.make_pods(request(cluster))
    finally:
        await provider.aclose()
    assert time.monotonic() - started < FAIL_OVER_WITHIN_S
    assert await gone(kube, cluster) == []
    assert "\n" not in failed.value.message
    assert (failed.value.block.infra, failed.value.block.region) == ("kubernetes", CONTEXT)
    return failed.value


async def test_a_node_selector_no_node_matches_names_the_selector(
    kube: FakeProcess, tmp_path: Path
) -> None:
    error = await refused(kube, tmp_path, "nosel", {"spec": {"nodeSelector": {"disk": "nvme"}}})
    assert isinstance(error, PodMisconfigured)
    assert "spec.nodeSelector" in error.message and "didn't match" in error.message


async def test_a_taint_the_pod_does_not_tolerate_names_the_taint_and_tolerations(
    kube: FakeProcess, tmp_path: Path
) -> None:
    taint = {"key": "dedicated", "value": "infra", "effect": "NoSchedule"}
    kube.admin("nodes", name="infra-1", labels={"pool": "infra"}, taints=[taint])
    pod_config = {"spec": {"nodeSelector": {"pool": "infra"}}}
    error = await refused(kube, tmp_path, "tainted", pod_config)
    assert isinstance(error, PodMisconfigured)
    assert "taint dedicated" in error.message and "spec.tolerations" in error.message
    tolerated = {"spec": {**pod_config["spec"], "tolerations": [{**taint, "operator": "Equal"}]}}
    provider = open_provider(kube, tmp_path / "ok", pod_config=tolerated)
    try:
        made = await provider.make_pods(request("tolerated"))
        [pod] = made.pods.values()
        assert pod["spec"]["nodeName"] == "infra-1"
    finally:
        await provider.terminate("tolerated")
        await provider.aclose()


async def test_an_unbound_claim_fails_at_once_even_with_an_autoscaler_configured(
    kube: FakeProcess, tmp_path: Path
) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "weights"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    kube.kubectl("create", "--validate=false", "-f", "-", input=json.dumps(claim))
    volumes = {"volumes": [{"name": "w", "persistentVolumeClaim": {"claimName": "weights"}}]}
    error = await refused(
        kube, tmp_path, "unbound", {"spec": volumes}, autoscaler="generic", provision_timeout=60
    )
    assert isinstance(error, PodMisconfigured)
    assert "PersistentVolumeClaim" in error.message and "not bound" in error.message
    missing = {"volumes": [{"name": "w", "persistentVolumeClaim": {"claimName": "nope"}}]}
    error = await refused(kube, tmp_path, "noclaim", {"spec": missing})
    assert isinstance(error, PodMisconfigured) and "does not exist" in error.message


async def test_a_resource_no_node_offers_names_the_resource(
    kube: FakeProcess, tmp_path: Path
) -> None:
    fpga = {"limits": {"example.com/fpga": "1"}}
    pod_config = {"spec": {"containers": [{"name": "main", "resources": fpga}]}}
    error = await refused(kube, tmp_path, "fpga", pod_config)
    assert isinstance(error, PodMisconfigured)
    assert "example.com/fpga" in error.message and "no node offers" in error.message


async def test_a_node_full_of_pods_is_capacity_not_configuration(
    kube: FakeProcess, tmp_path: Path
) -> None:
    kube.admin("nodes", name="full-1", labels={"pool": "full"}, pods=0)
    error = await refused(kube, tmp_path, "crowded", {"spec": {"nodeSelector": {"pool": "full"}}})
    assert not isinstance(error, PodMisconfigured)
    assert "Too many pods" in error.message and "no autoscaler" in error.message


async def test_a_full_node_still_waits_for_an_autoscaler(kube: FakeProcess, tmp_path: Path) -> None:
    provider = open_provider(kube, tmp_path, autoscaler="generic", provision_timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(CapacityError, match="no node came within 1 s") as failed:
            await provider.make_pods(request("waits", cpus=128))
        assert not isinstance(failed.value, PodMisconfigured)
        assert time.monotonic() - started >= 1
    finally:
        await provider.aclose()
    with anyio.fail_after(15):
        assert await gone(kube, "waits") == []


async def test_a_pod_the_api_refuses_as_made_fails_in_one_line_naming_pod_config(
    kube: FakeProcess, tmp_path: Path
) -> None:
    provider = open_provider(kube, tmp_path, pod_config={"spec": {"priorityClassName": "urgent"}})
    try:
        with pytest.raises(ProvisionError) as failed:
            await provider.make_pods(request("urgent"))
    finally:
        await provider.aclose()
    message = failed.value.message
    assert not isinstance(failed.value, CapacityError) and "\n" not in message
    assert "no PriorityClass with name urgent" in message and "kubernetes.pod_config" in message
    assert await gone(kube, "urgent") == []


def test_a_refused_create_is_the_pods_configuration_a_quota_or_the_users_role() -> None:
    def refusal(status: int, said: str) -> ProvisionError | None:
        exc = KubeApiError(f"Kubernetes context c: POST pods answered {status}: {said}", status)
        return refused_as_made(exc, "c", pod_failed=PodFailed)

    priority = refusal(403, 'pods "p" is forbidden: no PriorityClass with name x was found')
    assert isinstance(priority, PodFailed) and "kubernetes.pod_config" in priority.message
    assert isinstance(refusal(422, "Pod is invalid: spec.containers[0].image"), PodFailed)
    quota = refusal(403, 'pods "p" is forbidden: exceeded quota: team, requested: cpu=2')
    assert isinstance(quota, CapacityError) and quota.block.region == "c"
    assert refusal(403, 'pods is forbidden: User "u" cannot create resource "pods"') is None
    assert refusal(500, "etcd is down") is None
