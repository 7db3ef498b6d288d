"""What the planner knows about each infra, as data the providers' ``meta.py`` files fill in.

The planner names no infra: its per-infra rules (default families, region order, features an
infra lacks, egress prices, display names, which infras are pools) are fields of `InfraMeta`,
and the app hands the planner an `Infras` table built from the provider registry. An infra the
table does not know (a catalog cloud without a registry entry) gets `InfraMeta`'s defaults: a
cloud priced from its catalog, shown by its capitalised name, with every feature and free
egress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

__all__ = ["Egress", "Feature", "FeatureGaps", "InfraMeta", "Infras", "NodeSize", "Role", "Sizer"]

Feature = Literal["spot", "multi_node", "ports", "image_id", "docker", "disk_tier", "network_tier"]

FeatureGaps = Callable[[str | None, str | None, float | None, frozenset[Feature]], set[Feature]]
"""(disk tier, accelerator name, accelerator count, features needed) -> features it lacks here,
for infras whose support depends on the request (beyond `InfraMeta.unsupported`)."""


@dataclass(frozen=True)
class NodeSize:
    """What one node of an infra that makes nodes to measure asks for (a Kubernetes pod)."""

    cpus: float
    memory_gib: float
    accelerator_count: int
    instance_type: str
    """The name the plan shows and the cluster records for a node of this size."""


Sizer = Callable[[float | None, float | None, str | None, float], NodeSize]
"""(cpus asked, GiB asked, accelerator name, accelerator count; None: not given) -> the size
each node asks for, with the infra's defaults for what the task leaves out."""


class Role(Enum):
    """How a launch reaches an infra and how the planner prices it."""

    MACHINE = "machine"
    """This machine: the default for a task that names no infra, $0, bounded by its size."""
    POOLS = "pools"
    """Named pools of hosts the user lists (``infra: NAME/POOL``), $0, one row per pool."""
    CLOUD = "cloud"
    """Instances bought from a catalog's price list."""


@dataclass(frozen=True)
class Egress:
    """Internet egress list prices of one infra, as SkyPilot's optimizer charges them.

    Tiered (``whole=False``): the first ``free_gb`` free, each band charged at its rate up to
    its upper bound, and beyond the last band the whole transfer at ``beyond``. Banded
    (``whole=True``): the whole transfer at the rate of the band it falls in."""

    bands: tuple[tuple[float, float], ...]
    free_gb: float = 0.0
    beyond: float = 0.0
    whole: bool = False

    def cost(self, gigabytes: float) -> float:
        if gigabytes <= 0:
            return 0.0
        if self.whole:
            return next(rate for top, rate in self.bands if gigabytes <= top) * gigabytes
        if gigabytes > self.bands[-1][0]:
            return self.beyond * gigabytes
        cost, low = 0.0, self.free_gb
        for top, rate in self.bands:
            if gigabytes > low:
                cost += (min(gigabytes, top) - low) * rate
            low = top
        return cost


@dataclass(frozen=True)
class InfraMeta:
    """One infra's planner and catalog facts (see the module docstring for the defaults)."""

    name: str
    display: str = ""
    role: Role = Role.CLOUD
    named_only: bool = False
    """Launched on only when the task names it (a test double, say), never picked as cheapest."""
    default_families: tuple[str, ...] = ()
    """Families a task without accelerators or instance type picks from; empty: every type."""
    family_of: Callable[[str], str] | None = None
    """Instance type -> family name; None: the families are prefixes of the type names."""
    unsupported: frozenset[Feature] = frozenset()
    feature_gaps: FeatureGaps | None = None
    region_order: Callable[[list[str]], list[str]] | None = None
    """Regions (cheapest first) in the order a launch tries them, when not simply that."""
    per_zone: bool = False
    """Planned zone by zone (its catalog prices each zone), not region by region."""
    gpus_attach_to_hosts: bool = False
    """Its GPUs attach to any host of a family, so the planner re-pairs GPUs with hosts."""
    egress: Egress | None = None
    """None: moving data out is free."""
    zone_ids: bool = False
    """Its catalog names zones by ID; the account's ID -> name mapping is kept beside it."""
    pools_file: str = ""
    """Role.POOLS: the file in the stix home where the user lists its pools."""
    fetch_by_default: bool = False
    """Fetched into an empty catalog cache when no cloud is named."""
    sized_nodes: Sizer | None = None
    """Nodes made to the task's measure (Kubernetes pods): its catalog rows are capacities (a
    node fits where it asks no more), each region yields one choice of the size this returns,
    and regions are tried in the catalog's order."""
    sized_type: Callable[[str], tuple[float, float, str | None, int] | None] | None = None
    """Made-to-measure nodes: an ``instance_type`` as (cpus, GiB, accelerator, count), None
    for a name that is no size of this infra (Kubernetes: ``4CPU--16GB--A100:1``)."""
    region_noun: str = "region"
    """What its regions are called in messages (Kubernetes: contexts)."""

    def shown(self) -> str:
        return self.display or self.name.capitalize()

    def in_default_family(self, instance_type: str) -> bool:
        if not self.default_families:
            return True
        if self.family_of is not None:
            return self.family_of(instance_type) in self.default_families
        return instance_type.startswith(self.default_families)


@dataclass(frozen=True)
class Infras:
    """The planner's table of infras, in registry order, and which of them can launch."""

    metas: tuple[InfraMeta, ...] = ()
    launchable: frozenset[str] = frozenset()
    _by_name: Mapping[str, InfraMeta] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {m.name: m for m in self.metas})

    @classmethod
    def of(cls, metas: Iterable[InfraMeta], launchable: Iterable[str] = ()) -> Infras:
        return cls(tuple(metas), frozenset(launchable))

    def __iter__(self) -> Iterator[InfraMeta]:
        return iter(self.metas)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> InfraMeta:
        return self._by_name.get(name) or InfraMeta(name)

    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metas)

    def display(self, name: str) -> str:
        return self.get(name).shown()

    def is_pool(self, name: str) -> bool:
        """Capacity the user brings (this machine, host pools, Kubernetes contexts): a table
        row per region."""
        meta = self.get(name)
        return meta.role is not Role.CLOUD or meta.sized_nodes is not None

    def clouds(self) -> tuple[str, ...]:
        """Catalog clouds with a provider in this build, in registry order."""
        return tuple(
            m.name for m in self.metas if m.role is Role.CLOUD and m.name in self.launchable
        )

    def planned(self) -> tuple[str, ...]:
        """Infras known to the planner with no provider in this build yet."""
        return tuple(m.name for m in self.metas if m.name not in self.launchable)

    def named_only(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metas if m.named_only)

    def with_role(self, role: Role) -> tuple[str, ...]:
        return tuple(m.name for m in self.metas if m.role is role and m.name in self.launchable)

    def zone_id_clouds(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metas if m.zone_ids)

    def fetched_by_default(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metas if m.fetch_by_default)

    def pools(self) -> str | None:
        """The launchable infra of host pools (``ssh``), if this build has one."""
        found = self.with_role(Role.POOLS)
        return found[0] if found else None

    def machine(self) -> str:
        """The infra a task that names none runs on (this machine)."""
        found = self.with_role(Role.MACHINE)
        if not found:
            raise LookupError("no infra of role 'machine' in the registry")
        return found[0]

    def egress_cost(self, src: str, gigabytes: float) -> float:
        """USD to move ``gigabytes`` out of ``src`` to the internet (another infra)."""
        price = self.get(src).egress
        return price.cost(gigabytes) if price is not None else 0.0
