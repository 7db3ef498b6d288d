"""The pod manifest of one node of a cluster: what its task asks (requests and limits, GPUs on
the nodes that have them, the image), the user's ``pod_config`` merged in, and stix's labels.

Pure: everything comes in as arguments (the context's GPU node selection is worked out by the
caller from the nodes it lists), so each rule is a unit test.

The container idles: the agent is started in it later over ``exec``, like on any host. The
user's ``pod_config`` wins over stix's defaults (image, grace period, ...) but not over what
the node must be: its name, labels, container name and command, the task's resources and GPU
node selection, the task's own ``image_id``, and ``restartPolicy: Never`` (the pod ends when the
agent's self-stop ends its command; ``Always`` or ``OnFailure`` would start it again forever.
SkyPilot accepts any ``restartPolicy`` in ``pod_config``, so stix accepts the config too, keeps
``Never`` and warns once, ``overridden_keys``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.gpu_labels import Selection
from stixd.providers.kubernetes.identity import account_of
from stixd.providers.kubernetes.seams import CONTAINER, PodRequest, PodVolume

LABEL_CLUSTER = "stix-cluster"
LABEL_RANK = "stix-node-rank"
LABEL_LAUNCH = "stix-launch"
LABEL_USER = "stix-user"
LABEL_OWNER = "stix-owner"
"""Every object stix makes carries ``LABEL_CLUSTER`` and ``LABEL_OWNER`` (the id of the stix
home that made it, ``owner.py``): down, listing and the leak scan select on both."""

GRACE_S = 10
"""Seconds a deleted pod's processes get between SIGTERM and SIGKILL."""
MAIN_PID_FILE = ".stix-main.pid"
"""In the container's ``$HOME``: the pid of its command, which the agent's self-stop ends."""
IDLE = [
    "/bin/sh",
    "-c",
    f'echo $$ > "$HOME/{MAIN_PID_FILE}" 2>/dev/null; '
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
]
"""The container's command: wait, and end at once on SIGTERM (a bare ``sleep`` as PID 1 ignores
it, and every delete would wait out the grace period); its pid is written down for the agent."""

FS_GROUP = 1000
"""The group a pod with volumes runs with and its volumes are given to (SkyPilot's pods, with
``fsGroupChangePolicy: OnRootMismatch``): a job of a non-root image user can write a claim."""
FUSE_VOLUME = "stix-fuse"
"""The node's /dev/fuse, in a pod whose task mounts a bucket (``fuse: device``)."""

RESTART_POLICY = "Never"
"""The pod's ``restartPolicy``, whatever ``pod_config`` says."""

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?")
_MAX_LABEL = 63


def object_name(cluster: str, owner: str, suffix: str) -> str:
    """``<cluster>-<owner><suffix>``, a DNS label as object names must be. A cluster name that
    is not one (capitals, ``_`` or ``.``, which stix names allow) or too long is lowered and
    cleaned, with a digest of the name itself so two names that clean alike never share it.
    An empty ``owner`` (a cluster made before owners) leaves it out."""
    tail = f"-{owner}{suffix}" if owner else suffix
    if _DNS_LABEL.fullmatch(cluster) and len(cluster) + len(tail) <= _MAX_LABEL:
        return cluster + tail
    digest = hashlib.sha1(cluster.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^a-z0-9-]+", "-", cluster.lower()).strip("-") or "x"
    room = _MAX_LABEL - len(tail) - len(digest) - 1
    return f"{cleaned[:room].rstrip('-')}-{digest}{tail}"


def pod_name(cluster: str, rank: int, owner: str) -> str:
    """``<cluster>-<owner>-<rank>`` (see ``object_name``)."""
    return object_name(cluster, owner, f"-{rank}")


def label_value(text: str) -> str:
    """``text`` as a label value (at most 63 characters of ``[-_.A-Za-z0-9]``, alphanumeric at
    both ends); empty where nothing of it is usable."""
    if len(text) <= _MAX_LABEL and _LABEL_VALUE.fullmatch(text):
        return text
    cleaned = re.sub(r"[^-_.A-Za-z0-9]+", "-", text)[:_MAX_LABEL]
    return cleaned.strip("-_.")


def cluster_selector(cluster: str, owner: str) -> str:
    """The label selector of every object of ``cluster`` this home made (names are valid
    label values); with no ``owner``, those made before owners, which carry none."""
    mine = f"{LABEL_OWNER}={owner}" if owner else f"!{LABEL_OWNER}"
    return f"{LABEL_CLUSTER}={label_value(cluster)},{mine}"


