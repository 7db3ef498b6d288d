"""What a service's round reads and hands on: its replicas as their rows say, as the autoscaler
sees them (`decide`'s inputs), and the rotation a plan gives the balancer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from stixd.actors.service_decisions import ReplicaSeen
from stixd.actors.service_rows import REPLICA, ReplicaData, ReplicaSpec
from stixd.actors.service_states import ENDS, ReplicaEvent
from stixd.actors.specs import data_or_none, spec_or_none, state_of
from stixd.serve.fleet import UNRECOVERABLE
from stixd.serve.rate import accelerator_qps
from stixd.serve.seams import ReadyReplica, ReplicaView, ScalePlan, ScalerMemory
from stixd.store.db import Row
from stixproto.states import ReplicaStatus as R
from stixproto.task import Task
from stixproto.task.resources import candidates
from stixproto.task.service import Scaling, effective_scaling

if TYPE_CHECKING:
    from stixd.actors.service import ServiceActor

MAX_WEIGHT = 1e6
"""The largest weight a balancer takes (`stixd.balancer.wire.Replica`)."""


@dataclass(frozen=True)
class Replica:
    row: Row
    spec: ReplicaSpec
    data: ReplicaData
    status: R


async def replicas_of(actor: ServiceActor) -> list[Replica]:
    out = []
    for row in await actor.store.rows(REPLICA, parent=actor.id):
        spec, data = spec_or_none(row, ReplicaSpec), data_or_none(row, ReplicaData)
        status = state_of(row, R)
        if spec is not None and data is not None and status is not None:
            out.append(Replica(row, spec, data, status))
    return out


def heading_to(replica: Replica) -> R:
    """The state a replica is in, or the end it takes once torn down (a failing replica is
    SHUTTING_DOWN first, and counts as failed from then on)."""
    end = replica.data.end
    if replica.status is R.SHUTTING_DOWN and end:
        try:
            return ENDS[ReplicaEvent(end)]
        except (ValueError, KeyError):
            return R.FAILED
    return replica.status


def seen(replicas: list[Replica]) -> list[ReplicaSeen]:
    return [ReplicaSeen(r.spec.replica_id, r.spec.version, heading_to(r)) for r in replicas]


def views(replicas: list[Replica], version: int) -> list[ReplicaView]:
    """What `decide` sees: every replica not ended, and the ended ones of ``version`` (a
    failure of the latest version before it was ever READY stops its rollout; one its infra
    failed, ``replaceable``, does not)."""
    out = []
    for r in replicas:
        status = heading_to(r)  # a failing replica counts as failed while it is torn down
        if status.is_terminal and (r.spec.version != version or r.data.replaceable):
            continue
        out.append(
            ReplicaView(
                replica_id=r.spec.replica_id,
                version=r.spec.version,
                status=status,
                spot=r.spec.spot,
                launched_at=r.spec.launched_at,
                accelerator=r.spec.accelerator,
            )
        )
    return out


def memory_for(memory: ScalerMemory, replicas: list[Replica], version: int) -> ScalerMemory:
    """The stored memory, told that ``version`` was READY once if a replica row says so (a round
    that would have seen it READY may have been missed, by a daemon restart)."""
    if memory.ready_version >= version:
        return memory
    if any(r.spec.version == version and r.data.ever_ready for r in replicas):
        return msgspec.structs.replace(memory, ready_version=version)
    return memory


def wants_spot(task: Task) -> bool:
    """Whether the task asks for spot (in any of its alternatives)."""
    return any(bool(c.use_spot) for c in candidates(task.resources_or_default()))


def rollout_stopped(replicas: list[Replica], version: int) -> str:
    """Why the version's rollout stopped: its first replica that failed before any was READY."""
    failed = sorted(
        (r for r in replicas if r.spec.version == version and heading_to(r) in UNRECOVERABLE),
        key=lambda r: r.spec.replica_id,
    )
    if not failed:
        return f"a replica of version {version} failed before any was ready"
    first = failed[0]
    detail = f" ({first.data.failure_reason})" if first.data.failure_reason else ""
    return (
        f"replica {first.spec.replica_id} of version {version} failed before any was "
        f"ready{detail}; none is launched again until `serve update`"
    )


def rotation(task: Task, replicas: list[Replica], plan: ScalePlan) -> list[ReadyReplica]:
    """The replicas the balancer sends to: READY, of a version the plan serves, not let go."""
    assert task.service is not None
    weigh = replica_weights(task.service.lb_policy, effective_scaling(task.service))
    stopping = set(plan.stop)
    return sorted(
        (
            ReadyReplica(
                replica_id=r.spec.replica_id,
                url=r.data.url,
                version=r.spec.version,
                accelerator=r.spec.accelerator,
                weight=weigh(r.spec.accelerator),
            )
            for r in replicas
            if r.status is R.READY
            and r.data.url
            and r.spec.version in plan.serving_versions
            and r.spec.replica_id not in stopping
        ),
        key=lambda r: r.replica_id,
    )


def replica_weights(policy: str, scaling: Scaling) -> Callable[[str | None], float]:
    """A replica's weight in the balancer: under `instance_aware_least_load` with per-accelerator
    targets, its accelerator's target QPS (SkyServe's); else 1 for every replica."""
    targets = scaling.target_qps_per_replica
    if policy != "instance_aware_least_load" or not isinstance(targets, Mapping):
        return lambda _: 1.0
    table = {name: float(value) for name, value in targets.items()}

    def weight(accelerator: str | None) -> float:
        qps = accelerator_qps(table, accelerator)
        return min(qps, MAX_WEIGHT) if qps > 0 else 1.0

    return weight
