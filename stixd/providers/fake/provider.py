"""The FAKE provider: in-memory nodes, for tests and benchmarks only, never real work
(``ProcessFakeProvider`` in process.py is the same cloud over nodes that run real processes).

A launch makes ``FakeNode``s (stixd/providers/fake/agent.py) after a configurable latency (its
own for spot), in the region its placement names; a region listed as having no capacity fails
with a ``CapacityError`` that blocks it, so the launcher fails over as on a real cloud. ``preempt``
makes nodes vanish: ``query`` reports them gone and their agents stop answering, as after a
spot preemption. Stop and terminate take their own configurable time, and with a
``machines_file`` the nodes (not their jobs) outlive the daemon, as a cloud's machines do.
The planner sees the regions through a generated catalog file (one instance type, priced in
region order), so a fake launch takes the same planning path as a cloud one.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec

from stixd.agent_client import AgentClient
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
from stixd.providers.fake.agent import Clock, FakeAgentClient, FakeNode
from stixproto.bounds import MAX_COUNT, MAX_ID

if TYPE_CHECKING:
    from stixd.providers.fake.config import FakeConfig

NAME = "fake"
INSTANCE_TYPE = "fake-node"
VCPUS = 64
MEMORY_GIB = 256
BASE_PRICE = 0.01
"""Per node and hour in the first region; each later region costs this much more."""
_CSV_HEADER = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,"
    "Region,AvailabilityZone\n"
)


def catalog_csv(regions: Iterable[str]) -> str:
    """The fake cloud's catalog (SkyPilot's flat vms.csv layout): dearer region by region, so
    the optimizer's order is the configured order."""
    rows = [
        f"{INSTANCE_TYPE},,,{VCPUS},{MEMORY_GIB},{BASE_PRICE * (i + 1):.4f},"
        f"{BASE_PRICE * (i + 1) / 2:.4f},{region},\n"
        for i, region in enumerate(regions)
    ]
    return _CSV_HEADER + "".join(rows)


def write_catalog(catalog_root: Path, regions: Iterable[str]) -> Path:
    """Place the catalog where the planner's catalog finds it (``<root>/v8/fake/vms.csv``);
    rewritten only when it changed, so its index stays valid."""
    path = catalog_root / "v8" / NAME / "vms.csv"
    text = catalog_csv(regions)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


class _SavedNode(msgspec.Struct, frozen=True):
    rank: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
    region: str
    running: bool


class _Saved(msgspec.Struct, frozen=True):
    """The machines file: what a restarted daemon's fake cloud still holds."""

    serial: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
    clusters: dict[str, list[_SavedNode]]


