"""The ``kubernetes`` provider: each node of a cluster is a pod, its agent started over ``exec``.

A launch goes to one context (the placement's region, else the first allowed one) and its
namespace. The context is recorded before any pod is made, so a launch cut short is found and
cleaned. Pods are named ``<cluster>-<rank>`` and made for every rank at once: a retry finds
what exists (an ended pod is replaced). When the scheduler cannot place a pod and no
autoscaler may add a node, the launch removes its pods and raises ``CapacityError`` for the
context at once: the launcher goes on to the next context or cloud. Once every pod runs, the
agent goes into each through its ``PodShell``, as onto an SSH host.

Kubernetes cannot stop a pod: ``stop`` refuses and names ``down`` (``CannotStop``), and
autostop takes such a cluster down. A pod deleted or evicted from outside is a lost node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog

from stixd.agent_client import AgentClient, AgentUnreachable
from stixd.providers.abilities import Leak, LeakPolicy, ShellCommand
from stixd.providers.base import (
    Block,
    CapacityError,
    CheckResult,
    Mount,
    NodeInfo,
    NodeLoss,
    NodeStatus,
    ProvisionRequest,
)
from stixd.providers.kubernetes import gpu_labels, pods
from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients, Kubeconfig
from stixd.providers.kubernetes.node_catalog import MAX_AGE, NodeCatalog, catalog_root
from stixd.providers.kubernetes.podspec import (
    LABEL_CLUSTER,
    PodPlan,
    label_value,
    manifest,
    pod_name,
)
from stixd.providers.kubernetes.records import Records, Where
from stixd.providers.kubernetes.seams import PodRef, PodRequest, PodShell
from stixd.providers.shared.bootstrap import ensure_agent
from stixd.providers.shared.ssh_nodes import WORKDIR, build_of
from stixd.providers.shared.ssh_sync import resolve_dest
from stixproto import names
from stixproto.errors import ProvisionError

ShellFactory = Callable[[PodRef], PodShell]
HELLO_DEADLINE_S = 5.0
SYNC_TIMEOUT_S = 600.0
CHECK_TIMEOUT_S = 10.0
LEAK_POLICY = LeakPolicy(check_every_s=600.0, min_age_s=600.0, terminate=False)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _age_s(pod: dict[str, Any]) -> float | None:
    made = pod.get("metadata", {}).get("creationTimestamp")
    if not isinstance(made, str):
        return None
    try:
        return time.time() - datetime.fromisoformat(made.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Made:
    """A launch's pods, all Running: where they are, what they asked, each by name."""

    where: Where
    asked: PodRequest
    pods: dict[str, dict[str, Any]]


