"""The agent in each pod of a launch, over the pod's shell, as onto an SSH host
(``bootstrap.ensure_agent``): every rank at once; the nodes they make, in rank order."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, NodeStatus, ProvisionRequest
from stixd.providers.kubernetes.podspec import MAIN_PID_FILE, pod_name
from stixd.providers.kubernetes.records import Where
from stixd.providers.kubernetes.seams import PodRef, PodRequest, PodShell
from stixd.providers.kubernetes.shapes import get
from stixd.providers.shared.bootstrap import ensure_agent
from stixd.providers.shared.fuse_tools import ensure_fuse_tools
from stixd.providers.shared.ssh_nodes import WORKDIR, build_of
from stixd.providers.shared.ssh_transport import quote
from stixproto.errors import ProvisionError

SELF_STOP_DEADLINE_S = 30.0
SELF_STOP_COMMAND = (
    f'p=$(cat "$HOME/{MAIN_PID_FILE}" 2>/dev/null || echo 1); '
    f"grep -qs {MAIN_PID_FILE} /proc/$p/cmdline && kill -TERM $p"
)
"""What the agent runs when autostop is due and no daemon took the cluster down: it ends the
container's command (only if that pid is still it), so the pod ends (Succeeded) and gives its
GPUs back; the daemon, back, finds the cluster gone. ``podspec.IDLE`` writes the pid."""


def address(ref: PodRef) -> str:
    """How a node names its pod (``NodeInfo.address``): ``context/namespace/name``."""
    return f"{ref.context}/{ref.namespace}/{ref.name}"


def ref_of(node: NodeInfo) -> PodRef:
    """The pod of ``address``, read from the right: a namespace and a pod name are DNS labels,
    a context may hold ``/`` (an EKS context is ``arn:aws:eks:REGION:ACCOUNT:cluster/NAME``)."""
    rest, sep, name = node.address.rpartition("/")
    context, sep2, namespace = rest.rpartition("/")
    if not (sep and sep2 and context and namespace and name):
        raise ProvisionError(f"node {node.rank} names no pod ({node.address!r})")
    return PodRef(context, namespace, name)


async def start_agents(
    req: ProvisionRequest,
    where: Where,
    asked: PodRequest,
    ready: dict[str, dict[str, Any]],
    shell_of: Callable[[PodRef], PodShell],
    record: Callable[[NodeInfo], None],
    log: structlog.stdlib.BoundLogger,
) -> list[NodeInfo]:
    """``ready``: the Running pods by name; ``record`` hears each node as it comes up."""
    build = build_of(req.agent_pyz)
    nodes: dict[int, NodeInfo] = {}
    errors: dict[int, ProvisionError] = {}

    async def one(rank: int) -> None:
        ref = PodRef(where.context, where.namespace, pod_name(req.cluster, rank, where.owner))
        found_ip = get(ready[ref.name], "status", "podIP")
        pod_ip = found_ip if isinstance(found_ip, str) and len(found_ip) <= 64 else ""
        shell = shell_of(ref)
        began = time.monotonic()
        try:
            ep = await ensure_agent(
                shell,
                cluster=req.cluster,
                rank=rank,
                node_ip=pod_ip,
                pyz=req.agent_pyz,
                build=build,
                num_gpus=float(asked.accelerator_count),
            )
            workdir = f"{ep.home}/{WORKDIR}"
            await shell.run(f"mkdir -p {quote(workdir)}", timeout=30)
            if asked.fuse:  # the task mounts a bucket: rclone + fuse3 into the image if need be
                await ensure_fuse_tools(shell, allowed=True)
        except ProvisionError as exc:
            errors[rank] = exc
            return
        await arm_self_stop(shell, ep.socket_path, rank, log)
        log.info(
            "kubernetes_node_ready",
            cluster=req.cluster,
            rank=rank,
            pod=str(ref),
            **{f"{phase}_s": s for phase, s in ep.phases.items()},
            total_s=round(time.monotonic() - began, 4),
            started=ep.started,
        )
        nodes[rank] = NodeInfo(
            rank=rank,
            ip=pod_ip,
            status=NodeStatus.RUNNING,
            agent_address=ep.socket_path,
            workdir=workdir,
            home=ep.home,
            pid=ep.pid,
            address=address(ref),
        )
        record(nodes[rank])

    async with anyio.create_task_group() as tg:
        for rank in range(req.num_nodes):
            tg.start_soon(one, rank)
    if errors:
        detail = "; ".join(f"rank {r}: {errors[r].message}" for r in sorted(errors))
        raise ProvisionError(f"{req.cluster} in context {where.context}: {detail}")
    return [nodes[r] for r in sorted(nodes)]


async def arm_self_stop(
    shell: PodShell, socket_path: str, rank: int, log: structlog.stdlib.BoundLogger
) -> None:
    """The dead-man's switch (as on a cloud VM): an agent that cannot take it yet is logged,
    the daemon's autostop (a ``down``) remains."""
    try:
        await shell.agent_client(socket_path, f"rank {rank}@{shell.host}").call(
            "self_stop", deadline=SELF_STOP_DEADLINE_S, command=SELF_STOP_COMMAND
        )
    except (AgentUnreachable, AgentError, ProvisionError) as exc:
        log.warning("kubernetes_self_stop_not_set", rank=rank, error=str(exc))
