"""Instance catalogs in SkyPilot's v8 CSV format: offers, accelerator names, `show-gpus`.

Pure: it reads files and writes its own index beside the cache, never the network (fetching
is ``stixd/catalog_fetch.py``). Start with `open_catalog`.
"""

from stixd.planner.catalog.catalog import (
    DEFAULT_STALE_DAYS,
    SCHEMA,
    Catalog,
    CatalogSources,
    cache_dir,
    catalog_root,
    open_catalog,
)
from stixd.planner.catalog.layouts import read_vms
from stixd.planner.catalog.model import (
    AcceleratorSummary,
    CatalogError,
    CatalogMissing,
    Offer,
)
from stixd.planner.catalog.names import (
    COMMON_GPUS,
    KNOWN_CLOUDS,
    count_matches,
    match_offers,
    parse_accelerator,
)
from stixd.planner.catalog.readers import read_accelerator_names
from stixd.planner.catalog.show_gpus import (
    GpuCountRow,
    GpuMachineRow,
    GpuNote,
    GpuOfferRow,
    GpuRow,
    render_show_gpus,
    show_gpus,
    show_machine,
)

__all__ = [
    "COMMON_GPUS",
    "DEFAULT_STALE_DAYS",
    "KNOWN_CLOUDS",
    "SCHEMA",
    "AcceleratorSummary",
    "Catalog",
    "CatalogError",
    "CatalogMissing",
    "CatalogSources",
    "GpuCountRow",
    "GpuMachineRow",
    "GpuNote",
    "GpuOfferRow",
    "GpuRow",
    "Offer",
    "cache_dir",
    "catalog_root",
    "count_matches",
    "match_offers",
    "open_catalog",
    "parse_accelerator",
    "read_accelerator_names",
    "read_vms",
    "render_show_gpus",
    "show_gpus",
    "show_machine",
]
