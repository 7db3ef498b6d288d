"""The ``aws`` provider: clusters of EC2 instances, each node given an agent over SSH.

A launch looks the cluster's instances up by tag before it creates anything, so a retry (after
a crash, a timeout, a lost answer) finds what the first try made; it then makes what is missing
in the first zone that has capacity (one ``run_instances`` for all nodes: one placement, all or
nothing), tags ranks, waits until they run, and bootstraps the agents with the SSH provider's
code. Capacity and quota errors carry what to block, for the launcher's failover.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import anyio
import structlog

from stixd.agent_client import AgentClient
from stixd.planner.catalog import SCHEMA, cache_dir
from stixd.planner.zone_names import remember_zone_names
from stixd.providers.abilities import Leak, LeakPolicy, query_each
from stixd.providers.aws import instances
from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.config import AwsConfig
from stixd.providers.aws.credentials import CredentialsMissing, Stamp, files, resolve, stamp
from stixd.providers.aws.errors import AwsCapacityError, Where
from stixd.providers.aws.instances import Instance, RunSpec
from stixd.providers.aws.keys import ensure_key_pair, ensure_local_key
from stixd.providers.aws.leaks import YOUNG_S, clean_leaks, find_leaks
from stixd.providers.aws.listing import ClusterListing
from stixd.providers.aws.network import (
    Zone,
    delete_group,
    ensure_group,
    find_group,
    find_vpc,
    open_group_ports,
    pick_zones,
    subnet_for,
    zones,
)
from stixd.providers.aws.nodes import DEFAULT_SSH_USER, AwsNodes
from stixd.providers.aws.observe import observe
from stixd.providers.aws.records import Records
from stixd.providers.base import (
    CheckResult,
    Machine,
    Mount,
    NodeInfo,
    NodeLoss,
    ProvisionRequest,
)
from stixd.providers.shared.ssh_transport import SshSettings
from stixproto import names
from stixproto.errors import ProvisionError

DEFAULT_INSTANCE_TYPE = "m6i.large"
BOOT_WITHIN_S = 600.0
STOP_WITHIN_S = 600.0
LISTING_DELAY_S = 300.0
"""How long after a create an instance may still be missing from tag look-ups."""


class AwsProvider:
    name = "aws"

    def __init__(
        self,
        home: Path,
        env: Mapping[str, str] | None = None,
        settings: SshSettings | None = None,
        *,
        log: structlog.stdlib.BoundLogger | None = None,
        ssh_user: str = DEFAULT_SSH_USER,
        vpc_name: str | None = None,
        boot_within: float = BOOT_WITHIN_S,
        config: AwsConfig | None = None,
    ) -> None:
        self.config = config or AwsConfig()
        self._creds_seen: tuple[Stamp, str | None] | None = None
        """The credential files' stamp when last read, and what was missing then."""
        self.home = home
        self.env = dict(os.environ if env is None else env)
        self.log = (log or structlog.get_logger()).bind(provider="aws")
        self.records = Records(home)
        self.user = getpass.getuser()
        self.boot_within = boot_within
        self.vpc_name = vpc_name
        self.nodes = AwsNodes(
            home,
            self.env,
            self.records,
            settings or SshSettings(),
            self.log,
            ssh_user=ssh_user,
            boot_within=boot_within,
        )
        self.last_error: dict[str, dict[int, str]] = {}
        """Per cluster, per rank: why the last query could not reach that node."""
        self.lost: dict[str, list[NodeLoss]] = {}
        """Per cluster: the nodes the last query found without a running instance."""
        self.seen: dict[str, list[Machine]] = {}
        """Per cluster: its live machines as the last query found them."""
        self._ec2: Ec2Clients | None = None
        self._listing: ClusterListing | None = None

    # -- clients and connections ---------------------------------------------------------

    def ec2(self) -> Ec2Clients:
        if self._ec2 is None:
            self._ec2 = Ec2Clients(resolve(self.env), self.log)
        return self._ec2

    def listing(self) -> ClusterListing:
        """Where clusters are looked up when nothing is being made: look-ups of several
        clusters that come together (health checks, a restart, a refresh) share EC2 calls."""
        if self._listing is None:
            self._listing = ClusterListing(self.ec2(), self.user)
        return self._listing

    def credentials_problem(self) -> str | None:
        """What is missing for AWS to be usable, read locally (no network): None if nothing.

        Asked before every plan; the files are parsed again only when one of them changed."""
        now = stamp(files(self.env))
        if self._creds_seen is None or self._creds_seen[0] != now:
            try:
                resolve(self.env)
            except CredentialsMissing as exc:
                self._creds_seen = (now, exc.message)
            else:
                self._creds_seen = (now, None)
        return self._creds_seen[1]

    async def aclose(self) -> None:
        await self.nodes.aclose()
        if self._ec2 is not None:
            await self._ec2.aclose()

    # -- Provider ------------------------------------------------------------------------

    async def check(self) -> CheckResult:
        try:
            ec2 = self.ec2()
        except CredentialsMissing as exc:
            return CheckResult(False, exc.message)
        creds = ec2.creds
        try:
            with anyio.fail_after(30):
                found = await ec2.call(Where(creds.region), "describe_availability_zones")
        except ProvisionError as exc:
            return CheckResult(False, f"credentials from {creds.source} do not work: {exc.message}")
        except TimeoutError:
            return CheckResult(False, f"AWS did not answer within 30 s (region {creds.region})")
        self._remember_zone_names(
            [
                Zone(str(z["ZoneName"]), str(z["ZoneId"]))
                for z in found.get("AvailabilityZones") or []
                if z.get("ZoneName") and z.get("ZoneId")
            ]
        )
        endpoint = f", endpoint {creds.endpoint_url}" if creds.endpoint_url else ""
        return CheckResult(
            True, f"credentials from {creds.source}; region {creds.region}{endpoint}"
        )

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        """Idempotent: the cluster's instances are looked up by tag before any is made."""
        r, ec2 = req.resources, self.ec2()
        region = str(r.get("region") or ec2.creds.region)
        self.records.update(req.cluster, region=region)  # before anything exists to be found
        found = (await instances.find(ec2, region, req.cluster, self.user))[: req.num_nodes]
        stopping = [i.id for i in found if i.state == "stopping"]
        if stopping:
            await instances.wait_for(ec2, region, stopping, "stopped", STOP_WITHIN_S)
        await instances.start(
            ec2, region, [i.id for i in found if i.state in ("stopped", "stopping")]
        )
        missing = req.num_nodes - len(found)
        if missing > 0:
            try:
                found += await self._create(req, region, found, missing)
            except ProvisionError:
                if not found:
                    await self._abandon(req.cluster, region)
                raise
        ranked = await self._rank(req.cluster, region, found, req.num_nodes)
        ids = [i.id for _, i in ranked]
        running = {
            i.id: i for i in await instances.wait_for(ec2, region, ids, "running", self.boot_within)
        }
        return await self.nodes.bootstrap(req, [(rank, running[i.id]) for rank, i in ranked])

    async def _create(
        self, req: ProvisionRequest, region: str, found: list[Instance], count: int
    ) -> list[Instance]:
        r, ec2 = req.resources, self.ec2()
        itype = str(r.get("instance_type") or DEFAULT_INSTANCE_TYPE)
        spot = bool(r.get("use_spot"))
        instances.disk_settings(r.get("disk_tier"))  # a bad tier fails before anything is made
        base_tags = instances.tags(req.cluster, self.user)
        _, public_key = ensure_local_key(self.home)
        key_name = await ensure_key_pair(ec2, region, public_key, base_tags[1:])
        vpc = await find_vpc(ec2, region, self.vpc_name)
        self.records.update(req.cluster, vpc=vpc)
        ports = [int(p) for p in r.get("ports") or []]
        group = await ensure_group(ec2, region, vpc, req.cluster, ports, base_tags)
        image, root = await instances.resolve_image(ec2, region, r.get("image_id"))
        disk = int(r.get("disk_size") or instances.DEFAULT_DISK_GB)
        wanted = [found[0].zone] if found else [str(z) for z in r.get("zones") or []]
        failures: list[str] = []
        last: AwsCapacityError | None = None
        known = await zones(ec2, region)
        self._remember_zone_names(known)
        for zone in pick_zones(known, wanted, region):
            where = Where(region, zone.name, itype, spot)
            token = instances.client_token(
                req.cluster, str(r.get("launch_id") or ""), zone.name, [len(found), count]
            )
            try:
                subnet = await subnet_for(ec2, region, vpc, zone)
                spec = RunSpec(
                    image, root, itype, subnet, group, key_name, disk, spot, r.get("disk_tier")
                )
                made = await instances.run(
                    ec2, where, spec, count=count, tag_list=base_tags, token=token
                )
            except AwsCapacityError as exc:
                self.log.warning("aws_no_capacity", zone=zone.name, code=exc.aws_code)
                if exc.block.zone is None:
                    raise  # a quota or an unknown type: no other zone of the region helps
                failures.append(f"{zone.name}: {exc.aws_code}")
                last = exc
                continue
            self.log.info(
                "aws_created", cluster=req.cluster, zone=zone.name, ids=[i.id for i in made]
            )
            self.records.update(req.cluster, created=[i.id for i in made], created_at=time.time())
            return made
        assert last is not None
        raise AwsCapacityError(
            last.aws_code,
            f"no zone of AWS {region} could take {count}x {itype}: {'; '.join(failures)}",
            Where(region, None, itype, spot).block("region"),
        )

    def _remember_zone_names(self, known: Sequence[Zone]) -> None:
        """This account's zone names, for the plans that show the catalog's zone IDs."""
        if not self.home.is_dir():  # a provider made without a stix home keeps nothing
            return
        try:
            remember_zone_names(
                cache_dir(self.home) / SCHEMA / "aws", [(z.name, z.id) for z in known]
            )
        except OSError as exc:  # a plan shows IDs then; the launch goes on
            self.log.warning("zone_names_not_saved", error=str(exc))

    async def _abandon(self, cluster: str, region: str) -> None:
        """After a failed first launch: remove what it made (its group), unless an instance of
        it exists after all (then the next launch or down will find and use it)."""
        with anyio.CancelScope(shield=True):
            try:
                if await instances.find(self.ec2(), region, cluster, self.user):
                    return
                vpc = (self.records.get(cluster) or {}).get("vpc")
                if vpc:
                    await delete_group(self.ec2(), region, str(vpc), cluster)
                self.records.drop(cluster)
            except ProvisionError as exc:
                self.log.warning("aws_abandon_failed", cluster=cluster, error=exc.message)

    async def _rank(
        self, cluster: str, region: str, found: list[Instance], n: int
    ) -> list[tuple[int, Instance]]:
        taken = {i.rank for i in found if i.rank is not None and i.rank < n}
        free = iter(sorted(set(range(n)) - taken))
        ranked, new = [], []
        for inst in found:
            if inst.rank is not None and inst.rank < n:
                ranked.append((inst.rank, inst))
            else:
                pair = (next(free), inst)
                ranked.append(pair)
                new.append(pair)
        await instances.tag_ranks(self.ec2(), region, cluster, self.user, [(i, r) for r, i in new])
        return sorted(ranked, key=lambda p: p[0])

    async def _alive(self, cluster: str) -> tuple[str, list[Instance]] | None:
        """(region, instances) of the cluster; instances made moments ago count even when the
        tag look-up does not list them yet."""
        entry = self.records.get(cluster)
        if entry is None or not entry.get("region"):
            return None
        region, ec2 = str(entry["region"]), self.ec2()
        found = await self.listing().find(region, cluster)
        if time.time() - float(entry.get("created_at") or 0) < LISTING_DELAY_S:
            listed = {i.id for i in found}
            unlisted = [i for i in entry.get("created") or [] if i not in listed]
            if unlisted:
                extra = await instances.by_ids(ec2, region, unlisted)
                found += [i for i in extra if i.state in instances.ALIVE]
        return region, found

    async def query(self, cluster: str) -> list[NodeInfo]:
        """The nodes as they are now. A node whose instance EC2 no longer runs (stopped or
        terminated, by a spot interruption or from outside stix) is named in ``lost_nodes``,
        with EC2's reason; while others are alive it is listed UNREACHABLE. What each live
        machine is now (type, disk, address) is in ``machines``."""
        alive = await self._alive(cluster)
        if alive is None:
            self.lost.pop(cluster, None)
            self.seen.pop(cluster, None)
            return []
        region, found = alive
        seen = await observe(
            self.ec2(), self.listing(), self.nodes, cluster, region, found, self._new(cluster)
        )
        self.last_error[cluster] = seen.errors
        self.lost[cluster] = seen.lost
        self.seen[cluster] = seen.machines
        return seen.nodes

    async def query_many(self, clusters: Sequence[str]) -> dict[str, list[NodeInfo]]:
        """``query`` of every cluster at once (LooksUpMany): made together, their listings,
        disks and spot notices share one EC2 call of each kind per region (``listing``)."""

        def failed(cluster: str, exc: ProvisionError) -> None:
            self.log.warning("aws_look_failed", cluster=cluster, error=exc.message)

        return await query_each(self, clusters, None, failed)

    def _new(self, cluster: str) -> list[str]:
        """The cluster's instances made so recently that EC2 may not list them yet."""
        entry = self.records.get(cluster) or {}
        if time.time() - float(entry.get("created_at") or 0) >= LISTING_DELAY_S:
            return []
        return [str(i) for i in entry.get("created") or []]

    def node_errors(self, cluster: str) -> dict[int, str]:
        """Per rank: why the last ``query`` could not reach that node."""
        return dict(self.last_error.get(cluster, {}))

    def lost_nodes(self, cluster: str) -> list[NodeLoss]:
        """The nodes the last ``query`` found without a running instance, and why."""
        return list(self.lost.get(cluster, []))

    def machines(self, cluster: str) -> list[Machine]:
        """The live nodes' machines as the last ``query`` found them."""
        return list(self.seen.get(cluster, []))

    async def stop(self, cluster: str) -> None:
        alive = await self._alive(cluster)
        if alive is None:
            return
        region, found = alive
        spot = [i.id for i in found if i.spot]
        if spot:
            raise ProvisionError(
                f"cluster {cluster} runs on spot instances, which AWS cannot stop; "
                f"use `{names.command('down', cluster)}`"
            )
        await self.nodes.forget(cluster)
        ids = [i.id for i in found if i.state != "stopped"]
        await instances.stop(self.ec2(), region, ids)
        await instances.wait_for(self.ec2(), region, ids, "stopped", STOP_WITHIN_S)

    async def terminate(self, cluster: str) -> None:
        """Terminate every instance of the cluster, then its security group, then the record."""
        alive = await self._alive(cluster)
        if alive is None:
            return
        region, found = alive
        await self.nodes.forget(cluster)
        ids = [i.id for i in found]
        await instances.terminate(self.ec2(), region, ids)
        await instances.wait_for(self.ec2(), region, ids, "terminated", STOP_WITHIN_S)
        vpc = (self.records.get(cluster) or {}).get("vpc")
        if vpc:
            await delete_group(self.ec2(), region, str(vpc), cluster)
        self.records.drop(cluster)

    def regions(self) -> list[str]:
        """The regions stix knows of here: the default one and those of recorded clusters."""
        found = {str(e["region"]) for e in self.records.read().values() if e.get("region")}
        problem = self.credentials_problem()
        if problem is None:
            found.add(self.ec2().creds.region)
        return sorted(found)

    def leak_policy(self) -> LeakPolicy:
        cfg = self.config
        return LeakPolicy(
            check_every_s=cfg.leak_check_minutes * 60,
            min_age_s=cfg.leak_min_age_minutes * 60,
            terminate=cfg.terminate_leaks,
        )

    async def leaks(
        self, regions: Sequence[str], live: Collection[str], young_s: float = YOUNG_S
    ) -> list[Leak]:
        """This user's stix instances and groups in ``regions`` that no cluster of ``live``
        owns (the daemon's non-terminated AWS clusters); instances younger than ``young_s``
        are left out (their launch may still be writing its record)."""
        return await find_leaks(self.ec2(), self.user, regions, live, young_s=young_s)

    async def clean_leaks(self, leaks: Sequence[Leak]) -> None:
        await clean_leaks(self.ec2(), leaks)
        for cluster in {leak.cluster for leak in leaks}:
            self.records.drop(cluster)

    def reachable_address(self, cluster: str, node: NodeInfo) -> str:
        """Where this machine reached the node (its public address where it has one; ``ip``
        is the private one its cluster's other nodes use): a replica's port is found there."""
        nodes = (self.records.get(cluster) or {}).get("nodes") or {}
        return str((nodes.get(str(node.rank)) or {}).get("host") or node.ip)

    async def open_ports(self, cluster: str, ports: list[int]) -> None:
        """The ports open to the world in the cluster's security group (a launch opens the
        task's when it makes the group; this opens them on a cluster made before)."""
        entry = self.records.get(cluster) or {}
        region, vpc = entry.get("region"), entry.get("vpc")
        if not region or not vpc:
            raise ProvisionError(f"cluster {cluster} has no AWS network yet")
        group = await find_group(self.ec2(), str(region), str(vpc), cluster)
        if group is None:
            raise ProvisionError(f"cluster {cluster} has no security group in {region}")
        await open_group_ports(self.ec2(), str(region), group, ports)

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        return await self.nodes.sync(node, mounts)

    def shell_command(
        self, node: NodeInfo, command: str | None
    ) -> tuple[list[str], str | None, dict[str, str]]:
        """What `stixctl ssh CLUSTER` runs on this machine: the ssh client into the node."""
        return self.nodes.shell_command(node, command)

    def connector(self, node: NodeInfo) -> AgentClient:
        return self.nodes.connector(node)
