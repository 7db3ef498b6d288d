"""The SSH side of AWS nodes: where each is reached, its agent put there, its state read.

Node rank i is reached at its instance's public address (else private), as ``ubuntu`` with
the stix key; other nodes reach it at its private address. Under the testing-only
``STIX_TEST_SSH_HOSTS`` mapping it is the i-th listed host instead. What was reached where is
kept in the provider's records, so a restarted daemon reconnects without asking EC2.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream

from stixd.agent_client import AgentClient, AgentError, AgentUnreachable
from stixd.providers.aws.instances import Instance
from stixd.providers.aws.keys import ensure_local_key
from stixd.providers.aws.records import Records
from stixd.providers.base import Mount, NodeInfo, NodeStatus, ProvisionRequest
from stixd.providers.shared.bootstrap import BootstrapError
from stixd.providers.shared.fuse_tools import FUSE_RESOURCE
from stixd.providers.shared.ssh_nodes import (
    TEST_HOSTS_ENV,
    WORKDIR,
    bootstrap_node,
    build_of,
    pool_host,
    testing_hosts,
    wait_for_ssh,
)
from stixd.providers.shared.ssh_sync import ssh_client_args
from stixd.providers.shared.ssh_sync import sync as sync_mounts
from stixd.providers.shared.ssh_transport import SshConnection, SshError, SshSettings, SshTarget
from stixproto.errors import ProvisionError

DEFAULT_SSH_USER = "ubuntu"
HELLO_DEADLINE_S = 5.0
SELF_STOP_COMMAND = "sudo -n shutdown -h now || shutdown -h now"
"""What a node's agent runs when autostop is due and the daemon is not there to do it: the
instance stops (and stops costing). The daemon's own autostop goes through EC2 instead."""
TEST_SELF_STOP_ENV = "STIX_TEST_SELF_STOP_COMMAND"
"""Testing only, with STIX_TEST_SSH_HOSTS: what the agents run instead (never a shutdown of
the machine the tests run on); unset, they run nothing."""


