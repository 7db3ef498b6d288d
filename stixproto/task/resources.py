"""The rules of `resources:` beyond its YAML types, its values read in one shape each
(`placement`, `cpus_amount`, `recovery`, ...), and how alternatives merge.

`any_of`/`ordered` entries are partial `Resources`: `candidates` lays each over the base keys.
The shapes are in `stixproto.task.model`, which imports nothing of this package.
"""

from __future__ import annotations

from typing import Any

import msgspec

from stixproto import bounds
from stixproto.task import parsing as p
from stixproto.task._fields import check_int, check_positive, choice, describe, fail, join
from stixproto.task.model import Resources

DISK_TIERS = ("low", "medium", "high", "ultra", "best")
NETWORK_TIERS = ("standard", "best")
PLACEMENT_KEYS = ("infra", "cloud", "region", "zone")


# -- what was written, read in one shape ---------------------------------------------------------


def placement(res: Resources) -> p.Placement:
    """Cloud/region/zone from `infra` or the older keys (None = any)."""
    if res.infra is not None:
        return p.parse_infra(res.infra, "infra")
    cloud = p.parse_cloud(res.cloud, "cloud") if res.cloud is not None else None
    return p.Placement(cloud, res.region, res.zone)


def accelerator_choice(res: Resources) -> p.AcceleratorChoice | None:
    """The accelerator candidates, canonical names, and whether they are ordered."""
    if res.accelerators is None:
        return None
    return p.parse_accelerators(res.accelerators, "accelerators")


def cpus_amount(res: Resources) -> p.Amount | None:
    return None if res.cpus is None else p.parse_amount(res.cpus, "cpus", memory=False)


def memory_amount(res: Resources) -> p.Amount | None:
    """Memory in GB."""
    return None if res.memory is None else p.parse_amount(res.memory, "memory", memory=True)


def disk_size_gb(res: Resources) -> float | None:
    return None if res.disk_size is None else p.parse_disk_size(res.disk_size, "disk_size")


def port_ranges(res: Resources) -> list[tuple[int, int]]:
    """Ports as inclusive (start, end) ranges; a single port is (p, p)."""
    return p.parse_ports(res.ports, "ports")


def autostop_spec(res: Resources) -> p.Autostop | None:
    return None if res.autostop is None else p.parse_autostop(res.autostop, "autostop")


def recovery(res: Resources) -> p.JobRecovery | None:
    """`job_recovery` (or its old name `spot_recovery`) with defaults filled in."""
    value = res.job_recovery if res.job_recovery is not None else res.spot_recovery
    return None if value is None else p.parse_job_recovery(value, "job_recovery")


def candidates(res: Resources) -> list[Resources]:
    """Each alternative merged over the base keys; just [res] without alternatives.

    A merged candidate states its placement with `cloud`/`region`/`zone` (cloud in its
    canonical lower case): an entry's `infra` replaces the base placement, its older keys
    replace only the parts they name.
    """
    entries = res.ordered if res.ordered is not None else res.any_of
    if not entries:
        return [msgspec.structs.replace(res, any_of=None, ordered=None)]
    base = msgspec.structs.asdict(res)
    base.update(any_of=None, ordered=None, infra=None)
    where = placement(res)
    out = []
    for entry in entries:
        merged = dict(base)
        for name in entry.__struct_fields__:
            value = getattr(entry, name)
            if value is not None and name not in PLACEMENT_KEYS:
                merged[name] = value
        place = placement(entry)
        if entry.infra is None:
            place = p.Placement(
                place.cloud or where.cloud,
                place.region or where.region,
                place.zone or where.zone,
            )
        merged.update(cloud=place.cloud, region=place.region, zone=place.zone)
        out.append(Resources(**merged))
    return out


def _check_placement(res: Resources, path: str) -> None:
    legacy = [k for k in ("cloud", "region", "zone") if getattr(res, k) is not None]
    if res.infra is not None and legacy:
        fail(
            join(path, legacy[0]),
            "use either infra or the older cloud/region/zone keys, not both "
            f"(infra: {res.infra!r})",
        )
    if res.infra is not None:
        p.parse_infra(res.infra, join(path, "infra"))
    if res.cloud is not None:
        p.parse_cloud(res.cloud, join(path, "cloud"))


