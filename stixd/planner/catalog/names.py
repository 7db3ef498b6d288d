"""Accelerator and cloud names: canonical spellings, aliases, counts and how a request matches.

Canonical accelerator names are the ones in SkyPilot's ``common/accelerators.csv``, matched
case-insensitively (``a100-80gb`` is ``A100-80GB``). A few aliases fold spellings of the same
part into one name, for requests and for catalog rows alike, so ``H100-SXM`` finds every H100.
TPU names are lower case, as SkyPilot writes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from stixd.planner.catalog.model import CatalogError, Offer, did_you_mean

__all__ = [
    "ACCELERATOR_ALIASES",
    "COMMON_GPUS",
    "KNOWN_CLOUDS",
    "TPUS",
    "AcceleratorNames",
    "count_matches",
    "format_count",
    "match_offers",
    "normalize_cloud",
    "parse_accelerator",
]

# Alias (upper case) -> canonical name. Form-factor and memory suffixes of one part.
# `A100-40GB` is deliberately not here: SkyPilot 0.14 finds no offer under that name, so an
# ordered list starting with it falls through to the next choice (checked against SkyPilot
# by bench/bench_vs_skypilot.py on tests/test_yamls/test_multiple_accelerators_ordered.yaml).
ACCELERATOR_ALIASES: dict[str, str] = {
    "H100-SXM": "H100",
    "H100-SXM5": "H100",
    "H100SXM": "H100",
    "H100-80GB": "H100",
    "H200-SXM": "H200",
    "H200-141GB": "H200",
    "A100-SXM4": "A100",
    "A100-80GB-SXM": "A100-80GB",
    "A100-SXM4-80GB": "A100-80GB",
    "RTX6000ADA": "RTX6000-Ada",
}

# `sky show-gpus` lists these first; everything else is behind --all.
COMMON_GPUS: tuple[str, ...] = (
    "A10",
    "A10G",
    "A100",
    "A100-80GB",
    "B200",
    "H100",
    "H200",
    "L4",
    "L40S",
    "T4",
    "V100",
    "V100-32GB",
)

# The smallest slice of each TPU generation, shown in their own table.
TPUS: tuple[str, ...] = (
    "tpu-v2-8",
    "tpu-v3-8",
    "tpu-v4-8",
    "tpu-v4-16",
    "tpu-v4-32",
    "tpu-v5litepod-1",
    "tpu-v5litepod-4",
    "tpu-v5litepod-8",
    "tpu-v5p-8",
    "tpu-v5p-16",
    "tpu-v5p-32",
    "tpu-v6e-1",
    "tpu-v6e-4",
    "tpu-v6e-8",
)

# Clouds of SkyPilot's catalog schema v8, in SkyPilot's order (`show-gpus` tables follow it).
KNOWN_CLOUDS: tuple[str, ...] = (
    "aws",
    "azure",
    "gcp",
    "ibm",
    "lambda",
    "scp",
    "oci",
    "runpod",
    "vast",
    "vsphere",
    "cudo",
    "fluidstack",
    "paperspace",
    "do",
    "nebius",
    "hyperbolic",
    "seeweb",
    "shadeform",
    "primeintellect",
    "mithril",
    "verda",
    "lium",
    "jarvislabs",
    "hyperstack",
    "daytona",
    "spheron",
    "yotta",
)
_CLOUD_ALIASES = {"digitalocean": "do", "lambdalabs": "lambda", "lambdacloud": "lambda"}


def normalize_cloud(name: str, available: Iterable[str] = ()) -> str:
    """The catalog directory name of a cloud, or a CatalogError with a did-you-mean."""
    key = name.strip().lower()
    key = _CLOUD_ALIASES.get(key, key)
    choices = {*KNOWN_CLOUDS, *available}
    if key in choices:
        return key
    raise CatalogError(f"Unknown cloud {name!r}{did_you_mean(key, sorted(choices))}.")


def _fold(name: str) -> str | None:
    """Aliases and TPU case: the part of canonicalisation that needs no name list."""
    text = name.strip()
    if not text:
        return None
    if text.lower().startswith("tpu-"):
        return text.lower()
    return ACCELERATOR_ALIASES.get(text.upper())


def fold_catalog_name(name: str) -> str:
    """A catalog row's accelerator name as stored in the index (aliases folded)."""
    return _fold(name) or name.strip()


class AcceleratorNames:
    """Canonical accelerator names: from ``common/accelerators.csv`` plus names seen in offers."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._by_lower: dict[str, str] = {}
        self.add(names)

    def add(self, names: Iterable[str]) -> None:
        for name in names:
            canon = fold_catalog_name(name)
            self._by_lower.setdefault(canon.lower(), canon)

    def canonical(self, name: str) -> str | None:
        """The canonical spelling of ``name``, or None when no catalog knows it."""
        folded = _fold(name)
        if folded is not None:
            return folded
        return self._by_lower.get(name.strip().lower())

    def names(self) -> list[str]:
        return sorted(set(self._by_lower.values()), key=str.lower)


def parse_accelerator(spec: str) -> tuple[str, float]:
    """``"A100:8"`` -> ``("A100", 8.0)``; ``"T4"`` -> ``("T4", 1.0)``; ``"K80:0.5"`` keeps 0.5."""
    name, sep, count_text = spec.strip().partition(":")
    if not name.strip():
        raise CatalogError(f"Invalid accelerator {spec!r}: expected NAME or NAME:COUNT.")
    if not sep:
        return name.strip(), 1.0
    try:
        count = float(count_text)
    except ValueError:
        count = math.nan
    if not math.isfinite(count) or count <= 0:
        raise CatalogError(
            f"Invalid accelerator count in {spec!r}: expected a positive number like 1, 8 or 0.5."
        )
    return name.strip(), count


def count_matches(requested: float, offered: float) -> bool:
    """Whether an offer with ``offered`` devices serves a request for ``requested``.

    Whole counts match exactly (``A100:8`` needs an 8-GPU offer), as SkyPilot does. A fractional
    request also fits the offer of the next whole count, whose device is shared: ``K80:0.5``
    matches a 1-GPU offer, as well as a catalog's own fractional offers of 0.5.
    """
    if abs(offered - requested) <= 0.01:
        return True
    return not float(requested).is_integer() and offered == math.ceil(requested)


def match_offers(
    offers: Sequence[Offer], accelerator: str | None, count: float | None = None
) -> list[Offer]:
    """Offers carrying ``accelerator`` (canonical name) in a count that serves ``count``.

    ``accelerator=None`` selects CPU-only offers; ``count=None`` any count.
    """
    if accelerator is None:
        return [o for o in offers if o.accelerator is None]
    return [
        o
        for o in offers
        if o.accelerator == accelerator
        and (count is None or count_matches(count, o.accelerator_count))
    ]


def format_count(count: float) -> str:
    """``8.0`` -> ``"8"``, ``0.5`` -> ``"0.5"``."""
    return str(int(count)) if float(count).is_integer() else f"{count:g}"
