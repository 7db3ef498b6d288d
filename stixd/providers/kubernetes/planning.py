"""What the Kubernetes provider hands to the planner and the commands, in one object it holds:
the node catalog kept current (`refresh_catalog`, why no context can be planned on), ``check``
per context, ``show-gpus`` live, and the ports preflight with its verdict remembered."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from stixd.providers.base import CheckResult
from stixd.providers.kubernetes.api import KubeApi
from stixd.providers.kubernetes.checks import CHECK_TIMEOUT_S, check_contexts
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients
from stixd.providers.kubernetes.gpus import gpu_rows, render
from stixd.providers.kubernetes.node_catalog import NodeCatalog, catalog_root
from stixd.providers.kubernetes.ports import preflight
from stixproto.errors import ProvisionError


class KubePlanning:
    def __init__(self, clients: Clients, config: KubernetesConfig, home: Path) -> None:
        self.clients, self.config = clients, config
        self.nodes = NodeCatalog(clients, config, catalog_root(home))
        self._ports_ok: set[str] = set()

    @property
    def catalog_dir(self) -> Path:
        """The folder the planner reads the generated catalog from (``Built.catalog_dirs``)."""
        return self.nodes.root

    def contexts(self) -> list[str]:
        return self.nodes.contexts()

    def namespace(self, context: str) -> str:
        return self.config.namespace or self.clients.config.namespace(context)

    async def api(self, context: str) -> KubeApi:
        """The context's API, each call bounded as `check` bounds it."""
        return KubeApi(await self.clients.client(context), context, CHECK_TIMEOUT_S)

    async def _apis(self, contexts: Sequence[str]) -> list[tuple[str, KubeApi | ProvisionError]]:
        made: list[tuple[str, KubeApi | ProvisionError]] = []
        for context in contexts:
            try:
                made.append((context, await self.api(context)))
            except ProvisionError as exc:  # not in the kubeconfig, or a client that cannot be made
                made.append((context, exc))
        return made

    async def refresh_catalog(self) -> None:
        """Waits only for the first node listing; later ones run in the background."""
        await self.clients.refresh()
        await self.nodes.refresh_soon()

    async def aclose(self) -> None:
        await self.nodes.aclose()

    def planning_problem(self) -> str | None:
        """Why launches cannot use Kubernetes, as of the last node listing (no network)."""
        return self.nodes.problem()

    async def check(self) -> CheckResult:
        await self.clients.refresh()
        stale = (self.clients.stale,) if self.clients.stale else ()
        contexts = self.contexts()
        if not contexts:
            return CheckResult(False, self.planning_problem() or "no Kubernetes context", stale)
        apis = await self._apis(contexts)
        entries = [(c, self.namespace(c), api) for c, api in apis]
        checks = await check_contexts(entries, self.config.ports)
        usable = [c.context for c in checks if c.usable]
        if usable:
            reason = f"context(s) {', '.join(usable)} usable, tried in this order"
        else:
            reason = "no context usable"
        return CheckResult(bool(usable), reason, (*stale, *(c.line() for c in checks)))

    async def show_gpus(
        self, name: str | None, count: float | None, context: str | None
    ) -> tuple[str, list[dict[str, object]]]:
        """(the text ``show-gpus --infra k8s[/CONTEXT]`` prints, its rows as data)."""
        await self.clients.refresh()
        if context and context not in self.clients.config.namespaces:
            try:
                await self.clients.client(context)  # raises the one line saying why
            except ProvisionError as exc:
                return exc.message, []
        contexts = [context] if context else self.contexts()
        if not contexts:
            return self.planning_problem() or "no Kubernetes context", []
        apis = await self._apis(contexts)
        rows, problems = await gpu_rows(apis, name, count)
        data: list[dict[str, object]] = [
            {
                "context": r.context,
                "node": r.node,
                "accelerator": r.accelerator,
                "total": r.total,
                "free": r.free,
            }
            for r in rows
        ]
        return render(rows, problems, contexts), data

    async def preflight_ports(self, context: str, labels: Mapping[str, str]) -> None:
        """``PortsUnavailable`` when ``context`` cannot expose ports in the configured mode; a
        context that could once is not probed again. The probe carries ``labels``."""
        if context in self._ports_ok:
            return
        api = await self.api(context)
        annotations = self.config.custom_metadata.annotations
        await preflight(
            api, self.namespace(context), self.config.ports, labels, annotations=annotations
        )
        self._ports_ok.add(context)
