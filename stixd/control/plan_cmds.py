"""`launch --dryrun`: the optimizer's plan for a task or a pipeline, as a table or JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import msgspec

from stixd.app import App
from stixd.control.catalog_cmds import with_catalog
from stixd.planner.catalog import Catalog
from stixd.planner.from_task import task_request
from stixd.planner.local_fit import local_offer
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan, plan_pipeline
from stixd.planner.plan_table import plan_json, render_pipeline, render_plan
from stixd.planner.request import TaskRequest
from stixd.planner.target import cloud_spec
from stixd.planner.zone_names import named_pipeline, named_plan, zone_names_of
from stixproto import messages as m
from stixproto.errors import InvalidRequest

Emit = Callable[[Any], Awaitable[None]]


def _enabled(
    app: App, all_clouds: bool, catalog_clouds: Sequence[str], named: Sequence[str] = ()
) -> list[str]:
    """The clouds to plan on: every catalog's (``all_clouds``), else this machine and the
    usable clouds the task names (``--infra k8s`` plans its contexts as a launch would); one a
    task must name (the fake provider's) only when named."""
    allowed = app.config.allowed_clouds
    if all_clouds:
        names = list(catalog_clouds)
    else:
        names = [app.default_infra, *(c for c in app.clouds() if c in named)]
    only_named = app.infras.named_only()
    names = [n for n in names if n not in only_named or n in named]
    return [n for n in names if allowed is None or n in allowed]


def _plan(
    app: App, requests: list[TaskRequest], req: m.PlanRequest, catalog: Catalog
) -> m.PlanReply:
    named = [(a.cloud or "").lower() for r in requests for a in r.alternatives]
    enabled = _enabled(app, req.all_clouds, catalog.clouds() if req.all_clouds else (), named)
    machine = app.default_infra
    extra = {} if req.all_clouds else {machine: [local_offer(machine)]}
    cap = app.machine_max_nodes()
    limits = {machine: cap} if cap is not None else {}
    index = OfferIndex(catalog, app.infras)
    minimize: Literal["cost", "time"] = "time" if req.minimize == "time" else "cost"
    if len(requests) == 1:
        p = plan(
            requests[0],
            index,
            enabled_clouds=enabled,
            minimize=minimize,
            extra_offers=extra,
            max_nodes=limits,
        )
        shown = named_plan(p, zone_names_of(catalog, app.infras.zone_id_clouds()))
        return m.PlanReply(
            text=render_plan(shown, app.infras),
            json=plan_json(shown, app.infras).decode(),
            no_fit_reason=p.no_fit_reason,
        )
    pp = plan_pipeline(
        requests,
        index,
        enabled_clouds=enabled,
        minimize=minimize,
        extra_offers=extra,
        max_nodes=limits,
    )
    shown_pp = named_pipeline(pp, zone_names_of(catalog, app.infras.zone_id_clouds()))
    return m.PlanReply(
        text=render_pipeline(shown_pp, app.infras),
        json=plan_json(shown_pp, app.infras).decode(),
        no_fit_reason=pp.no_fit_reason,
    )


async def plan_cmd(app: App, req: m.PlanRequest, emit: Emit) -> m.PlanReply:
    if not req.tasks:
        raise InvalidRequest("the file holds no task to plan")
    if req.launch:
        return await launch_plan(app, req, emit)
    requests = [task_request(t) for t in req.tasks]
    named = {(a.cloud or "").lower() for r in requests for a in r.alternatives}
    if not req.all_clouds and not named & set(app.clouds()):
        from stixd.control.catalog_cmds import catalog_of

        return _plan(app, requests, req, catalog_of(app))
    return await with_catalog(app, emit, lambda catalog: _plan(app, requests, req, catalog))


async def launch_plan(app: App, req: m.PlanRequest, emit: Emit) -> m.PlanReply:
    """What `launch` of this task on `req.cluster` would provision, from the functions the
    launch itself calls (`choose_target`, `cloud_spec` with the blocks remembered now), so
    the row marked chosen is the choice the cluster makes; nothing when the cluster is UP."""
    from stixd.actors.jobs_submit import infra_label
    from stixd.actors.syncing import validate_mounts
    from stixd.control.catalog_cmds import catalog_of

    if len(req.tasks) != 1:
        raise InvalidRequest("launch takes one task; run a pipeline with `stixctl jobs launch`")
    task = req.tasks[0]
    validate_mounts(task)  # what the launch refuses is refused before the question
    provider, pool = app.target(task, say_why_not=True)
    row = await app.store.get("cluster", req.cluster) if req.cluster else None
    status = row.state if row is not None and not row.terminal else None
    if status == "UP":
        return m.PlanReply(text="", json="{}", cluster_status=status)
    if provider not in app.clouds():  # this machine, or an SSH pool: its hosts at $0
        reply = _plan(app, [task_request(task)], req, catalog_of(app))
        if provider != app.default_infra:
            reply = m.PlanReply(
                text=f"Infra: {infra_label(provider, pool)} (an SSH node pool), $0.00 / hour.",
                json="{}",
            )
        choice = f"{task.num_nodes}x {infra_label(provider, pool)}"
        return msgspec.structs.replace(reply, choice=choice, cluster_status=status)

    def on_cloud(catalog: Catalog) -> m.PlanReply:
        blocks = app.remembered_blocks()
        index = OfferIndex(catalog, app.infras)
        p = plan(task_request(task), index, enabled_clouds=[provider], blocked=blocks)
        choice = cloud_spec(task, provider, index, blocks)["resources"]
        return m.PlanReply(
            text=render_plan(p, app.infras),
            json=plan_json(p, app.infras).decode(),
            no_fit_reason=p.no_fit_reason,
            choice=choice,
            cluster_status=status,
        )

    return await with_catalog(app, emit, on_cloud)
