"""`launch --dryrun`: the optimizer's plan for a task or a pipeline, as a table or JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from stixd.app import App
from stixd.control.catalog_cmds import with_catalog
from stixd.planner.catalog import Catalog
from stixd.planner.from_task import task_request
from stixd.planner.local_fit import local_offer
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan, plan_pipeline
from stixd.planner.plan_table import plan_json, render_pipeline, render_plan
from stixd.planner.request import TaskRequest
from stixd.planner.target import NAMED_ONLY
from stixd.planner.zone_names import named_pipeline, named_plan, zone_names_of
from stixproto import messages as m
from stixproto.errors import InvalidRequest

Emit = Callable[[Any], Awaitable[None]]


def _enabled(
    app: App, all_clouds: bool, catalog_clouds: Sequence[str], named: Sequence[str] = ()
) -> list[str]:
    """The clouds to plan on; one a task must name (the fake provider's) only when named."""
    allowed = app.config.allowed_clouds
    names = list(catalog_clouds) if all_clouds else ["local"]
    names = [n for n in names if n not in NAMED_ONLY or n in named]
    return [n for n in names if allowed is None or n in allowed]


def _plan(
    app: App, requests: list[TaskRequest], req: m.PlanRequest, catalog: Catalog
) -> m.PlanReply:
    named = [(a.cloud or "").lower() for r in requests for a in r.alternatives]
    enabled = _enabled(app, req.all_clouds, catalog.clouds() if req.all_clouds else (), named)
    extra = {} if req.all_clouds else {"local": [local_offer()]}
    limits = {"local": app.config.local.max_nodes}
    index = OfferIndex(catalog)
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
        shown = named_plan(p, zone_names_of(catalog))
        return m.PlanReply(
            text=render_plan(shown), json=plan_json(shown).decode(), no_fit_reason=p.no_fit_reason
        )
    pp = plan_pipeline(
        requests,
        index,
        enabled_clouds=enabled,
        minimize=minimize,
        extra_offers=extra,
        max_nodes=limits,
    )
    shown_pp = named_pipeline(pp, zone_names_of(catalog))
    return m.PlanReply(
        text=render_pipeline(shown_pp),
        json=plan_json(shown_pp).decode(),
        no_fit_reason=pp.no_fit_reason,
    )


async def plan_cmd(app: App, req: m.PlanRequest, emit: Emit) -> m.PlanReply:
    if not req.tasks:
        raise InvalidRequest("the file holds no task to plan")
    requests = [task_request(t) for t in req.tasks]
    if not req.all_clouds:
        from stixd.control.catalog_cmds import catalog_of

        return _plan(app, requests, req, catalog_of(app))
    return await with_catalog(app, emit, lambda catalog: _plan(app, requests, req, catalog))