def _check_alternative_accelerators(res: Resources, path: str) -> None:
    acc = res.accelerators
    if isinstance(acc, list) or (isinstance(acc, dict) and len(acc) > 1):
        fail(
            join(path, "accelerators"),
            "an alternative names one accelerator ('A100:8' or {A100: 8}); "
            "list several at the top of resources instead",
        )


def check_resources(res: Resources, path: str = "resources", *, alternative: bool = False) -> None:
    """Every rule of a resources map beyond its YAML types; raises `TaskFieldError`."""
    _check_placement(res, path)
    if res.cpus is not None:
        p.parse_amount(res.cpus, join(path, "cpus"), memory=False)
    if res.memory is not None:
        p.parse_amount(res.memory, join(path, "memory"), memory=True)
    if res.accelerators is not None:
        if alternative:
            _check_alternative_accelerators(res, path)
        p.parse_accelerators(res.accelerators, join(path, "accelerators"))
    if res.job_recovery is not None and res.spot_recovery is not None:
        fail(
            join(path, "spot_recovery"),
            "use job_recovery (spot_recovery is its old name), not both",
        )
    for key in ("job_recovery", "spot_recovery"):
        value = getattr(res, key)
        if value is not None:
            p.parse_job_recovery(value, join(path, key))
    if res.disk_size is not None:
        p.parse_disk_size(res.disk_size, join(path, "disk_size"))
    if res.disk_tier is not None:
        choice(res.disk_tier, DISK_TIERS, join(path, "disk_tier"), "disk tier")
    if res.network_tier is not None:
        choice(res.network_tier, NETWORK_TIERS, join(path, "network_tier"), "network tier")
    p.parse_ports(res.ports, join(path, "ports"))
    if isinstance(res.image_id, dict) and not res.image_id:
        fail(
            join(path, "image_id"),
            "expected an image id or a map of region to image id, got an empty map",
        )
    if res.autostop is not None:
        p.parse_autostop(res.autostop, join(path, "autostop"))
    if res.priority is not None:
        check_int(res.priority, join(path, "priority"), 0, 1000, limit=1000)
    if res.max_hourly_cost is not None:
        cost = float(res.max_hourly_cost)
        check_positive(cost, join(path, "max_hourly_cost"), limit=bounds.MAX_PRICE)
    for i, volume in enumerate(res.volumes or []):
        _check_disk_volume(volume, join(join(path, "volumes"), i))
    _check_alternatives(res, path, alternative)


def _check_disk_volume(volume: dict[str, Any], path: str) -> None:
    for key in ("path", "name", "disk_tier", "storage_type", "attach_mode"):
        if key in volume and not isinstance(volume[key], str):
            fail(join(path, key), f"expected a string, got {describe(volume[key])}")
    if "auto_delete" in volume and not isinstance(volume["auto_delete"], bool):
        fail(
            join(path, "auto_delete"),
            f"expected true or false, got {describe(volume['auto_delete'])}",
        )
    if "disk_size" in volume:
        size = volume["disk_size"]
        if isinstance(size, bool) or not isinstance(size, int | str):
            fail(
                join(path, "disk_size"),
                f"expected a size like 100 or '100GB', got {describe(size)}",
            )
        p.parse_disk_size(size, join(path, "disk_size"))


def _check_alternatives(res: Resources, path: str, alternative: bool) -> None:
    for key in ("any_of", "ordered"):
        entries = getattr(res, key)
        if entries is None:
            continue
        if alternative:
            fail(join(path, key), "alternatives cannot be nested inside any_of/ordered")
        if res.any_of is not None and res.ordered is not None:
            fail(join(path, "ordered"), "use either any_of or ordered, not both")
        if not entries:
            fail(join(path, key), "expected at least one alternative, got an empty list")
        for i, entry in enumerate(entries):
            where = join(join(path, key), i)
            check_resources(entry, where, alternative=True)
