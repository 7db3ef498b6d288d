"""Why the scheduler cannot place a pod: a shortage of room, or the pod's own configuration.

The scheduler's ``FailedScheduling`` sentence (the pod's ``PodScheduled=False/Unschedulable``
condition says the same) counts, per reason, the nodes it ruled out:
``0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 3 node(s) didn't match Pod's node
affinity/selector. preemption: ...``; a reason of the whole pod (a volume claim) has no count.
Each reason is one of three kinds (``REASONS``, the one table):

- ``ROOM``: the node fits the pod but has no room now (cpu, memory, GPUs, pod slots, ports), or
  is out of service for a while (not ready, under pressure, cordoned). Capacity: the launch
  fails over (with an autoscaler, waits up to ``provision_timeout`` for a node).
- ``NODES``: no node there is matches what the pod asks (a node selector or affinity, taints it
  does not tolerate, a resource no node offers). Without an autoscaler that is the pod's
  configuration: waiting will not help; with one, a node it adds may match (a GPU node pool
  scaled to zero), so it counts as capacity.
- ``POD``: the pod cannot be placed anywhere as it is (an unbound or missing volume claim).

A pod is short of capacity when any node is ruled out for room only: freeing or adding room
places it. Otherwise the first configuration reason (the pod's own first, then the reason of
the nodes its selector picked, then the one that ruled out most nodes) is what to fix, told in
one line. Like SkyPilot, a configuration error
still fails over to the next context (its nodes, volumes and taints may differ there); unlike a
shortage it never waits for an autoscaler. A reason not in the table counts as room, as every
``Unschedulable`` did before.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Collection

from stixd.providers.base import Block, CapacityError
from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.nodes import MAX_NODES
from stixd.providers.kubernetes.shapes import as_map, get
from stixproto.errors import ProvisionError

_SELECTOR = "didn't match pod's node affinity/selector"


class Kind(enum.Enum):
    ROOM = "room"
    NODES = "nodes"
    POD = "pod"


@dataclasses.dataclass(frozen=True)
class Reason:
    phrase: str
    """Lower case, as it appears in the scheduler's reason."""
    kind: Kind
    fix: str = ""
    """What to fix, for a configuration reason (``{}``: the reason's subject, a taint's key or
    a resource's name)."""


REASONS: tuple[Reason, ...] = (
    # room: the node fits the pod, but not now
    Reason("insufficient ", Kind.ROOM),
    Reason("too many pods", Kind.ROOM),
    Reason("didn't have free ports", Kind.ROOM),
    Reason("were unschedulable", Kind.ROOM),  # cordoned
    Reason("didn't satisfy existing pods anti-affinity", Kind.ROOM),
    Reason("didn't match pod anti-affinity rules", Kind.ROOM),
    Reason("didn't match pod topology spread constraints", Kind.ROOM),
    Reason("exceed max volume count", Kind.ROOM),
    # nodes: no node there matches the pod
    Reason(
        _SELECTOR,
        Kind.NODES,
        "no node matches the pod's node selector or affinity (kubernetes.pod_config "
        "spec.nodeSelector or spec.affinity, or the GPU's node label)",
    ),
    Reason(
        "taint",
        Kind.NODES,
        "its nodes have taint {}, which the pod does not tolerate (add a toleration in "
        "kubernetes.pod_config spec.tolerations)",
    ),
    Reason(
        "didn't match pod affinity rules",
        Kind.NODES,
        "no node runs the pods its pod affinity asks for (kubernetes.pod_config "
        "spec.affinity.podAffinity)",
    ),
    Reason(
        "volume node affinity conflict",
        Kind.NODES,
        "its volume is bound to nodes or a zone the pod cannot run in (check the "
        "PersistentVolumes of kubernetes.pod_config spec.volumes)",
    ),
    # pod: placed nowhere as it is
    Reason(
        "unbound immediate persistentvolumeclaims",
        Kind.POD,
        "a PersistentVolumeClaim it mounts is not bound (kubernetes.pod_config spec.volumes; "
        "see `kubectl get pvc`)",
    ),
    Reason(
        "persistentvolumeclaim",
        Kind.POD,
        "a PersistentVolumeClaim it mounts does not exist in the namespace "
        "(kubernetes.pod_config spec.volumes)",
    ),
    Reason(
        "didn't find available persistent volumes to bind",
        Kind.POD,
        "no PersistentVolume can be bound to a claim it mounts (kubernetes.pod_config "
        "spec.volumes)",
    ),
)
NO_RESOURCE_FIX = (
    "no node offers the resource {} it requests (kubernetes.pod_config resources, or "
    "accelerators the context has)"
)
TRANSIENT_TAINTS = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")
"""Taints a node carries while out of service (not ready, unreachable, under pressure, being
set up): room that comes back, not the pod's configuration."""
_COUNTED = re.compile(r"^(\d+)\s+(.*)$")
_TAINT = re.compile(r"taint\s*\{([^:}]*)")
_NODES_PREFIX = re.compile(r"^\d+/\d+ nodes are available:\s*")


@dataclasses.dataclass(frozen=True)
class Said:
    """One reason of the scheduler's sentence, as read."""

    text: str
    nodes: int | None
    """How many nodes it ruled out; None for a reason of the whole pod."""
    kind: Kind
    fix: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    capacity: bool
    fix: str = ""
    """For a configuration error: what to fix, one clause."""


def reasons(message: str) -> list[Said]:
    """The reasons of a ``FailedScheduling`` sentence, each classified (offered: see
    ``classify``; unknown here, so every ``Insufficient`` is room)."""
    return _read(message, None)


