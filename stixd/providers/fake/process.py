"""The FAKE provider with process nodes (``fake.nodes: process``), for tests and benchmarks.

The cloud is the fake one (``FakeProvider``): regions and prices from its catalog, spot or
on-demand as the placement says, launch/stop/terminate latency, capacity errors, preemptions and
the machines file. Each of its machines is a LOCAL node (``LocalProvider``, given in): an agent
and real processes on this machine, in a network namespace of its own where the local machinery
makes one, so a service's replicas answer HTTP and two of them may bind one port. Where the
nodes share this machine's network (not root, `fake.network: host`) they are at 127.0.0.1, and
a service gives each replica a port of its own, as on `local`.

The in-memory machine record says whether a node exists; the local node says what runs on it.
A preemption kills every process of the cluster's nodes at once (by the marker each carries),
so its replicas stop answering mid-request, and the cluster is found gone; its disk is removed
when the cluster is terminated or launched again, as a new machine starts empty. The nodes
outlive a daemon restart, jobs running, as the machines file keeps them (``fake.persist``);
those it does not keep are lost, and a new provider ends what is left of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio

from stixd.agent_client import AgentClient
from stixd.providers.abilities import ShellCommand, query_each
from stixd.providers.base import CheckResult, Mount, NodeInfo, ProvisionRequest
from stixd.providers.fake.provider import FakeProvider
from stixd.providers.local.node import kill_marked
from stixproto.paths import PathOutsideParent

if TYPE_CHECKING:
    from stixd.providers.local.provider import LocalProvider

KILL_ROUNDS = 50
"""A preemption's kill repeats while processes are found (a job may fork as it dies)."""


class ProcessFakeProvider(FakeProvider):
    every_port_reachable: Literal[True] = True
    """Its nodes are local ones: every port is reachable from this machine."""

    def __init__(self, regions: Iterable[str], *, nodes: LocalProvider, **kw: Any) -> None:
        super().__init__(regions, **kw)
        self.nodes = nodes
        self._end_lost_machines()

    def nodes_share_host_network(self) -> bool:
        return self.nodes.nodes_share_host_network()

    async def check(self) -> CheckResult:
        local = await self.nodes.check()
        regions = ", ".join(self.regions)
        return CheckResult(True, f"fake regions {regions}, nodes run as processes; {local.reason}")

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        before = self._clusters.get(req.cluster)
        try:
            await super().launch(req)  # the cloud's part: region, latency, capacity
        finally:
            if self._clusters.get(req.cluster) is not before:
                # new machines (or none, the old ones gone): nothing of the old ones is kept
                with anyio.CancelScope(shield=True):
                    await self.nodes.terminate(req.cluster)
        return await self.nodes.launch(req)

    async def query(self, cluster: str) -> list[NodeInfo]:
        if cluster not in self._clusters:
            return []  # preempted or terminated: whatever is left of it is no machine
        return await self.nodes.query(cluster)

    async def query_many(self, clusters: Sequence[str]) -> dict[str, list[NodeInfo]]:
        return await query_each(self, clusters, None)

    async def stop(self, cluster: str) -> None:
        await super().stop(cluster)
        await self.nodes.stop(cluster)

    async def terminate(self, cluster: str) -> None:
        await super().terminate(cluster)
        await self.nodes.terminate(cluster)

    def preempt(self, clusters: Iterable[str] = (), count: int = 0) -> list[str]:
        """As the in-memory cloud's, and the nodes' processes are dead when it returns (it
        blocks for that: a scan of /proc or two, some tens of ms; tests only)."""
        hit = super().preempt(clusters, count)
        for cluster in hit:
            self._kill(cluster)
        return hit

    def _end_lost_machines(self) -> None:
        """What an earlier daemon's machines left that this cloud no longer holds (no machines
        file, or one without them): a restart lost those nodes, so nothing of them runs on."""
        try:
            names = os.listdir(self.nodes.root)
        except OSError:
            return
        for cluster in names:
            if cluster not in self._clusters:
                self._kill(cluster)
                self.nodes.remove_sandbox(cluster)

    def _kill(self, cluster: str) -> None:
        """Every process of the cluster's nodes, at once, as a reclaimed machine's: requests in
        flight to it end unanswered."""
        try:
            sandbox = self.nodes.cluster_dir(cluster)
        except PathOutsideParent:
            return
        for _ in range(KILL_ROUNDS):
            if not kill_marked(sandbox):
                return

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        return await self.nodes.sync(node, mounts)

    def connector(self, node: NodeInfo) -> AgentClient:
        return self.nodes.connector(node)

    def shell_command(self, node: NodeInfo, command: str | None) -> ShellCommand:
        return self.nodes.shell_command(node, command)
