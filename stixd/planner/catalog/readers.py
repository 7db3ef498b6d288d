"""Reading SkyPilot v8 catalog CSVs: columns by name from the header row, one reader per layout.

Two layouts exist. The *flat* layout (one row per offer) is shared by AWS, Azure, OCI and the GPU
clouds (Lambda, RunPod, Paperspace, Cudo, Vast, Fluidstack, DigitalOcean, Nebius, Hyperbolic,
Mithril, ...): each file orders its columns its own way and adds optional ones
(AvailabilityZone, SpotPrice, GpuInfo, Arch, Generation, StorageGiB), so the reader keys on
names, never positions. GCP's *split* layout (machine rows + accelerator rows, combined into
offers by SkyPilot's host rules) lives in ``gcp.py`` and reads its rows through the same
`Table`; ``layouts.py`` picks the reader for a cloud.
"""

from __future__ import annotations

import ast
import csv
import io
import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

from stixd.planner.catalog.model import CatalogError, Offer
from stixd.planner.catalog.names import fold_catalog_name

__all__ = [
    "Row",
    "Table",
    "accelerator_of",
    "gpu_memory_gib",
    "read_accelerator_names",
    "read_flat",
]

FLAT_REQUIRED = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "Price",
    "Region",
)


class Row:
    """One data row, read by column name; errors name the file, line and column."""

    __slots__ = ("_cells", "_table", "line")

    def __init__(self, table: Table, cells: list[str], line: int) -> None:
        self._table = table
        self._cells = cells
        self.line = line

    def text(self, column: str) -> str | None:
        i = self._table.columns.get(column)
        if i is None:
            return None
        value = self._cells[i].strip()
        return value or None

    def required_text(self, column: str) -> str:
        value = self.text(column)
        if value is None:
            raise self.error(column, "the value is empty")
        return value

    def number(self, column: str) -> float | None:
        value = self.text(column)
        if value is None or value.lower() == "nan":
            return None
        try:
            number = float(value)
        except ValueError:
            raise self.error(column, f"expected a number, got {value!r}") from None
        if not math.isfinite(number) or number < 0:
            raise self.error(column, f"expected a non-negative number, got {value!r}")
        return number

    def error(self, column: str, what: str) -> CatalogError:
        return CatalogError(
            f"Malformed catalog {self._table.source}, line {self.line}, column {column!r}: {what}."
        )


class Table:
    """A catalog CSV: its header row and its data rows."""

    def __init__(self, text: str, source: str, required: Sequence[str]) -> None:
        self.source = source
        self._reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
        try:
            header = next(self._reader)
        except (StopIteration, csv.Error):
            raise CatalogError(
                f"Malformed catalog {source}, line 1: the file has no header row."
            ) from None
        self.columns = {name.strip(): i for i, name in enumerate(header)}
        self.width = len(header)
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise CatalogError(
                f"Malformed catalog {source}, line 1: the header lacks column(s) "
                f"{', '.join(missing)}, so it is not a SkyPilot v8 catalog."
            )

    def rows(self) -> Iterator[Row]:
        reader = self._reader
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise CatalogError(
                    f"Malformed catalog {self.source}, line {reader.line_num}: {e}."
                ) from None
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) != self.width:
                raise CatalogError(
                    f"Malformed catalog {self.source}, line {reader.line_num}: expected "
                    f"{self.width} columns as in the header, found {len(cells)}."
                )
            yield Row(self, cells, reader.line_num)


@lru_cache(maxsize=4096)
def gpu_memory_gib(gpu_info: str | None) -> float | None:
    """Memory of one device in GiB from a GpuInfo cell, or None.

    AWS, OCI and the GPU clouds write a Python-literal dict
    (``{'Gpus': [{'MemoryInfo': {'SizeInMiB': 16384}, ...}], ...}``); it is parsed with
    ``ast.literal_eval``, never evaluated. GCP and Azure write just the accelerator name.
    """
    if not gpu_info or not gpu_info.lstrip().startswith("{"):
        return None
    try:
        info = ast.literal_eval(gpu_info)
        size = info["Gpus"][0]["MemoryInfo"]["SizeInMiB"]
        mib = float(size)
    except (ValueError, TypeError, SyntaxError, KeyError, IndexError, MemoryError, RecursionError):
        return None
    return mib / 1024.0 if math.isfinite(mib) and mib > 0 else None


def accelerator_of(row: Row) -> tuple[str | None, float]:
    """The row's (folded) accelerator name and count; CPU-only rows give (None, 0)."""
    name = row.text("AcceleratorName")
    count = row.number("AcceleratorCount")
    if name is None:
        return None, 0.0
    if count is None:
        raise row.error("AcceleratorCount", f"empty for accelerator {name!r}")
    return fold_catalog_name(name), count


def read_flat(cloud: str, text: str, source: str) -> list[Offer]:
    """Offers from a flat-layout vms.csv: one row, one offer."""
    table = Table(text, source, FLAT_REQUIRED)
    offers = []
    for row in table.rows():
        accelerator, count = accelerator_of(row)
        offers.append(
            Offer(
                cloud=cloud,
                instance_type=row.required_text("InstanceType"),
                accelerator=accelerator,
                accelerator_count=count,
                vcpus=row.number("vCPUs"),
                memory_gib=row.number("MemoryGiB"),
                price=row.number("Price"),
                spot_price=row.number("SpotPrice"),
                region=row.required_text("Region"),
                zone=row.text("AvailabilityZone"),
                gpu_memory_gib=gpu_memory_gib(row.text("GpuInfo")) if accelerator else None,
                arch=row.text("Arch"),
            )
        )
    return offers


def read_accelerator_names(text: str, source: str) -> list[str]:
    """The names in ``common/accelerators.csv`` (columns AcceleratorName, Clouds)."""
    table = Table(text, source, ("AcceleratorName",))
    return [row.required_text("AcceleratorName") for row in table.rows()]
