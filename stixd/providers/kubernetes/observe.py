"""What a cluster's pods are now, against the nodes its launch brought up: each live pod's
agent asked, each pod gone (deleted, evicted, ended) named as a lost node with the API's
reason. A lost node is listed UNREACHABLE while others of the cluster run (none left: the
cluster lists no node, as a cloud's whose instances are all gone)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import anyio

from stixd.agent_client import AgentClient, AgentUnreachable
from stixd.providers.base import NodeInfo, NodeLoss, NodeStatus
from stixd.providers.kubernetes import pods
from stixd.providers.kubernetes.podspec import pod_name
from stixd.providers.kubernetes.records import Where
from stixd.providers.kubernetes.relay import START_WITHIN_S
from stixproto.errors import ProvisionError

HELLO_DEADLINE_S = 5.0


@dataclasses.dataclass(frozen=True)
class Observation:
    nodes: list[NodeInfo]
    errors: dict[int, str]
    lost: list[NodeLoss]


def by_rank(cluster: str, owner: str, listed: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The cluster's pods by rank (a pod whose name is not its rank's is none of them)."""
    found = {}
    for pod in listed:
        rank = pods.rank_of(pod)
        if rank is not None and pod["metadata"]["name"] == pod_name(cluster, rank, owner):
            found[rank] = pod
    return found


async def observe(
    cluster: str,
    where: Where,
    listed: list[dict[str, Any]],
    recorded: Callable[[int], NodeInfo | None],
    connector: Callable[[NodeInfo], AgentClient],
    channel_up: Callable[[NodeInfo], bool],
) -> Observation:
    """``recorded(rank)``: the node as its launch brought it up (one whose pod was made but
    whose agent never came has an empty agent address), None for a rank never made.

    A running pod whose agent does not answer is STOPPED only when the pod's relay runs
    (``channel_up``) and the agent's socket in it refuses; a relay that cannot start (the API
    slow, 429/5xx, the exec cut) leaves it UNREACHABLE, so the cluster's node grace applies
    as for an SSH host that stops answering. The hello is given the relay's start time."""
    found = by_rank(cluster, where.owner, listed)
    nodes: dict[int, NodeInfo] = {}
    errors: dict[int, str] = {}
    lost: list[NodeLoss] = []

    async def look(rank: int, pod: dict[str, Any], node: NodeInfo) -> None:
        phase = (pod.get("status") or {}).get("phase")
        if phase != "Running":
            errors[rank] = f"pod {pod['metadata']['name']} is {phase}"
            nodes[rank] = dataclasses.replace(node, status=NodeStatus.UNREACHABLE)
            return
        found_ip = pod["status"].get("podIP")
        ip = found_ip if isinstance(found_ip, str) and 0 < len(found_ip) <= 64 else node.ip
        node = nodes[rank] = dataclasses.replace(node, ip=ip, status=NodeStatus.STOPPED)
        if not node.agent_address:
            return
        try:
            hello = await connector(node).call("hello", deadline=HELLO_DEADLINE_S + START_WITHIN_S)
        except (AgentUnreachable, ProvisionError) as exc:
            if not channel_up(node):  # the pod may be fine: not a stopped node, as a host gone
                errors[rank] = f"the pod's exec channel failed: {exc}"[:300]
                nodes[rank] = dataclasses.replace(node, status=NodeStatus.UNREACHABLE)
            return
        pid = hello.get("pid")
        nodes[rank] = dataclasses.replace(
            node, status=NodeStatus.RUNNING, pid=pid if isinstance(pid, int) else None
        )

    made: dict[int, NodeInfo] = {}
    async with anyio.create_task_group() as tg:
        for rank in range(where.num_nodes):
            node = recorded(rank)
            pod = found.get(rank)
            if node is None and pod is None:
                continue  # never made
            if node is None:
                continue  # made by a launch still under way: not yet a node to lose
            made[rank] = node
            if pod is not None and not pods.is_gone(pod):
                tg.start_soon(look, rank, pod, node)
                continue
            why = (
                f"pod {pod['metadata']['name']} {pods.fate(pod)}"
                if pod is not None
                else f"pod {pod_name(cluster, rank, where.owner)} was deleted"
            )
            evicted = pod is not None and pod["status"].get("reason") == "Evicted"
            lost.append(NodeLoss(rank, f"{why} (context {where.context})", evicted))
            errors[rank] = why
    if nodes:
        for loss in lost:
            nodes[loss.rank] = dataclasses.replace(made[loss.rank], status=NodeStatus.UNREACHABLE)
    return Observation(
        [nodes[r] for r in sorted(nodes)], errors, sorted(lost, key=lambda x: x.rank)
    )
