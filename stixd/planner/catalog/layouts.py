"""Which reader reads which cloud's vms.csv: GCP's split layout, or the flat one for the rest."""

from __future__ import annotations

from collections.abc import Callable

from stixd.planner.catalog.gcp import read_gcp
from stixd.planner.catalog.model import CatalogError, Offer
from stixd.planner.catalog.readers import read_flat

__all__ = ["LAYOUTS", "read_vms"]

Reader = Callable[[str, str, str], list[Offer]]

# cloud -> reader; every cloud not named here uses the flat layout.
LAYOUTS: dict[str, Reader] = {"gcp": read_gcp}


def read_vms(cloud: str, text: str, source: str) -> list[Offer]:
    """Offers of one cloud's vms.csv text, through the reader of its layout."""
    offers = LAYOUTS.get(cloud, read_flat)(cloud, text, source)
    if not offers:
        raise CatalogError(f"Catalog {source} has a header but no data rows.")
    return offers
