"""Stopping and terminating a cluster: the intent (STOPPING, TERMINATING, AUTOSTOPPING) is
written before the provider is called, and the call runs as a phase.

A `down` or `stop` interrupts a launch or start under way, then stops or terminates whatever
it had made: the provider finds a cluster's machines by its name and tags, even those of a
launch that never returned. A daemon killed during the call finishes the intent after restart
(`FinishIntent`), since stop and terminate are idempotent.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import anyio

from stixd.actors.cluster_phases import Phase, interrupt, start_phase
from stixd.actors.cluster_states import C, ClusterEvent, E
from stixd.actors.job import JobEvent
from stixd.actors.storage_use import prune_storages
from stixd.actors.volume import prune_ephemeral
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.abilities import CannotStop
from stixd.providers.base import NodeInfo, NodeStatus
from stixd.providers.shared.fuse_mounts import SHUTDOWN_DEADLINE_S
from stixd.runtime.mailbox import Envelope
from stixproto import messages as m
from stixproto import names
from stixproto.errors import ClusterNotUp, ProvisionError, StixError

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor

RESTARTED = "finishing it after a daemon restart"


async def down(cluster: ClusterActor, env: Envelope) -> m.OkReply | None:
    current = cluster.phases.current
    if current is not None and current.name == "terminate":
        current.waiters.append(env)  # answered with the first `down`
        return None
    launching = current is not None and current.name in ("launch", "start")
    await interrupt(cluster, "down requested")
    env.progress(m.Progress(f"Terminating {cluster.id}..."))
    why = "down requested during its launch" if launching else "down requested"
    if cluster.state is not C.TERMINATING:
        await cluster.transition(E.TERMINATE, why, **cluster._accounting(C.TERMINATING))
    begin_terminate(cluster, why, env)
    return None


async def stop(cluster: ClusterActor, env: Envelope) -> m.OkReply | None:
    if isinstance(cluster.provider, CannotStop):  # refused in its words, nothing interrupted
        await cluster.provider.stop(cluster.id)
    current = cluster.phases.current
    if cluster.state is C.TERMINATING or (current is not None and current.name == "terminate"):
        raise ClusterNotUp(f"cluster {cluster.id!r} is being terminated")
    if current is not None and current.name == "stop":
        current.waiters.append(env)
        return None
    if cluster.state is C.STOPPED and current is None:
        return m.OkReply(f"cluster {cluster.id} is already stopped")
    launching = current is not None
    await interrupt(cluster, "stop requested")
    env.progress(m.Progress(f"Stopping {cluster.id}..."))
    why = "stop requested during its launch" if launching else "stop requested"
    if cluster.state not in (C.STOPPING, C.AUTOSTOPPING):
        await cluster.transition(E.STOP, why, **cluster._accounting(C.STOPPING))
    begin_stop(cluster, why, env)
    return None


def begin_terminate(cluster: ClusterActor, why: str, env: Envelope | None = None) -> Phase:
    return start_phase(cluster, "terminate", functools.partial(terminate, cluster, why), env)


def begin_stop(cluster: ClusterActor, why: str, env: Envelope | None = None) -> Phase:
    return start_phase(cluster, "stop", functools.partial(stop_nodes, cluster, why), env)


async def finish_intent(cluster: ClusterActor) -> None:
    """After a restart: finish the stop, down or autostop the row says was under way."""
    if cluster.phases.current is not None:
        return  # a `down` or `stop` came first and is at it
    if cluster.state is C.TERMINATING:
        begin_terminate(cluster, f"down: {RESTARTED}")
    elif cluster.state is C.STOPPING:
        begin_stop(cluster, f"stop: {RESTARTED}")
    elif cluster.state is C.AUTOSTOPPING:
        end_idle(cluster, bool(cluster.data.autostop and cluster.data.autostop.down), RESTARTED)


def end_idle(cluster: ClusterActor, down: bool, why: str) -> None:
    """Autostop's stop or down, once the cluster is AUTOSTOPPING."""
    if down:
        begin_terminate(cluster, f"autostop --down: {why}")
    else:
        begin_stop(cluster, f"autostop: {why}")


