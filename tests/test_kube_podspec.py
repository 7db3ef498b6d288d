"""The pod manifest of a node and the GPU node selection, as pure functions (no API server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from stixd.providers.kubernetes import gpu_labels
from stixd.providers.kubernetes.config import CustomMetadata, KubernetesConfig
from stixd.providers.kubernetes.entry import build
from stixd.providers.kubernetes.gpu_labels import NoGpuNodes, Selection, select
from stixd.providers.kubernetes.podspec import (
    FS_GROUP,
    FUSE_VOLUME,
    IDLE,
    LABEL_CLUSTER,
    LABEL_LAUNCH,
    LABEL_OWNER,
    LABEL_RANK,
    LABEL_USER,
    PodPlan,
    label_value,
    manifest,
    merge,
    overridden_keys,
    pod_name,
)
from stixd.providers.kubernetes.seams import CONTAINER, PodRequest, PodVolume
from stixd.providers.registry import BuildContext
from tests.kube_fake.nodes import GPU_LABEL_SCHEMES

OWNER = "0a1b2c3d"
PLAN = PodPlan(
    cluster="train", rank=1, namespace="team", owner=OWNER, launch_id="abc123", user="ana"
)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    [only] = pod["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_cpus_memory_and_gpus_are_both_requests_and_limits() -> None:
    req = PodRequest(cpus=1.5, memory_gb=6, accelerator="A100", accelerator_count=2)
    pod = manifest(req, PLAN, KubernetesConfig())
    asked = {"cpu": "1500m", "memory": "6Gi", "nvidia.com/gpu": "2"}
    assert container(pod)["resources"] == {"requests": asked, "limits": asked}
    amd = manifest(
        req, PodPlan("t", 0, "default", OWNER, gpu_resource="amd.com/gpu"), KubernetesConfig()
    )
    assert container(amd)["resources"]["limits"]["amd.com/gpu"] == "2"
    bare = manifest(PodRequest(cpus=0, memory_gb=0), PLAN, KubernetesConfig())
    assert "resources" not in container(bare)


def test_the_pod_is_named_and_labelled_for_its_cluster_and_rank_and_idles() -> None:
    pod = manifest(PodRequest(cpus=1, memory_gb=1), PLAN, KubernetesConfig())
    assert pod["metadata"]["name"] == f"train-{OWNER}-1"
    assert pod["metadata"]["namespace"] == "team"
    assert pod["metadata"]["labels"] == {
        LABEL_CLUSTER: "train",
        LABEL_RANK: "1",
        LABEL_OWNER: OWNER,
        LABEL_LAUNCH: "abc123",
        LABEL_USER: "ana",
    }
    c = container(pod)
    assert (c["name"], c["command"], c["image"]) == (CONTAINER, IDLE, KubernetesConfig().image)
    env = {e["name"]: e for e in c["env"]}
    assert env["STIX_CLUSTER"]["value"] == "train"
    assert env["STIX_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_pod_names_are_dns_labels_and_names_that_clean_alike_do_not_collide() -> None:
    assert pod_name("my-cluster", 3, OWNER) == f"my-cluster-{OWNER}-3"
    odd, other = pod_name("My_Cluster", 0, OWNER), pod_name("my.cluster", 0, OWNER)
    assert odd != other
    longest = pod_name("x" * 63, 12, OWNER)
    assert longest != pod_name("x" * 62, 12, OWNER)
    for name in (odd, other, longest):
        assert (
            len(name) <= 63
            and name == name.lower()
            and name.endswith((f"-{OWNER}-0", f"-{OWNER}-12"))
        )
        assert "_" not in name and "." not in name


def test_the_same_cluster_from_two_homes_gets_two_names_each_stable_for_its_home() -> None:
    for cluster in ("train", "My_Cluster", "x" * 63):
        mine, theirs = pod_name(cluster, 0, OWNER), pod_name(cluster, 0, "ffffffff")
        assert mine != theirs and mine == pod_name(cluster, 0, OWNER)
        assert OWNER in mine and len(mine) <= 63
    assert label_value("a b!c") == "a-b-c" and label_value("ok.name_1") == "ok.name_1"


def test_pod_config_is_merged_in_but_the_node_keeps_what_it_must_be() -> None:
    config = KubernetesConfig(
        image="cfg/image:1",
        pod_config={
            "metadata": {"labels": {"team": "ml", LABEL_CLUSTER: "theirs"}},
            "spec": {
                "priorityClassName": "high",
                "containers": [
                    {
                        "name": "theirs",
                        "image": "pc/image:2",
                        "command": ["false"],
                        "env": [{"name": "HF_HOME", "value": "/cache"}],
                        "resources": {"limits": {"cpu": "99"}},
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                    }
                ],
                "volumes": [{"name": "cache", "emptyDir": {}}],
            },
        },
        custom_metadata=CustomMetadata(labels={"cost": "a1"}, annotations={"note": "x"}),
    )
    pod = manifest(PodRequest(cpus=2, memory_gb=4), PLAN, config)
    c = container(pod)
    assert c["name"] == CONTAINER and c["command"] == IDLE
    assert c["image"] == "pc/image:2"  # pod_config's image over the config's default
    assert {"name": "HF_HOME", "value": "/cache"} in c["env"]
    assert any(e["name"] == "STIX_CLUSTER" for e in c["env"])
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}  # the task's, not 99
    assert c["volumeMounts"] == [{"name": "cache", "mountPath": "/cache"}]
    assert pod["spec"]["volumes"] == [{"name": "cache", "emptyDir": {}}]
    assert pod["spec"]["priorityClassName"] == "high"
    labels = pod["metadata"]["labels"]
    assert (labels["team"], labels["cost"], labels[LABEL_CLUSTER]) == ("ml", "a1", "train")
    assert pod["metadata"]["annotations"] == {"note": "x"}
    task_image = manifest(PodRequest(cpus=1, memory_gb=1, image="task/img"), PLAN, config)
    assert container(task_image)["image"] == "task/img"  # image_id: docker:... over both


def test_a_pod_of_a_task_mounting_a_bucket_gets_the_fuse_device_and_sys_admin() -> None:
    pod = manifest(PodRequest(cpus=1, memory_gb=1, fuse=True), PLAN, KubernetesConfig())
    c = container(pod)
    assert c["securityContext"] == {"capabilities": {"add": ["SYS_ADMIN"]}}
    device = {"name": FUSE_VOLUME, "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}}
    assert pod["spec"]["volumes"] == [device]
    assert c["volumeMounts"] == [{"name": FUSE_VOLUME, "mountPath": "/dev/fuse"}]
    theirs = {
        "spec": {"containers": [{"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}
    }
    kept = manifest(
        PodRequest(cpus=1, memory_gb=1, fuse=True), PLAN, KubernetesConfig(pod_config=theirs)
    )
    assert container(kept)["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "SYS_ADMIN"]
    privileged = KubernetesConfig(fuse="privileged")
    whole = manifest(PodRequest(cpus=1, memory_gb=1, fuse=True), PLAN, privileged)
    assert container(whole)["securityContext"] == {"privileged": True}
    assert "volumes" not in whole["spec"]  # a privileged container has every device
    plain = manifest(PodRequest(cpus=1, memory_gb=1), PLAN, KubernetesConfig())
    assert "securityContext" not in container(plain) and "volumes" not in plain["spec"]


def test_a_pod_with_volumes_runs_with_a_group_that_may_write_them_unless_pod_config_says() -> None:
    claim = (PodVolume(dest="/data", claim="data-1"),)
    pod = manifest(PodRequest(cpus=1, memory_gb=1, volumes=claim), PLAN, KubernetesConfig())
    assert pod["spec"]["securityContext"] == {
        "fsGroup": FS_GROUP,
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    theirs = KubernetesConfig(pod_config={"spec": {"securityContext": {"fsGroup": 2000}}})
    own = manifest(PodRequest(cpus=1, memory_gb=1, volumes=claim), PLAN, theirs)
    assert own["spec"]["securityContext"]["fsGroup"] == 2000
    bare = manifest(PodRequest(cpus=1, memory_gb=1), PLAN, KubernetesConfig())
    assert "securityContext" not in bare["spec"]


def test_merge_goes_key_by_key_containers_by_position_and_named_lists_by_name() -> None:
    base = {"a": {"x": 1, "y": [1]}, "containers": [{"name": "c", "v": 1}], "env": [{"name": "A"}]}
    over = {"a": {"y": [2]}, "containers": [{"v": 2}, {"name": "side"}], "env": [{"name": "B"}]}
    assert merge(base, over) == {
        "a": {"x": 1, "y": [2]},
        "containers": [{"name": "c", "v": 2}, {"name": "side"}],
        "env": [{"name": "A"}, {"name": "B"}],
    }


def test_gpu_selection_is_added_to_each_of_the_users_required_terms() -> None:
    user_terms = [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
    config = KubernetesConfig(
        pod_config={
            "spec": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": user_terms
                        }
                    }
                }
            }
        }
    )
    selection = Selection((("skypilot.co/accelerator", ("a100",)),))
    pod = manifest(
        PodRequest(cpus=1, memory_gb=1, accelerator="A100", accelerator_count=1),
        PodPlan("t", 0, "default", OWNER, selection=selection),
        config,
    )
    required = pod["spec"]["affinity"]["nodeAffinity"]
    [term] = required["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [e["key"] for e in term["matchExpressions"]] == ["zone", "skypilot.co/accelerator"]


def test_remote_identity_names_the_service_account_stix_makes_unless_it_names_one() -> None:
    req = PodRequest(cpus=1, memory_gb=1)
    for mode in ("SERVICE_ACCOUNT", "LOCAL_CREDENTIALS", "NO_UPLOAD"):
        made = manifest(req, PLAN, KubernetesConfig(remote_identity=mode))
        assert made["spec"]["serviceAccountName"] == "stix-service-account"
    named = manifest(req, PLAN, KubernetesConfig(remote_identity="trainer"))
    assert named["spec"]["serviceAccountName"] == "trainer"


@pytest.mark.parametrize("key", list(GPU_LABEL_SCHEMES))
def test_every_label_scheme_reads_its_own_spelling_of_the_a100(key: str) -> None:
    nodes = [{"kubernetes.io/hostname": "cpu"}, {key: GPU_LABEL_SCHEMES[key]}]
    assert select("A100", nodes, None, "ctx") == Selection(((key, (GPU_LABEL_SCHEMES[key],)),))
    with pytest.raises(NoGpuNodes, match="no node has a H100"):
        select("H100", nodes, None, "ctx")


def test_the_table_holds_the_five_schemes_and_the_two_gpu_resources() -> None:
    assert {s.key for s in gpu_labels.SCHEMES} == set(GPU_LABEL_SCHEMES)
    assert gpu_labels.GPU_RESOURCES == ("nvidia.com/gpu", "amd.com/gpu")
    assert gpu_labels.gpu_resource([{"cpu": "4"}, {"amd.com/gpu": "8"}]) == "amd.com/gpu"
    assert gpu_labels.gpu_resource([{"cpu": "4"}]) == "nvidia.com/gpu"


def test_a_request_takes_a_bigger_variant_but_never_a_smaller_one() -> None:
    product = "nvidia.com/gpu.product"
    big = [{product: "NVIDIA-A100-SXM4-80GB"}]
    assert select("A100", big, None, "c").terms == ((product, ("NVIDIA-A100-SXM4-80GB",)),)
    with pytest.raises(NoGpuNodes):
        select("A100-80GB", [{"skypilot.co/accelerator": "a100"}], None, "c")
    with pytest.raises(NoGpuNodes):
        select("L4", [{"skypilot.co/accelerator": "l40s"}], None, "c")


def test_nodes_labelled_by_two_schemes_are_each_selected_by_their_own() -> None:
    nodes = [{"skypilot.co/accelerator": "a100"}, {"nvidia.com/gpu.product": "NVIDIA-A100-PCIE"}]
    assert select("A100", nodes, None, "c").keys == (
        "skypilot.co/accelerator",
        "nvidia.com/gpu.product",
    )


@pytest.mark.parametrize(
    ("autoscaler", "term"),
    [
        ("gke", ("cloud.google.com/gke-accelerator", ("nvidia-tesla-t4",))),
        ("karpenter", ("karpenter.k8s.aws/instance-gpu-name", ("t4",))),
        ("coreweave", ("gpu.nvidia.com/class", ("T4",))),
        ("generic", ("skypilot.co/accelerator", ("t4",))),
    ],
)
def test_with_an_autoscaler_the_gpu_is_spelled_as_its_new_nodes_will_carry_it(
    autoscaler: str, term: tuple[str, tuple[str, ...]]
) -> None:
    assert select("T4", [{"kubernetes.io/hostname": "cpu"}], autoscaler, "c").terms == (term,)


def test_a_context_without_gpu_labels_says_how_to_fix_it() -> None:
    with pytest.raises(NoGpuNodes, match=r"no node has a GPU label .*kubernetes.autoscaler"):
        select("A100", [{"kubernetes.io/hostname": "cpu"}], None, "c")


def test_gke_spells_its_exceptions_as_gke_does() -> None:
    spell = gpu_labels.BY_KEY["cloud.google.com/gke-accelerator"].spell
    assert spell is not None
    assert [spell(g) for g in ("A100", "A100-80GB", "H100", "L4", "H200")] == [
        "nvidia-tesla-a100",
        "nvidia-a100-80gb",
        "nvidia-h100-80gb",
        "nvidia-l4",
        "nvidia-h200-141gb",
    ]


@pytest.mark.parametrize("policy", ["Always", "OnFailure"])
def test_a_restart_policy_in_pod_config_is_overridden_with_a_warning_naming_the_key(
    policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = KubernetesConfig(pod_config={"spec": {"restartPolicy": policy, "priority": 5}})
    pod = manifest(PodRequest(cpus=1, memory_gb=1), PLAN, config)
    assert pod["spec"]["restartPolicy"] == "Never"  # the agent's self-stop ends the pod
    assert pod["spec"]["priority"] == 5  # the rest of pod_config still applies
    [warning] = overridden_keys(config.pod_config)
    assert "spec.restartPolicy" in warning and policy in warning and "\n" not in warning
    assert overridden_keys({"spec": {"restartPolicy": "Never"}}) == []
    assert overridden_keys({"spec": "garbage"}) == []

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with structlog.testing.capture_logs() as logs:
        ctx = BuildContext(tmp_path, config, structlog.get_logger(), "test")
        assert build(ctx) is not None  # accepted, as SkyPilot accepts it
    said = [e for e in logs if e["event"] == "kubernetes_pod_config_overridden"]
    assert [e["warning"] for e in said] == [warning]
