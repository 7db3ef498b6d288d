"""The launchable choices for one wanted resource on one cloud, or the filter that left none.

A `Want` is one concrete alternative of a task: one `ResourceRequest` with at most one of its
accelerators. `launchables` runs the filters in a fixed order (the cloud's features, instance
type, accelerator, vCPUs, memory, region/zone, image regions, price) and, when a filter empties
the list, returns an `Elimination` naming it; the optimizer later reports the deepest one
("which constraint removed the last candidate").

Granularity follows SkyPilot: GCP is planned per zone; spot is planned per zone where the cloud
has zones (spot prices differ by zone); everything else per region, with the region's zones
carried along for the launcher to try in order. Within a cloud, ties are ordered as SkyPilot
enumerates them: instance types cheapest first, then regions (AWS tries US regions first, then
the rest; each group cheapest first, then by name), then zones (cheapest, then by name).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum

import msgspec

from stixd.planner import gcp_hosts
from stixd.planner.catalog import Offer, count_matches
from stixd.planner.catalog.names import format_count
from stixd.planner.infra_meta import NodeSize
from stixd.planner.local_fit import nodes_problem
from stixd.planner.offers import (
    DEFAULT_MEMORY_PER_CPU,
    DEFAULT_VCPUS,
    FEATURE_NAMES,
    CloudOffers,
    Feature,
)
from stixd.planner.request import Accelerator, Amount, ResourceRequest

__all__ = ["Elimination", "Launchable", "Stage", "Want", "launchables"]


class Stage(IntEnum):
    """Filters in the order they run; a later stage means the request got further."""

    INFRA = 0
    FEATURE = 1
    INSTANCE_TYPE = 2
    ACCELERATOR = 3
    CPUS = 4
    MEMORY = 5
    LOCATION = 6
    IMAGE = 7
    PRICE = 8
    BLOCKED = 9


class Elimination(msgspec.Struct, frozen=True):
    """Why a cloud offers nothing for a want: the stage, a sentence, and data to merge on."""

    stage: Stage
    cloud: str
    text: str
    subject: str = ""
    values: tuple[float, ...] = ()
    options: tuple[str, ...] = ()


class Want(msgspec.Struct, frozen=True):
    """One alternative of a task with at most one accelerator; ``index`` is its position among
    the wants, ``source`` the position of the task's resources alternative it came from (an
    accelerator set makes several wants of one)."""

    request: ResourceRequest
    accelerator: Accelerator | None
    index: int
    source: int = 0

    def subject(self) -> str:
        if self.request.instance_type:
            return self.request.instance_type
        return str(self.accelerator) if self.accelerator else "a CPU machine"

    def label(self) -> str:
        r = self.request
        head = self.request.instance_type or (str(self.accelerator) if self.accelerator else "CPU")
        parts = [head + ("[Spot]" if r.use_spot else "")]
        where = "/".join(x for x in (r.cloud, r.region, r.zone) if x)
        if where:
            parts.append(f"on {where}")
        return " ".join(parts)


class Launchable(msgspec.Struct, frozen=True, kw_only=True):
    """One launchable choice on a cloud, before it is priced for a task and ranked."""

    cloud: str
    region: str
    zone: str | None
    zones: tuple[str, ...]
    instance_type: str
    vcpus: float | None
    memory_gib: float | None
    accelerator: str | None
    use_spot: bool
    price: float
    type_rank: int
    region_rank: int
    zone_rank: int


def _needed_features(want: Want, num_nodes: int) -> set[Feature]:
    r = want.request
    need: set[Feature] = set()
    if r.use_spot:
        need.add("spot")
    if num_nodes > 1:
        need.add("multi_node")
    if r.ports:
        need.add("ports")
    if r.image_id is not None:
        images = r.image_id.values() if isinstance(r.image_id, dict) else [r.image_id]
        need.add("docker" if all(i.startswith("docker:") for i in images) else "image_id")
    if r.disk_tier not in (None, "best"):
        need.add("disk_tier")
    if r.network_tier == "best":
        need.add("network_tier")
    return need


def _missing_features(want: Want, offers: CloudOffers, num_nodes: int) -> list[Feature]:
    need = _needed_features(want, num_nodes)
    missing = need & offers.unsupported()
    gaps = offers.meta.feature_gaps
    if gaps is not None:
        acc = want.accelerator
        name, count = (acc.name, acc.count) if acc else (None, None)
        missing |= gaps(want.request.disk_tier, name, count, frozenset(need))
    return sorted(missing)


def _counts(rows: Sequence[Offer], name: str) -> tuple[str, ...]:
    counts = sorted({o.accelerator_count for o in rows})
    return tuple(f"{name}:{format_count(c)}" for c in counts)


def _amount_elimination(
    stage: Stage, cloud: str, amount: Amount, before: Sequence[Offer], unit: str
) -> Elimination:
    pick: Callable[[Offer], float | None] = (
        (lambda o: o.vcpus) if stage == Stage.CPUS else (lambda o: o.memory_gib)
    )
    values = tuple(sorted({v for o in before if (v := pick(o)) is not None}))
    return Elimination(
        stage, cloud, f"no {cloud} offer has {amount} {unit}", subject=str(amount), values=values
    )


def _filter_amounts(
    rows: list[Offer], want: Want, offers: CloudOffers, size: NodeSize | None = None
) -> list[Offer] | Elimination:
    r = want.request
    cpus, memory, ratio = r.cpus, r.memory_gib, None
    if size is not None:  # a node made to measure asks exactly this much of its host
        cpus, memory = Amount(size.cpus, True), Amount(size.memory_gib, True)
    if offers.has_defaults and want.accelerator is None and r.instance_type is None:
        if cpus is None and memory is None:
            cpus = Amount(DEFAULT_VCPUS, at_least=True)
        if memory is None:
            ratio = DEFAULT_MEMORY_PER_CPU
    pool = offers.pool
    if cpus is not None:
        kept = [o for o in rows if (pool and (o.vcpus or 0) >= cpus.value) or cpus.admits(o.vcpus)]
        if not kept:
            return _amount_elimination(Stage.CPUS, offers.cloud, cpus, rows, "vCPUs")
        rows = kept
    if memory is not None:
        kept = [
            o
            for o in rows
            if (pool and (o.memory_gib or 0) >= memory.value) or memory.admits(o.memory_gib)
        ]
        if not kept:
            return _amount_elimination(Stage.MEMORY, offers.cloud, memory, rows, "GiB of memory")
        rows = kept
    if ratio is not None:
        kept = [o for o in rows if (o.memory_gib or 0) >= ratio * (o.vcpus or 0)]
        if not kept:
            return Elimination(
                Stage.MEMORY,
                offers.cloud,
                f"no default {offers.cloud} instance with {cpus} vCPUs has {ratio:g} GiB of "
                "memory per vCPU (give `memory` to choose otherwise)",
            )
        rows = kept
    return rows


def _select(want: Want, offers: CloudOffers) -> list[Offer] | Elimination:
    """The offers of the instance type or accelerator asked for (or the default pick)."""
    r, acc, cloud = want.request, want.accelerator, offers.cloud
    if r.instance_type is not None:
        rows = offers.by_type.get(r.instance_type)
        if not rows:
            return Elimination(
                Stage.INSTANCE_TYPE,
                cloud,
                f"instance type {r.instance_type} is not in the {cloud} catalog",
                subject=r.instance_type,
            )
        bare = [o for o in rows if o.accelerator is None]
        if acc is None:
            return bare or list(rows)  # a GCP host type names the machine without GPUs
        if gcp_hosts.attachable(offers, acc) and bare:
            paired = [o for o in offers.by_accelerator.get(acc.name, []) if o.accelerator_count]
            paired = [o for o in paired if count_matches(acc.count, o.accelerator_count)]
            return gcp_hosts.attach(offers, paired, lambda h: h.instance_type == r.instance_type)
        kept = [
            o
            for o in rows
            if o.accelerator == acc.name
            and (count_matches(acc.count, o.accelerator_count) or offers.pool)
        ]
        if not kept:
            has = _counts(rows, rows[0].accelerator) if rows[0].accelerator else ("no GPU",)
            return Elimination(  # the type exists: a deeper miss than a type no one has
                Stage.ACCELERATOR,
                cloud,
                f"instance type {r.instance_type} carries {', '.join(has)}, not {acc}",
            )
        return kept
    if acc is None:
        return list(offers.offers if offers.pool else offers.default_pick)
    named = offers.by_accelerator.get(acc.name, [])
    if offers.pool:
        kept = [o for o in named if o.accelerator_count >= acc.count]
    else:
        kept = [o for o in named if count_matches(acc.count, o.accelerator_count)]
    if not kept:
        return Elimination(
            Stage.ACCELERATOR,
            cloud,
            f"accelerator {acc} is not offered on {cloud}",
            subject=str(acc),
            options=_counts(named, acc.name),
        )
    if gcp_hosts.attachable(offers, acc) and (r.cpus is not None or r.memory_gib is not None):
        return gcp_hosts.attach(offers, kept, gcp_hosts.host_fits(r))
    return kept


def _filter_location(
    rows: list[Offer], want: Want, offers: CloudOffers
) -> list[Offer] | Elimination:
    r, cloud, what = want.request, offers.cloud, want.subject()
    if r.region is not None:
        region = r.region.lower()
        if not any(reg.lower() == region for reg in offers.zones):
            known = ", ".join(offers.zones)
            noun = offers.meta.region_noun
            text = f"region {r.region} is not in the {cloud} catalog (regions: {known})"
            if noun != "region":  # contexts: the ones stix could list the nodes of
                usable = f"({noun}s: {known}; see `stixctl check`)"
                text = f"{cloud} has no usable {noun} {r.region} {usable}"
            return Elimination(Stage.LOCATION, cloud, text)
        kept = [o for o in rows if o.region.lower() == region]
        if not kept:
            where = ", ".join(sorted({o.region for o in rows}))
            return Elimination(
                Stage.LOCATION,
                cloud,
                f"{what} is not offered in {cloud}/{r.region} (it is in: {where})",
            )
        rows = kept
    if r.zone is not None:
        if not offers.region_of_zone:
            return Elimination(
                Stage.LOCATION, cloud, f"{cloud} has no zones (asked for zone {r.zone})"
            )
        if r.zone not in offers.region_of_zone:
            return Elimination(
                Stage.LOCATION, cloud, f"zone {r.zone} is not in the {cloud} catalog"
            )
        kept = [o for o in rows if o.zone == r.zone]
        if not kept:
            where = ", ".join(sorted({o.zone for o in rows if o.zone}))
            return Elimination(
                Stage.LOCATION,
                cloud,
                f"{what} is not offered in zone {r.zone} (it is in: {where})",
            )
        rows = kept
    if isinstance(r.image_id, dict):
        regions = {k.lower() for k in r.image_id}
        kept = [o for o in rows if o.region.lower() in regions]
        if not kept:
            return Elimination(
                Stage.IMAGE,
                cloud,
                f"image_id names regions {', '.join(sorted(r.image_id))}, where {cloud} does "
                f"not offer {what}",
            )
        rows = kept
    return rows


def _region_order(offers: CloudOffers, best: dict[str, float]) -> list[str]:
    ordered = sorted(best, key=lambda reg: (best[reg], reg))
    reorder = offers.meta.region_order
    return reorder(ordered) if reorder is not None else ordered


def _build(rows: list[Offer], want: Want, offers: CloudOffers) -> list[Launchable]:
    """Launchables with SkyPilot's enumeration ranks; ``rows`` all have the price needed."""
    spot = bool(want.request.use_spot)
    # cheapest first, then by zone name (the order zones are tried in), then catalog order
    priced = [
        (p, o)
        for p, _, _, o in sorted(
            ((o.spot_price if spot else o.price) or 0.0, o.zone or "", i, o)
            for i, o in enumerate(rows)
        )
    ]
    type_key: dict[str, tuple[float, float, float, str]] = {}
    region_best: dict[str, dict[str, float]] = {}
    for price, o in priced:
        t = o.instance_type
        if t not in type_key:  # the first row of a type is its cheapest
            type_key[t] = (price, o.vcpus or 0.0, o.memory_gib or 0.0, t)
        region_best.setdefault(t, {}).setdefault(o.region, price)
    type_rank = {t: i for i, t in enumerate(sorted(type_key, key=type_key.__getitem__))}
    region_rank = {
        (t, reg): i
        for t, best in region_best.items()
        for i, reg in enumerate(_region_order(offers, best))
    }
    per_zone = offers.meta.per_zone or (spot and bool(offers.region_of_zone))
    groups: dict[tuple[str, str, str | None], list[tuple[float, Offer]]] = {}
    for price, o in priced:
        key = (o.instance_type, o.region, o.zone if per_zone else None)
        groups.setdefault(key, []).append((price, o))
    zone_seen: dict[tuple[str, str], int] = {}
    out: list[Launchable] = []
    for (itype, region, zone), group in groups.items():
        price, first = group[0]
        zone_rank = zone_seen.get((itype, region), 0)
        zone_seen[(itype, region)] = zone_rank + 1
        acc = first.accelerator
        out.append(
            Launchable(
                cloud=offers.cloud,
                region=region,
                zone=zone,
                zones=(zone,) if zone else tuple(o.zone for _, o in group if o.zone),
                instance_type=itype,
                vcpus=first.vcpus,
                memory_gib=first.memory_gib,
                accelerator=f"{acc}:{format_count(first.accelerator_count)}" if acc else None,
                use_spot=spot,
                price=price,
                type_rank=type_rank[itype],
                region_rank=region_rank[(itype, region)],
                zone_rank=zone_rank if per_zone else 0,
            )
        )
    return out