def is_ours(labels: Mapping[str, Any], cluster: str, owner: str, rank: int | None) -> bool:
    """Whether an object's labels say this home made it for ``cluster`` (and ``rank``)."""
    return (
        labels.get(LABEL_CLUSTER) == label_value(cluster)
        and labels.get(LABEL_OWNER, "") == owner
        and (rank is None or labels.get(LABEL_RANK) == str(rank))
    )


@dataclasses.dataclass(frozen=True)
class PodPlan:
    """What one pod is: who it is for, and where it may run."""

    cluster: str
    rank: int
    namespace: str
    owner: str
    launch_id: str = ""
    user: str = ""
    selection: Selection | None = None
    """The GPU nodes it may go to (None: any node)."""
    gpu_resource: str = "nvidia.com/gpu"


def merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``: maps key by key, ``containers`` by position, other lists
    of named maps (env, volumes, ports...) by name, anything else replaced by ``over``."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for key, value in over.items():
            if key in out and key == "containers" and _maps(out[key]) and _maps(value):
                out[key] = _by_position(out[key], value)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if _named(base) and _named(over):
        merged = {item["name"]: item for item in base}
        for item in over:
            merged[item["name"]] = merge(merged.get(item["name"], {}), item)
        return list(merged.values())
    return copy.deepcopy(over)


def _maps(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, Mapping) for v in value)


def _named(value: Any) -> bool:
    return _maps(value) and bool(value) and all(isinstance(v.get("name"), str) for v in value)


def _by_position(base: list[Any], over: list[Any]) -> list[Any]:
    out = [merge(b, o) for b, o in zip(base, over, strict=False)]
    return out + copy.deepcopy(base[len(over) :] + over[len(base) :])


def _quantity_cpu(cpus: float) -> str:
    millis = max(round(cpus * 1000), 1)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _quantity_memory(gb: float) -> str:
    mebi = max(round(gb * 1024), 1)
    return f"{mebi // 1024}Gi" if mebi % 1024 == 0 else f"{mebi}Mi"


def resources(req: PodRequest, gpu_resource: str) -> dict[str, dict[str, str]]:
    """Requests equal to limits (what the task asks is what the pod gets; GPUs must have both
    equal anyway). A zero or unset CPU or memory is left to the namespace's defaults."""
    asked: dict[str, str] = {}
    if req.cpus > 0:
        asked["cpu"] = _quantity_cpu(req.cpus)
    if req.memory_gb > 0:
        asked["memory"] = _quantity_memory(req.memory_gb)
    if req.accelerator_count > 0:
        asked[gpu_resource] = str(req.accelerator_count)
    return {"requests": dict(asked), "limits": dict(asked)} if asked else {}


