"""Where a launch's pods go and how they come up: the GPU node selection, every rank's pod made
at once (an ended one replaced, one that exists found), the wait for them to run, and the
clean-up of what could not be placed before the launch fails over. A part of
``KubernetesProvider``."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import structlog

from stixd.providers.base import Block, CapacityError, ProvisionRequest
from stixd.providers.kubernetes import gpu_labels, pods
from stixd.providers.kubernetes.api import KubeApi, path
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.nodes import MAX_NODES, labels_of
from stixd.providers.kubernetes.podspec import PodPlan, manifest, pod_name
from stixd.providers.kubernetes.records import Records, Where
from stixd.providers.kubernetes.seams import PodRequest
from stixd.providers.kubernetes.shapes import as_map, get
from stixproto.errors import ProvisionError


def _gpu_facts(node: Any) -> tuple[dict[str, str], dict[str, Any]] | None:
    """(its labels, its allocatable map) of a listed node: all the GPU selection reads of it
    (a node that is no mapping is left out)."""
    if not isinstance(node, dict):
        return None
    return labels_of(node), as_map(get(node, "status", "allocatable"))


class PlacesPods:
    name: str
    config: KubernetesConfig
    records: Records
    user: str
    log: structlog.stdlib.BoundLogger

    async def _plan(
        self, api: KubeApi, req: ProvisionRequest, where: Where, asked: PodRequest
    ) -> PodPlan:
        plan = PodPlan(
            cluster=req.cluster,
            rank=0,
            namespace=where.namespace,
            owner=where.owner,
            launch_id=str(req.resources.get("launch_id") or ""),
            user=self.user,
        )
        if not asked.accelerator or asked.accelerator_count <= 0:
            return plan
        facts = (await api.list_all(path("nodes"), max_items=MAX_NODES, keep=_gpu_facts))["items"]
        labels = [node_labels for node_labels, _ in facts]
        allocatable = [offered for _, offered in facts]
        try:
            selection = gpu_labels.select(
                asked.accelerator, labels, self.config.autoscaler, where.context
            )
        except gpu_labels.NoGpuNodes as exc:
            raise CapacityError(
                exc.message, Block(infra=self.name, region=where.context, reason=exc.message)
            ) from None
        return dataclasses.replace(
            plan, selection=selection, gpu_resource=gpu_labels.gpu_resource(allocatable)
        )

    async def _pods_running(
        self, api: KubeApi, req: ProvisionRequest, where: Where, asked: PodRequest, plan: PodPlan
    ) -> dict[str, dict[str, Any]]:
        names = [pod_name(req.cluster, rank, where.owner) for rank in range(req.num_nodes)]
        listed = {
            p["metadata"]["name"]: p
            for p in await pods.list_cluster(api, where.namespace, req.cluster, where.owner)
        }
        ended = [n for n in names if n in listed and pods.is_gone(listed[n])]
        for name in ended:  # an evicted or finished pod keeps its name until deleted
            await pods.delete(api, where.namespace, "pods", name)
        if ended:
            await pods.wait_gone(api, where.namespace, req.cluster, where.owner, ended)

        refused: list[ProvisionError] = []

        async def make(rank: int) -> None:
            if names[rank] in listed and names[rank] not in ended:
                return
            body = manifest(asked, dataclasses.replace(plan, rank=rank), self.config)
            try:
                await pods.create(api, where.namespace, body, req.cluster, where.owner)
            except ProvisionError as exc:  # the launch fails in its one line, not in a group
                refused.append(exc)
                return
            if not self.records.node(req.cluster, rank):  # from now on, its loss is news
                self.records.set_node(req.cluster, rank, {"pod": names[rank]})

        async with anyio.create_task_group() as tg:
            for rank in range(req.num_nodes):
                tg.start_soon(make, rank)
        if refused:
            raise refused[0]
        waiter = pods.Waiter(
            api,
            where.namespace,
            req.cluster,
            where.owner,
            self.config.autoscaler,
            self.config.provision_timeout,
            req.progress,
        )
        try:
            return await waiter.running(names)
        except CapacityError:
            kept = [n for n in names if n in listed and n not in ended]
            with anyio.CancelScope(shield=True):
                await self._abandon(api, req.cluster, where, kept)
            raise

    async def _abandon(self, api: KubeApi, cluster: str, where: Where, kept: list[str]) -> None:
        """Delete the pods this launch made and could not place; with none ``kept`` (a first
        launch), everything of the cluster here: the context it fails over from is left
        clean, while a relaunch leaves the pods that were already running be."""
        try:
            if not kept:
                await pods.delete_cluster(api, where.namespace, cluster, where.owner)
                self.records.drop(cluster)
                return
            for pod in await pods.list_cluster(api, where.namespace, cluster, where.owner):
                if pod["metadata"]["name"] not in kept:
                    await pods.delete(api, where.namespace, "pods", pod["metadata"]["name"])
        except ProvisionError as exc:
            self.log.warning("kubernetes_abandon_failed", cluster=cluster, error=exc.message)
