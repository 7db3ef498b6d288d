"""Failover of a launch: on a capacity or quota error, block what the provider names and take
the optimizer's next choice on the same infra; once that infra has none left and the task does
not pin one, move the cluster to the infra the optimizer ranks next (another cloud, Kubernetes,
this machine), as SkyPilot's launch does across clouds.

A move is two steps, each safe to be killed after: the failed infra's half-made resources are
released (its ``terminate``), then the cluster's spec (provider, pool, placement, price) is
switched in one write. Until that write the row names the old infra, so a restarted daemon
resumes the launch there; after it, on the new one, with nothing left on the old.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors.specs import ClusterSpec, decode, encode
from stixd.planner.local_fit import check_fits_local, local_offer
from stixd.planner.request import Blocked
from stixd.planner.target import (
    MAX_FAILOVERS,
    NoChoiceLeft,
    cloud_spec,
    failover_infras,
    next_infra,
)
from stixd.providers.base import CapacityError, NodeInfo, ProvisionRequest
from stixd.runtime.mailbox import Envelope
from stixproto import messages as m
from stixproto import names
from stixproto.errors import InvalidTask, ProvisionError

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor
    from stixproto.task import Task


async def launch_with_failover(
    cluster: ClusterActor, request: ProvisionRequest, task: Task | None, env: Envelope
) -> list[NodeInfo]:
    """Launch; on a capacity or quota error on a cloud, block what it names and take the
    optimizer's next choice there (the provider tries a region's zones itself), then on the
    next infra; at most ``MAX_FAILOVERS`` moves in all."""
    failed: list[str] = []
    exhausted: list[str] = []
    blocks = cluster.app.remembered_blocks()
    while True:
        try:
            return await cluster.provider.launch(request)
        except CapacityError as exc:
            cloud = cluster.spec.provider
            if task is None or cloud not in cluster.app.clouds() or len(failed) >= MAX_FAILOVERS:
                raise
            failed.append(f"{cluster.spec.resources or cloud}: {exc.message}")
            b = exc.block
            blocked = Blocked(
                cloud=b.infra,
                region=b.region,
                zone=b.zone,
                instance_type=b.instance_type,
                use_spot=b.use_spot,
                reason=b.reason or exc.message,
            )
            blocks.append(blocked)
            cluster.app.remember_block(blocked, b.remember_s)
            await cluster.store.record(cluster.kind, cluster.id, "failover", failed[-1])
            cluster.app.metrics.failed_over(cloud)
            catalog = cluster.app.planner_index()
            plan = functools.partial(cloud_spec, avoid_regions=cluster.spec.avoid_regions)
            try:
                spec = await anyio.to_thread.run_sync(plan, task, cloud, catalog, blocks)
            except NoChoiceLeft:
                exhausted.append(cloud)
                spec = await move_to_next_infra(cluster, task, blocks, failed, exhausted, env)
                resources = {"pool": None, **(spec["placement"] or {})}
                request = dataclasses.replace(
                    request, resources={**resources, "launch_id": cluster.data.uid}
                )
                continue
            env.progress(m.Progress(f"{failed[-1]}; trying {spec['resources']} next."))
            await cluster.save(spec=decode({**encode(cluster.spec), **spec}, ClusterSpec))
            placement = spec["placement"]
            request = dataclasses.replace(request, resources={**request.resources, **placement})


async def move_to_next_infra(
    cluster: ClusterActor,
    task: Task,
    blocks: list[Blocked],
    failed: list[str],
    exhausted: list[str],
    env: Envelope,
) -> dict[str, Any]:
    """Every choice on the cluster's infra failed: release what it made there and switch the
    cluster to the optimizer's next infra, returning the new spec's fields. ``NoChoiceLeft``
    (naming every failure) when the task pins its infra or no other infra has a choice."""
    app = cluster.app
    here = cluster.spec.provider
    tried = "; ".join(failed)
    fits = _fits_machine(cluster, task)
    open_infras = failover_infras(task, app.infras, app.clouds(), machine_fits=fits)
    pinned = not set(open_infras) - set(exhausted)
    if pinned or cluster.data.nodes:  # nodes: a stopped cluster's, kept on the old infra
        raise NoChoiceLeft(f"every choice on {', '.join(exhausted)} failed: {tried}")
    await app.refresh_catalogs(only=[i for i in open_infras if i not in exhausted])
    machine = app.infras.machine()
    index = app.planner_index()
    choose = functools.partial(
        next_infra,
        machine_offer=local_offer(machine) if machine in open_infras else None,
        machine_cap=app.machine_max_nodes(),
        leave_out=exhausted,
    )
    try:
        infra = await anyio.to_thread.run_sync(choose, task, open_infras, index, blocks)
        spec = await _spec_on(cluster, task, infra, blocks)
    except (NoChoiceLeft, InvalidTask) as exc:
        raise NoChoiceLeft(
            f"every choice on {', '.join(exhausted)} failed: {tried}; nor elsewhere: {exc}"
        ) from None
    env.progress(
        m.Progress(f"{failed[-1]}; no choice left on {here}: trying {spec['resources']} next.")
    )
    await _release(cluster, failed[-1])
    new = {**encode(cluster.spec), "pool": None, "placement": None, **spec, "provider": infra}
    await cluster.save(spec=decode(new, ClusterSpec))  # the one write that moves the cluster
    await cluster.store.record(
        cluster.kind, cluster.id, "failover", f"moved from {here} to {spec['resources']}"
    )
    return spec


def _fits_machine(cluster: ClusterActor, task: Task) -> bool:
    try:
        check_fits_local(task, cluster.app.infras, cluster.app.machine_max_nodes())
    except InvalidTask:
        return False
    return True


async def _spec_on(
    cluster: ClusterActor, task: Task, infra: str, blocks: list[Blocked]
) -> dict[str, Any]:
    """What the cluster records for its launch on ``infra``, as `begin_launch` writes it."""
    if infra not in cluster.app.clouds():  # this machine
        price = local_offer(infra).price
        return {"placement": None, "hourly_price": price, "resources": f"{task.num_nodes}x {infra}"}
    plan = functools.partial(cloud_spec, avoid_regions=cluster.spec.avoid_regions)
    index = cluster.app.planner_index()
    spec: dict[str, Any] = await anyio.to_thread.run_sync(plan, task, infra, index, blocks)
    return spec


async def _release(cluster: ClusterActor, cause: str) -> None:
    """Give back what the failed infra made before the row stops naming it; if it cannot be
    given back the cluster stays there (its `down` finishes the job) and the launch fails."""
    here = cluster.spec.provider
    try:
        await cluster.provider.terminate(cluster.id)
    except (ProvisionError, OSError) as exc:
        cluster.log.warning("failover_release_failed", error=str(exc), cause=cause)
        raise ProvisionError(
            f"{cause}; could not release what {here} made to move on ({exc}); "
            f"`{names.command('down', cluster.id)}` removes it"
        ) from None


def may_run_on(cluster: ClusterActor, task: Task) -> bool:
    """Whether a task that targets another infra may still run on the cluster's, having failed
    over to it: the task pins no infra and the cluster's is one it may move to."""
    app = cluster.app
    open_infras = failover_infras(
        task, app.infras, app.clouds(), machine_fits=_fits_machine(cluster, task)
    )
    return cluster.spec.provider in open_infras
