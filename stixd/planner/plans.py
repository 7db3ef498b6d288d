"""What the planner hands back: ranked candidates per task, a pipeline's picks, the egress legs.

`Choice` is the shape ``launch --dryrun --json`` prints; `Candidate` carries everything the
table and the launcher need; `objective` is what candidates are ranked by.
"""

from __future__ import annotations

import msgspec

from stixd.planner.request import Blocked, Minimize

__all__ = ["Candidate", "Choice", "EgressLeg", "PipelinePlan", "Plan", "objective"]


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    """A choice as ``launch --dryrun --json`` shows it; ``hourly_cost`` covers all nodes."""

    cloud: str
    region: str
    zone: str | None
    instance_type: str
    accelerators: str | None
    use_spot: bool
    hourly_cost: float


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One ranked launch choice for a task.

    ``zone`` is set where the choice is one zone (GCP, spot); otherwise ``zones`` lists the
    region's zones for the launcher to try in order. ``hourly_price`` is per node,
    ``hourly_cost`` for all nodes, ``cost`` for the estimated ``hours``; ``egress_cost`` is what
    bringing the task's inputs from their cloud costs. ``alternative`` is the index of the
    concrete alternative it satisfies (one per accelerator of a set: what ``ordered`` ranks by),
    ``resources_index`` that of the task's resources entry it came from; ``position`` is
    SkyPilot's enumeration order (alternative, cloud, instance type, region, zone); ``why`` says
    why it ranks below the one before it.
    """

    cloud: str
    region: str
    zone: str | None
    zones: tuple[str, ...]
    instance_type: str
    vcpus: float | None
    memory_gib: float | None
    accelerators: str | None
    use_spot: bool
    hourly_price: float
    hourly_cost: float
    hours: float
    cost: float
    egress_cost: float = 0.0
    egress_hours: float = 0.0
    alternative: int = 0
    resources_index: int = 0
    position: tuple[int, ...] = ()
    why: str = ""

    def blocked(self, reason: str = "") -> Blocked:
        """The block that takes exactly this choice out of the next plan (after a failure)."""
        return Blocked(
            cloud=self.cloud,
            region=self.region,
            zone=self.zone,
            instance_type=self.instance_type,
            use_spot=self.use_spot,
            reason=reason,
        )

    def choice(self) -> Choice:
        return Choice(
            cloud=self.cloud,
            region=self.region,
            zone=self.zone,
            instance_type=self.instance_type,
            accelerators=self.accelerators,
            use_spot=self.use_spot,
            hourly_cost=round(self.hourly_cost, 6),
        )


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A task's plan: ``candidates`` ranked best first (``chosen`` is the first, or the
    pipeline's pick), or ``no_fit_reason`` when there is none."""

    task: str | None
    num_nodes: int
    minimize: Minimize
    ordered: bool
    alternatives: tuple[str, ...]
    enabled_clouds: tuple[str, ...]
    chosen: Candidate | None
    candidates: tuple[Candidate, ...]
    no_fit_reason: str | None = None
    estimated_hours: float = 1.0
    per_hour: bool = True  # no time estimate and no data moved: costs print as $/hour


class EgressLeg(msgspec.Struct, frozen=True, kw_only=True):
    """Data moved between two tasks (or from a task's inputs) on different clouds."""

    source: str
    target: str
    src_cloud: str
    dst_cloud: str
    gigabytes: float
    cost: float
    seconds: float


class PipelinePlan(msgspec.Struct, frozen=True, kw_only=True):
    """A chain's plan: per task its `Plan` (``chosen`` set to the chain's pick), the picks in
    task order, the totals and the egress legs; ``no_fit_reason`` when a task has no candidate."""

    tasks: tuple[Plan, ...]
    chosen: tuple[Candidate, ...] | None
    minimize: Minimize
    total_cost: float = 0.0
    total_hours: float = 0.0
    egress: tuple[EgressLeg, ...] = ()
    no_fit_reason: str | None = None


def objective(c: Candidate, minimize: Minimize) -> tuple[float, ...]:
    """What a candidate is ranked by (before the enumeration-order tie-break)."""
    cost = round(c.cost + c.egress_cost, 6)
    if minimize == "time":
        return (round(c.hours + c.egress_hours, 9), cost)
    return (cost,)