class FakeProvider:
    name = NAME

    def __init__(
        self,
        regions: Iterable[str],
        *,
        build: str,
        launch_seconds: float = 0.0,
        spot_launch_seconds: float | None = None,
        no_capacity_regions: Iterable[str] = (),
        no_capacity_launches: int = 0,
        run_seconds: float = 3600.0,
        stop_seconds: float = 0.0,
        terminate_seconds: float = 0.0,
        machines_file: Path | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.regions = tuple(regions)
        self.launch_seconds = launch_seconds
        self.spot_launch_seconds = (
            launch_seconds if spot_launch_seconds is None else spot_launch_seconds
        )
        self.no_capacity = set(no_capacity_regions)
        """Regions whose launches fail for lack of capacity (tests may change it)."""
        self.refusals_left = no_capacity_launches
        """Launches still to fail for lack of capacity wherever they go; then capacity appears."""
        self.run_seconds = run_seconds
        self._build = build
        self._clock = clock
        self._clusters: dict[str, list[FakeNode]] = {}
        self._by_address: dict[str, FakeNode] = {}
        self._infos: dict[tuple[str, bool], NodeInfo] = {}
        """Each node's NodeInfo by (address, running): ``_info``."""
        self._serial = 0
        self._lost: dict[str, list[NodeLoss]] = {}
        self.launches: dict[str, int] = {}
        """Launch calls per region that made nodes (for tests and the benchmark)."""
        self.stop_seconds = stop_seconds
        self.terminate_seconds = terminate_seconds
        self._machines_file = machines_file
        self._load()

    # -- what tests and the benchmark see ------------------------------------------------

    def region_of(self, cluster: str) -> str | None:
        nodes = self._clusters.get(cluster)
        return nodes[0].region if nodes else None

    def clusters(self) -> list[str]:
        return sorted(self._clusters)

    def preempt(self, clusters: Iterable[str] = (), count: int = 0) -> list[str]:
        """Make the nodes of `clusters` (or of `count` running clusters picked at random)
        vanish, as a spot preemption does; returns the clusters hit."""
        names = [c for c in clusters if c in self._clusters]
        if count > 0:
            running = [c for c, nodes in self._clusters.items() if nodes[0].running]
            names += random.sample(running, min(count, len(running)))
        for name in dict.fromkeys(names):
            nodes = self._clusters.get(name, [])
            self._lost[name] = [
                NodeLoss(n.rank, f"preempted in {n.region} (a fake spot preemption)", True)
                for n in nodes
            ]
            self._forget(name)
        return list(dict.fromkeys(names))

    def lost_nodes(self, cluster: str) -> list[NodeLoss]:
        """The nodes a preemption took from `cluster` (ReportsLostNodes), until it is
        launched again or terminated."""
        return list(self._lost.get(cluster, []))

    # -- Provider ------------------------------------------------------------------------

    async def check(self) -> CheckResult:
        return CheckResult(
            True,
            f"in-memory fake nodes for tests and benchmarks; regions {', '.join(self.regions)}",
        )

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        """Idempotent: the nodes of a cluster that exists are returned (started if stopped)."""
        region = str(req.resources.get("region") or self.regions[0])
        if region not in self.regions:
            raise CapacityError(
                f"fake region {region} does not exist (regions: {', '.join(self.regions)})",
                Block(infra=NAME, region=region),
            )
        nodes = self._clusters.get(req.cluster)
        if nodes and nodes[0].region == region and len(nodes) >= req.num_nodes:
            return self._resume(req.cluster)
        if nodes:  # another region or size: what was there goes first, as on a cloud
            self._forget(req.cluster)
        delay = self.spot_launch_seconds if req.resources.get("use_spot") else self.launch_seconds
        if delay:
            await anyio.sleep(delay)
        if self.refusals_left > 0:
            self.refusals_left -= 1
            raise CapacityError(
                f"fake region {region} has no capacity yet (InsufficientInstanceCapacity)",
                Block(infra=NAME, region=region),
            )
        if region in self.no_capacity:
            raise CapacityError(
                f"fake region {region} has no capacity (InsufficientInstanceCapacity)",
                Block(infra=NAME, region=region),
            )
        self._serial += 1
        self._lost.pop(req.cluster, None)
        now = self._clock()
        made = []
        for rank in range(req.num_nodes):
            address = f"fake://{region}/{req.cluster}/{self._serial}/{rank}"
            node = FakeNode(
                cluster=req.cluster,
                rank=rank,
                region=region,
                address=address,
                build=self._build,
                clock=self._clock,
                booted_at=now,
            )
            self._by_address[address] = node
            made.append(node)
        self._clusters[req.cluster] = made
        self.launches[region] = self.launches.get(region, 0) + 1
        self._save()
        return [self._info(n) for n in made]

    async def query(self, cluster: str) -> list[NodeInfo]:
        return [self._info(n) for n in self._clusters.get(cluster, [])]

    async def query_many(self, clusters: Sequence[str]) -> dict[str, list[NodeInfo]]:
        """Every cluster's nodes in one look (LooksUpMany), as a cloud's listing answers."""
        return {c: [self._info(n) for n in self._clusters.get(c, [])] for c in clusters}

    async def stop(self, cluster: str) -> None:
        if self.stop_seconds:
            await anyio.sleep(self.stop_seconds)
        for node in self._clusters.get(cluster, []):
            node.cancel(None)
            node.running = False
            node.changed()
        self._save()

    def _resume(self, cluster: str) -> list[NodeInfo]:
        """The nodes of a cluster that exists, running again if stopped."""
        nodes = self._clusters[cluster]
        for node in nodes:
            if not node.running:
                node.running = True
                node.booted_at = self._clock()
                node.changed()
        self._save()
        return [self._info(n) for n in nodes]

    async def terminate(self, cluster: str) -> None:
        if self.terminate_seconds and cluster in self._clusters:
            await anyio.sleep(self.terminate_seconds)
        self._forget(cluster)
        self._lost.pop(cluster, None)

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        return 0  # nothing runs there, so nothing needs the files

    def connector(self, node: NodeInfo) -> AgentClient:
        return FakeAgentClient(node.agent_address, self._by_address.get, self.run_seconds)

    # -- helpers -------------------------------------------------------------------------

    def _forget(self, cluster: str) -> None:
        for node in self._clusters.pop(cluster, []):
            self._by_address.pop(node.address, None)
            self._infos.pop((node.address, True), None)
            self._infos.pop((node.address, False), None)
            node.running = False
            node.changed()  # long polls wake, find the node gone, and say so
        self._save()

    def _save(self) -> None:
        """Write the machines down (with a ``machines_file``): what a cloud would still hold
        if the daemon died now."""
        if self._machines_file is None:
            return
        clusters = {
            name: [{"rank": n.rank, "region": n.region, "running": n.running} for n in nodes]
            for name, nodes in self._clusters.items()
        }
        self._machines_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._machines_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"serial": self._serial, "clusters": clusters}))
        tmp.replace(self._machines_file)

    def _load(self) -> None:
        """The machines an earlier daemon left (their jobs are not kept: agents start empty).
        A file that does not read as one is taken as a cloud that lost them all: the daemon
        then finds those clusters gone, and the next write replaces it."""
        if self._machines_file is None or not self._machines_file.is_file():
            return
        try:
            saved = msgspec.json.decode(self._machines_file.read_bytes(), type=_Saved)
        except (OSError, msgspec.DecodeError):
            return
        self._serial = saved.serial + 1
        now = self._clock()
        for name, nodes in saved.clusters.items():
            made = []
            for n in nodes:
                address = f"fake://{n.region}/{name}/{self._serial}/{n.rank}"
                node = FakeNode(
                    cluster=name,
                    rank=n.rank,
                    region=n.region,
                    address=address,
                    build=self._build,
                    clock=self._clock,
                    booted_at=now,
                    running=n.running,
                )
                self._by_address[address] = node
                made.append(node)
            self._clusters[name] = made

    def _info(self, node: FakeNode) -> NodeInfo:
        """Made once per node and status: every health tick asks for every node, and an
        unchanged one is then the same object (compared at once)."""
        key = (node.address, node.running)
        info = self._infos.get(key)
        if info is None:
            info = self._infos[key] = NodeInfo(
                rank=node.rank,
                ip=f"{node.region}.{node.cluster}.{node.rank}",
                status=NodeStatus.RUNNING if node.running else NodeStatus.STOPPED,
                agent_address=node.address,
                workdir="~/sky_workdir",
                home="~",
            )
        return info


def catalog_root(home: Path) -> Path:
    """Where the fake cloud's generated catalog lives (apart from the fetched ones)."""
    return home / "fake" / "catalog"


def settings(home: Path, cfg: FakeConfig) -> dict[str, Any]:
    """The provider's keyword arguments as configured (``fake:``), whatever its nodes are;
    its catalog written for the planner."""
    write_catalog(catalog_root(home), cfg.regions)
    return dict(
        launch_seconds=cfg.launch_seconds,
        spot_launch_seconds=cfg.spot_launch_seconds,
        no_capacity_regions=cfg.no_capacity_regions,
        no_capacity_launches=cfg.no_capacity_launches,
        run_seconds=cfg.run_seconds,
        stop_seconds=cfg.stop_seconds,
        terminate_seconds=cfg.terminate_seconds,
        machines_file=home / NAME / "machines.json" if cfg.persist else None,
    )
