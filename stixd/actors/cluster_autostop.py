"""Autostop: the setting (kept by the agents too), the timer, and stopping an idle cluster."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from stixd.actors.cluster_ending import end_idle
from stixd.actors.cluster_states import C, E
from stixd.actors.specs import Autostop
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.abilities import CannotStop
from stixd.providers.base import NodeInfo
from stixproto import messages as m

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor


class AutostopTick:
    """Timer message: time to look at the agents' idle clocks."""


def autostop_period(idle_minutes: float) -> float:
    return min(max(idle_minutes * 60 / 10, 0.25), 15.0)


# -- autostop ------------------------------------------------------------------------


async def apply_autostop_request(
    cluster: ClusterActor,
    idle_minutes: float | None,
    down: bool,
    nodes: list[NodeInfo] | None = None,
) -> None:
    if idle_minutes is None:
        idle_minutes = cluster._config().autostop.default_idle_minutes
        if idle_minutes is None and not down:
            await push_autostop(cluster, nodes)
            return
        if idle_minutes is None:
            idle_minutes = 0.0  # --down alone: torn down as soon as its jobs are done
    down = down or isinstance(cluster.provider, CannotStop)
    setting = Autostop(idle_minutes=float(idle_minutes), down=down) if idle_minutes >= 0 else None
    await cluster.save(autostop=setting, idle_since=None)
    await push_autostop(cluster, nodes)


async def set_autostop(cluster: ClusterActor, req: m.Autostop) -> m.OkReply:
    if req.cancel or (req.idle_minutes is not None and req.idle_minutes < 0):
        await cluster.save(autostop=None, idle_since=None)
        await push_autostop(cluster)
        cluster.cancel_timer("autostop")
        return m.OkReply(f"autostop cancelled for {cluster.id}")
    minutes = req.idle_minutes if req.idle_minutes is not None else 5.0
    # a cluster that cannot be stopped is taken down when idle (as SkyPilot does on Kubernetes)
    setting = Autostop(
        idle_minutes=float(minutes), down=req.down or isinstance(cluster.provider, CannotStop)
    )
    await cluster.save(autostop=setting, idle_since=None)
    await push_autostop(cluster)
    schedule_autostop(cluster)
    action = "torn down" if setting.down else "stopped"
    return m.OkReply(f"{cluster.id} will be {action} after {minutes:g} idle minute(s)")


async def push_autostop(cluster: ClusterActor, nodes: list[NodeInfo] | None = None) -> None:
    """The agents keep the setting too: their dead-man's switch needs no daemon."""
    setting = cluster.data.autostop
    grace = cluster._config().autostop.grace_minutes
    for node in nodes if nodes is not None else cluster.nodes:
        try:
            await cluster.provider.connector(node).call(
                "autostop",
                deadline=5,
                idle_minutes=setting.idle_minutes if setting else None,
                down=bool(setting and setting.down),
                grace_minutes=grace,
            )
        except (AgentUnreachable, AgentError) as exc:
            cluster.log.warning("autostop_push_failed", rank=node.rank, error=str(exc))


def schedule_autostop(cluster: ClusterActor) -> None:
    setting = cluster.data.autostop
    if setting and cluster.state is C.UP:
        cluster.after("autostop", autostop_period(setting.idle_minutes), AutostopTick())


async def cluster_idle_since(cluster: ClusterActor) -> float | None:
    """When the whole cluster became idle, or None while any node is busy or unreachable."""
    latest = 0.0
    for node in cluster.nodes:
        try:
            hello = await cluster.provider.connector(node).call("hello", deadline=5)
        except (AgentUnreachable, AgentError):
            return None
        since = hello.get("idle_since")
        if since is None:
            return None
        latest = max(latest, float(since))
    return latest or None


async def autostop_tick(cluster: ClusterActor) -> None:
    setting = cluster.data.autostop
    if not setting or cluster.state is not C.UP:
        return
    since = await cluster_idle_since(cluster)
    if since != cluster.data.idle_since:
        await cluster.save(idle_since=since)
    limit = setting.idle_minutes * 60
    if since is None or time.time() - since < limit:
        schedule_autostop(cluster)
        return
    idle = f"idle for {(time.time() - since) / 60:.2f} min (limit {setting.idle_minutes:g})"
    # the intent: AUTOSTOPPING, then the phase; as a stop asked for, it closes the UP
    # interval, so a stopped cluster's active time (and cost) stops growing
    await cluster.transition(E.AUTOSTOP, idle, **cluster._accounting(C.AUTOSTOPPING))
    end_idle(cluster, setting.down, idle)
