"""Nodes of the fake cluster and the scheduler's arithmetic: which node fits a pod's requests,
node selector and required node affinity, and the `FailedScheduling` sentence when none does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from decimal import Decimal

from tests.kube_fake.meta import Obj, quantity, timestamp

# The GPU label schemes the issue lists (one per cluster flavour): key -> how the A100 reads there.
GPU_LABEL_SCHEMES: dict[str, str] = {
    "skypilot.co/accelerator": "a100",
    "cloud.google.com/gke-accelerator": "nvidia-tesla-a100",
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "karpenter.k8s.aws/instance-gpu-name": "a100",
    "gpu.nvidia.com/class": "A100",
}
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


def node(
    name: str,
    cpu: str = "4",
    memory: str = "16Gi",
    labels: dict[str, str] | None = None,
    gpus: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    taints: list[Obj] | None = None,
    pods: int = 110,
) -> Obj:
    capacity = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}
    if gpus:
        capacity[gpu_resource] = str(gpus)
    now = timestamp()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"node-{name}",
            "creationTimestamp": now,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0-fake",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "fake://1",
                "osImage": "kube-fake",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def default_nodes() -> list[Obj]:
    """Three CPU nodes and one GPU node (2 x A100, labelled by `skypilot.co/accelerator`)."""
    cpus = [node(f"cpu-{i}") for i in (1, 2, 3)]
    gpu_labels = {"skypilot.co/accelerator": GPU_LABEL_SCHEMES["skypilot.co/accelerator"]}
    return [*cpus, node("gpu-1", cpu="8", memory="64Gi", labels=gpu_labels, gpus=2)]


def pod_requests(pod: Obj) -> dict[str, Decimal]:
    """What a pod asks of a node: its containers' requests, limits standing in where a request
    is missing (as the API server defaults them)."""
    total: dict[str, Decimal] = {}
    for c in pod.get("spec", {}).get("containers", []):
        res = c.get("resources") or {}
        asked = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for name, value in asked.items():
            total[name] = total.get(name, Decimal(0)) + quantity(value)
    return total


def _selector_fits(pod: Obj, labels: dict[str, str]) -> bool:
    spec = pod.get("spec", {})
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms")
    )
    if not required:
        return True
    return any(all(_expression(e, labels) for e in t.get("matchExpressions", [])) for t in required)


def _expression(e: Obj, labels: dict[str, str]) -> bool:
    key, op, values = e.get("key", ""), e.get("operator", ""), e.get("values") or []
    return {
        "In": lambda: labels.get(key) in values,
        "NotIn": lambda: labels.get(key) not in values,
        "Exists": lambda: key in labels,
        "DoesNotExist": lambda: key not in labels,
    }.get(op, lambda: False)()


def _untolerated_taint(pod: Obj, node_obj: Obj) -> str | None:
    tolerations = pod.get("spec", {}).get("tolerations") or []
    for taint in node_obj.get("spec", {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(
            (t.get("operator") == "Exists" and t.get("key") in (None, "", taint["key"]))
            or (t.get("key") == taint["key"] and t.get("value") == taint.get("value"))
            for t in tolerations
        ):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    return None


def why_not(pod: Obj, node_obj: Obj, bound: Iterable[Obj]) -> list[str]:
    """The scheduler's reasons this node cannot take the pod (empty when it can)."""
    if not _selector_fits(pod, node_obj["metadata"].get("labels", {})):
        return ["node(s) didn't match Pod's node affinity/selector"]
    if taint := _untolerated_taint(pod, node_obj):
        return [taint]
    bound = list(bound)
    used: dict[str, Decimal] = {}
    for other in bound:
        for k, v in pod_requests(other).items():
            used[k] = used.get(k, Decimal(0)) + v
    free = node_obj["status"]["allocatable"]
    if len(bound) + 1 > int(free.get("pods", "110")):
        return ["Too many pods"]
    return [
        f"Insufficient {name}"
        for name, want in sorted(pod_requests(pod).items())
        if want > 0 and quantity(free.get(name, 0)) - used.get(name, Decimal(0)) < want
    ]


def failed_scheduling_message(reasons_by_node: dict[str, list[str]]) -> str:
    """`0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 3 node(s) didn't match ...`."""
    n = len(reasons_by_node)
    counts = Counter(r for reasons in reasons_by_node.values() for r in reasons)
    if not n:
        return "no nodes available to schedule pods"
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    return (
        f"0/{n} nodes are available: {parts}. preemption: 0/{n} nodes are available: "
        f"{n} No preemption victims found for incoming pod."
    )
