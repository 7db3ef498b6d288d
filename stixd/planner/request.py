"""The planner's own input: what a task asks for, normalised, with no YAML in sight.

The task model (``stixproto``) turns a task file into these; the planner never reads YAML. A
`TaskRequest` is one task: how many nodes, a few `ResourceRequest` alternatives and how to choose
among them (`single`, `any_of` = cheapest of the set, `ordered` = first that can be satisfied).
A `ResourceRequest` is one alternative; its own accelerator list may hold alternatives too (a
YAML list of accelerators is an ordered preference, a set or dict is "cheapest of these"), as in
SkyPilot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from stixd.planner.catalog import CatalogError, parse_accelerator
from stixd.planner.catalog.names import format_count

__all__ = [
    "Accelerator",
    "Amount",
    "Blocked",
    "DataSize",
    "Minimize",
    "Mode",
    "ResourceRequest",
    "TaskRequest",
    "parse_accelerators",
    "parse_amount",
]

Mode = Literal["single", "any_of", "ordered"]
Minimize = Literal["cost", "time"]

_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]I?B?)?\s*(\+?)\s*$", re.IGNORECASE)
_UNIT_GIB = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}


class Amount(msgspec.Struct, frozen=True):
    """A quantity of vCPUs or GiB: exactly ``value``, or at least it (``4+``)."""

    value: float
    at_least: bool = False

    def admits(self, offered: float | None) -> bool:
        """Whether a machine with ``offered`` of this fits (unknown never fits)."""
        if offered is None:
            return False
        if self.at_least:
            return offered >= self.value - 1e-9
        return abs(offered - self.value) <= 1e-9

    def __str__(self) -> str:
        return format_count(self.value) + ("+" if self.at_least else "")


def parse_amount(value: int | float | str, what: str = "cpus") -> Amount:
    """``4`` / ``"4"`` exactly 4; ``"4+"`` at least 4; memory may carry a unit (``"32GB+"``)."""
    if isinstance(value, bool):
        raise CatalogError(f"resources.{what}: expected a number like 4 or '4+', got {value!r}.")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise CatalogError(f"resources.{what}: expected a positive number, got {value!r}.")
        return Amount(float(value))
    m = _AMOUNT.match(value)
    if m is None:
        raise CatalogError(f"resources.{what}: expected a number like 4 or '4+', got {value!r}.")
    number = float(m.group(1))
    unit = (m.group(2) or "G")[0].upper()
    if m.group(2) and what == "cpus":
        raise CatalogError(f"resources.cpus: a CPU count takes no unit, got {value!r}.")
    if number <= 0:
        raise CatalogError(f"resources.{what}: expected a positive number, got {value!r}.")
    return Amount(number * _UNIT_GIB[unit], at_least=m.group(3) == "+")


class Accelerator(msgspec.Struct, frozen=True):
    """``A100:8``; ``count`` may be fractional (``K80:0.5``)."""

    name: str
    count: float = 1.0

    def __str__(self) -> str:
        return f"{self.name}:{format_count(self.count)}"


_BY_MEMORY = re.compile(r"^((?:[A-Za-z]+:)?\d+(?:\.\d+)?[GMT]B\+?)(?::(\S+))?$", re.IGNORECASE)


def _one_accelerator(text: str, count: object = None) -> Accelerator:
    by_memory = _BY_MEMORY.match(text.strip())
    if by_memory is not None:  # "24GB+", "nvidia:24GB+:2": any device with that much memory
        name, n = by_memory.group(1), parse_accelerator(f"x:{by_memory.group(2) or 1}")[1]
    else:
        name, n = parse_accelerator(text)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int | float) or count <= 0:
            raise CatalogError(f"resources.accelerators: bad count {count!r} for {name!r}.")
        n = float(count)
    return Accelerator(name, n)


def parse_accelerators(value: object) -> tuple[tuple[Accelerator, ...], bool]:
    """Accelerator alternatives from any YAML form, and whether their order is a preference.

    ``"A100:8"`` -> one; ``{"A100": 8}`` / ``{"A100:1": None, "T4:1": None}`` / a set -> cheapest
    of them; a list (of strings or one-entry dicts) -> in that order of preference.
    """
    if value is None:
        return (), False
    if isinstance(value, str):
        return (_one_accelerator(value),), False
    if isinstance(value, Mapping):
        return tuple(_one_accelerator(str(k), v) for k, v in value.items()), False
    if isinstance(value, list | tuple | set | frozenset):
        out: list[Accelerator] = []
        for item in value:
            if isinstance(item, Mapping):
                out.extend(_one_accelerator(str(k), v) for k, v in item.items())
            else:
                out.append(_one_accelerator(str(item)))
        ordered = isinstance(value, list | tuple)
        return tuple(dict.fromkeys(out)), ordered and len(out) > 1
    raise CatalogError(f"resources.accelerators: unsupported form {value!r}.")


class ResourceRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One alternative of a task's resources; None everywhere means "anything", as SkyPilot.

    ``cloud``/``region``/``zone`` pin the location (a ``*`` is the caller's business).
    ``accelerators`` holds alternatives (usually one); ``accelerators_ordered`` says a list
    was given (first satisfiable wins) rather than a set (cheapest wins). ``use_spot=None``
    means on-demand. ``image_id`` as a mapping restricts the regions to its keys. ``labels``
    are carried for the launcher and ignored here.
    """

    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    cpus: Amount | None = None
    memory_gib: Amount | None = None
    accelerators: tuple[Accelerator, ...] = ()
    accelerators_ordered: bool = False
    use_spot: bool | None = None
    disk_size_gb: float | None = None
    disk_tier: str | None = None
    network_tier: str | None = None
    image_id: str | dict[str, str] | None = None
    ports: tuple[str, ...] = ()
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class DataSize(msgspec.Struct, frozen=True):
    """Data a task reads or writes: how much, and on which cloud it lives (None: nowhere)."""

    gigabytes: float
    cloud: str | None = None


class TaskRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One task for the planner.

    ``hours`` is the estimated run time (SkyPilot's default estimate is one hour);
    ``hours_by_accelerators`` refines it per requested accelerator (``{"V100:8": 6, "A100:8":
    2}``), the way SkyPilot's time estimator takes the requested resources. ``inputs`` is the
    data the first task reads (charged as egress when it lives on another cloud);
    ``outputs_gb`` is what this task hands to the next one of a pipeline.
    """

    name: str | None = None
    num_nodes: int = 1
    alternatives: tuple[ResourceRequest, ...] = (ResourceRequest(),)
    mode: Mode = "single"
    hours: float = 1.0
    hours_by_accelerators: dict[str, float] = msgspec.field(default_factory=dict)
    inputs: DataSize | None = None
    outputs_gb: float | None = None

    def hours_for(self, accelerator: Accelerator | None) -> float:
        if accelerator is not None and self.hours_by_accelerators:
            return self.hours_by_accelerators.get(str(accelerator), self.hours)
        return self.hours


class Blocked(msgspec.Struct, frozen=True, kw_only=True):
    """A resource the launcher could not get: a candidate matching every set field is skipped.

    ``reason`` (``InsufficientInstanceCapacity``) is carried into the no-fit message.
    A zone on a region-level candidate (on-demand AWS, which tries a region's zones in one call)
    removes that zone from its list; the candidate goes only when all its zones are blocked.
    """

    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    use_spot: bool | None = None
    reason: str = ""

    def where(self) -> str:
        return "/".join(x for x in (self.cloud, self.region, self.zone, self.instance_type) if x)


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
