"""The ``kubernetes`` provider: each node of a cluster is a pod, its agent started over ``exec``.

A launch goes to one context (the placement's region, else the first allowed one) and its
namespace. The context is recorded before any pod is made, so a launch cut short is found and
cleaned. Pods are named ``<cluster>-<owner>-<rank>`` (``owner``: this stix home's id, also a
label, so the same cluster name from another home is another cluster) and made for every rank
at once: a retry finds what exists (an ended pod is replaced). When the scheduler cannot
place a pod and no autoscaler may add a node, the launch removes its pods and raises
``CapacityError`` for the context at once: the launcher goes on to the next context or cloud.
Once every pod runs, the agent goes into each through its ``PodShell``, as onto an SSH host.

Kubernetes cannot stop a pod: ``stop`` refuses and names ``down`` (``CannotStop``), and
autostop takes such a cluster down. A pod deleted or evicted from outside is a lost node.

This module is the lifecycle (launch, observe, stop, terminate, sync); the rest is in parts
the class is made of: ``provider_placing`` (GPU nodes, the pods made and waited for),
``provider_ports`` (ports, their preflight and address) and ``provider_commands`` (catalog,
``show-gpus``, ``ssh``, leaks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog

from stixd.agent_client import AgentClient
from stixd.providers.base import (
    CapacityError,
    CheckResult,
    Mount,
    NodeInfo,
    NodeLoss,
    NodeStatus,
    ProvisionRequest,
)
from stixd.providers.kubernetes import identity, pods
from stixd.providers.kubernetes.agents import address, ref_of, start_agents
from stixd.providers.kubernetes.api import KubeApi
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients, Kubeconfig
from stixd.providers.kubernetes.observe import observe
from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.planning import KubePlanning
from stixd.providers.kubernetes.podspec import pod_name
from stixd.providers.kubernetes.provider_commands import ServesCommands
from stixd.providers.kubernetes.provider_placing import PlacesPods
from stixd.providers.kubernetes.provider_ports import ExposesPorts
from stixd.providers.kubernetes.provider_volumes import HoldsVolumes
from stixd.providers.kubernetes.records import Records, Where
from stixd.providers.kubernetes.seams import PodRef, PodRequest, PodShell
from stixd.providers.shared.dests import resolve_dest
from stixproto import names
from stixproto.errors import ProvisionError

ShellFactory = Callable[[PodRef], PodShell]
SYNC_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class Made:
    """A launch's pods, all Running: where they are, what they asked, each by name."""

    where: Where
    asked: PodRequest
    pods: dict[str, dict[str, Any]]


