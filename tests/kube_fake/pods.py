"""The shape of a pod as the API server returns it: the defaults it fills in on create and the
complete status of each phase (kubernetes-asyncio refuses a container status without `image`,
`imageID`, `restartCount`, `ready` or `name`)."""

from __future__ import annotations

import copy

from tests.kube_fake.meta import ApiError, Obj, new_metadata, timestamp
from tests.kube_fake.sandbox import POD_IP

SYSTEM_PRIORITY_CLASSES = ("system-cluster-critical", "system-node-critical")
"""The only priority classes a fresh cluster has (the fake serves no PriorityClass API)."""


def new_pod(body: Obj, namespace: str) -> Obj:
    spec = copy.deepcopy(body.get("spec") or {})
    containers = spec.get("containers")
    if not containers or not all(isinstance(c, dict) and c.get("name") for c in containers):
        raise ApiError(422, "Invalid", "Pod is invalid: spec.containers: Required value")
    for c in containers:
        if not c.get("image"):
            raise ApiError(
                422, "Invalid", "Pod is invalid: spec.containers[0].image: Required value"
            )
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
    priority = spec.get("priorityClassName")
    if priority and priority not in SYSTEM_PRIORITY_CLASSES:  # the Priority admission plugin
        name = (body.get("metadata") or {}).get("name", "")
        raise ApiError(
            403, "Forbidden", f'pods "{name}" is forbidden: no PriorityClass with name '
            f"{priority} was found"
        )  # fmt: skip
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("securityContext", {})
    spec.setdefault("tolerations", [])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": new_metadata(body, namespace, "pods"),
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": _qos(containers)},
    }


def _qos(containers: list[Obj]) -> str:
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        r.get("limits") and r.get("requests", r["limits"]) == r["limits"] for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _condition(kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> Obj:
    cond: Obj = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": timestamp(),
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _container_status(c: Obj, state: Obj, ready: bool, restarts: int = 0) -> Obj:
    status = {
        "name": c["name"],
        "image": c["image"],
        "imageID": f"fake://{c['image']}",
        "ready": ready,
        "restartCount": restarts,
        "started": "running" in state,
        "state": state,
        "lastState": {},
    }
    if "waiting" not in state:
        status["containerID"] = f"fake://{c['name']}"
    return status


def unschedulable(pod: Obj, message: str) -> None:
    pod["status"].update(
        phase="Pending",
        conditions=[_condition("PodScheduled", False, "Unschedulable", message)],
    )


def scheduled(pod: Obj, node_name: str) -> None:
    pod["spec"]["nodeName"] = node_name
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    pod["status"].update(
        phase="Pending",
        hostIP=POD_IP,
        hostIPs=[{"ip": POD_IP}],
        startTime=timestamp(),
        conditions=[_condition("PodScheduled", True)],
        containerStatuses=[_container_status(c, waiting, False) for c in pod["spec"]["containers"]],
    )


def running(pod: Obj, ip: str, restarts: int = 0) -> None:
    state = {"running": {"startedAt": timestamp()}}
    pod["status"].update(
        phase="Running",
        podIP=ip,
        podIPs=[{"ip": ip}],
        conditions=[
            _condition(kind, True)
            for kind in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ],
        containerStatuses=[
            _container_status(c, state, True, restarts) for c in pod["spec"]["containers"]
        ],
    )


def terminated(pod: Obj, exit_code: int, reason: str | None = None, message: str = "") -> None:
    """The end of a pod: Succeeded on exit 0, else Failed; `reason` is the pod's own (Evicted)."""
    started = pod["status"].get("startTime", timestamp())
    state = {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": timestamp(),
            "containerID": "fake://main",
        }
    }
    containers = pod["spec"]["containers"]
    pod["status"].update(
        phase="Succeeded" if exit_code == 0 and reason is None else "Failed",
        conditions=[
            _condition("Ready", False, "PodCompleted"),
            _condition("ContainersReady", False, "PodCompleted"),
            _condition("PodScheduled", True),
        ],
        containerStatuses=[_container_status(c, state, False) for c in containers],
    )
    if reason:
        pod["status"].update(reason=reason, message=message)
