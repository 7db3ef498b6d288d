"""A chain of tasks planned as a whole: SkyPilot's ``_optimize_by_dp``, grouped by cloud.

The objective of a chain is the sum of each task's objective plus the egress of the data each
task hands to the next (``outputs_gb``) when the two run on different clouds. Egress depends
only on the pair of clouds, so for each task the DP keeps, per cloud of the previous task, the
best way to have got there, and tries those few parents instead of every candidate.

Ties go as in SkyPilot, whose DP walks candidates in its enumeration order and keeps the first
minimum (strict ``<``): among equal totals the parent, and at the end the last task's choice,
with the smallest `Candidate.position` wins. An ``ordered`` task is planned on its first
satisfiable alternative only, as SkyPilot does before running the DP.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from stixd.planner.egress import egress_cost, egress_seconds
from stixd.planner.infra_meta import Infras
from stixd.planner.plans import Candidate, EgressLeg, PipelinePlan, Plan, objective
from stixd.planner.request import Minimize, TaskRequest

__all__ = ["optimize_chain"]

Vector = tuple[float, ...]
Step = tuple[Vector, Candidate, int]  # (best objective so far, candidate, parent's index)


def _add(a: Vector, b: Vector) -> Vector:
    return tuple(round(x + y, 9) for x, y in zip(a, b, strict=True))


def _egress(
    infras: Infras, src: str, dst: str, gigabytes: float | None, minimize: Minimize
) -> Vector:
    cost = egress_cost(infras, src, dst, gigabytes)
    if minimize == "time":
        return (egress_seconds(src, dst, gigabytes) / 3600, cost)
    return (cost,)


def _dp_set(p: Plan) -> list[Candidate]:
    if p.ordered and p.candidates:
        first = p.candidates[0].alternative
        return [c for c in p.candidates if c.alternative == first]
    return list(p.candidates)


def _name(task: TaskRequest, i: int) -> str:
    return task.name or f"task {i + 1}"


def _next_layer(
    infras: Infras,
    prev: list[Step],
    cands: list[Candidate],
    gigabytes: float | None,
    minimize: Minimize,
) -> list[Step]:
    best: dict[str, int] = {}  # parent cloud -> index of its first-minimal parent
    for k, (v, c, _) in enumerate(prev):
        cur = best.get(c.cloud)
        if cur is None or (v, c.position) < (prev[cur][0], prev[cur][1].position):
            best[c.cloud] = k
    via: dict[str, tuple[Vector, tuple[int, ...], int]] = {}  # child cloud -> best way in
    out: list[Step] = []
    for c in cands:
        if c.cloud not in via:
            via[c.cloud] = min(
                (
                    _add(prev[k][0], _egress(infras, cloud, c.cloud, gigabytes, minimize)),
                    prev[k][1].position,
                    k,
                )
                for cloud, k in best.items()
            )
        total, _, k = via[c.cloud]
        out.append((_add(total, objective(c, minimize)), c, k))
    return out


def _input_leg(task: TaskRequest, pick: Candidate) -> list[EgressLeg]:
    data = task.inputs
    if data is None or data.cloud is None or data.cloud == pick.cloud:
        return []
    return [
        EgressLeg(
            source=f"inputs ({data.cloud})",
            target=_name(task, 0),
            src_cloud=data.cloud,
            dst_cloud=pick.cloud,
            gigabytes=data.gigabytes,
            cost=pick.egress_cost,
            seconds=pick.egress_hours * 3600,
        )
    ]


def _legs_between(
    infras: Infras, tasks: Sequence[TaskRequest], picks: Sequence[Candidate]
) -> list[EgressLeg]:
    legs: list[EgressLeg] = []
    for i in range(1, len(picks)):
        a, b, gb = picks[i - 1], picks[i], tasks[i - 1].outputs_gb
        if gb and a.cloud != b.cloud:
            legs.append(
                EgressLeg(
                    source=_name(tasks[i - 1], i - 1),
                    target=_name(tasks[i], i),
                    src_cloud=a.cloud,
                    dst_cloud=b.cloud,
                    gigabytes=gb,
                    cost=egress_cost(infras, a.cloud, b.cloud, gb),
                    seconds=egress_seconds(a.cloud, b.cloud, gb),
                )
            )
    return legs


def optimize_chain(
    tasks: Sequence[TaskRequest], plans: Sequence[Plan], minimize: Minimize, infras: Infras
) -> PipelinePlan:
    """The chain's best picks, given each task's own plan (same order as ``tasks``)."""
    missing = [(t, p) for t, p in zip(tasks, plans, strict=True) if not p.candidates]
    if missing or not plans:
        reason = "; ".join(
            f"task {_name(t, tasks.index(t))!r}: {p.no_fit_reason}" for t, p in missing
        )
        return PipelinePlan(
            tasks=tuple(plans), chosen=None, minimize=minimize, no_fit_reason=reason or "no tasks"
        )
    layers: list[list[Step]] = [[(objective(c, minimize), c, -1) for c in _dp_set(plans[0])]]
    for i in range(1, len(plans)):
        layers.append(
            _next_layer(infras, layers[-1], _dp_set(plans[i]), tasks[i - 1].outputs_gb, minimize)
        )
    last = layers[-1]
    k = min(range(len(last)), key=lambda j: (last[j][0], last[j][1].position))
    picks: list[Candidate] = []
    for layer in reversed(layers):
        _, c, parent = layer[k]
        picks.append(c)
        k = parent
    picks.reverse()
    between = _legs_between(infras, tasks, picks)
    return PipelinePlan(
        tasks=tuple(
            msgspec.structs.replace(p, chosen=c) for p, c in zip(plans, picks, strict=True)
        ),
        chosen=tuple(picks),
        minimize=minimize,
        total_cost=sum(c.cost + c.egress_cost for c in picks) + sum(g.cost for g in between),
        total_hours=sum(c.hours + c.egress_hours for c in picks)
        + sum(g.seconds for g in between) / 3600,
        egress=tuple(_input_leg(tasks[0], picks[0]) + between),
    )
