"""Command-line resource flags merged into a task the way SkyPilot 0.14 merges them.

SkyPilot copies every candidate resource (each any_of/ordered entry merged over the base, each
accelerator of a set) with the flags applied (`Task.set_resources_override`), so a flag wins
over every candidate. Here the same result keeps the file's shape: the flag goes on the base
resources and the entries stop naming that key, so they all inherit it. Specifically:

- `--gpus` replaces `accelerators` (a whole set or list becomes the one given);
- `--infra` replaces cloud, region and zone together (`aws` clears a region the file named;
  `*` or a part left out means any); it cannot be combined with `--cloud/--region/--zone`;
- `--cloud`, `--region`, `--zone` (older flags) replace only their own part;
- every other flag replaces its key; the value `none` (any case) removes the key, and for the
  placement flags `*` means any, as in SkyPilot; `--num-nodes` sets the task's node count.
"""

from __future__ import annotations

from typing import Any

import msgspec

from stixproto.bounds import MAX_COUNT
from stixproto.errors import TaskFieldError
from stixproto.task import parsing as p
from stixproto.task.model import Resources, Task
from stixproto.task.resources import PLACEMENT_KEYS, candidates, check_resources, placement

SOURCE = "command line"
_FLAGS = {
    "accelerators": "--gpus",
    "cpus": "--cpus",
    "memory": "--memory",
    "instance_type": "--instance-type",
    "use_spot": "--use-spot",
    "disk_size": "--disk-size",
    "disk_tier": "--disk-tier",
    "network_tier": "--network-tier",
    "image_id": "--image-id",
    "ports": "--ports",
}


class ResourceOverrides(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Resource flags from the command line; None = the flag was not given."""

    gpus: str | None = None
    cpus: int | float | str | None = None
    memory: int | float | str | None = None
    infra: str | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    use_spot: bool | None = None
    instance_type: str | None = None
    disk_size: int | str | None = None
    disk_tier: str | None = None
    network_tier: str | None = None
    image_id: str | None = None
    ports: list[int | str] | None = None
    num_nodes: int | None = None


def _none(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "none"


def _fields(ov: ResourceOverrides) -> dict[str, Any]:
    """Resource key → new value (None removes the key), each checked like a file's."""
    given: dict[str, Any] = {
        "accelerators": ov.gpus,
        "cpus": ov.cpus,
        "memory": ov.memory,
        "instance_type": ov.instance_type,
        "use_spot": ov.use_spot,
        "disk_size": ov.disk_size,
        "disk_tier": ov.disk_tier,
        "network_tier": ov.network_tier,
        "image_id": ov.image_id,
    }
    out = {k: (None if _none(v) else v) for k, v in given.items() if v is not None}
    if ov.ports is not None:
        if any(_none(port) for port in ov.ports):
            if len(ov.ports) > 1:
                raise TaskFieldError(
                    "--ports", "'none' cannot be given with other ports", source=SOURCE
                )
            out["ports"] = None
        else:
            out["ports"] = list(ov.ports)
    for key, value in out.items():
        if value is None:
            continue
        try:
            check_resources(Resources(**{key: value}), "")
        except TaskFieldError as exc:
            raise TaskFieldError(
                _FLAGS[key], exc.problem, suggestion=exc.suggestion, source=SOURCE
            ) from None
    return out


def _part(value: str | None, flag: str) -> tuple[bool, str | None]:
    """(given, value) for one older placement flag; `none` and `*` mean any."""
    if value is None:
        return False, None
    if _none(value) or value.strip() == "*":
        return True, None
    if flag == "--cloud":
        try:
            return True, p.parse_cloud(value, flag)
        except TaskFieldError as exc:
            raise exc.at(SOURCE) from None
    return True, value


def _placement(ov: ResourceOverrides) -> tuple[p.Placement | None, dict[str, str | None]]:
    """Either a whole placement (`--infra`) or the parts the older flags name."""
    parts = {k: _part(getattr(ov, k), f"--{k}") for k in ("cloud", "region", "zone")}
    named = {k: v for k, (given, v) in parts.items() if given}
    if ov.infra is None:
        return None, named
    if named:
        flags = ", ".join(f"--{k}" for k in named)
        raise TaskFieldError("--infra", f"use either --infra or {flags}, not both", source=SOURCE)
    if ov.infra.strip() == "*":
        return p.Placement(), {}
    try:
        return p.parse_infra(ov.infra, "--infra"), {}
    except TaskFieldError as exc:
        raise exc.at(SOURCE) from None


def _placed(res: Resources, place: p.Placement, legacy_style: bool) -> Resources:
    if legacy_style:
        return msgspec.structs.replace(
            res, infra=None, cloud=place.cloud, region=place.region, zone=place.zone
        )
    return msgspec.structs.replace(res, infra=place.to_infra(), cloud=None, region=None, zone=None)


def _with_parts(place: p.Placement, parts: dict[str, str | None]) -> p.Placement:
    return msgspec.structs.replace(place, **parts) if parts else place


def apply_overrides(task: Task, overrides: ResourceOverrides) -> Task:
    """The task with command-line resource flags applied to every candidate resource."""
    fields = _fields(overrides)
    whole, parts = _placement(overrides)
    num_nodes = task.num_nodes
    if overrides.num_nodes is not None:
        if overrides.num_nodes < 1:
            raise TaskFieldError(
                "--num-nodes", f"expected an integer >= 1, got {overrides.num_nodes}", source=SOURCE
            )
        if overrides.num_nodes > MAX_COUNT:
            too_many = f"expected an integer <= {MAX_COUNT}, got {overrides.num_nodes}"
            raise TaskFieldError("--num-nodes", too_many, source=SOURCE)
        num_nodes = overrides.num_nodes
    if not fields and whole is None and not parts:
        return msgspec.structs.replace(task, num_nodes=num_nodes)

    base = task.resources_or_default()
    entries_key = "ordered" if base.ordered is not None else "any_of"
    entries: list[Resources] | None = getattr(base, entries_key)
    new_base = msgspec.structs.replace(base, **fields)
    new_entries = None
    if entries is not None:
        inherit = {k: None for k in fields}
        new_entries = [msgspec.structs.replace(e, **inherit) for e in entries]
    if whole is not None:
        new_base = _placed(new_base, whole, legacy_style=False)
        if new_entries is not None:
            new_entries = [
                msgspec.structs.replace(e, **dict.fromkeys(PLACEMENT_KEYS)) for e in new_entries
            ]
    elif parts:
        if new_entries is None:
            legacy = base.infra is None and any(
                getattr(base, k) for k in ("cloud", "region", "zone")
            )
            new_base = _placed(new_base, _with_parts(placement(base), parts), legacy_style=legacy)
        else:
            merged = candidates(base)
            new_entries = [
                _placed(e, _with_parts(placement(m), parts), legacy_style=False)
                for e, m in zip(new_entries, merged, strict=True)
            ]
            new_base = msgspec.structs.replace(new_base, **dict.fromkeys(PLACEMENT_KEYS))
    if new_entries is not None:
        new_base = msgspec.structs.replace(new_base, **{entries_key: new_entries})
    return msgspec.structs.replace(task, resources=new_base, num_nodes=num_nodes)
