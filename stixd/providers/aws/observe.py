"""What a cluster's instances are now: each node probed, each lost one named with EC2's reason
(a spot instance with an interruption notice counts as lost: EC2 takes it back within two
minutes), each live machine's type, disk and address as EC2 lists them.

Read only (``query`` reconciles passively): the cluster actor decides what to do with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import anyio

from stixd.providers.aws import instances
from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.instances import Instance
from stixd.providers.aws.listing import ClusterListing
from stixd.providers.aws.nodes import AwsNodes, record_node
from stixd.providers.base import Machine, NodeInfo, NodeLoss, NodeStatus
from stixproto.errors import ProvisionError

SPOT_REASONS = ("Server.SpotInstanceTermination", "Server.SpotInstanceShutdown")


@dataclasses.dataclass
class Observation:
    nodes: list[NodeInfo]
    errors: dict[int, str]
    """Per rank: why the node could not be reached."""
    lost: list[NodeLoss]
    machines: list[Machine]


async def observe(
    ec2: Ec2Clients,
    listing: ClusterListing,
    nodes_side: AwsNodes,
    cluster: str,
    region: str,
    found: list[Instance],
    new: Collection[str] = (),
) -> Observation:
    """``found``: the cluster's live instances, against its nodes as last brought up;
    ``new``: instances made so recently that EC2 may not list them yet (never taken for lost).
    Disks and spot notices are asked through ``listing``: shared with other clusters' looks."""
    log = nodes_side.log
    nodes: dict[int, NodeInfo] = {}
    errors: dict[int, str] = {}
    by_rank = {i.rank: i for i in found if i.rank is not None}
    ranked = list(by_rank.values())
    for inst in ranked:
        await nodes_side.readdress(cluster, inst)
    records = (nodes_side.records.get(cluster) or {}).get("nodes") or {}

    async def one(inst: Instance, rank: int) -> None:
        nodes[rank], error = await nodes_side.probe(inst, records.get(str(rank)) or {})
        if error:
            errors[rank] = error

    disks: dict[str, int] = {}
    notices: dict[str, str] = {}

    async def sizes() -> None:
        try:
            disks.update(await listing.disk_sizes(region, ranked))
        except ProvisionError as exc:  # the disks stay as last seen
            log.warning("aws_disks_unread", error=exc.message)

    async def notified() -> None:
        spot = [i.id for i in ranked if i.spot and i.state == "running"]
        try:
            notices.update(await listing.interruption_notices(region, spot))
        except ProvisionError as exc:  # no notices then: the termination itself is seen later
            log.warning("aws_spot_notices_unread", error=exc.message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sizes)
        tg.start_soon(notified)
        for rank, inst in by_rank.items():
            tg.start_soon(one, inst, rank)
    lost: list[NodeLoss] = []
    for rank_text, rec in sorted(records.items(), key=lambda kv: int(kv[0])):
        rank = int(rank_text)
        mine = by_rank.get(rank)
        if mine is not None and mine.state in ("stopped", "stopping"):
            lost.append(loss_of(rank, mine.id, mine))
        elif mine is not None and mine.id in notices:
            text = f"spot instance {mine.id} has an interruption notice ({notices[mine.id]})"
            lost.append(NodeLoss(rank, f"preempted: {text}", preempted=True))
        elif mine is None:
            loss = await _fate(ec2, region, rank, rec, new)
            if loss is not None:
                lost.append(loss)
            if nodes:  # some are alive: say what became of this one
                errors[rank] = (
                    loss.why if loss else f"instance {rec.get('instance')} not listed yet"
                )
                nodes[rank] = record_node(rank, rec, "", NodeStatus.UNREACHABLE)
    machines = [
        Machine(r, i.instance_type, i.spot, region, i.address, disks.get(i.id))
        for r, i in sorted(by_rank.items())
    ]
    return Observation([nodes[r] for r in sorted(nodes)], errors, lost, machines)


async def _fate(
    ec2: Ec2Clients, region: str, rank: int, rec: dict[str, Any], new: Collection[str]
) -> NodeLoss | None:
    """Why a node's instance is no longer alive, as EC2 tells it (None: too new to say)."""
    instance = rec.get("instance")
    if not instance:
        return NodeLoss(rank, f"node {rank}'s instance is gone", preempted=False)
    gone = await instances.by_ids(ec2, region, [str(instance)])
    if not gone:
        if instance in new:
            return None
        return NodeLoss(rank, f"instance {instance} is gone", preempted=False)
    return loss_of(rank, str(instance), gone[0])


def loss_of(rank: int, instance: str, inst: Instance) -> NodeLoss:
    """The loss of node ``rank`` whose instance EC2 lists in a state other than running."""
    reason = f" ({inst.reason})" if inst.reason else ""
    kind = "spot instance" if inst.spot else "instance"
    text = f"{kind} {instance} is {inst.state}{reason}"
    preempted = inst.reason.startswith(SPOT_REASONS)
    return NodeLoss(rank, f"preempted: {text}" if preempted else text, preempted=preempted)
