"""A plan as ``launch --dryrun`` shows it: SkyPilot's optimizer table, and the JSON form.

Like SkyPilot, the table shows one row per (cloud, accelerators, spot) group - the cheapest of
the group, or the chosen one where it is in the group - sorted by cost (by position first for
an ordered list); rows of equal cost keep the order the optimizer enumerated them in. Pool
infras (this machine, SSH, Kubernetes) get a row per region, as SkyPilot shows each context.
Display names and which infras are pools come from the `Infras` table.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from stixd.planner.catalog.names import format_count
from stixd.planner.infra_meta import Infras
from stixd.planner.plans import Candidate, PipelinePlan, Plan

__all__ = ["plan_json", "plan_rows", "render_pipeline", "render_plan"]

FIELDS = ("INFRA", "INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "REGION/ZONE")
CHECK = "   \u2714"


def _number(x: float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _cells(c: Candidate, infras: Infras) -> list[str]:
    return [
        infras.display(c.cloud),
        c.instance_type + ("[Spot]" if c.use_spot else ""),
        _number(c.vcpus),
        _number(c.memory_gib),
        c.accelerators or "-",
        c.zone or c.region,
    ]


def _metric(p: Plan, c: Candidate) -> float:
    return c.hours if p.minimize == "time" else c.cost + c.egress_cost


def _group(c: Candidate, infras: Infras) -> tuple[object, ...]:
    key: tuple[object, ...] = (c.cloud, c.accelerators, c.use_spot)
    return (*key, c.region) if infras.is_pool(c.cloud) else key


def plan_rows(p: Plan, infras: Infras) -> list[Candidate]:
    """The candidates the table shows, in its order (see the module docstring)."""
    groups: dict[tuple[object, ...], Candidate] = {}
    for c in sorted(p.candidates, key=lambda c: c.position):
        key = _group(c, infras)
        if key not in groups or _metric(p, c) < _metric(p, groups[key]):
            groups[key] = c
    if p.chosen is not None:
        groups[_group(p.chosen, infras)] = p.chosen
    head = (lambda c: (c.alternative,)) if p.ordered else (lambda c: ())
    return sorted(groups.values(), key=lambda c: (*head(c), round(_metric(p, c), 2)))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " " + "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-" * (sum(widths) + 3 * (len(widths) - 1) + 2)
    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def _considered(p: Plan, title: str, infras: Infras) -> str:
    metric = "TIME (hr)" if p.minimize == "time" else "COST ($)"
    rows = [
        [*_cells(c, infras), f"{_metric(p, c):.2f}", CHECK if c == p.chosen else ""]
        for c in plan_rows(p, infras)
    ]
    nodes = f"{p.num_nodes} node{'s' if p.num_nodes > 1 else ''}"
    return f"Considered resources {title}({nodes}):\n" + _table([*FIELDS, metric, "CHOSEN"], rows)


def _no_fit(p: Plan) -> str:
    wanted = " or ".join(p.alternatives) or "the task"
    clouds = ", ".join(p.enabled_clouds) or "none"
    nodes = f"{p.num_nodes}x " if p.num_nodes > 1 else ""
    return (
        f"No resource satisfying {nodes}{wanted} (enabled infra: {clouds}).\n"
        f"Reason: {p.no_fit_reason}.\n"
        "To fix: relax or change the resource requirements "
        "(`stixctl show-gpus` lists accelerators, `stixctl check` the enabled clouds)."
    )


def render_plan(p: Plan, infras: Infras) -> str:
    """The plan of one task, as SkyPilot prints it before launching."""
    if p.chosen is None:
        return _no_fit(p)
    lines = []
    if len(p.candidates) > 1:
        lines.append(f"Target: minimizing {'run time' if p.minimize == 'time' else 'cost'}")
    if p.ordered and len(p.alternatives) > 1:
        lines.append(
            "Using user-specified accelerators list (will be tried in the listed order): "
            + ", ".join(p.alternatives)
        )
    c = p.chosen
    if not p.per_hour or p.minimize == "time" or p.estimated_hours != 1.0:
        lines.append(f"Estimated total runtime: {c.hours + c.egress_hours:.1f} hours")
        lines.append(f"Estimated total cost: ${c.cost + c.egress_cost:.1f}")
    else:
        lines.append(f"Estimated cost: ${c.hourly_cost:.1f} / hour")
    lines.append("")
    lines.append(_considered(p, "", infras))
    return "\n".join(lines)


def render_pipeline(pp: PipelinePlan, infras: Infras) -> str:
    """A chain's plan: the best plan per task, the egress between them, each task's table."""
    if pp.chosen is None:
        return f"No plan for the pipeline: {pp.no_fit_reason}."
    target = "run time" if pp.minimize == "time" else "cost"
    best = [
        [p.task or f"task {i + 1}", str(p.num_nodes), *_cells(c, infras)]
        for i, (p, c) in enumerate(zip(pp.tasks, pp.chosen, strict=True))
    ]
    parts = [
        f"Target: minimizing {target}",
        f"Estimated total runtime: {pp.total_hours:.1f} hours",
        f"Estimated total cost: ${pp.total_cost:.1f}",
        "",
        "Best plan:",
        _table(["TASK", "#NODES", *FIELDS], best),
    ]
    if pp.egress:
        metric = "TIME (s)" if pp.minimize == "time" else "COST ($)"
        legs = [
            [
                f"{g.source} ({infras.get(g.src_cloud).display or g.src_cloud})",
                f"{g.target} ({infras.get(g.dst_cloud).display or g.dst_cloud})",
                format_count(g.gigabytes),
                f"{g.seconds:.0f}" if pp.minimize == "time" else f"{g.cost:.2f}",
            ]
            for g in pp.egress
        ]
        parts += ["", "Egress plan:", _table(["SOURCE", "TARGET", "SIZE (GB)", metric], legs)]
    for i, p in enumerate(pp.tasks):
        parts += ["", _considered(p, f"for task {p.task or f'task {i + 1}'!r} ", infras)]
    return "\n".join(parts)


def plan_json(p: Plan | PipelinePlan, infras: Infras) -> bytes:
    """``{"chosen": {...}, "candidates": [...]}``; for a pipeline ``chosen`` is a list (one per
    task, in order) and ``candidates`` a list per task. ``candidates`` are the table's rows.
    When nothing fits, ``chosen`` is null and ``no_fit_reason`` says why."""
    out: dict[str, object]
    if isinstance(p, PipelinePlan):
        out = {
            "chosen": [c.choice() for c in p.chosen] if p.chosen is not None else None,
            "candidates": [[c.choice() for c in plan_rows(t, infras)] for t in p.tasks],
        }
    else:
        out = {
            "chosen": p.chosen.choice() if p.chosen is not None else None,
            "candidates": [c.choice() for c in plan_rows(p, infras)],
        }
    if p.chosen is None:
        out["no_fit_reason"] = p.no_fit_reason
    return msgspec.json.encode(out)