def _env(plan: PodPlan) -> list[dict[str, Any]]:
    """What a process in the pod can learn of it that the agent does not already tell its jobs
    (their rank and the cluster's node IPs come from the agent)."""

    def field(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    return [
        {"name": "STIX_CLUSTER", "value": plan.cluster},
        {"name": "STIX_POD_RANK", "value": str(plan.rank)},
        field("STIX_POD_NAME", "metadata.name"),
        field("STIX_POD_NAMESPACE", "metadata.namespace"),
        field("STIX_POD_IP", "status.podIP"),
    ]


def stix_labels(plan: PodPlan) -> dict[str, str]:
    labels = {LABEL_CLUSTER: label_value(plan.cluster), LABEL_RANK: str(plan.rank)}
    for key, value in (
        (LABEL_OWNER, plan.owner),
        (LABEL_LAUNCH, plan.launch_id),
        (LABEL_USER, plan.user),
    ):
        if label_value(value):
            labels[key] = label_value(value)
    return labels


def _require(affinity: Mapping[str, Any], selection: Selection) -> dict[str, Any]:
    """The user's node affinity with the GPU selection added: terms are ORed, so each of the
    user's required terms is crossed with each of the selection's."""
    out = copy.deepcopy(dict(affinity))
    node = out.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    ours = selection.node_selector_terms()
    theirs = required.get("nodeSelectorTerms") or [{}]
    required["nodeSelectorTerms"] = [
        {
            **copy.deepcopy(term),
            "matchExpressions": [
                *copy.deepcopy(term.get("matchExpressions") or []),
                *gpu["matchExpressions"],  # type: ignore[misc]
            ],
        }
        for term in theirs
        for gpu in ours
    ]
    return out


def overridden_keys(pod_config: Mapping[str, Any]) -> list[str]:
    """Warnings, one line each, for what ``pod_config`` sets that every pod overrides."""
    spec = pod_config.get("spec")
    asked = spec.get("restartPolicy") if isinstance(spec, Mapping) else None
    if asked is None or asked == RESTART_POLICY:
        return []
    return [
        f"kubernetes.pod_config spec.restartPolicy {asked!r} is ignored: stix pods use "
        f"{RESTART_POLICY!r} (a pod that restarts would outlive autostop and its finished "
        "jobs); remove the key"
    ]


def pod_volumes(volumes: Iterable[PodVolume]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the pod's ``spec.volumes`` entries, its container's ``volumeMounts``)."""
    specs: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for i, v in enumerate(volumes):
        name = f"stix-volume-{i}"
        if v.claim is not None:
            specs.append({"name": name, "persistentVolumeClaim": {"claimName": v.claim}})
        else:
            host = {"path": v.host_path, "type": "DirectoryOrCreate"}
            specs.append({"name": name, "hostPath": host})
        mount = {"name": name, "mountPath": v.dest}
        if v.sub_path:
            mount["subPath"] = v.sub_path
        mounts.append(mount)
    return specs, mounts


def fuse_access(spec: dict[str, Any], container: dict[str, Any], mode: str) -> None:
    """What rclone needs to mount a bucket in the pod: the node's /dev/fuse and the right to
    mount (``SYS_ADMIN``), or a privileged container (``kubernetes.fuse: privileged``). SkyPilot
    0.14 proxies fusermount through a privileged DaemonSet of its own image instead; stix ships
    no image, so the pod itself gets the device, as SkyPilot's pods did before (its
    smarter-device-manager handed out /dev/fuse, the pod added ``SYS_ADMIN``)."""
    security = container.setdefault("securityContext", {})
    if mode == "privileged":
        security["privileged"] = True
        return
    caps = security.setdefault("capabilities", {})
    caps["add"] = [*dict.fromkeys([*(caps.get("add") or []), "SYS_ADMIN"])]
    device = {"name": FUSE_VOLUME, "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}}
    spec["volumes"] = merge(spec.get("volumes") or [], [device])
    mount = {"name": FUSE_VOLUME, "mountPath": "/dev/fuse"}
    container["volumeMounts"] = merge(container.get("volumeMounts") or [], [mount])


def manifest(req: PodRequest, plan: PodPlan, config: KubernetesConfig) -> dict[str, Any]:
    """The pod for rank ``plan.rank`` of ``plan.cluster``."""
    defaults: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {},
        "spec": {
            "restartPolicy": RESTART_POLICY,
            "terminationGracePeriodSeconds": GRACE_S,
            "containers": [{"name": CONTAINER, "image": config.image}],
        },
    }
    pod: dict[str, Any] = merge(defaults, config.pod_config)
    meta = pod.setdefault("metadata", {})
    meta["name"] = pod_name(plan.cluster, plan.rank, plan.owner)
    meta["namespace"] = plan.namespace
    meta["labels"] = {
        **meta.get("labels", {}),
        **config.custom_metadata.labels,
        **stix_labels(plan),
    }
    annotations = {**meta.get("annotations", {}), **config.custom_metadata.annotations}
    if annotations:
        meta["annotations"] = annotations
    spec = pod["spec"]
    spec["restartPolicy"] = RESTART_POLICY
    container = spec["containers"][0]
    container["name"] = CONTAINER
    container["command"] = list(IDLE)
    container.pop("args", None)
    if req.image:
        container["image"] = req.image
    container["env"] = merge(container.get("env") or [], _env(plan))
    asked = resources(req, plan.gpu_resource)
    if asked:
        container["resources"] = merge(container.get("resources") or {}, asked)
    if req.volumes:
        volumes, mounts = pod_volumes(req.volumes)
        spec["volumes"] = merge(spec.get("volumes") or [], volumes)
        container["volumeMounts"] = merge(container.get("volumeMounts") or [], mounts)
        group = {"fsGroup": FS_GROUP, "fsGroupChangePolicy": "OnRootMismatch"}
        spec["securityContext"] = merge(group, spec.get("securityContext") or {})  # theirs wins
    if req.fuse:
        fuse_access(spec, container, config.fuse)
    if plan.selection is not None:
        spec["affinity"] = _require(spec.get("affinity") or {}, plan.selection)
    spec["serviceAccountName"] = account_of(config.remote_identity)  # made by identity.ensure
    return pod