def _as_sized(want: Want, offers: CloudOffers) -> Want | Elimination:
    """A made-to-measure infra reads an instance type as the size it names: the want of those
    cpus, memory and accelerator (its catalog has no types, only the nodes that exist)."""
    r, read, cloud = want.request, offers.meta.sized_type, offers.cloud
    if r.instance_type is None or read is None:
        return want
    parsed = read(r.instance_type)
    if parsed is None:
        return Elimination(
            Stage.INSTANCE_TYPE,
            cloud,
            f"instance type {r.instance_type} is no {cloud} size (such as 4CPU--16GB or "
            "8CPU--32GB--A100:1)",
            subject=r.instance_type,
        )
    cpus, memory, name, count = parsed
    acc = None
    if name is not None:  # as the nodes' labels name it, whatever the case it is written in
        known = next((a for a in offers.by_accelerator if a.lower() == name.lower()), name)
        acc = Accelerator(known, float(count))
    request = msgspec.structs.replace(
        r, instance_type=None, cpus=Amount(cpus), memory_gib=Amount(memory), accelerators=()
    )
    return msgspec.structs.replace(want, request=request, accelerator=acc)


def _size(want: Want, offers: CloudOffers) -> NodeSize | None:
    sizer, r, acc = offers.meta.sized_nodes, want.request, want.accelerator
    if sizer is None:
        return None
    cpus = r.cpus.value if r.cpus else None
    memory = r.memory_gib.value if r.memory_gib else None
    return sizer(cpus, memory, acc.name if acc else None, acc.count if acc else 0.0)


