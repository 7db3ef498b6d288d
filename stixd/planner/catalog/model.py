"""The catalog's data types and its one error: what every other catalog module hands around."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import msgspec

__all__ = [
    "AcceleratorSummary",
    "CatalogError",
    "CatalogMissing",
    "Offer",
    "did_you_mean",
]


class CatalogError(ValueError):
    """A catalog problem the user can act on; the message is one sentence saying what to do."""


class CatalogMissing(CatalogError):
    """No catalog file for a cloud: the daemon may fetch it (`stixctl catalog update`) and retry."""

    def __init__(self, cloud: str, message: str) -> None:
        super().__init__(message)
        self.cloud = cloud


class Offer(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One launchable choice: an instance type in a region (and zone, where the cloud has them).

    ``accelerator`` is the canonical accelerator name, or None for CPU-only types;
    ``accelerator_count`` is 0 for those. Prices are USD per hour per instance; ``price`` is
    on-demand, ``spot_price`` is None when the type has no spot offer. On GCP an accelerator
    offer is the host machine plus the attached accelerators, prices summed. ``gpu_memory_gib``
    is the memory of one device, where the catalog says. ``vcpus`` and ``memory_gib`` are None
    only where the catalog leaves them empty (GCP TPUs).

    Encoded as an array (``array_like``): the per-cloud index stores rows as tuples.
    """

    cloud: str
    instance_type: str
    accelerator: str | None
    accelerator_count: float
    vcpus: float | None
    memory_gib: float | None
    price: float | None
    spot_price: float | None
    region: str
    zone: str | None = None
    gpu_memory_gib: float | None = None
    arch: str | None = None


class AcceleratorSummary(msgspec.Struct, frozen=True, array_like=True):
    """What one cloud offers of one accelerator, precomputed so listing does not read rows."""

    name: str
    counts: list[float]
    min_price: float | None
    min_spot_price: float | None
    offers: int


def summarize(offers: Iterable[Offer]) -> list[AcceleratorSummary]:
    counts: dict[str, set[float]] = {}
    prices: dict[str, list[float]] = {}
    spots: dict[str, list[float]] = {}
    n: dict[str, int] = {}
    for o in offers:
        if o.accelerator is None:
            continue
        counts.setdefault(o.accelerator, set()).add(o.accelerator_count)
        n[o.accelerator] = n.get(o.accelerator, 0) + 1
        if o.price is not None:
            prices.setdefault(o.accelerator, []).append(o.price)
        if o.spot_price is not None:
            spots.setdefault(o.accelerator, []).append(o.spot_price)
    return [
        AcceleratorSummary(
            name=name,
            counts=sorted(counts[name]),
            min_price=min(prices[name]) if name in prices else None,
            min_spot_price=min(spots[name]) if name in spots else None,
            offers=n[name],
        )
        for name in sorted(counts)
    ]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'gcp'?)`` or the empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