class AwsNodes:
    def __init__(
        self,
        home: Path,
        env: Mapping[str, str],
        records: Records,
        settings: SshSettings,
        log: structlog.stdlib.BoundLogger,
        *,
        ssh_user: str,
        boot_within: float,
    ) -> None:
        self.home = home
        self.env = env
        self.records = records
        self.settings = settings
        self.log = log
        self.ssh_user = ssh_user
        self.boot_within = boot_within
        self._conns: dict[str, SshConnection] = {}
        self._targets: dict[str, SshTarget] = {}

    def connection(self, target: SshTarget) -> SshConnection:
        key = f"{target.user}@{target.host}:{target.port}"
        conn = self._conns.get(key)
        if conn is None:
            conn = SshConnection(target, self.settings)
            self._conns[key] = conn
        return conn

    def target(self, rank: int, inst: Instance) -> tuple[SshTarget, str]:
        """Where to SSH to the node, and the address other nodes reach it at."""
        hosts = testing_hosts(self.env)
        if hosts is not None:  # testing only: see stixd/providers/shared/ssh_nodes.py
            if rank >= len(hosts):
                raise ProvisionError(f"{TEST_HOSTS_ENV} lists {len(hosts)} host(s); no node {rank}")
            return hosts[rank], hosts[rank].host
        if inst.address is None:
            raise ProvisionError(f"AWS instance {inst.id} has no IP address")
        key, _ = ensure_local_key(self.home)
        target = SshTarget(host=inst.address, user=self.ssh_user, identity_file=str(key))
        return target, inst.private_ip or inst.address

    def node_target(self, node: NodeInfo) -> SshTarget:
        target = self._targets.get(node.ip)
        if target is None:
            rec = self.records.node_by_ip(node.ip)
            if rec is None:
                raise ProvisionError(f"no AWS node with address {node.ip} is known")
            target = SshTarget(
                host=rec["host"], port=int(rec["port"]), user=rec["user"], identity_file=rec["key"]
            )
            self._targets[node.ip] = target
        return target

    async def bootstrap(
        self, req: ProvisionRequest, ranked: list[tuple[int, Instance]]
    ) -> list[NodeInfo]:
        """An agent on every node, in parallel; what was reached where goes to the records."""
        build = build_of(req.agent_pyz)
        num_gpus = float(req.resources.get("num_gpus") or 0.0)
        nodes: dict[int, NodeInfo] = {}
        errors: dict[int, SshError | BootstrapError] = {}

        async def one(rank: int, inst: Instance) -> None:
            target, node_ip = self.target(rank, inst)
            conn = self.connection(target)
            try:
                await wait_for_ssh(conn, self.boot_within)
                node = await bootstrap_node(
                    conn,
                    cluster=req.cluster,
                    rank=rank,
                    node_ip=node_ip,
                    pyz=req.agent_pyz,
                    build=build,
                    num_gpus=num_gpus,
                    log=self.log,
                    fuse=bool(req.resources.get(FUSE_RESOURCE)),
                )
            except (SshError, BootstrapError) as exc:
                errors[rank] = exc
                return
            self._targets[node_ip] = target
            await self._arm_self_stop(node, rank)
            self.records.set_node(
                req.cluster,
                rank,
                ip=node_ip,
                host=target.host,
                port=target.port,
                user=target.user,
                key=target.identity_file,
                socket=node.agent_address,
                home=node.home,
                instance=inst.id,
            )
            nodes[rank] = node

        async with anyio.create_task_group() as tg:
            for rank, inst in ranked:
                tg.start_soon(one, rank, inst)
        if errors:
            detail = "; ".join(f"rank {r}: {errors[r]}" for r in sorted(errors))
            raise ProvisionError(f"{req.cluster} on AWS: the agent could not start: {detail}")
        return [nodes[r] for r in sorted(nodes)]

    def self_stop_command(self) -> str | None:
        if testing_hosts(self.env) is not None:
            return self.env.get(TEST_SELF_STOP_ENV) or None
        return SELF_STOP_COMMAND

    async def _arm_self_stop(self, node: NodeInfo, rank: int) -> None:
        """Tell the node's agent how to stop its machine when autostop is due (the dead-man's
        switch); an agent that cannot take it yet is logged, the daemon's autostop remains."""
        try:
            await self.connector(node).call(
                "self_stop", deadline=HELLO_DEADLINE_S, command=self.self_stop_command()
            )
        except (AgentUnreachable, AgentError) as exc:
            self.log.warning("aws_self_stop_not_set", rank=rank, error=str(exc))

    async def probe(self, inst: Instance, rec: Mapping[str, Any]) -> tuple[NodeInfo, str | None]:
        """The node of a live instance as it is now, and why it cannot be reached (if so).

        RUNNING when its agent answers, STOPPED when the instance is stopped or answers
        without an agent, UNREACHABLE when the machine does not answer (or is still pending).
        """
        rank = inst.rank if inst.rank is not None else -1
        node = record_node(rank, rec, inst.private_ip or "", NodeStatus.STOPPED)
        if inst.state == "pending":
            return _with(node, NodeStatus.UNREACHABLE), f"instance {inst.id} is still pending"
        if inst.state != "running" or not rec.get("socket"):
            return node, None
        try:
            await self.connection(self.node_target(node)).connection()
        except SshError as exc:  # the machine does not answer: not the same as no agent
            return _with(node, NodeStatus.UNREACHABLE), str(exc)
        try:
            hello = await self.connector(node).call("hello", deadline=HELLO_DEADLINE_S)
        except AgentUnreachable:
            return node, None
        pid = hello.get("pid")
        return _with(node, NodeStatus.RUNNING, pid if isinstance(pid, int) else None), None

    async def readdress(self, cluster: str, inst: Instance) -> None:
        """Follow a running node's instance to a new address (a stop and start outside stix
        gives it a new public IP): the records and the connection move there."""
        rec = ((self.records.get(cluster) or {}).get("nodes") or {}).get(str(inst.rank))
        if not rec or inst.rank is None or inst.state != "running" or inst.address is None:
            return
        if testing_hosts(self.env) is not None or rec.get("host") == inst.address:
            return
        old = f"{rec.get('user')}@{rec.get('host')}:{rec.get('port')}"
        self.log.info("aws_node_moved", cluster=cluster, rank=inst.rank, host=inst.address)
        node_ip = inst.private_ip or inst.address
        self.records.set_node(cluster, inst.rank, host=inst.address, ip=node_ip)
        self._targets.pop(str(rec.get("ip") or ""), None)
        conn = self._conns.pop(old, None)
        if conn is not None:
            await conn.close()

    async def forget(self, cluster: str) -> None:
        """Close the connections to the cluster's nodes (they are stopping or going away)."""
        for rec in ((self.records.get(cluster) or {}).get("nodes") or {}).values():
            conn = self._conns.pop(f"{rec.get('user')}@{rec.get('host')}:{rec.get('port')}", None)
            self._targets.pop(rec.get("ip", ""), None)
            if conn is not None:
                await conn.close()

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        target = self.node_target(node)
        return await sync_mounts(self.connection(target), pool_host(target), node, mounts)

    def shell_command(
        self, node: NodeInfo, command: str | None
    ) -> tuple[list[str], str | None, dict[str, str]]:
        target = self.node_target(node)
        remote = command if command is not None else "cd ~/sky_workdir 2>/dev/null; exec $SHELL -l"
        tty = "-t" if command is None else "-T"
        args = ssh_client_args(pool_host(target))
        return ["ssh", tty, *args, f"{target.user}@{target.host}", remote], None, {}

    def connector(self, node: NodeInfo) -> AgentClient:
        """A node no record knows (its cluster terminated, its record lost) has no agent to
        reach: its calls fail as unreachable, as on every provider, rather than this call."""
        try:
            conn = self.connection(self.node_target(node))
        except ProvisionError as exc:
            return _unreachable(f"rank {node.rank}@{node.ip}", exc.message)
        return conn.agent_client(node.agent_address, f"rank {node.rank}@{conn.host}")


def _unreachable(name: str, why: str) -> AgentClient:
    async def refuse() -> ByteStream:
        raise OSError(why)

    return AgentClient(refuse, name)


def record_node(rank: int, rec: Mapping[str, Any], ip: str, status: NodeStatus) -> NodeInfo:
    """The node as the records know it (agent socket, home), in ``status``."""
    home = rec.get("home") or "~"
    return NodeInfo(
        rank, rec.get("ip") or ip, status, rec.get("socket") or "", f"{home}/{WORKDIR}", home
    )


def _with(node: NodeInfo, status: NodeStatus, pid: int | None = None) -> NodeInfo:
    return NodeInfo(node.rank, node.ip, status, node.agent_address, node.workdir, node.home, pid)