def _build_sized(
    rows: list[Offer], want: Want, offers: CloudOffers, size: NodeSize
) -> list[Launchable]:
    """One choice per region that has a node the size fits, regions in catalog order."""
    best: dict[str, float] = {}
    for o in rows:
        price = o.price or 0.0
        best[o.region] = min(best.get(o.region, price), price)
    acc = want.accelerator
    return [
        Launchable(
            cloud=offers.cloud,
            region=region,
            zone=None,
            zones=(),
            instance_type=size.instance_type,
            vcpus=size.cpus,
            memory_gib=size.memory_gib,
            accelerator=f"{acc.name}:{size.accelerator_count}" if acc else None,
            use_spot=False,
            price=price,
            type_rank=0,
            region_rank=rank,
            zone_rank=0,
        )
        for rank, (region, price) in enumerate(best.items())
    ]


def launchables(
    want: Want, offers: CloudOffers, *, num_nodes: int
) -> list[Launchable] | Elimination:
    """Every launchable choice for ``want`` on one cloud, or why there is none."""
    cloud = offers.cloud
    if offers.max_nodes is not None and num_nodes > offers.max_nodes:
        return Elimination(Stage.FEATURE, cloud, nodes_problem(cloud, offers.max_nodes, num_nodes))
    missing = _missing_features(want, offers, num_nodes)
    if missing:
        names = ", ".join(FEATURE_NAMES[f] for f in missing)
        return Elimination(Stage.FEATURE, cloud, f"{cloud} does not support {names}")
    sized = _as_sized(want, offers)
    if isinstance(sized, Elimination):
        return sized
    want = sized
    rows = _select(want, offers)
    if isinstance(rows, Elimination):
        return rows
    size = _size(want, offers) if want.request.instance_type is None else None
    rows = _filter_amounts(rows, want, offers, size)
    if isinstance(rows, Elimination):
        return rows
    rows = _filter_location(rows, want, offers)
    if isinstance(rows, Elimination):
        return rows
    spot = bool(want.request.use_spot)
    priced = [o for o in rows if (o.spot_price if spot else o.price) is not None]
    if not priced:
        kind = "spot price" if spot else "price"
        return Elimination(
            Stage.PRICE, cloud, f"the {cloud} catalog has no {kind} for {want.subject()}"
        )
    if size is not None:
        return _build_sized(priced, want, offers, size)
    return _build(priced, want, offers)
