"""The ``kubernetes`` provider's answers beyond a cluster's lifecycle: the planner's catalog,
``show-gpus``, ``stixctl ssh`` (``kubectl exec``) and the leak reconciler's look at each
context. A part of ``KubernetesProvider``."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import structlog

from stixd.providers.abilities import Leak, LeakPolicy, ShellCommand
from stixd.providers.base import NodeInfo
from stixd.providers.kubernetes import leaks
from stixd.providers.kubernetes.agents import ref_of
from stixd.providers.kubernetes.api import KubeApi, KubeApiError
from stixd.providers.kubernetes.contexts import Kubeconfig
from stixd.providers.kubernetes.planning import KubePlanning


class ServesCommands:
    planning: KubePlanning
    log: structlog.stdlib.BoundLogger

    if TYPE_CHECKING:

        @property
        def owner(self) -> str: ...

        @property
        def kubeconfig(self) -> Kubeconfig: ...

        def contexts(self) -> list[str]: ...

        def namespace(self, context: str) -> str: ...

        async def api(self, context: str) -> KubeApi: ...

    # -- the planner and the commands (planning.py) ------------------------------------------

    async def refresh_catalog(self) -> None:
        await self.planning.refresh_catalog()

    def credentials_problem(self) -> str | None:
        """Why no context can be planned on, as the last node listing found (no network)."""
        return self.planning.planning_problem()

    async def show_gpus(
        self, name: str | None, count: float | None, region: str | None
    ) -> tuple[str, list[dict[str, object]]]:
        return await self.planning.show_gpus(name, count, region)

    # -- abilities ---------------------------------------------------------------------------

    def shell_command(self, node: NodeInfo, command: str | None) -> ShellCommand:
        """``kubectl exec`` into the node's pod (``-t`` for a login shell)."""
        ref = ref_of(node)
        remote = (
            command
            if command is not None
            else ('cd ~/sky_workdir 2>/dev/null; exec "$(command -v bash || echo sh)" -l')
        )
        argv = [
            "kubectl",
            "--context",
            ref.context,
            "-n",
            ref.namespace,
            "exec",
            "-it" if command is None else "-i",
            ref.name,
            "-c",
            ref.container,
            "--",
            "sh",
            "-c",
            remote,
        ]
        env = {"KUBECONFIG": self.kubeconfig.config_file} if self.kubeconfig.paths else {}
        return argv, None, env

    def leak_policy(self) -> LeakPolicy:
        return leaks.POLICY

    def regions(self) -> list[str]:
        return self.contexts()

    async def leaks(
        self, regions: Sequence[str], live: Collection[str], young_s: float
    ) -> list[Leak]:
        found: list[Leak] = []
        for context in regions:
            found += await leaks.find(
                await self.api(context), self.namespace(context), self.owner, live, young_s
            )
        return found

    async def clean_leaks(self, found: Sequence[Leak]) -> None:
        for leak in found:
            try:
                await leaks.clean(await self.api(leak.region), leak)
            except KubeApiError as exc:
                self.log.warning("kubernetes_leak_not_cleaned", leak=leak.id, error=exc.message)
