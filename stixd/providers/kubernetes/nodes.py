"""The nodes of a context as stix plans on them: what each can hold (CPUs, memory, GPUs by the
label schemes of `gpu_labels`) and how many of its GPUs the pods not yet finished request.

Reads go through `KubeApi` (bounded, retried on 429/5xx); `api_problem` says in a few words
why a context could not be read ("unreachable", "credentials refused", the server's own).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.gpu_labels import GPU_RESOURCES, SCHEMES, label
from stixd.providers.kubernetes.shapes import as_list, as_map, get, maps

MAX_NODES = 10_000
MAX_PODS = 200_000
_FINISHED = "status.phase!=Succeeded,status.phase!=Failed"
_SUFFIX: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip
_GIB = Decimal(2**30)
_QUANTITY = re.compile(r"(\+?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)([KMGTPE]i|[numkMGTPE])?")


def quantity(text: object) -> Decimal:
    """A Kubernetes quantity (``3500m``, ``16Gi``, ``1e3``) as a number; 0 for one unreadable
    (a node that reports garbage offers nothing rather than failing the listing)."""
    found = _QUANTITY.fullmatch(str(text).strip()[:64])
    if found is None:
        return Decimal(0)
    number, suffix = found.groups()
    try:
        parsed = Decimal(number) * Decimal(_SUFFIX[suffix] if suffix else 1)
    except InvalidOperation:
        return Decimal(0)
    return parsed if parsed.is_finite() and parsed >= 0 else Decimal(0)


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    cpus: float
    memory_gib: float
    accelerator: str | None
    """The GPU its labels name; None without a label (GPUs unnamed are not planned on)."""
    gpus: int
    """Allocatable GPUs (``nvidia.com/gpu`` or ``amd.com/gpu``)."""
    gpus_requested: int | None
    """GPUs that pods not finished ask of it; None when pods cannot be listed (no right)."""
    ready: bool
    address: str | None
    """Its ExternalIP, else InternalIP: where a NodePort of it is reached."""

    @property
    def gpus_free(self) -> int | None:
        if self.gpus_requested is None:
            return None
        return max(0, self.gpus - self.gpus_requested)


def api_problem(exc: KubeApiError) -> str:
    """One short phrase for why a context's API server could not be used."""
    if exc.status in (401, 403):
        return f"credentials refused ({exc.message})"
    if exc.status in (0, 502, 503, 504):
        return f"unreachable ({exc.message})"
    return exc.message


def _items(listing: dict[str, Any], cap: int) -> list[dict[str, Any]]:
    items = listing.get("items")
    if not isinstance(items, list):
        return []
    return [i for i in items[:cap] if isinstance(i, dict)]


def _address(status: Mapping[str, Any]) -> str | None:
    found = {
        a.get("type"): a.get("address")
        for a in maps(status.get("addresses"))
        if isinstance(a.get("address"), str)
    }
    return found.get("ExternalIP") or found.get("InternalIP")


def _ready(status: Mapping[str, Any]) -> bool:
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in as_list(status.get("conditions"))
    )


def _gpus_asked(pod: Mapping[str, Any]) -> int:
    total = 0
    for container in maps(get(pod, "spec", "containers")):
        resources = as_map(container.get("resources"))
        asked = {**as_map(resources.get("limits")), **as_map(resources.get("requests"))}
        total += sum(int(quantity(asked[r])) for r in GPU_RESOURCES if r in asked)
    return total


def _placed(pod: Any) -> tuple[str, int] | None:
    """(its node, the GPUs it asks) of a listed pod bound to a node: all a GPU count needs of
    each of the many pods of a context."""
    on = get(pod, "spec", "nodeName") if isinstance(pod, dict) else None
    return (on, _gpus_asked(pod)) if isinstance(on, str) else None


def gpu_count(allocatable: Mapping[str, Any]) -> int:
    """The GPUs (``nvidia.com/gpu`` or ``amd.com/gpu``) of a node's allocatable map."""
    for resource in GPU_RESOURCES:
        count = int(quantity(allocatable.get(resource, 0)))
        if count > 0:
            return count
    return 0


def labels_of(raw: Mapping[str, Any]) -> dict[str, str]:
    """A listed node's labels; a value that is no string (never one a server makes) is left
    out."""
    labels = get(raw, "metadata", "labels")
    if not isinstance(labels, dict):
        return {}
    return {str(k): v for k, v in labels.items() if isinstance(v, str)}


def accelerator_of(labels: Mapping[str, str]) -> str | None:
    """The GPU a node's labels name: by the first of the label schemes it carries."""
    for scheme in SCHEMES:
        if value := label(labels, scheme.key):
            return scheme.read(value)
    return None


def node_of(raw: Mapping[str, Any], gpus_requested: int | None) -> Node:
    """One node as listed."""
    meta, status = as_map(raw.get("metadata")), as_map(raw.get("status"))
    allocatable = as_map(status.get("allocatable"))
    return Node(
        name=str(meta.get("name") or "?")[:253],
        cpus=float(quantity(allocatable.get("cpu", 0))),
        memory_gib=float(quantity(allocatable.get("memory", 0)) / _GIB),
        accelerator=accelerator_of(labels_of(raw)),
        gpus=gpu_count(allocatable),
        gpus_requested=gpus_requested,
        ready=_ready(status),
        address=_address(status),
    )


async def list_nodes(api: KubeApi, *, with_usage: bool = True) -> list[Node]:
    """Every node of the context, with the GPUs its unfinished pods request (``with_usage``;
    None per node when the account may not list pods of every namespace)."""
    nodes = _items(await api.list_all(path("nodes"), max_items=MAX_NODES), MAX_NODES)
    used: dict[str, int] | None = None
    if with_usage and any(gpu_count(as_map(get(n, "status", "allocatable"))) for n in nodes):
        try:
            pods = await api.list_all(
                path("pods"), query={"fieldSelector": _FINISHED}, max_items=MAX_PODS, keep=_placed
            )
        except KubeApiError as exc:
            if exc.status not in (401, 403):
                raise
        else:
            used = {}
            for on, gpus in pods["items"]:
                used[on] = used.get(on, 0) + gpus
    listed = []
    for raw in nodes:
        name = str(get(raw, "metadata", "name"))
        listed.append(node_of(raw, None if used is None else used.get(name, 0)))
    return listed
