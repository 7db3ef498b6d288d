"""Per-cloud lookups over the catalog's offers, built once, and the per-cloud rules of SkyPilot.

`OfferIndex` wraps a `Catalog` and keeps, per cloud, its offers grouped by accelerator and by
instance type, the CPU-only offers a task without accelerators may get, and the GCP host machines
by zone, so a plan filters short lists instead of the whole catalog. The daemon keeps one index
beside its catalog; tests build their own.

The rules, as SkyPilot 0.14's clouds and catalogs have them:

* Default instance (no accelerators, no instance type): AWS, GCP and Azure pick from their
  general-purpose families only (`DEFAULT_FAMILIES`); when neither cpus nor memory is given the
  request becomes ``cpus: 8+`` and, when memory is not given, at least 4 GiB per vCPU. Every
  other cloud picks the cheapest of *all* its instance types matching cpus/memory, with no
  defaults (on a GPU-only cloud a CPU task gets the cheapest GPU machine, as SkyPilot does).
* A cloud that lacks a feature a request needs (spot, several nodes, ports, a custom image, a
  disk or network tier) offers nothing for it (`UNSUPPORTED`).
* Offers passed in by the caller (``local``, SSH or Kubernetes pools) are *pools*: one entry
  per machine or context, whose vCPUs and memory bound what a node may ask for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from stixd.planner.catalog import Catalog, CatalogError, Offer

__all__ = [
    "DEFAULT_FAMILIES",
    "DEFAULT_MEMORY_PER_CPU",
    "DEFAULT_VCPUS",
    "UNSUPPORTED",
    "CloudOffers",
    "Feature",
    "OfferIndex",
]

DEFAULT_VCPUS = 8.0
DEFAULT_MEMORY_PER_CPU = 4.0

# cloud -> instance-type prefixes of the families a default CPU instance comes from.
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "aws": tuple(
        f"{f}." for f in ("m6i", "m6id", "m7i", "r6i", "r6id", "r7i", "c6i", "c6id", "c7i")
    ),
    "gcp": tuple(
        f"{f}-"
        for f in (
            "n2-standard",
            "n2-highmem",
            "n2-highcpu",
            "n4-standard",
            "n4-highcpu",
            "n4-highmem",
        )
    ),
    "azure": ("Ds_v5", "Es_v5", "Fs_v2"),  # families, see `_azure_family`
}

Feature = Literal["spot", "multi_node", "ports", "image_id", "docker", "disk_tier", "network_tier"]

UNSUPPORTED: dict[str, frozenset[Feature]] = {
    "azure": frozenset({"network_tier"}),
    "nebius": frozenset({"disk_tier"}),  # network_tier: only H100:8 / H200:8, see candidates
    "hyperbolic": frozenset(
        {"spot", "multi_node", "ports", "image_id", "docker", "disk_tier", "network_tier"}
    ),
    "mithril": frozenset({"disk_tier", "ports", "image_id"}),
    "local": frozenset({"spot", "image_id", "docker", "disk_tier", "network_tier"}),
}
FEATURE_NAMES: dict[Feature, str] = {
    "spot": "spot instances",
    "multi_node": "more than one node",
    "ports": "opening ports",
    "image_id": "custom images",
    "docker": "docker images",
    "disk_tier": "choosing a disk tier",
    "network_tier": "network_tier: best",
}

_AZURE_TYPE = re.compile(r"^([A-Za-z]+)(\d+)(?:-(\d+))?(.*)$")


def _azure_family(instance_type: str) -> str:
    """``Standard_D8s_v5`` -> ``Ds_v5``; ``Standard_E16-4s_v5`` -> ``E_s_v5`` (SkyPilot's rule)."""
    name = instance_type.removeprefix("Standard_").removesuffix("_Promo")
    m = _AZURE_TYPE.match(name)
    if m is None:
        return name
    return m.group(1) + ("_" if m.group(3) else "") + m.group(4)


def in_default_family(cloud: str, instance_type: str) -> bool:
    prefixes = DEFAULT_FAMILIES.get(cloud)
    if prefixes is None:
        return True
    if cloud == "azure":
        return _azure_family(instance_type) in prefixes
    return instance_type.startswith(prefixes)


class CloudOffers:
    """One cloud's offers, grouped for the filters (built once per cloud and catalog)."""

    def __init__(
        self,
        cloud: str,
        offers: Sequence[Offer],
        *,
        pool: bool = False,
        max_nodes: int | None = None,
    ) -> None:
        self.cloud = cloud
        self.pool = pool
        self.max_nodes = max_nodes  # a pool of capacity (local) may cap a cluster's nodes
        self.offers = offers
        self.by_accelerator: dict[str, list[Offer]] = {}
        self.by_type: dict[str, list[Offer]] = {}
        self.cpu_only: list[Offer] = []
        self.hosts: dict[tuple[str, str, str | None], Offer] = {}
        regions: dict[str, dict[str, None]] = {}
        for o in offers:
            self.by_type.setdefault(o.instance_type, []).append(o)
            regions.setdefault(o.region, {})
            if o.zone is not None:
                regions[o.region][o.zone] = None
            if o.accelerator is None:
                self.cpu_only.append(o)
                self.hosts[(o.instance_type, o.region, o.zone)] = o
            else:
                self.by_accelerator.setdefault(o.accelerator, []).append(o)
        self.zones: dict[str, list[str]] = {r: sorted(z) for r, z in sorted(regions.items())}
        self.has_defaults = cloud in DEFAULT_FAMILIES and not pool
        # A request with neither accelerators nor an instance type picks from these.
        self.default_pick: list[Offer] = (
            [o for o in self.cpu_only if in_default_family(cloud, o.instance_type)]
            if self.has_defaults
            else list(offers)
        )
        self.region_of_zone = {z: r for r, zs in self.zones.items() for z in zs}

    def unsupported(self) -> frozenset[Feature]:
        return UNSUPPORTED.get(self.cloud, frozenset())


class OfferIndex:
    """The catalog's offers, indexed per cloud on first use. Pure: reads the catalog only."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._clouds: dict[str, CloudOffers] = {}
        self._device_memory: dict[str, float] | None = None

    def cloud(self, name: str) -> CloudOffers:
        """Raises `CatalogMissing` / `CatalogError` when the cloud has no readable catalog."""
        found = self._clouds.get(name)
        if found is None:
            found = CloudOffers(name, self.catalog.offers(name))
            self._clouds[name] = found
        return found

    def canonical_accelerator(self, name: str) -> str | None:
        return self.catalog.canonical_accelerator(name)

    def accelerator_names(self) -> list[str]:
        return self.catalog.accelerator_names()

    def device_memory(self) -> Mapping[str, float]:
        """GiB of memory per device of each accelerator, where some catalog says."""
        if self._device_memory is None:
            memory: dict[str, float] = {}
            for cloud in self.catalog.clouds():
                try:
                    offers = self.cloud(cloud).offers
                except CatalogError:
                    continue  # an unreadable catalog tells nothing about device memory
                for o in offers:
                    if o.accelerator and o.gpu_memory_gib and o.accelerator not in memory:
                        memory[o.accelerator] = o.gpu_memory_gib
            self._device_memory = memory
        return self._device_memory