async def flush_mounts(cluster: ClusterActor) -> None:
    """Before the nodes of a cluster with bucket mounts stop or go, on whatever provider: each
    running node's agent ends its jobs, flushes what they wrote through the mounts to the
    buckets and unmounts (its ``shutdown``), all nodes at once, within ``SHUTDOWN_DEADLINE_S``.
    A node that cannot be reached, or takes longer, is left to the provider's end all the same.
    (A Kubernetes pod's deletion or an EC2 stop would otherwise end rclone with writes still
    in its write-back cache; local and SSH providers ask the same again, finding it done.)"""
    if not cluster.data.bucket_mounts:
        return
    flushed: list[int] = []

    async def one(node: NodeInfo) -> None:
        try:
            agent = cluster.provider.connector(node)
            await agent.call("shutdown", deadline=SHUTDOWN_DEADLINE_S, kill_jobs=True)
            flushed.append(node.rank)
        except (AgentError, AgentUnreachable, OSError) as exc:
            cluster.log.warning("mounts_unflushed", rank=node.rank, error=str(exc)[:300])

    with anyio.move_on_after(SHUTDOWN_DEADLINE_S) as scope:
        try:
            nodes = await cluster.provider.query(cluster.id)
        except (StixError, OSError) as exc:
            cluster.log.warning("mounts_unflushed", error=str(exc)[:300])
            return
        async with anyio.create_task_group() as tg:
            for node in nodes:
                if node.status is NodeStatus.RUNNING:
                    tg.start_soon(one, node)
    if scope.cancelled_caught:
        cluster.log.warning("mounts_unflushed", error=f"not done in {SHUTDOWN_DEADLINE_S:.0f}s")
    elif flushed:
        cluster.log.info("mounts_flushed", nodes=len(flushed))


async def terminate(cluster: ClusterActor, why: str) -> m.OkReply:
    """Shielded: a terminate begun is finished and recorded, even as the daemon stops."""
    with anyio.CancelScope(shield=True):
        await flush_mounts(cluster)
        try:
            await cluster.provider.terminate(cluster.id)
        except (ProvisionError, OSError) as exc:
            raise ProvisionError(await failed(cluster, E.TERMINATE_FAILED, "down", exc)) from None
        await cluster.transition(E.TERMINATED, why, nodes=[])
        await cluster._end_jobs(JobEvent.CANCELLED, ended_why(why, "terminated"))
        await prune_storages(cluster.app)  # a non-persistent bucket goes with its last cluster
        await prune_ephemeral(cluster.app, cluster.id)  # its ephemeral volumes go with it
    cluster.cancel_timer("autostop")
    return m.OkReply(f"cluster {cluster.id} terminated")


async def stop_nodes(cluster: ClusterActor, why: str) -> m.OkReply:
    """Not shielded: a `down` may interrupt it (the STOPPING row says what to finish)."""
    await flush_mounts(cluster)
    try:
        await cluster.provider.stop(cluster.id)
    except (ProvisionError, OSError) as exc:
        with anyio.CancelScope(shield=True):
            note = await failed(cluster, E.STOP_FAILED, "stop", exc)
        raise ProvisionError(note) from None
    with anyio.CancelScope(shield=True):
        await cluster.transition(E.STOPPED, why)
        await cluster._end_jobs(JobEvent.CANCELLED, ended_why(why, "stopped"))
    cluster.cancel_timer("autostop")
    return m.OkReply(f"cluster {cluster.id} stopped")


def ended_why(why: str, what: str) -> str:
    if why.startswith("autostop"):
        return "cluster autostopped"
    if "during its launch" in why:
        return f"cluster {what} during its launch ({why})"
    return f"cluster {what}"


async def failed(cluster: ClusterActor, event: ClusterEvent, verb: str, exc: BaseException) -> str:
    """The provider refused: the cluster may be live or down (INIT) until a look says."""
    text = exc.message if isinstance(exc, ProvisionError) else str(exc)
    note = f"{verb} of {cluster.id} failed: {text}; run `{names.command(verb, cluster.id)}` again"
    await cluster.transition(event, note, last_error=note)
    return note
