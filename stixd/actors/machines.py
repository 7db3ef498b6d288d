"""A cluster's machines as the cloud lists them, against what the cluster recorded.

A machine resized outside stix (another instance type, a bigger disk) changes the cluster's
resources and hourly price from then on; what it cost until then stays at the old price.
Pure: the actor reads the provider and the catalog, this decides what to record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from stixd.actors.specs import ClusterData, ClusterSpec
from stixd.planner.pricing import Prices, hourly_price
from stixd.providers.base import Machine


@dataclasses.dataclass(frozen=True)
class MachinesSeen:
    spec: ClusterSpec | None
    """The cluster's new spec when its resources or price changed, else None."""
    data: dict[str, Any]
    """Row data to save (the machines as seen; the cost so far when the price changed)."""
    changes: list[str]
    """One sentence per change made outside stix, for the cluster's events."""


def _as_record(m: Machine) -> dict[str, Any]:
    return {"type": m.instance_type, "disk_gb": m.disk_gb, "address": m.address}


def compare(
    spec: ClusterSpec,
    data: ClusterData,
    machines: Sequence[Machine],
    prices: Callable[[], Prices],
    active_seconds: float,
) -> MachinesSeen | None:
    """What to record of ``machines``; None when nothing changed since the last look.

    ``prices``: the catalog's, read only when a resize needs a new price. ``active_seconds``:
    the cluster's UP time so far (cost-report's clock), at which a new price takes over.
    """
    seen = {str(m.rank): _as_record(m) for m in machines}
    before: dict[str, Any] = data.machines or {}
    if not machines or seen == before:
        return None
    placement = spec.placement or {}
    planned = {"type": placement.get("instance_type"), "disk_gb": placement.get("disk_size")}
    changes: list[str] = []
    resized = False
    for rank, now in sorted(seen.items()):
        was = before.get(rank) or planned  # a node's first look: against the plan
        if was.get("type") and was["type"] != now["type"]:
            changes.append(f"node {rank}: instance type {was['type']} -> {now['type']}")
            resized = True
        if was.get("disk_gb") and now["disk_gb"] and was["disk_gb"] != now["disk_gb"]:
            changes.append(f"node {rank}: disk {was['disk_gb']} -> {now['disk_gb']} GB")
            resized = True
        if was.get("address") and now["address"] and was["address"] != now["address"]:
            changes.append(f"node {rank}: address {was['address']} -> {now['address']}")
    out: dict[str, Any] = {"machines": seen}
    new_spec = _respec(spec, machines, prices) if resized else None
    if new_spec is not None and new_spec.hourly_price != spec.hourly_price:
        nodes = spec.num_nodes
        priced = data.priced_seconds
        accrued = data.cost_accrued
        old = spec.hourly_price
        out["cost_accrued"] = accrued + max(active_seconds - priced, 0.0) / 3600 * old * nodes
        out["priced_seconds"] = active_seconds
    return MachinesSeen(new_spec, out, changes)


def _respec(
    spec: ClusterSpec, machines: Sequence[Machine], prices: Callable[[], Prices]
) -> ClusterSpec:
    """The spec that says what the machines are now, after a resize."""
    types = sorted({m.instance_type for m in machines})
    disks = sorted({m.disk_gb for m in machines if m.disk_gb})
    first = machines[0]
    spot = " spot" if first.spot else ""
    label = f"{spec.num_nodes}x {spec.provider}/{first.region} "
    label += "+".join(types) + spot
    if disks:
        label += f", disk {'+'.join(map(str, disks))} GB"
    table = prices()
    each = [hourly_price(table, m.region, m.instance_type, m.spot) for m in machines]
    known = [p for p in each if p is not None]
    price = sum(known) / len(known) if known else spec.hourly_price
    placement = {**(spec.placement or {}), "instance_type": types[0]}
    if disks:
        placement["disk_size"] = disks[-1]
    return msgspec.structs.replace(spec, resources=label, hourly_price=price, placement=placement)
