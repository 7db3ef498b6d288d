"""The ``kubernetes`` provider's ports: a task's ports exposed the configured way (a
LoadBalancer or NodePort service per cluster, or the pod's own IP), the preflight that refuses
a context which cannot expose them, and where this machine reaches them (the balancer's
address, remembered once the cloud gives it). A part of ``KubernetesProvider``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from stixd.providers.base import Block, CapacityError, NodeInfo
from stixd.providers.kubernetes import ports
from stixd.providers.kubernetes.api import KubeApi
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.planning import KubePlanning
from stixd.providers.kubernetes.podspec import LABEL_OWNER
from stixd.providers.kubernetes.ports import PortsUnavailable
from stixd.providers.kubernetes.records import Records, Where
from stixproto.errors import ProvisionError


class ExposesPorts:
    name: str
    config: KubernetesConfig
    records: Records
    planning: KubePlanning
    _preflight: anyio.Lock

    if TYPE_CHECKING:

        @property
        def owner(self) -> str: ...

        async def api(self, context: str) -> KubeApi: ...

    async def _expose(
        self, api: KubeApi, where: Where, cluster: str, opened: Sequence[int]
    ) -> None:
        """Expose ``opened`` the configured way. A LoadBalancer's address is not waited for:
        it is remembered once known (now, or when `query` looks again) and a service's
        balancer reaches the cluster's replica there (``reachable_address``)."""
        if not opened:
            return
        mode = self.config.ports
        await ports.open_ports(
            api,
            where.namespace,
            cluster,
            where.owner,
            opened,
            mode,
            self._labels(),
            self.config.custom_metadata.annotations,
        )
        if mode == "loadbalancer" and not self.records.remembered(cluster, "reached"):
            await self._look_up_address(api, where, cluster)

    async def _look_up_address(self, api: KubeApi, where: Where, cluster: str) -> None:
        address = await ports.load_balancer_address(api, where.namespace, cluster, where.owner)
        if address is None:
            self.records.remember(cluster, reached="")  # pending: looked up again when asked
        else:
            self.records.remember(cluster, reached=address)

    def _address_pending(self, cluster: str) -> bool:
        return self.records.remembered(cluster, "reached") == ""

    def reachable_address(self, cluster: str, node: NodeInfo) -> str:
        """Where this machine reaches the cluster's ports (ReachedElsewhere): the pod's IP in
        ``podip`` mode (this machine in the cluster's network), the LoadBalancer's address."""
        mode = self.config.ports
        if mode == "podip":
            return node.ip
        if mode == "nodeport":
            raise ProvisionError(
                f"with kubernetes.ports nodeport, cluster {cluster}'s ports are reached at other "
                "port numbers of its node; set kubernetes.ports to loadbalancer or podip"
            )
        reached = self.records.remembered(cluster, "reached")
        if reached == "":
            raise ports.address_pending(cluster, self.owner)
        if not reached:
            raise ProvisionError(f"the LoadBalancer service of cluster {cluster} has no address")
        return reached

    def _labels(self) -> dict[str, str]:
        return {**self.config.custom_metadata.labels, LABEL_OWNER: self.owner}

    async def _can_expose(self, context: str) -> None:
        """The ports preflight: a context that cannot expose ports the configured way is no
        place for this launch (the next context may be)."""
        try:
            async with self._preflight:  # launches at once wait for one verdict, not probe each
                await self.planning.preflight_ports(context, self._labels())
        except PortsUnavailable as exc:
            raise CapacityError(
                exc.message, Block(infra=self.name, region=context, reason=exc.message)
            ) from None

    async def open_ports(self, cluster: str, opened: list[int]) -> None:
        """Expose more ports of a live cluster's head pod (OpensPorts), the configured way."""
        where = self.records.where(cluster)
        if where is None:
            raise ProvisionError(f"cluster {cluster} has no pods to expose ports of")
        await self._can_expose(where.context)
        await self._expose(await self.api(where.context), where, cluster, opened)