class KubernetesProvider(ServesCommands, ExposesPorts, PlacesPods, HoldsVolumes):
    name = "kubernetes"
    cannot_stop: Literal[True] = True

    def __init__(
        self,
        home: Path,
        config: KubernetesConfig,
        kubeconfig: Kubeconfig,
        shells: ShellFactory,
        *,
        clients: Clients | None = None,
        log: structlog.stdlib.BoundLogger | None = None,
        user: str | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.clients = clients or Clients(kubeconfig, home / "kubernetes" / "certs")
        self.make_shell = shells
        self.log = (log or structlog.get_logger()).bind(provider="kubernetes")
        self.user = user or getpass.getuser()
        self.records = Records(home)
        self.planning = KubePlanning(self.clients, config, home)
        """The planner's catalog of the contexts' nodes, check, show-gpus, the ports preflight."""
        self._shells: dict[PodRef, PodShell] = {}
        self._preflight = anyio.Lock()
        self.lost: dict[str, list[NodeLoss]] = {}
        self.last_error: dict[str, dict[int, str]] = {}

    @functools.cached_property
    def owner(self) -> str:
        """This stix home's id, in the name and labels of every object it makes (owner.py)."""
        return owner_of(self.home)

    # -- contexts, APIs and shells ---------------------------------------------------------

    @property
    def kubeconfig(self) -> Kubeconfig:
        """The kubeconfig as last read (``Clients.refresh`` reads it again when it changes)."""
        return self.clients.config

    def contexts(self) -> list[str]:
        """The contexts launches may use, in failover order: the allowed ones that exist,
        else the kubeconfig's current context (or its first)."""
        known = self.kubeconfig.contexts
        if self.config.allowed_contexts is not None:
            return [c for c in self.config.allowed_contexts if c in known]
        current = self.kubeconfig.current or (known[0] if known else None)
        return [current] if current else []

    def namespace(self, context: str) -> str:
        return self.config.namespace or self.kubeconfig.namespace(context)

    async def api(self, context: str) -> KubeApi:
        return KubeApi(await self.clients.client(context), context)

    def shell(self, ref: PodRef) -> PodShell:
        """The one shell of a pod (its relay is long-lived), made on first use."""
        made = self._shells.get(ref)
        if made is None:
            made = self._shells[ref] = self.make_shell(ref)
        return made

    async def _forget(self, refs: Collection[PodRef]) -> None:
        for ref in refs:
            shell = self._shells.pop(ref, None)
            if shell is not None:
                with contextlib.suppress(Exception):
                    await shell.aclose()

    async def aclose(self) -> None:
        await self.planning.aclose()
        await self._forget(list(self._shells))
        await self.clients.aclose()

    # -- Provider ----------------------------------------------------------------------------

    async def check(self) -> CheckResult:
        return await self.planning.check()

    def _context_of(self, req: ProvisionRequest) -> str:
        asked = req.resources.get("region")
        if isinstance(asked, str) and asked:
            if asked not in self.kubeconfig.contexts:
                known = ", ".join(self.kubeconfig.contexts) or "none"
                raise ProvisionError(f"no Kubernetes context {asked} (contexts: {known})")
            return asked
        contexts = self.contexts()
        if not contexts:
            why = self.kubeconfig.unreadable or "no Kubernetes context to launch on"
            raise ProvisionError(f"{why}: set up a kubeconfig")
        return contexts[0]

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        """Idempotent: the cluster's pods are found by name before any is made."""
        made = await self.make_pods(req)
        return await self.put_agents(req, made)

    async def make_pods(self, req: ProvisionRequest) -> Made:
        """Every pod of the cluster Running (the first half of ``launch``, before the agents).

        A relaunch of a cluster with nodes running here does not fail over: the next context
        would start by deleting them (``terminate`` of this one), so no room here for a lost
        node is a plain error, the running pods left as they are."""
        try:
            return await self._make_pods(req)
        except CapacityError as exc:
            live = await self._live_pods(req.cluster)
            if not live:
                raise
            raise ProvisionError(
                f"{exc.message}; cluster {req.cluster} keeps its running pods "
                f"{', '.join(live)} (to move it, take it down and launch it again)"
            ) from None

    async def _live_pods(self, cluster: str) -> list[str]:
        """The cluster's Running pods (a launch's own unplaced ones are deleted by then)."""
        where = self.records.where(cluster)
        if where is None or where.context not in self.kubeconfig.contexts:
            return []
        try:
            listed = await pods.list_cluster(
                await self.api(where.context), where.namespace, cluster, where.owner
            )
        except ProvisionError:
            return []
        return sorted(
            p["metadata"]["name"]
            for p in listed
            if p["status"].get("phase") == "Running" and not pods.is_gone(p)
        )

    async def _make_pods(self, req: ProvisionRequest) -> Made:
        await self.clients.refresh()
        context = self._context_of(req)
        where = Where(context, self.namespace(context), req.num_nodes, self.owner)
        before = self.records.where(req.cluster)
        if before is not None and (before.context, before.namespace, before.owner) != (
            where.context,
            where.namespace,
            where.owner,
        ):
            # failed over from another context (or made before owners): leave it clean
            await self.terminate(req.cluster)
        asked = PodRequest.of(req.resources)
        if asked.ports:
            await self._can_expose(context)
        self.records.place(req.cluster, where)
        api = await self.api(context)
        await identity.ensure(api, where.namespace, self.config)
        plan = await self._plan(api, req, where, asked)
        ready = await self._pods_running(api, req, where, asked, plan)
        await self._expose(api, where, req.cluster, asked.ports)
        if asked.ports and self._address_pending(req.cluster) and req.progress is not None:
            req.progress(f"The LoadBalancer address of {req.cluster} is pending (the cloud is "
                         "still making it); `stixctl status -r` shows it once given")  # fmt: skip
        return Made(where, asked, ready)

    async def put_agents(self, req: ProvisionRequest, made: Made) -> list[NodeInfo]:
        """An agent in each pod of ``made`` (the second half of ``launch``)."""

        def record(node: NodeInfo) -> None:
            self.records.set_node(req.cluster, node.rank, node.to_dict())

        nodes = await start_agents(
            req, made.where, made.asked, made.pods, self.shell, record, self.log
        )
        if identity.uploads_kubeconfig(self.config.remote_identity):
            shells = [self.shell(ref_of(node)) for node in nodes]
            paths, into = self.kubeconfig.paths, self.home / "kubernetes" / "upload"
            await identity.give_kubeconfig(shells, paths, made.where.context, into)
        return nodes

    async def query(self, cluster: str) -> list[NodeInfo]:
        """RUNNING where the pod runs and its agent answers, STOPPED where it runs without one.
        A pod gone (deleted, evicted, ended) is a lost node (``lost_nodes``), listed
        UNREACHABLE while others of the cluster run."""
        where = self.records.where(cluster)
        if where is None:
            self.lost.pop(cluster, None)
            return []
        api = await self.api(where.context)
        listed = await pods.list_cluster(api, where.namespace, cluster, where.owner)
        if self._address_pending(cluster):  # asked about the cluster: is the address there yet
            await self._look_up_address(api, where, cluster)
        seen = await observe(
            cluster,
            where,
            listed,
            lambda rank: self._recorded(cluster, where, rank),
            self.connector,
            lambda node: self.shell(ref_of(node)).channel_up(),
        )
        self.lost[cluster] = seen.lost
        self.last_error[cluster] = seen.errors
        return seen.nodes

    def _recorded(self, cluster: str, where: Where, rank: int) -> NodeInfo | None:
        """The node as its launch brought it up; a pod made without an agent yet is a node
        without an agent address; None for a rank never made."""
        raw = self.records.node(cluster, rank)
        if not raw:
            return None
        with contextlib.suppress(KeyError, ValueError, TypeError):
            return NodeInfo.from_dict(raw)
        ref = PodRef(where.context, where.namespace, pod_name(cluster, rank, where.owner))
        return NodeInfo(rank, "", NodeStatus.STOPPED, "", "", "", address=address(ref))

    def lost_nodes(self, cluster: str) -> list[NodeLoss]:
        return list(self.lost.get(cluster, []))

    def node_errors(self, cluster: str) -> dict[int, str]:
        return dict(self.last_error.get(cluster, {}))

    async def stop(self, cluster: str) -> None:
        raise ProvisionError(
            f"Kubernetes cannot stop a pod, so cluster {cluster} cannot be stopped; "
            f"take it down with `{names.command('down', cluster)}`"
        )

    async def terminate(self, cluster: str) -> None:
        """Delete every pod and service of the cluster and wait until the pods are gone."""
        where = self.records.where(cluster)
        if where is None:
            return
        await self.clients.refresh()
        if where.context not in self.kubeconfig.contexts:  # a context removed by the user
            self.log.warning(
                "kubernetes_context_gone",
                cluster=cluster,
                context=where.context,
                note="its pods, if any, are left for the cluster's owner to delete",
            )
            self.records.drop(cluster)
            return
        api = await self.api(where.context)
        going = await pods.delete_cluster(api, where.namespace, cluster, where.owner)
        await self._forget(
            [ref for ref in self._shells if ref.context == where.context and ref.name in going]
        )
        if going:
            await pods.wait_gone(api, where.namespace, cluster, where.owner, going, ending=True)
        self.records.drop(cluster)
        self.lost.pop(cluster, None)

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        shell = self.shell(ref_of(node))
        sent = 0
        for mount in mounts:
            source = Path(mount.source).expanduser()
            if not source.exists():
                raise FileNotFoundError(f"{mount.source} does not exist")
            sent += await shell.put_tree(
                source, resolve_dest(node, mount.dest), timeout=SYNC_TIMEOUT_S
            )
        return sent

    def connector(self, node: NodeInfo) -> AgentClient:
        ref = ref_of(node)
        return self.shell(ref).agent_client(node.agent_address, f"rank {node.rank}@{ref}")
