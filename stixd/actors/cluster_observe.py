"""Watching a cluster: what the provider and the agents say, lost nodes, agents kept current.

`ClusterActor` calls `observe` at reconcile, on a status refresh, and when the health check
(cluster_health) finds the cluster looking different from its last look.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from stixd.actors.cluster_autostop import schedule_autostop
from stixd.actors.cluster_health import HealthTick as HealthTick  # where the actor finds it
from stixd.actors.cluster_health import Look, look_of
from stixd.actors.cluster_states import C, E
from stixd.actors.job import JobEvent
from stixd.actors.jobs_submit import job_row_id
from stixd.actors.machines import compare
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, NodeLoss, NodeStatus
from stixproto.errors import ProvisionError
from stixproto.states import JobStatus

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor


RECONCILE = "reconcile at start"


async def observe(cluster: ClusterActor, why: str) -> None:
    before = cluster.state
    nodes = await cluster.provider.query(cluster.id)
    look = look_of(cluster.app.look_abilities(cluster.spec.provider), cluster.id, nodes)
    losses = find_losses(cluster, look)
    await note_machines(cluster, look)
    expected = cluster.spec.num_nodes
    running = [n for n in nodes if n.status is NodeStatus.RUNNING]
    unreachable = [n for n in nodes if n.status is NodeStatus.UNREACHABLE]
    down = [n for n in nodes if n.status is not NodeStatus.RUNNING]
    problem = node_problems(down, look) if running or unreachable else None
    if not nodes:
        event = E.FOUND_GONE
    elif unreachable:
        event = E.FOUND_DEGRADED  # a host that does not answer is not a stopped one
    elif len(running) >= expected:
        event = E.FOUND_UP
    elif not running:
        event = E.FOUND_STOPPED
    else:
        event = E.FOUND_DEGRADED
    lost = "; ".join(f"node {x.rank} {x.why}" for x in losses)
    if cluster.machine.allows(cluster.state, event):
        detail = f"{why}: {len(running)}/{expected} nodes running"
        if problem or lost:
            detail += f"; {problem or lost}"
        await cluster.transition(
            event,
            detail,
            last_error=problem or lost or None,
            **cluster._accounting(cluster.machine.next(cluster.state, event)),
        )
    elif problem != cluster.data.last_error and (problem or event is E.FOUND_UP):
        await cluster.save(last_error=problem)
    if losses:
        await on_lost_nodes(cluster, losses)
    elif cluster.data.losses:
        await cluster.save(losses=None)
    if cluster.state in (C.STOPPED, C.TERMINATED):
        why_ended = lost or f"cluster found {cluster.state.value}"
        await cluster._end_jobs(JobEvent.FAILED_DRIVER, why_ended)
    if cluster.state is C.TERMINATED and before is not C.TERMINATED and losses:
        await release_remains(cluster)
    if cluster.state is C.UP and (before is not C.UP or why == RECONCILE):
        await ensure_agents_current(cluster, cluster.nodes)
        await stop_jobs_ended_meanwhile(cluster, cluster.nodes)
        schedule_autostop(cluster)
    schedule_health(cluster, look)


async def note_machines(cluster: ClusterActor, look: Look) -> None:
    """Record what the machines are now; a resize made outside stix changes the cluster's
    resources and price (from now on) and is recorded as an event."""
    if not look.machines:  # none listed (or a provider that does not list them)
        return
    data = cluster.data
    active = data.active_seconds
    if data.up_since:
        active += time.time() - data.up_since
    cloud = cluster.spec.provider
    seen = compare(cluster.spec, data, look.machines, lambda: cluster.app.prices(cloud), active)
    if seen is None:
        return
    for change in seen.changes:
        await cluster.store.record(
            cluster.kind, cluster.id, "machine_changed", f"{change} (made outside stix)"
        )
    await cluster.save(spec=seen.spec, **seen.data)


def find_losses(cluster: ClusterActor, look: Look) -> list[NodeLoss]:
    """Nodes of a live cluster whose machines the cloud took away (a spot preemption, a
    stop or termination from outside stix), as the provider's last query found them."""
    if cluster.state not in (C.UP, C.INIT):
        return []
    return list(look.lost)


