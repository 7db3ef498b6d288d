"""`stixctl show-gpus`: SkyPilot's ``sky show-gpus`` tables, computed from the catalog.

Without a name: the common GPUs with the quantities some cloud offers (``COMMON_GPU``,
``AVAILABLE_QUANTITIES``), Google TPUs, and with ``--all`` every other accelerator followed by
the price tables of all of them. With a name (matched as a case-insensitive substring, as
SkyPilot does, so ``A100`` also shows ``A100-80GB``): one table per accelerator, one row per
(count, cloud, instance type) at its cheapest region, clouds ordered by their cheapest price.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from stixd.planner.catalog.catalog import Catalog
from stixd.planner.catalog.model import CatalogError, Offer
from stixd.planner.catalog.names import COMMON_GPUS, TPUS, format_count, normalize_cloud
from stixproto.reports import (
    GpuCountRow,
    GpuMachineRow,
    GpuNote,
    GpuOfferRow,
    GpuRow,
    Section,
)

__all__ = [
    "GpuCountRow",
    "GpuMachineRow",
    "GpuNote",
    "GpuOfferRow",
    "GpuRow",
    "render_show_gpus",
    "show_gpus",
    "show_machine",
]

_HINT = "Hint: use -a/--all to see all accelerators (including non-common ones) and pricing."


def _nan_last(x: float | None) -> tuple[bool, float]:
    return (x is None, x or 0.0)


def _parse_infra(catalog: Catalog, infra: str | None) -> tuple[list[str], str | None]:
    if infra is None or infra.strip() in ("", "*"):
        return catalog.clouds(), None
    cloud, _, region = infra.strip().partition("/")
    return [normalize_cloud(cloud, catalog.clouds())], (region.strip() or None)


def _cheapest_per_type(cloud_offers: Iterable[Offer]) -> list[Offer]:
    """SkyPilot's listing of one cloud's offers of one accelerator: each (type, count, vCPUs,
    memory) once, at its cheapest (on-demand, then spot) region."""
    ordered = sorted(cloud_offers, key=lambda o: (_nan_last(o.price), _nan_last(o.spot_price)))
    seen: set[tuple[str, float, float | None, float | None]] = set()
    kept = []
    for o in ordered:
        key = (o.instance_type, o.accelerator_count, o.vcpus, o.memory_gib)
        if key not in seen:
            seen.add(key)
            kept.append(o)
    kept.sort(
        key=lambda o: (
            o.accelerator_count,
            o.instance_type,
            o.vcpus or 0.0,
            _nan_last(o.price),
            _nan_last(o.spot_price),
            o.region,
        )
    )
    return kept


def _offer_rows(
    catalog: Catalog,
    clouds: Sequence[str],
    region: str | None,
    want: str | None,
    count: float | None,
    with_region: bool,
    notes: list[GpuRow],
) -> list[GpuRow]:
    # accelerator -> cloud -> offers, accelerators in order of first appearance over the clouds
    by_acc: dict[str, dict[str, list[Offer]]] = {}
    for cloud in clouds:
        try:
            offers = catalog.offers(cloud)
        except CatalogError as e:
            if len(clouds) == 1:
                raise
            notes.append(GpuNote(f"Skipped {cloud}: {e}"))
            continue
        mine: dict[str, list[Offer]] = {}
        for o in offers:
            if o.accelerator is None or (want is not None and want not in o.accelerator.lower()):
                continue
            if count is not None and abs(o.accelerator_count - count) > 0.01:
                continue
            if region is not None and o.region.lower() != region.lower():
                continue
            mine.setdefault(o.accelerator, []).append(o)
        for acc in sorted(mine):
            by_acc.setdefault(acc, {})[cloud] = _cheapest_per_type(mine[acc])

    rows: list[GpuRow] = []
    for acc, per_cloud in by_acc.items():
        floor = {
            cloud: (
                _nan_last(min((o.price for o in os if o.price is not None), default=None)),
                _nan_last(
                    min((o.spot_price for o in os if o.spot_price is not None), default=None)
                ),
            )
            for cloud, os in per_cloud.items()
        }
        listed = [(cloud, o) for cloud, os in per_cloud.items() for o in os]
        listed.sort(
            key=lambda co: (*floor[co[0]], _nan_last(co[1].price), _nan_last(co[1].spot_price))
        )
        rows.extend(
            GpuOfferRow(
                accelerator=acc,
                count=o.accelerator_count,
                cloud=cloud,
                instance_type=o.instance_type,
                gpu_memory_gib=o.gpu_memory_gib,
                vcpus=o.vcpus,
                memory_gib=o.memory_gib,
                price=o.price,
                spot_price=o.spot_price,
                region=o.region if with_region else None,
            )
            for cloud, o in listed
        )
    return rows


def _quantities(
    catalog: Catalog, clouds: Sequence[str], region: str | None, notes: list[GpuRow]
) -> dict[str, set[float]]:
    counts: dict[str, set[float]] = {}
    for cloud in clouds:
        try:
            if region is None:  # the precomputed summaries suffice
                for s in catalog.summaries(cloud):
                    counts.setdefault(s.name, set()).update(s.counts)
                continue
            for o in catalog.offers(cloud):
                if o.accelerator is not None and o.region.lower() == region.lower():
                    counts.setdefault(o.accelerator, set()).add(o.accelerator_count)
        except CatalogError as e:
            if len(clouds) == 1:
                raise
            notes.append(GpuNote(f"Skipped {cloud}: {e}"))
    return counts


def show_gpus(
    catalog: Catalog,
    name: str | None,
    count: float | None = None,
    infra: str | None = None,
    all: bool = False,
) -> list[GpuRow]:
    """The rows of ``show-gpus [NAME[:COUNT]] [--infra CLOUD[/REGION]] [--all]``.

    Raises CatalogError for an unknown cloud, a cloud without a catalog, or ``--all`` with a
    name; a cloud whose catalog cannot be read is skipped with a note when listing several.
    """
    if all and name is not None:
        raise CatalogError("--all is only allowed without a GPU name.")
    if count is not None and name is None:
        raise CatalogError("A quantity needs a GPU name, as in A100:8.")
    clouds, region = _parse_infra(catalog, infra)
    if not clouds:
        raise CatalogError(
            "No instance catalogs found; run `stixctl catalog update` to fetch them."
        )
    notes: list[GpuRow] = []
    if name is not None:
        canonical = catalog.canonical_accelerator(name)
        want = (canonical or name.strip()).lower()
        found = _offer_rows(catalog, clouds, region, want, count, True, notes)
        if found:
            return notes + found
        qty = f" with requested quantity {format_count(count)}" if count is not None else ""
        where = f" on {infra.strip()}." if infra else " in cloud catalogs."
        missing = GpuNote(
            f"Resources {name!r}{qty} not found{where} "
            "To show available accelerators, run: stixctl show-gpus --all"
        )
        return [*notes, missing]

    counts = _quantities(catalog, clouds, region, notes)
    rows: list[GpuRow] = []
    sections: tuple[tuple[Section, tuple[str, ...]], ...] = (
        ("COMMON_GPU", COMMON_GPUS),
        ("GOOGLE_TPU", TPUS),
    )
    for section, names in sections:
        rows.extend(
            GpuCountRow(section, acc, sorted(counts.pop(acc))) for acc in names if acc in counts
        )
    if not all:
        return [*notes, *rows, GpuNote(_HINT)]
    rows.extend(GpuCountRow("OTHER_GPU", acc, sorted(qs)) for acc, qs in sorted(counts.items()))
    rows.extend(_offer_rows(catalog, clouds, region, None, None, False, notes))
    return notes + rows


def show_machine(
    machine: Offer, name: str | None, count: float | None = None, all: bool = False
) -> list[GpuRow]:
    """``show-gpus [NAME[:COUNT]] --infra local``: the machine, or why NAME is not on it."""
    if all and name is not None:
        raise CatalogError("--all is only allowed without a GPU name.")
    if count is not None and name is None:
        raise CatalogError("A quantity needs a GPU name, as in A100:8.")
    row = GpuMachineRow(
        infra=machine.cloud,
        vcpus=machine.vcpus,
        memory_gib=machine.memory_gib,
        accelerator=machine.accelerator,
        count=machine.accelerator_count,
        price=machine.price,
    )
    has = machine.accelerator is not None and (
        name is None or name.strip().lower() in machine.accelerator.lower()
    )
    if name is not None and not has:
        what = "no accelerators" if machine.accelerator is None else machine.accelerator
        return [
            GpuNote(
                f"Resources {name!r} not found on {machine.cloud}: this machine has {what}. "
                "To show the clouds' accelerators, run: stixctl show-gpus --all"
            ),
            row,
        ]
    return [row]


# -- rendering ---------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    )


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _gb(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}GB"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"$ {x:.3f}"


def _offer_cells(r: GpuOfferRow) -> list[str]:
    cells = [
        r.accelerator,
        format_count(r.count),
        r.cloud,
        r.instance_type,
        _gb(r.gpu_memory_gib),
        _num(r.vcpus),
        _gb(r.memory_gib),
        _usd(r.price),
        _usd(r.spot_price),
    ]
    return cells if r.region is None else [*cells, r.region]


_OFFER_HEADERS = (
    "GPU",
    "QTY",
    "CLOUD",
    "INSTANCE_TYPE",
    "DEVICE_MEM",
    "vCPUs",
    "HOST_MEM",
    "HOURLY_PRICE",
    "HOURLY_SPOT_PRICE",
)


def _machine_cells(r: GpuMachineRow) -> list[str]:
    gpus = f"{r.accelerator}:{format_count(r.count)}" if r.accelerator else "-"
    return [r.infra, _num(r.vcpus), _gb(r.memory_gib), gpus, _usd(r.price)]


def _group_key(row: GpuRow) -> tuple[str, str]:
    if isinstance(row, GpuMachineRow):
        return ("machine", row.infra)
    if isinstance(row, GpuCountRow):
        return ("count", row.section)
    if isinstance(row, GpuOfferRow):
        return ("offer", row.accelerator)
    return ("note", str(id(row)))


def render_show_gpus(rows: Sequence[GpuRow]) -> str:
    """The tables as SkyPilot prints them (no borders, left-aligned), blank lines between."""
    blocks: list[str] = []
    for (kind, label), grouped in itertools.groupby(rows, key=_group_key):
        group = list(grouped)
        if kind == "note":
            blocks.extend(r.text for r in group if isinstance(r, GpuNote))
        elif kind == "machine":
            body = [_machine_cells(r) for r in group if isinstance(r, GpuMachineRow)]
            blocks.append(_table(("INFRA", "vCPUs", "HOST_MEM", "GPUS", "HOURLY_PRICE"), body))
        elif kind == "count":
            body = [
                [r.accelerator, ", ".join(format_count(q) for q in r.quantities)]
                for r in group
                if isinstance(r, GpuCountRow)
            ]
            blocks.append(_table((label, "AVAILABLE_QUANTITIES"), body))
        else:
            offers = [r for r in group if isinstance(r, GpuOfferRow)]
            region = ["REGION"] if offers[0].region is not None else []
            blocks.append(_table([*_OFFER_HEADERS, *region], [_offer_cells(r) for r in offers]))
    return "\n\n".join(blocks)
