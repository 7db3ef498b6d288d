"""``stixctl check`` for Kubernetes: per context, whether stix can use it (one line why not:
unreachable, credentials refused, namespace missing) and what it lacks (GPU nodes; exposing
ports in the configured mode)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import anyio

from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.config import PortMode
from stixd.providers.kubernetes.nodes import api_problem, list_nodes
from stixd.providers.kubernetes.ports import PortsUnavailable, preflight
from stixproto.errors import ProvisionError

CHECK_TIMEOUT_S = 10.0
PORTS_WAIT_S = 3.0
"""How long `check` lets a probe LoadBalancer service wait for an address (a launch waits
longer: `ports.ADDRESS_WAIT_S`)."""


@dataclasses.dataclass(frozen=True)
class ContextCheck:
    context: str
    usable: bool
    said: str
    """Why it cannot be used, or what it has."""
    lacks: tuple[str, ...] = ()

    def line(self) -> str:
        lacking = f"; lacks: {', '.join(self.lacks)}" if self.lacks else ""
        return f"{self.context}: {self.said}{lacking}"


async def _namespace_problem(api: KubeApi, namespace: str) -> str | None:
    try:
        await api.call("GET", path("namespaces", namespace))
    except KubeApiError as exc:
        if exc.status == 404:
            return f"namespace {namespace} does not exist (kubectl create namespace {namespace})"
        if exc.status != 403:
            raise
        # may not read namespaces: listing the pods of this one is what launches need
        await api.call("GET", path("namespaces", namespace, "pods"), query={"limit": "1"})
    return None


async def check_context(
    api: KubeApi, namespace: str, ports: PortMode, *, ports_wait_s: float = PORTS_WAIT_S
) -> ContextCheck:
    """What ``api``'s context offers stix, every call bounded."""
    context = api.context
    try:
        problem = await _namespace_problem(api, namespace)
        if problem is not None:
            return ContextCheck(context, False, problem)
        nodes = await list_nodes(api, with_usage=False)
    except KubeApiError as exc:
        return ContextCheck(context, False, api_problem(exc))
    ready = [n for n in nodes if n.ready]
    if not ready:
        return ContextCheck(context, False, "no Ready node")
    gpus: dict[str, int] = {}
    for n in ready:
        if n.accelerator and n.gpus:
            gpus[n.accelerator] = gpus.get(n.accelerator, 0) + n.gpus
    lacks = [] if gpus else ["GPU nodes (none with a GPU label and nvidia.com/gpu or amd.com/gpu)"]
    try:
        await preflight(api, namespace, ports, wait_s=ports_wait_s)
    except PortsUnavailable:
        lacks.append(f"exposing ports as {ports} (no LoadBalancer address; try nodeport)")
    except ProvisionError as exc:
        lacks.append(f"exposing ports as {ports} ({exc.message})")
    held = ", ".join(f"{name} x{count}" for name, count in sorted(gpus.items()))
    said = f"reachable, namespace {namespace}, {len(ready)} node(s)" + (
        f", GPUs {held}" if held else ""
    )
    return ContextCheck(context, True, said, tuple(lacks))


async def check_contexts(
    entries: Sequence[tuple[str, str, KubeApi | ProvisionError]], ports: PortMode
) -> list[ContextCheck]:
    """Every (context, namespace, its API) at once, in the order given; an API that is an
    error (its client could not be made) is a context that cannot be used, for that reason."""
    checks: dict[str, ContextCheck] = {}

    async def one(context: str, namespace: str, api: KubeApi) -> None:
        checks[context] = await check_context(api, namespace, ports)

    async with anyio.create_task_group() as tg:
        for context, namespace, api in entries:
            if isinstance(api, ProvisionError):
                checks[context] = ContextCheck(context, False, api.message)
            else:
                tg.start_soon(one, context, namespace, api)
    return [checks[context] for context, _, _ in entries]
