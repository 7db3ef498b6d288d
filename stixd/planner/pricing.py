"""Prices of machines that already exist (a leak, an instance resized outside stix), per hour.

Pure: reads the catalog only. The cheapest zone's price of the region is taken, as the
catalog does not say which zone an existing machine's price came from.
"""

from __future__ import annotations

from stixd.planner.catalog import Catalog

Prices = dict[tuple[str, str], tuple[float | None, float | None]]
"""(region, instance type) → (on-demand, spot) $/hour."""


def price_table(catalog: Catalog, cloud: str) -> Prices:
    """Every instance type's price per region (``CatalogError`` without a readable catalog
    for ``cloud``)."""
    out: Prices = {}
    for o in catalog.offers(cloud):
        key = (o.region, o.instance_type)
        price, spot = out.get(key, (None, None))
        out[key] = (_least(price, o.price), _least(spot, o.spot_price))
    return out


def hourly_price(prices: Prices, region: str, instance_type: str, spot: bool) -> float | None:
    """The price of one such machine, or None when the catalog does not list it."""
    on_demand, spot_price = prices.get((region, instance_type), (None, None))
    return spot_price if spot and spot_price is not None else on_demand


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
