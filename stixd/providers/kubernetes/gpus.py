"""``stixctl show-gpus --infra k8s``: per context and node, the GPUs that exist and those free
right now (allocatable minus what pods not yet finished request), read live from each
context's API server."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import anyio

from stixd.providers.kubernetes.api import KubeApi, KubeApiError
from stixd.providers.kubernetes.nodes import Node, api_problem, list_nodes
from stixproto.errors import ProvisionError


@dataclasses.dataclass(frozen=True)
class GpuRow:
    context: str
    node: str
    accelerator: str
    total: int
    free: int | None
    """None when the pods of every namespace cannot be listed (no right to)."""


def rows_of(context: str, nodes: Sequence[Node]) -> list[GpuRow]:
    return [
        GpuRow(context, n.name, n.accelerator or "(unlabelled)", n.gpus, n.gpus_free)
        for n in nodes
        if n.gpus
    ]


def wanted(row: GpuRow, name: str | None, count: float | None) -> bool:
    if name is not None and row.accelerator.lower() != name.lower():
        return False
    return count is None or row.total >= count


async def gpu_rows(
    entries: Sequence[tuple[str, KubeApi | ProvisionError]],
    name: str | None = None,
    count: float | None = None,
) -> tuple[list[GpuRow], dict[str, str]]:
    """(the GPU nodes of every context, in the order given; per context that could not be
    read, why)."""
    found: dict[str, list[GpuRow]] = {}
    problems: dict[str, str] = {}

    async def one(context: str, api: KubeApi) -> None:
        try:
            found[context] = rows_of(context, await list_nodes(api))
        except KubeApiError as exc:
            problems[context] = api_problem(exc)

    async with anyio.create_task_group() as tg:
        for context, api in entries:
            if isinstance(api, ProvisionError):
                problems[context] = api.message
            else:
                tg.start_soon(one, context, api)
    rows = [r for c, _ in entries for r in found.get(c, []) if wanted(r, name, count)]
    return rows, problems


def render(rows: Sequence[GpuRow], problems: dict[str, str], contexts: Sequence[str]) -> str:
    """Per context: its GPUs in total and free, then each GPU node."""
    blocks = []
    for context in contexts:
        if context in problems:
            blocks.append(f"Kubernetes context {context}: cannot be read ({problems[context]})")
            continue
        mine = [r for r in rows if r.context == context]
        if not mine:
            blocks.append(f"Kubernetes context {context}: no GPU node")
            continue
        table = [("NODE", "GPU", "TOTAL", "FREE")] + [
            (r.node, r.accelerator, str(r.total), "?" if r.free is None else str(r.free))
            for r in mine
        ]
        widths = [max(len(line[i]) for line in table) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                 for line in table]  # fmt: skip
        totals: dict[str, list[int | None]] = {}
        for r in mine:
            held = totals.setdefault(r.accelerator, [0, 0])
            held[0] = (held[0] or 0) + r.total
            held[1] = None if held[1] is None or r.free is None else held[1] + r.free
        summary = ", ".join(
            f"{name} {'?' if free is None else free} of {total} free"
            for name, (total, free) in totals.items()
        )
        blocks.append(f"Kubernetes context {context}: {summary}\n" + "\n".join(lines))
    return "\n\n".join(blocks)