class KubernetesProvider:
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
        self.kubeconfig = kubeconfig
        self.clients = clients or Clients(kubeconfig, home / "kubernetes" / "certs")
        self.make_shell = shells
        self.log = (log or structlog.get_logger()).bind(provider="kubernetes")
        self.user = user or getpass.getuser()
        self.records = Records(home)
        self.node_catalog = NodeCatalog(self.clients, config, catalog_root(home))
        """The planner's rows for each context, from the nodes it has (``keep_catalog``)."""
        self._shells: dict[PodRef, PodShell] = {}
        self.lost: dict[str, list[NodeLoss]] = {}
        self.last_error: dict[str, dict[int, str]] = {}

    # -- contexts, APIs and shells ---------------------------------------------------------

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

    @staticmethod
    def address(ref: PodRef) -> str:
        return f"{ref.context}/{ref.namespace}/{ref.name}"

    @staticmethod
    def ref_of(node: NodeInfo) -> PodRef:
        context, sep, rest = node.address.partition("/")
        namespace, sep2, name = rest.partition("/")
        if not (sep and sep2 and context and namespace and name):
            raise ProvisionError(f"node {node.rank} names no pod ({node.address!r})")
        return PodRef(context, namespace, name)

    async def _forget(self, refs: Collection[PodRef]) -> None:
        for ref in refs:
            shell = self._shells.pop(ref, None)
            if shell is not None:
                with contextlib.suppress(Exception):
                    await shell.aclose()

    async def aclose(self) -> None:
        await self._forget(list(self._shells))
        await self.clients.aclose()

    # -- the planner's catalog -------------------------------------------------------------

    async def keep_catalog(self) -> None:
        """Rewrite the catalog whenever the contexts' nodes change, for the daemon's life."""
        while True:
            try:
                await self.node_catalog.refresh(force=True)
            except (ProvisionError, OSError) as exc:  # the rows stay as last written
                self.log.warning("kubernetes_catalog_not_refreshed", error=str(exc))
            await anyio.sleep(MAX_AGE)

    def credentials_problem(self) -> str | None:
        """Why no context can be planned on, as the last node listing found (no network)."""
        return self.node_catalog.problem()

    # -- Provider ----------------------------------------------------------------------------

    async def check(self) -> CheckResult:
        with contextlib.suppress(ProvisionError, OSError):
            await self.node_catalog.refresh(force=True)
        contexts = self.contexts()
        if not contexts:
            return CheckResult(False, "no Kubernetes context in the kubeconfig")
        said, usable = [], False
        for context in contexts:
            try:
                api = KubeApi(await self.clients.client(context), context, CHECK_TIMEOUT_S)
                await api.call(
                    "GET", path("namespaces", self.namespace(context), "pods"), query={"limit": "1"}
                )
            except ProvisionError as exc:
                said.append(f"{context}: {exc.message}")
                continue
            usable = True
            said.append(f"{context}: reachable (namespace {self.namespace(context)})")
        return CheckResult(usable, "; ".join(said))

    def _context_of(self, req: ProvisionRequest) -> str:
        asked = req.resources.get("region")
        if isinstance(asked, str) and asked:
            if asked not in self.kubeconfig.contexts:
                known = ", ".join(self.kubeconfig.contexts) or "none"
                raise ProvisionError(f"no Kubernetes context {asked} (contexts: {known})")
            return asked
        contexts = self.contexts()
        if not contexts:
            raise ProvisionError("no Kubernetes context to launch on: set up a kubeconfig")
        return contexts[0]

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        """Idempotent: the cluster's pods are found by name before any is made."""
        made = await self.make_pods(req)
        return await self._agents(req, made)

    async def make_pods(self, req: ProvisionRequest) -> Made:
        """Every pod of the cluster Running (the first half of ``launch``, before the agents)."""
        context = self._context_of(req)
        where = Where(context, self.namespace(context), req.num_nodes)
        before = self.records.where(req.cluster)
        if before is not None and (before.context, before.namespace) != (
            where.context,
            where.namespace,
        ):
            await self.terminate(req.cluster)  # failed over from another context: leave it clean
        self.records.place(req.cluster, where)
        api = await self.api(context)
        asked = PodRequest.of(req.resources)
        plan = await self._plan(api, req, where, asked)
        try:
            ready = await self._pods_running(api, req, where, asked, plan)
        except CapacityError:
            with anyio.CancelScope(shield=True):
                await self._abandon(api, req.cluster, where)
            raise
        return Made(where, asked, ready)

    async def _plan(
        self, api: KubeApi, req: ProvisionRequest, where: Where, asked: PodRequest
    ) -> PodPlan:
        plan = PodPlan(
            cluster=req.cluster,
            rank=0,
            namespace=where.namespace,
            launch_id=str(req.resources.get("launch_id") or ""),
            user=self.user,
        )
        if not asked.accelerator or asked.accelerator_count <= 0:
            return plan
        nodes = (await api.call("GET", path("nodes"))).get("items") or []
        labels = [n.get("metadata", {}).get("labels") or {} for n in nodes]
        allocatable = [n.get("status", {}).get("allocatable") or {} for n in nodes]
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
        names = [pod_name(req.cluster, rank) for rank in range(req.num_nodes)]
        listed = {
            p["metadata"]["name"]: p
            for p in await pods.list_cluster(api, where.namespace, req.cluster)
        }
        ended = [n for n in names if n in listed and pods.is_gone(listed[n])]
        for name in ended:  # an evicted or finished pod keeps its name until deleted
            await pods.delete(api, where.namespace, "pods", name)
        if ended:
            await pods.wait_gone(api, where.namespace, req.cluster, ended)

        async def make(rank: int) -> None:
            if names[rank] in listed and names[rank] not in ended:
                return
            body = manifest(asked, dataclasses.replace(plan, rank=rank), self.config)
            await pods.create(api, where.namespace, body)
            if not self.records.node(req.cluster, rank):  # from now on, its loss is news
                self.records.set_node(req.cluster, rank, {"pod": names[rank]})

        async with anyio.create_task_group() as tg:
            for rank in range(req.num_nodes):
                tg.start_soon(make, rank)
        waiter = pods.Waiter(
            api,
            where.namespace,
            req.cluster,
            self.config.autoscaler,
            self.config.provision_timeout,
            req.progress,
        )
        return await waiter.running(names)

    async def _abandon(self, api: KubeApi, cluster: str, where: Where) -> None:
        """Leave nothing behind in a context the launch fails over from."""
        try:
            await pods.delete_cluster(api, where.namespace, cluster)
            self.records.drop(cluster)
        except ProvisionError as exc:
            self.log.warning("kubernetes_abandon_failed", cluster=cluster, error=exc.message)

    async def _agents(self, req: ProvisionRequest, made: Made) -> list[NodeInfo]:
        where, asked, ready = made.where, made.asked, made.pods
        build = build_of(req.agent_pyz)
        nodes: dict[int, NodeInfo] = {}
        errors: dict[int, ProvisionError] = {}

        async def one(rank: int) -> None:
            ref = PodRef(where.context, where.namespace, pod_name(req.cluster, rank))
            pod_ip = str(ready[ref.name].get("status", {}).get("podIP") or "")
            shell = self.shell(ref)
            began = time.monotonic()
            try:
                ep = await ensure_agent(
                    shell,
                    cluster=req.cluster,
                    rank=rank,
                    node_ip=pod_ip,
                    pyz=req.agent_pyz,
                    build=build,
                    num_gpus=float(asked.accelerator_count),
                )
                workdir = f"{ep.home}/{WORKDIR}"
                await shell.run(f"mkdir -p {_quote(workdir)}", timeout=30)
            except ProvisionError as exc:
                errors[rank] = exc
                return
            self.log.info(
                "kubernetes_node_ready",
                cluster=req.cluster,
                rank=rank,
                pod=str(ref),
                **{f"{phase}_s": s for phase, s in ep.phases.items()},
                total_s=round(time.monotonic() - began, 4),
                started=ep.started,
            )
            node = NodeInfo(
                rank=rank,
                ip=pod_ip,
                status=NodeStatus.RUNNING,
                agent_address=ep.socket_path,
                workdir=workdir,
                home=ep.home,
                pid=ep.pid,
                address=self.address(ref),
            )
            nodes[rank] = node
            self.records.set_node(req.cluster, rank, node.to_dict())

        async with anyio.create_task_group() as tg:
            for rank in range(req.num_nodes):
                tg.start_soon(one, rank)
        if errors:
            detail = "; ".join(f"rank {r}: {errors[r].message}" for r in sorted(errors))
            raise ProvisionError(f"{req.cluster} in context {where.context}: {detail}")
        return [nodes[r] for r in sorted(nodes)]

    async def query(self, cluster: str) -> list[NodeInfo]:
        """RUNNING where the pod runs and its agent answers, STOPPED where it runs without one.
        A pod gone (deleted, evicted, ended) is a lost node (``lost_nodes``), listed
        UNREACHABLE while others of the cluster run."""
        where = self.records.where(cluster)
        if where is None:
            self.lost.pop(cluster, None)
            return []
        api = await self.api(where.context)
        by_rank: dict[int, dict[str, Any]] = {}
        for pod in await pods.list_cluster(api, where.namespace, cluster):
            rank = pods.rank_of(pod)
            if rank is not None and pod["metadata"]["name"] == pod_name(cluster, rank):
                by_rank[rank] = pod
        nodes: dict[int, NodeInfo] = {}
        errors: dict[int, str] = {}
        lost: list[NodeLoss] = []

        async def look(rank: int, pod: dict[str, Any], recorded: NodeInfo) -> None:
            phase = (pod.get("status") or {}).get("phase")
            if phase != "Running":
                errors[rank] = f"pod {pod['metadata']['name']} is {phase}"
                nodes[rank] = dataclasses.replace(recorded, status=NodeStatus.UNREACHABLE)
                return
            ip = str(pod["status"].get("podIP") or recorded.ip)
            node = dataclasses.replace(recorded, ip=ip, status=NodeStatus.STOPPED)
            nodes[rank] = node
            if not node.agent_address:
                return
            try:
                hello = await self.connector(node).call("hello", deadline=HELLO_DEADLINE_S)
            except (AgentUnreachable, ProvisionError):
                return
            pid = hello.get("pid")
            nodes[rank] = dataclasses.replace(
                node, status=NodeStatus.RUNNING, pid=pid if isinstance(pid, int) else None
            )

        async with anyio.create_task_group() as tg:
            for rank in range(where.num_nodes):
                recorded = self._recorded(cluster, where, rank)
                found = by_rank.get(rank)
                if found is not None and not pods.is_gone(found):
                    tg.start_soon(look, rank, found, recorded)
                elif found is not None or self.records.node(cluster, rank):
                    why = (
                        f"pod {found['metadata']['name']} {pods.fate(found)}"
                        if found is not None
                        else f"pod {pod_name(cluster, rank)} was deleted"
                    )
                    evicted = found is not None and found["status"].get("reason") == "Evicted"
                    lost.append(NodeLoss(rank, f"{why} (context {where.context})", evicted))
                    errors[rank] = why
        alive = bool(nodes)
        for loss in lost:
            if alive:
                nodes[loss.rank] = dataclasses.replace(
                    self._recorded(cluster, where, loss.rank), status=NodeStatus.UNREACHABLE
                )
        self.lost[cluster] = sorted(lost, key=lambda x: x.rank)
        self.last_error[cluster] = errors
        return [nodes[r] for r in sorted(nodes)]

    def _recorded(self, cluster: str, where: Where, rank: int) -> NodeInfo:
        raw = self.records.node(cluster, rank)
        with contextlib.suppress(KeyError, ValueError, TypeError):
            return NodeInfo.from_dict(raw)
        ref = PodRef(where.context, where.namespace, pod_name(cluster, rank))
        return NodeInfo(rank, "", NodeStatus.STOPPED, "", "", "", address=self.address(ref))

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
        api = await self.api(where.context)
        going = await pods.delete_cluster(api, where.namespace, cluster)
        await self._forget(
            [ref for ref in self._shells if ref.context == where.context and ref.name in going]
        )
        if going:
            await pods.wait_gone(api, where.namespace, cluster, going)
        self.records.drop(cluster)
        self.lost.pop(cluster, None)

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        shell = self.shell(self.ref_of(node))
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
        ref = self.ref_of(node)
        return self.shell(ref).agent_client(node.agent_address, f"rank {node.rank}@{ref}")

    # -- abilities ---------------------------------------------------------------------------

    def shell_command(self, node: NodeInfo, command: str | None) -> ShellCommand:
        """``kubectl exec`` into the node's pod (``-t`` for a login shell)."""
        ref = self.ref_of(node)
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
        return LEAK_POLICY

    def regions(self) -> list[str]:
        return self.contexts()

    async def leaks(
        self, regions: Sequence[str], live: Collection[str], young_s: float
    ) -> list[Leak]:
        owned = {label_value(c) for c in live}
        found: list[Leak] = []
        for context in regions:
            namespace = self.namespace(context)
            api = await self.api(context)
            for kind, what in (("pods", "instance"), ("services", "service")):
                answer = await api.call(
                    "GET",
                    path("namespaces", namespace, kind),
                    query={"labelSelector": LABEL_CLUSTER},
                )
                for item in answer.get("items") or []:
                    cluster = (item.get("metadata", {}).get("labels") or {}).get(LABEL_CLUSTER, "")
                    age = _age_s(item)
                    going = bool(item.get("metadata", {}).get("deletionTimestamp"))
                    if going or cluster in owned or (age is not None and age < young_s):
                        continue
                    found.append(
                        Leak(
                            kind=what,
                            id=f"{namespace}/{item['metadata']['name']}",
                            region=context,
                            cluster=cluster,
                            age_s=age,
                            state=(item.get("status") or {}).get("phase"),
                        )
                    )
        return found

    async def clean_leaks(self, leaks: Sequence[Leak]) -> None:
        for leak in leaks:
            namespace, _, name = leak.id.partition("/")
            kind = "pods" if leak.kind == "instance" else "services"
            try:
                await pods.delete(await self.api(leak.region), namespace, kind, name)
            except KubeApiError as exc:
                self.log.warning("kubernetes_leak_not_cleaned", leak=leak.id, error=exc.message)
