"""The catalog the planner reads for ``kubernetes``: per context, the node sizes that exist.

Kubernetes plans like a cloud whose regions are contexts: the allowed contexts (config
``allowed_contexts`` in its order; unset, the kubeconfig's current context only) each get one
row per distinct node size (allocatable CPUs, memory, the GPU its labels name and how many),
priced $0. The planner treats the rows as capacities (`InfraMeta.sized_nodes`): a pod fits a
context when some node there is at least its size, and contexts are tried in the file's order,
which is ``allowed_contexts``' order. A context that cannot be read gets no rows (the reason is
kept for ``check``), so it is never planned on.

`NodeCatalog.refresh` lists the nodes again when its last listing is older than ``max_age`` and
rewrites it only when it changed; the planner's catalog re-reads a file whose size or
modification time changed. `NodeCatalog.refresh_soon` is what a plan calls: it waits only for
the very first listing; later it plans on the last one while a stale one is listed again in the
background, so a context that stopped answering costs a plan nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import anyio

from stixd.providers.kubernetes.api import KubeApi, KubeApiError
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients
from stixd.providers.kubernetes.nodes import Node, api_problem, list_nodes
from stixd.providers.kubernetes.sizes import instance_type
from stixproto.errors import ProvisionError

CLOUD = "kubernetes"
SCHEMA = "v8"
MAX_AGE = 30.0
"""Seconds a node listing is trusted before a plan lists the nodes again."""
READ_TIMEOUT_S = 4.0
"""Seconds a context may take to list its nodes before the catalog goes on without it."""
_COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB")
_HEADER = (*_COLUMNS, "Price", "SpotPrice", "Region", "AvailabilityZone")


def catalog_root(home: Path) -> Path:
    """The folder holding ``v8/kubernetes/vms.csv`` (given to the planner as a catalog dir)."""
    return home / CLOUD / "catalog"


def catalog_file(root: Path) -> Path:
    return root / SCHEMA / CLOUD / "vms.csv"


def planned_contexts(
    config: KubernetesConfig, known: Sequence[str], current: str | None
) -> list[str]:
    """The contexts launches may use, in the order they are tried: the allowed ones (those
    the kubeconfig lacks too, so `check` can say so), else the current context (or the first,
    as the provider launches on it)."""
    if config.allowed_contexts is not None:
        return list(dict.fromkeys(config.allowed_contexts))
    first = current or (known[0] if known else None)
    return [first] if first else []


def context_problem(context: str, known: Sequence[str]) -> str | None:
    if context in known:
        return None
    return f"not in the kubeconfig (contexts: {', '.join(known) or 'none'})"


def catalog_csv(listed: Iterable[tuple[str, Sequence[Node]]]) -> str:
    """The vms.csv of these contexts' nodes: one row per distinct size, contexts in order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_HEADER)
    for context, nodes in listed:
        sizes = {
            (n.cpus, round(n.memory_gib, 1), n.accelerator if n.gpus else None, n.gpus)
            for n in nodes
            if n.ready and n.cpus > 0
        }
        for cpus, memory, acc, gpus in sorted(sizes, key=lambda s: (s[3], s[0], s[1], s[2] or "")):
            name = instance_type(cpus, memory, acc, gpus)
            count = gpus if acc else 0
            writer.writerow((name, acc or "", count, cpus, memory, 0.0, "", context, ""))
    return out.getvalue()


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` at ``path`` atomically unless it already holds it; True when written.
    A catalog without rows is no file at all (no context is planned on, and none is listed)."""
    if text.count("\n") <= 1:
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


class NodeCatalog:
    """Keeps the generated catalog of ``kubernetes`` current, and why a context is left out."""

    def __init__(
        self,
        clients: Clients,
        config: KubernetesConfig,
        root: Path,
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients, self.config, self.root = clients, config, root
        self.max_age, self._clock = max_age, clock
        self.listed_at: float | None = None
        self.problems: dict[str, str] = {}
        """Context -> why it is not planned on, as of the last refresh."""
        self._lock = anyio.Lock()
        self._background: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return catalog_file(self.root)

    def contexts(self) -> list[str]:
        kubeconfig = self.clients.config
        return planned_contexts(self.config, kubeconfig.contexts, kubeconfig.current)

    async def refresh(self, *, force: bool = False) -> None:
        """List every planned context's nodes again when the last listing is older than
        ``max_age`` (or ``force``), and rewrite the catalog when it changed."""
        async with self._lock:
            now = self._clock()
            if not force and self.listed_at is not None and now - self.listed_at < self.max_age:
                return
            contexts = self.contexts()
            found: dict[str, list[Node]] = {}
            problems: dict[str, str] = {}

            async def one(context: str) -> None:
                kubeconfig = self.clients.config
                problem = kubeconfig.unreadable or context_problem(context, kubeconfig.contexts)
                if problem is not None:
                    problems[context] = problem
                    return
                try:
                    api = KubeApi(await self.clients.client(context), context, READ_TIMEOUT_S)
                    found[context] = await list_nodes(api, with_usage=False)
                except KubeApiError as exc:
                    problems[context] = api_problem(exc)
                except ProvisionError as exc:
                    problems[context] = exc.message
                if context in found and not any(n.ready for n in found[context]):
                    problems[context] = "no Ready node"

            async with anyio.create_task_group() as tg:
                for context in contexts:
                    tg.start_soon(one, context)
            text = catalog_csv((c, found[c]) for c in contexts if c in found)
            await anyio.to_thread.run_sync(write_if_changed, self.path, text)
            self.problems, self.listed_at = problems, self._clock()

    def stale(self) -> bool:
        return self.listed_at is None or self._clock() - self.listed_at >= self.max_age

    async def refresh_soon(self) -> None:
        """The first listing, awaited (each context bounded); after it, a stale listing is
        redone in the background and this returns at once: plans read the last catalog."""
        if self.listed_at is None:
            await self.refresh()
        elif self.stale() and (self._background is None or self._background.done()):
            self._background = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(ProvisionError, OSError):  # each context's reason is kept
            await self.refresh()

    async def aclose(self) -> None:
        """Stop a background listing (before the clients it uses are closed)."""
        if self._background is not None and not self._background.done():
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        self._background = None

    def problem(self) -> str | None:
        """Why no context can be planned on, once a refresh found none; None otherwise."""
        contexts = self.contexts()
        if not contexts:
            unreadable = self.clients.config.unreadable
            return (
                unreadable
                or "no context in the kubeconfig (set KUBECONFIG or write ~/.kube/config)"
            )
        if self.listed_at is None or any(c not in self.problems for c in contexts):
            return None
        why = "; ".join(f"{c}: {self.problems[c]}" for c in contexts)
        return f"no Kubernetes context can be used ({why})"