def needs_offered(message: str) -> set[str]:
    """The resources the sentence says are insufficient beyond those every node has: whether
    any node offers them decides between room and configuration."""
    return {
        s.text[len("insufficient ") :].strip()
        for s in _read(message, None)
        if s.text.lower().startswith("insufficient ")
    } - {"cpu", "memory", "pods", "ephemeral-storage"}


def classify(message: str, *, autoscaler: bool, offered: Collection[str] | None = None) -> Verdict:
    """Capacity or configuration, for the scheduler's ``message``. ``offered``: the resource
    names some node of the context has (None: not known, every ``Insufficient`` is room)."""
    said = _read(message, offered)
    if not said or any(s.kind is Kind.ROOM for s in said):
        return Verdict(capacity=True)
    pod = [s for s in said if s.kind is Kind.POD]
    if not pod and autoscaler:
        return Verdict(capacity=True)  # a node the autoscaler adds may match
    first = pod[0] if pod else min(said, key=_telling)
    return Verdict(capacity=False, fix=first.fix)


def _telling(said: Said) -> tuple[bool, int]:
    """The order in which nodes' reasons tell what to fix: a node selector rules out the nodes
    it is meant to, so the reason the selected nodes gave comes first; then the reason that
    ruled out most nodes."""
    return said.text.lower().endswith(_SELECTOR), -(said.nodes or 0)


def _read(message: str, offered: Collection[str] | None) -> list[Said]:
    text = message.split(" preemption:", 1)[0].strip()
    text = _NODES_PREFIX.sub("", text).rstrip(".").strip()
    if not text or text.lower().startswith("no nodes available"):
        return []
    out = []
    for part in _split(text):
        counted = _COUNTED.match(part)
        nodes, what = (int(counted[1]), counted[2]) if counted else (None, part)
        kind, fix = _kind_of(what, offered)
        out.append(Said(what, nodes, kind, fix))
    return out


def _split(text: str) -> list[str]:
    """Reasons are joined by ``", "``; a taint's ``{key: value}`` holds no comma, but keep
    braces whole all the same."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "{"
        depth -= ch == "}" and depth > 0
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _kind_of(what: str, offered: Collection[str] | None) -> tuple[Kind, str]:
    low = what.lower()
    if low.startswith("insufficient "):
        resource = what[len("insufficient ") :].strip()
        if (
            offered is not None
            and resource not in offered
            and resource
            not in (
                "cpu",
                "memory",
                "pods",
                "ephemeral-storage",
            )
        ):
            return Kind.NODES, NO_RESOURCE_FIX.format(resource)
        return Kind.ROOM, ""
    for reason in REASONS:
        if reason.phrase in low:
            if reason.phrase == "taint":
                key = m[1].strip() if (m := _TAINT.search(what)) else "?"
                if key.startswith(TRANSIENT_TAINTS) or key == "ToBeDeletedByClusterAutoscaler":
                    return Kind.ROOM, ""
                return reason.kind, reason.fix.format(key)
            return reason.kind, reason.fix
    return Kind.ROOM, ""


class PodMisconfigured(CapacityError):
    """The pod, as configured, fits no node of this context and no wait will change that:
    told in one line naming what to fix. A ``CapacityError`` all the same: the next context
    may have the nodes, volumes and tolerated taints it needs (SkyPilot fails over on it too)."""


def misconfigured(context: str, pod: str, fix: str, said: str) -> PodMisconfigured:
    return PodMisconfigured(
        f"pod {pod} cannot be placed in Kubernetes context {context}: {fix}; the scheduler "
        f"said: {said}",
        Block(infra="kubernetes", region=context, reason=fix),
    )


def _offered(node: object) -> set[str]:
    """The resource names a listed node has more than zero of."""
    allocatable = as_map(get(node, "status", "allocatable"))
    return {
        str(name)[:253]
        for name, value in allocatable.items()
        if str(value).strip() not in ("", "0")
    }


async def offered_resources(api: KubeApi) -> set[str] | None:
    """The resource names some node of the context has (allocatable, more than zero); None
    when the nodes cannot be listed (every ``Insufficient`` is then room, as before)."""
    try:
        answer = await api.list_all(path("nodes"), max_items=MAX_NODES, keep=_offered)
    except KubeApiError:
        return None
    offered: set[str] = set()
    for names in answer["items"]:
        offered |= names
    return offered


async def refuse_misconfigured(
    api: KubeApi, pod: str, said: str, *, autoscaler: bool, judged: dict[str, Verdict]
) -> None:
    """``PodMisconfigured`` when the scheduler's ``said`` of ``pod`` is the pod's configuration,
    not a shortage; each sentence judged once (``judged``: the launch's verdicts so far)."""
    verdict = judged.get(said)
    if verdict is None:
        offered = await offered_resources(api) if needs_offered(said) else None
        verdict = judged[said] = classify(said, autoscaler=autoscaler, offered=offered)
    if not verdict.capacity:
        raise misconfigured(api.context, pod, verdict.fix, said)


def refused_as_made(
    exc: KubeApiError, context: str, *, pod_failed: type[ProvisionError]
) -> ProvisionError | None:
    """What the API server's refusal to create a pod means, when it is about the pod: its
    schema (400, 422) or an admission rule (403: an unknown priority class) is the pod's
    configuration (``pod_failed``: the same pod is refused again); a namespace's quota is
    capacity (the next context may have room). None for anything else (a role that may not
    create pods says so in its own words)."""
    said = exc.message
    if exc.status == 403 and "exceeded quota" in said:
        return CapacityError(said, Block(infra="kubernetes", region=context, reason="quota"))
    if exc.status in (400, 422) or (exc.status == 403 and "cannot create" not in said):
        return pod_failed(f"{said} (check kubernetes.pod_config)")
    return None