async def on_lost_nodes(cluster: ClusterActor, losses: list[NodeLoss]) -> None:
    """Record each new loss as an event, and end the cluster's jobs now: the machine is not
    coming back, so waiting out the node grace would only delay a managed job's recovery."""
    seen = set(cluster.data.losses or [])
    for loss in losses:
        if loss.why not in seen:
            event = "node_preempted" if loss.preempted else "node_lost"
            await cluster.store.record(
                cluster.kind, cluster.id, event, f"node {loss.rank} {loss.why}"
            )
    if seen != {x.why for x in losses}:
        await cluster.save(losses=[x.why for x in losses])
    why = "; ".join(f"node {x.rank} {x.why}" for x in losses)
    all_lost = len(losses) >= cluster.spec.num_nodes
    # with some nodes left, the job's other ranks are stopped (a gang dies together)
    await cluster._end_jobs(
        JobEvent.FAILED_DRIVER, why, lost_rank=None if all_lost else losses[0].rank
    )


async def release_remains(cluster: ClusterActor) -> None:
    """Every machine of the cluster is gone: delete what the provider made around them (an
    AWS security group), so it is not left behind as a leak."""
    try:
        await cluster.provider.terminate(cluster.id)
    except ProvisionError as exc:
        cluster.log.warning("release_remains_failed", error=exc.message)


def node_problems(down: list[NodeInfo], look: Look) -> str | None:
    """One sentence per node that is not running, for status and events."""
    if not down:
        return None
    reasons = dict(look.errors)

    def say(n: NodeInfo) -> str:
        if n.status is NodeStatus.UNREACHABLE:
            return f"node {n.rank} ({n.ip}) is unreachable: {reasons.get(n.rank, 'no answer')}"
        return f"node {n.rank} ({n.ip}) does not answer (its agent is not running)"

    return "; ".join(say(n) for n in down)


def schedule_health(cluster: ClusterActor, look: Look | None = None) -> None:
    """Have the health check look at a live cluster at every tick (a host may die unseen),
    against `look`, what this actor last saw; without one (a launch or start just brought
    the nodes up), against the nodes it recorded. The checks of all clusters of a provider
    are one round (cluster_health): the actor hears only when its cluster looks different."""
    health = cluster.app.health
    if cluster.state not in (C.UP, C.INIT) or cluster.data.pending_launch:
        health.unwatch(cluster.id)
        return
    if look is None:
        abilities = cluster.app.look_abilities(cluster.spec.provider)
        look = look_of(abilities, cluster.id, cluster.nodes)
    health.watch(cluster.spec.provider, cluster.id, look)


# -- agents --------------------------------------------------------------------------


async def ensure_agents_current(cluster: ClusterActor, nodes: list[NodeInfo]) -> None:
    """Upgrade agents of another build in place: same process, running jobs untouched."""
    for node in nodes:
        client = cluster.provider.connector(node)
        try:
            hello = await client.call("hello", deadline=5)
            if hello.get("build") != cluster.app.agent_build:
                cluster.log.info("agent_upgrade", rank=node.rank, old=hello.get("build"))
                await client.call("upgrade", deadline=5, pyz=str(cluster.app.agent_pyz))
                await cluster.store.record(
                    cluster.kind,
                    cluster.id,
                    "agent_upgraded",
                    f"node {node.rank}: {hello.get('build')} -> {cluster.app.agent_build}",
                )
        except (AgentUnreachable, AgentError) as exc:
            cluster.log.warning("agent_check_failed", rank=node.rank, error=str(exc))


async def stop_jobs_ended_meanwhile(cluster: ClusterActor, nodes: list[NodeInfo]) -> None:
    """A node back from an outage may still run a job the daemon ended while it was away
    (FAILED_DRIVER after the grace): stop it, so the node's truth matches the record."""
    uid = cluster.data.uid
    if not uid:
        return
    for node in nodes:
        client = cluster.provider.connector(node)
        try:
            listed = await client.call("jobs", deadline=5)
            live = [
                int(j["job_id"])
                for j in listed.get("jobs", [])
                if not JobStatus(j["state"]).is_terminal
            ]
            ended = []
            for job_id in live:
                row = await cluster.store.get("job", job_row_id(cluster.id, uid, job_id))
                if row is not None and row.terminal:
                    ended.append(job_id)
            if not ended:
                continue
            await client.call("cancel", deadline=10, job_ids=ended, all=False)
        except (AgentUnreachable, AgentError) as exc:
            cluster.log.warning("ended_jobs_check_failed", rank=node.rank, error=str(exc))
            continue
        await cluster.store.record(
            cluster.kind,
            cluster.id,
            "ended_jobs_stopped",
            f"node {node.rank}: job(s) {', '.join(map(str, ended))} ended while it was away",
        )
