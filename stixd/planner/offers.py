"""Per-cloud lookups over the catalog's offers, built once, and the per-cloud rules of SkyPilot.

`OfferIndex` wraps a `Catalog` and keeps, per cloud, its offers grouped by accelerator and by
instance type, the CPU-only offers a task without accelerators may get, and the GCP host machines
by zone, so a plan filters short lists instead of the whole catalog. The daemon keeps one index
beside its catalog; tests build their own.

The rules, as SkyPilot 0.14's clouds and catalogs have them:

* Default instance (no accelerators, no instance type): an infra with default families (AWS,
  GCP and Azure: `InfraMeta.default_families`) picks from them only; when neither cpus nor
  memory is given the request becomes ``cpus: 8+`` and, when memory is not given, at least
  4 GiB per vCPU. Every other cloud picks the cheapest of *all* its instance types matching
  cpus/memory, with no defaults (on a GPU-only cloud a CPU task gets the cheapest GPU machine,
  as SkyPilot does).
* A cloud that lacks a feature a request needs (spot, several nodes, ports, a custom image, a
  disk or network tier) offers nothing for it (`InfraMeta.unsupported`).
* Offers passed in by the caller (this machine, SSH or Kubernetes pools) are *pools*: one entry
  per machine or context, whose vCPUs and memory bound what a node may ask for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stixd.planner.catalog import Catalog, CatalogError, Offer
from stixd.planner.infra_meta import Feature, InfraMeta, Infras

__all__ = [
    "DEFAULT_MEMORY_PER_CPU",
    "DEFAULT_VCPUS",
    "CloudOffers",
    "Feature",
    "OfferIndex",
]

DEFAULT_VCPUS = 8.0
DEFAULT_MEMORY_PER_CPU = 4.0

FEATURE_NAMES: dict[Feature, str] = {
    "spot": "spot instances",
    "multi_node": "more than one node",
    "ports": "opening ports",
    "image_id": "custom images",
    "docker": "docker images",
    "disk_tier": "choosing a disk tier",
    "network_tier": "network_tier: best",
}


class CloudOffers:
    """One cloud's offers, grouped for the filters (built once per cloud and catalog)."""

    def __init__(
        self,
        meta: InfraMeta,
        offers: Sequence[Offer],
        *,
        pool: bool = False,
        max_nodes: int | None = None,
    ) -> None:
        self.meta = meta
        self.cloud = meta.name
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
        self.has_defaults = bool(meta.default_families) and not pool
        # A request with neither accelerators nor an instance type picks from these.
        self.default_pick: list[Offer] = (
            [o for o in self.cpu_only if meta.in_default_family(o.instance_type)]
            if self.has_defaults
            else list(offers)
        )
        self.region_of_zone = {z: r for r, zs in self.zones.items() for z in zs}

    def unsupported(self) -> frozenset[Feature]:
        return self.meta.unsupported


class OfferIndex:
    """The catalog's offers, indexed per cloud on first use. Pure: reads the catalog only."""

    def __init__(self, catalog: Catalog, infras: Infras) -> None:
        self.catalog = catalog
        self.infras = infras
        self._clouds: dict[str, CloudOffers] = {}
        self._device_memory: dict[str, float] | None = None

    def cloud(self, name: str) -> CloudOffers:
        """Raises `CatalogMissing` / `CatalogError` when the cloud has no readable catalog."""
        found = self._clouds.get(name)
        if found is None:
            meta = self.infras.get(name)
            sized = meta.sized_nodes is not None  # its rows are capacities, as a pool's are
            found = CloudOffers(meta, self.catalog.offers(name), pool=sized)
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
