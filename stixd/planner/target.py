"""Which provider a launch goes to: a host pool named by `infra: ssh/POOL`, a cloud named
by `infra: aws[/REGION[/ZONE]]`, else this machine (or, when the task does not fit it, the
cheapest enabled cloud); and, for a cloud, the optimizer's first choice there. Which infra is
which comes from the `Infras` table the app hands in."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from stixd.planner.catalog import CatalogError, Offer
from stixd.planner.from_task import task_request
from stixd.planner.infra_meta import Infras, Role
from stixd.planner.local_fit import check_fits_local
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan
from stixd.planner.request import Blocked
from stixproto.errors import InvalidTask, ProvisionError
from stixproto.task import Task, resources

MAX_PORTS = 1000
MAX_FAILOVERS = 16
"""Launch choices a cluster tries after the first before it gives up."""


def task_ports(task: Task) -> list[int]:
    """The ports any of the task's resources ask to expose, at most ``MAX_PORTS`` of them (a
    cloud launch refuses more; on local and SSH hosts every port is reachable anyway)."""
    ports = {
        p
        for res in resources.candidates(task.resources_or_default())
        for lo, hi in resources.port_ranges(res)
        for p in range(lo, min(hi, lo + MAX_PORTS) + 1)
    }
    return sorted(ports)[:MAX_PORTS]


class NoChoiceLeft(ProvisionError):
    """Every launch choice is blocked by what failed before (capacity, quota, credentials)."""


def choose_target(
    task: Task,
    infras: Infras,
    ssh_pools: Mapping[str, int],
    clouds: Collection[str] = (),
    unavailable: Mapping[str, str] | None = None,
    *,
    local_max_nodes: int | None = None,
) -> tuple[str, str | None]:
    """(provider, pool) for the task; `ssh_pools` maps each pool of the pools infra to its
    number of hosts, `clouds` are the usable clouds and `unavailable` says why another cloud is
    not. For a cloud the "pool" is the region the task names; this machine takes at most
    `local_max_nodes`."""
    built = infras.clouds()
    pool_infras = infras.with_role(Role.POOLS)
    for candidate in resources.candidates(task.resources_or_default()):
        place = resources.placement(candidate)
        if place.cloud in built:
            if place.cloud not in clouds:
                why = (unavailable or {}).get(place.cloud, "it is not enabled")
                raise InvalidTask(
                    f"resources.infra: '{place.cloud}' is not available: {why} "
                    "(see `stixctl check`)"
                )
            return place.cloud, place.region
        if place.cloud is None or place.cloud not in pool_infras:
            continue
        kind = place.cloud
        pools = ", ".join(sorted(ssh_pools)) or f"none defined in {infras.get(kind).pools_file}"
        if place.region is None:
            raise InvalidTask(f"resources.infra: name the pool as {kind}/POOL (pools: {pools})")
        if place.region not in ssh_pools:
            raise InvalidTask(f"resources.infra: no {kind} pool '{place.region}' (pools: {pools})")
        size = ssh_pools[place.region]
        if task.num_nodes > size:
            raise InvalidTask(
                f"num_nodes: {kind} pool '{place.region}' has {size} host(s), "
                f"the task asks for {task.num_nodes}"
            )
        return kind, place.region
    try:
        check_fits_local(task, infras, local_max_nodes)
    except InvalidTask:
        named = {
            resources.placement(c).cloud for c in resources.candidates(task.resources_or_default())
        }
        enabled = [c for c in built if c in clouds and c not in infras.named_only()]
        if named == {None} and enabled:
            return enabled[0], None  # cheapest is the only one yet
        raise
    return infras.machine(), None


def cloud_spec(
    task: Task,
    cloud: str,
    index: OfferIndex,
    blocked: Sequence[Blocked] = (),
    *,
    avoid_regions: Sequence[str] = (),
    prefer_region: str | None = None,
) -> dict[str, Any]:
    """The optimizer's first choice for ``task`` on ``cloud`` leaving out ``blocked``, as the
    cluster records it: ``placement`` (what the provider needs), ``hourly_price`` (per node),
    ``resources``. ``NoChoiceLeft`` when blocks removed every choice.

    ``avoid_regions`` are soft blocks (a managed job's EAGER_NEXT_REGION: the regions it was
    lost in): left out too, unless nothing else is left. ``prefer_region`` (FAILOVER: the same
    region first) takes the best choice there over a cheaper one elsewhere."""
    why = "a managed job was lost there (EAGER_NEXT_REGION)"
    avoid = [Blocked(cloud=cloud, region=r, reason=why) for r in avoid_regions]
    try:
        best = plan(task_request(task), index, enabled_clouds=[cloud], blocked=[*blocked, *avoid])
        if avoid and not best.candidates:
            best = plan(task_request(task), index, enabled_clouds=[cloud], blocked=blocked)
    except CatalogError as exc:
        raise InvalidTask(f"no {cloud} catalog to plan with: {exc}") from None
    if not best.candidates:
        reason = best.no_fit_reason or "nothing fits"
        if blocked and "blocked" in reason:
            raise NoChoiceLeft(reason)
        raise InvalidTask(f"no {cloud} instance fits the task: {reason}")
    there = [c for c in best.candidates if prefer_region and c.region == prefer_region]
    choice = (there or best.candidates)[0]
    res = resources.candidates(task.resources_or_default())[choice.resources_index]
    ports = sorted({p for lo, hi in resources.port_ranges(res) for p in range(lo, hi + 1)})
    if len(ports) > MAX_PORTS:
        raise InvalidTask(f"resources.ports: {len(ports)} ports; at most {MAX_PORTS} can be opened")
    disk = resources.disk_size_gb(res)
    placement = {
        "region": choice.region,
        "zones": [choice.zone] if choice.zone else list(choice.zones),
        "instance_type": choice.instance_type,
        "use_spot": choice.use_spot,
        "image_id": res.image_id,
        "disk_size": int(disk) if disk else None,
        "disk_tier": res.disk_tier,
        "ports": ports,
    }
    if index.infras.get(cloud).sized_nodes is not None:
        placement["request"] = node_request(choice.vcpus, choice.memory_gib, choice.accelerators)
    spot = " spot" if choice.use_spot else ""
    return {
        "placement": placement,
        "hourly_price": choice.hourly_price,
        "resources": f"{task.num_nodes}x {cloud}/{choice.region} {choice.instance_type}{spot}",
    }


def node_request(
    cpus: float | None, memory_gib: float | None, accelerators: str | None
) -> dict[str, Any]:
    """What each node of a made-to-measure infra asks (the placement's ``request``), from its
    choice: ``accelerators`` as the plan shows them (``A100:2``)."""
    name, _, count = (accelerators or "").rpartition(":")
    return {
        "cpus": cpus,
        "memory_gb": memory_gib,
        "accelerator": name or None,
        "accelerator_count": int(float(count)) if name else 0,
    }


def failover_infras(
    task: Task, infras: Infras, clouds: Collection[str], *, machine_fits: bool
) -> tuple[str, ...]:
    """The infras a launch of ``task`` may move to once every choice on its first one failed,
    in registry order: those its resources name when they name several (``any_of`` across
    infras); when an alternative names none, every usable cloud a task may be placed on unnamed
    and this machine (``machine_fits``: the task fits it). Empty when the task pins one infra
    (``infra: k8s``, ``infra: aws/us-east-1``): a pinned launch never crosses. Host pools are
    never crossed to (their hosts are the user's, named by pool)."""
    named = {
        resources.placement(c).cloud for c in resources.candidates(task.resources_or_default())
    }
    machine = infras.machine()
    usable = [c for c in infras.clouds() if c in clouds]
    if None in named:
        found = [c for c in usable if c not in infras.named_only() or c in named]
        found += [machine] if machine_fits else []
    else:
        found = [c for c in usable if c in named]
        found += [machine] if machine in named and machine_fits else []
    return tuple(found) if len(found) > 1 else ()


def next_infra(
    task: Task,
    candidates: Sequence[str],
    index: OfferIndex,
    blocked: Sequence[Blocked] = (),
    *,
    machine_offer: Offer | None = None,
    machine_cap: int | None = None,
    leave_out: Collection[str] = (),
) -> str:
    """The optimizer's first choice for ``task`` over ``candidates`` (infras), leaving out
    ``blocked``: where a launch goes when its own infra has no choice left. ``machine_offer``
    is this machine as the planner sees it, when it is a candidate. ``NoChoiceLeft`` when
    nothing is left anywhere. ``leave_out``: infras planned (so a reason names their blocks) but
    not chosen (those whose every choice already failed)."""
    extra = {machine_offer.cloud: [machine_offer]} if machine_offer is not None else {}
    limits = {machine_offer.cloud: machine_cap} if machine_offer and machine_cap else {}
    try:
        best = plan(
            task_request(task),
            index,
            enabled_clouds=list(candidates),
            blocked=blocked,
            extra_offers=extra,
            max_nodes=limits,
        )
    except CatalogError as exc:
        raise NoChoiceLeft(f"no catalog to plan the next infra with: {exc}") from None
    left = [c.cloud for c in best.candidates if c.cloud not in leave_out]
    if not left:
        raise NoChoiceLeft(best.no_fit_reason or "every candidate is blocked")
    return left[0]
