"""The optimizer: a task's ranked launch choices across the enabled clouds, cheapest (or fastest)
first, and a pipeline's choices optimised as a whole. Pure: it reads the catalog, nothing else.

How a choice is ranked, after SkyPilot 0.14's ``Optimizer`` (``sky/optimizer.py``):

1. The objective: the hourly price of the instance x ``num_nodes`` x the estimated hours (one
   hour unless the task says), plus egress for data that comes from another cloud. With
   ``minimize="time"`` the objective is the estimated hours (plus transfer time) and cost breaks
   ties (SkyPilot has no cost tie-break there: without a time estimate it takes the first
   candidate it enumerated).
2. ``ordered`` alternatives rank by their position first: the first that can be satisfied wins
   even if a later one is cheaper; ``any_of`` and a set of accelerators take the cheapest.
3. Equal objectives keep SkyPilot's enumeration order, because its DP keeps the first minimum
   it meets (a strict ``<``): the task's alternatives in the order given, then the enabled clouds
   in the order the caller lists them, then instance types (cheapest first), regions (AWS: US
   first; then cheapest, then by name) and zones (cheapest, then by name). SkyPilot iterates
   ``any_of`` as a Python set and the enabled clouds as stored from a set, so its own order
   there is arbitrary; stix uses the listed order so the same task always gets the same pick.

Blocked resources (the launcher's capacity and quota failures) remove matching candidates, so
the next plan starts at the next choice. When nothing is left, ``no_fit_reason`` names the
filter that removed the last candidate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec

from stixd.planner.blocking import apply_blocked
from stixd.planner.candidates import Elimination, Launchable, Stage, Want, launchables
from stixd.planner.catalog import CatalogError, Offer
from stixd.planner.catalog.model import did_you_mean
from stixd.planner.egress import egress_cost, egress_seconds
from stixd.planner.infra_meta import Infras
from stixd.planner.no_fit import reason_for_task
from stixd.planner.offers import CloudOffers, OfferIndex
from stixd.planner.pipeline import optimize_chain
from stixd.planner.plans import Candidate, Choice, EgressLeg, PipelinePlan, Plan, objective
from stixd.planner.request import Accelerator, Blocked, Minimize, TaskRequest

__all__ = [
    "Candidate",
    "Choice",
    "EgressLeg",
    "PipelinePlan",
    "Plan",
    "plan",
    "plan_pipeline",
]

_MEMORY_FORM = re.compile(r"^(?:[A-Za-z]+:)?(\d+(?:\.\d+)?)\s*([GT])B(\+?)$", re.IGNORECASE)
_GB_PER_GIB = 1.073741824  # device sizes are sold in decimal GB: an L4's 22.5 GiB is "24GB"


def _expand_accelerator(acc: Accelerator, index: OfferIndex) -> list[Accelerator] | str:
    """Canonical name(s) for a requested accelerator, or why it names nothing.

    ``24GB+`` (optionally ``nvidia:24GB+``) means every device with at least that much memory,
    ``24GB`` one of about that size (within 10%), as SkyPilot reads them; the device sizes come
    from the catalogs that state them (the manufacturer is not checked).
    """
    m = _MEMORY_FORM.match(acc.name)
    if m is not None:
        want = float(m.group(1)) * (1024 if m.group(2).upper() == "T" else 1)
        plus = m.group(3) == "+"
        sizes = {n: gib * _GB_PER_GIB for n, gib in index.device_memory().items()}
        names = sorted(
            n for n, gb in sizes.items() if (gb >= want if plus else abs(gb - want) < 0.1 * want)
        )
        if not names:
            return f"no accelerator has {acc.name} of memory"
        return [Accelerator(n, acc.count) for n in names]
    canon = index.canonical_accelerator(acc.name)
    if canon is None:
        hint = did_you_mean(acc.name, index.accelerator_names())
        return f"accelerator {acc} is not in any catalog{hint}"
    return [Accelerator(canon, acc.count)]


def _wants(
    task: TaskRequest, index: OfferIndex
) -> tuple[list[Want], list[tuple[Want, Elimination]], bool]:
    """The task's concrete alternatives, those that name no known accelerator, and whether
    their order is a preference."""
    wants: list[Want] = []
    unknown: list[tuple[Want, Elimination]] = []
    ordered = task.mode == "ordered" or (
        task.mode == "single" and any(r.accelerators_ordered for r in task.alternatives)
    )
    for source, request in enumerate(task.alternatives):
        for acc in request.accelerators or (None,):
            if acc is None:
                wants.append(Want(request, None, len(wants), source))
                continue
            expanded = _expand_accelerator(acc, index)
            if isinstance(expanded, str):
                want = Want(request, acc, len(wants), source)
                unknown.append((want, Elimination(Stage.ACCELERATOR, "*", expanded, str(acc))))
                wants.append(want)
                continue
            for one in expanded:
                wants.append(Want(request, one, len(wants), source))
    return wants, unknown, ordered


def _not_enabled(want: Want, clouds: Sequence[str]) -> Elimination | None:
    cloud = want.request.cloud.lower() if want.request.cloud else None
    if cloud is None or cloud in clouds:
        return None
    enabled = ", ".join(clouds) or "none"
    return Elimination(Stage.INFRA, cloud, f"{cloud} is not enabled (enabled: {enabled})")


def _candidate(
    lc: Launchable, want: Want, task: TaskRequest, cloud_index: int, inputs: bool, infras: Infras
) -> Candidate:
    hourly = lc.price * task.num_nodes
    hours = task.hours_for(want.accelerator)
    data = task.inputs if inputs else None
    return Candidate(
        cloud=lc.cloud,
        region=lc.region,
        zone=lc.zone,
        zones=lc.zones,
        instance_type=lc.instance_type,
        vcpus=lc.vcpus,
        memory_gib=lc.memory_gib,
        accelerators=lc.accelerator,
        use_spot=lc.use_spot,
        hourly_price=lc.price,
        hourly_cost=hourly,
        hours=hours,
        cost=hourly * hours,
        egress_cost=egress_cost(infras, data.cloud, lc.cloud, data.gigabytes) if data else 0.0,
        egress_hours=egress_seconds(data.cloud, lc.cloud, data.gigabytes) / 3600 if data else 0.0,
        alternative=want.index,
        resources_index=want.source,
        position=(want.index, cloud_index, lc.type_rank, lc.region_rank, lc.zone_rank),
    )


def _rank_key(c: Candidate, minimize: Minimize, ordered: bool) -> tuple[float, ...]:
    head: tuple[float, ...] = (c.alternative,) if ordered else ()
    return head + objective(c, minimize) + c.position


def _why(prev: Candidate | None, c: Candidate, minimize: Minimize, ordered: bool) -> str:
    if prev is None:
        best = "fastest" if minimize == "time" else "cheapest"
        return f"first satisfiable alternative; {best} in it" if ordered else best
    if ordered and c.alternative != prev.alternative:
        return "a later alternative of the ordered list"
    a, b = objective(prev, minimize), objective(c, minimize)
    if a[0] != b[0]:
        if minimize == "time":
            return f"takes longer ({b[0]:g} h vs {a[0]:g} h)"
        return f"costs more (${b[0]:.4f} vs ${a[0]:.4f})"
    if a != b:
        return f"same time, costs more (${b[1]:.4f} vs ${a[1]:.4f})"
    names = ("alternative", "cloud", "instance type", "region", "zone")
    for name, x, y in zip(names, prev.position, c.position, strict=True):
        if x != y:
            return f"ties on cost; ranked after by {name} order"
    return "ties on cost and order"


def _rank(cands: list[Candidate], minimize: Minimize, ordered: bool) -> list[Candidate]:
    cands.sort(key=lambda c: _rank_key(c, minimize, ordered))
    prev = None
    for c in cands:
        # set once on a candidate nobody else holds yet (a copy per candidate costs a third
        # of a warm plan)
        msgspec.structs.force_setattr(c, "why", _why(prev, c, minimize, ordered))
        prev = c
    return cands


def plan(
    task: TaskRequest,
    index: OfferIndex,
    *,
    enabled_clouds: Sequence[str],
    blocked: Sequence[Blocked] = (),
    minimize: Minimize = "cost",
    extra_offers: Mapping[str, Sequence[Offer]] | None = None,
    max_nodes: Mapping[str, int] | None = None,
    inputs: bool = True,
) -> Plan:
    """Rank every launch choice for ``task`` on ``enabled_clouds`` (in tie-break order).

    ``candidates`` is every choice, ranked: the launcher fails over down this list (or plans
    again with what it blocked); the table shows one row per cloud and accelerator of it.
    ``extra_offers`` adds clouds without a catalog (``local``, SSH or Kubernetes pools): their
    offers are capacities, a node fits when it asks for no more; they are used only when named
    in ``enabled_clouds``, and replace a catalog of the same name; ``max_nodes`` caps the nodes
    such a cloud runs for one task (``local.max_nodes``). ``inputs=False`` leaves out
    the egress of the task's inputs (a pipeline charges them on its first task only).
    """
    clouds = list(dict.fromkeys(c.lower() for c in enabled_clouds))
    limits = max_nodes or {}
    pools = {
        c: CloudOffers(index.infras.get(c), list(o), pool=True, max_nodes=limits.get(c))
        for c, o in (extra_offers or {}).items()
    }
    wants, unknown, ordered = _wants(task, index)
    failed = {w.index: [_not_enabled(w, clouds) or e] for w, e in unknown}
    cands: list[Candidate] = []
    for want in wants:
        if want.index in failed:
            continue
        elims = failed.setdefault(want.index, [])
        off = _not_enabled(want, clouds)
        if off is not None:
            elims.append(off)
            continue
        found = 0
        for cloud in [want.request.cloud.lower()] if want.request.cloud else clouds:
            try:
                offers = pools[cloud] if cloud in pools else index.cloud(cloud)
            except CatalogError as e:
                elims.append(Elimination(Stage.INFRA, cloud, str(e).rstrip(".")))
                continue
            result = launchables(want, offers, num_nodes=task.num_nodes)
            if isinstance(result, Elimination):
                elims.append(result)
                continue
            kept, used = apply_blocked(result, blocked)
            if not kept:
                notes = tuple(f"{b.where()}: {b.reason}" if b.reason else b.where() for b in used)
                elims.append(Elimination(Stage.BLOCKED, cloud, "blocked", options=notes))
                continue
            found += len(kept)
            ci = clouds.index(cloud)
            cands.extend(_candidate(lc, want, task, ci, inputs, index.infras) for lc in kept)
        if found:
            del failed[want.index]
    ranked = _rank(cands, minimize, ordered)
    reason = None
    if not ranked:
        reason = reason_for_task([(w, failed.get(w.index, [])) for w in wants])
    return Plan(
        task=task.name,
        num_nodes=task.num_nodes,
        minimize=minimize,
        ordered=ordered,
        alternatives=tuple(w.label() for w in wants),
        enabled_clouds=tuple(clouds),
        chosen=ranked[0] if ranked else None,
        candidates=tuple(ranked),
        no_fit_reason=reason,
        estimated_hours=task.hours,
        per_hour=not (task.inputs or task.outputs_gb or task.hours_by_accelerators),
    )


def plan_pipeline(
    tasks: Sequence[TaskRequest],
    index: OfferIndex,
    *,
    enabled_clouds: Sequence[str],
    blocked: Sequence[Blocked] = (),
    minimize: Minimize = "cost",
    extra_offers: Mapping[str, Sequence[Offer]] | None = None,
    max_nodes: Mapping[str, int] | None = None,
) -> PipelinePlan:
    """Plan a chain of tasks as a whole: per-task cost plus the egress between consecutive tasks
    on different clouds, minimised by dynamic programming over each task's candidates, as
    SkyPilot's ``_optimize_by_dp`` does for chains."""
    plans = [
        plan(
            t,
            index,
            enabled_clouds=enabled_clouds,
            blocked=blocked,
            minimize=minimize,
            extra_offers=extra_offers,
            max_nodes=max_nodes,
            inputs=i == 0,
        )
        for i, t in enumerate(tasks)
    ]
    return optimize_chain(list(tasks), plans, minimize, index.infras)
