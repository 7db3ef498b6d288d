"""Shared pieces of the optimizer tests (no tests here): the shared catalogs indexed once,
request builders, and a catalog writer for synthetic clouds (ties are plain on four rows)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stixd.planner.catalog import CatalogSources
from stixd.planner.catalog.catalog import Catalog
from stixd.planner.offers import OfferIndex
from stixd.planner.request import Accelerator, Amount, ResourceRequest, TaskRequest
from stixd.providers.all import infras
from tests.test_catalog import shared_catalogs

AWS_HEADER = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,"
    "Region,AvailabilityZone,Arch"
)
GCP_HEADER = (
    "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,"
    "AvailabilityZone,Price,SpotPrice"
)
AZURE_HEADER = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,"
    "Region,Generation"
)
BIG3 = ("aws", "azure", "gcp")
INFRAS = infras()
"""The planner's table of the provider registry, as the daemon hands it in."""


def index_over(root: Path, home: Path) -> OfferIndex:
    sources = CatalogSources(
        cache_dir=home / "catalogs", index_dir=home / "catalogs" / "index" / "v8", override_dir=root
    )
    return OfferIndex(Catalog(sources), INFRAS)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> OfferIndex:
    """The shared catalogs (../shared/catalogs or $STIX_CATALOG_DIR), indexed once per module."""
    return index_over(shared_catalogs(), tmp_path_factory.mktemp("home"))


def write_cloud(root: Path, cloud: str, header: str, rows: list[str]) -> None:
    path = root / "v8" / cloud / "vms.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


def acc(spec: str) -> Accelerator:
    name, _, count = spec.partition(":")
    return Accelerator(name, float(count or 1))


def res(*accelerators: str, **kw: object) -> ResourceRequest:
    return ResourceRequest(accelerators=tuple(acc(a) for a in accelerators), **kw)  # type: ignore[arg-type]


def task(*accelerators: str, num_nodes: int = 1, **kw: object) -> TaskRequest:
    """A one-alternative task: ``task("A100:8", use_spot=True)``, ``task(cpus=at_least(8))``."""
    return TaskRequest(num_nodes=num_nodes, alternatives=(res(*accelerators, **kw),))


def at_least(x: float) -> Amount:
    return Amount(x, at_least=True)


def exactly(x: float) -> Amount:
    return Amount(x)
