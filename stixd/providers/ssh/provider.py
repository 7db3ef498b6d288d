"""The ``ssh`` provider: clusters on machines the user already has, listed in node pools.

A launch takes free hosts of the named pool (``resources["pool"]``), records them in the
allocation file before touching any host, then puts an agent on each in parallel over the one
``SshConnection`` the provider keeps per host. Nothing is created or destroyed at a cloud: stop
shuts the agents down, terminate also removes what stix left in the remote home and releases
the hosts for the next cluster. Ports are not opened: the hosts sit on the user's own
network, reachable as that network allows (stix controls no firewall there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import anyio
import structlog

from stixd.agent_bundle import build_id
from stixd.agent_client import AgentClient, AgentUnreachable
from stixd.providers.abilities import HostReport, PoolHolding
from stixd.providers.base import CheckResult, Mount, NodeInfo, NodeStatus, ProvisionRequest
from stixd.providers.shared.bootstrap import BootstrapError, ensure_agent, remote_node_dir
from stixd.providers.shared.fuse_mounts import SHUTDOWN_DEADLINE_S
from stixd.providers.shared.fuse_tools import FUSE_RESOURCE, ensure_fuse_tools
from stixd.providers.shared.ssh_hosts import PoolHost
from stixd.providers.shared.ssh_sync import Method, Walks, ssh_client_args
from stixd.providers.shared.ssh_sync import sync as sync_mounts
from stixd.providers.shared.ssh_transport import SshConnection, SshError, SshSettings, quote
from stixd.providers.ssh.leftovers import Leftover, Leftovers, reap
from stixd.providers.ssh.pools import (
    POOLS_FILE,
    Allocations,
    HeldHost,
    PoolError,
    SshPool,
    load_pools,
)
from stixd.providers.ssh.volumes import HoldsVolumes
from stixproto.errors import InvalidConfig, ProvisionError
from stixproto.paths import PathOutsideParent

HELLO_DEADLINE_S = 5.0
STOP_WITHIN_S = 10.0
WORKDIR = "sky_workdir"

_PROBE = """\
printf 'home=%s\\n' "$HOME"
if command -v python3 >/dev/null 2>&1; then
  python3 - <<'PY'
import glob, os, socket, sys
print("python=%d.%d.%d" % sys.version_info[:3])
live = []
for path in sorted(glob.glob(os.path.expanduser("~/.stix/nodes/*/agent.sock"))):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(1)
    try:
        s.connect(path)
        live.append(os.path.basename(os.path.dirname(path)))
    except OSError:
        pass
    finally:
        s.close()
print("agents=" + ",".join(live))
PY
else
  echo python=
fi
df -Pk "$HOME" | awk 'NR==2 {print "free_kb=" $4}'
"""


class SshLaunchError(ProvisionError):
    """Some hosts of a launch could not get an agent; ``retryable`` if all may recover."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class SshProvider(HoldsVolumes):
    name = "ssh"

    def __init__(
        self,
        home: Path,
        pools: dict[str, SshPool],
        settings: SshSettings | None = None,
        *,
        known_hosts: str | None = None,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.home = home
        self.log = (log or structlog.get_logger()).bind(provider="ssh")
        self.pools = pools
        self._pools_stamp: int | None = -1
        """mtime of the pools' file when ``pool_sizes`` last read it; -1: never."""
        self.settings = settings or SshSettings()
        self.known_hosts = known_hosts
        self.allocations = Allocations(home)
        self.leftovers = Leftovers(home)
        self.last_error: dict[str, dict[int, str]] = {}
        """Per cluster, per rank: why the last query or terminate could not reach that host."""
        self._conns: dict[str, SshConnection] = {}
        self._stale: list[SshConnection] = []
        """Connections made with credentials the pool file no longer gives; closed soon."""
        self._walks = Walks()

    # -- hosts and connections -----------------------------------------------------------

    def _pool(self, name: Any) -> SshPool:
        if not isinstance(name, str) or not name:
            raise ProvisionError("the ssh provider needs a pool: launch with --infra ssh/POOL")
        pool = self.pools.get(name)
        if pool is None:
            known = ", ".join(sorted(self.pools)) or "none"
            raise ProvisionError(f"no ssh pool {name} in {POOLS_FILE} (pools: {known})")
        return pool

    def _host(self, key: str) -> PoolHost:
        for pool in self.pools.values():
            for host in pool.hosts:
                if host.key == key:
                    return host
        raise ProvisionError(f"host {key} is in {self.allocations.path} but in no ssh pool")

    def _host_of(self, node: NodeInfo) -> PoolHost:
        if node.address:
            return self._host(node.address)
        for pool in self.pools.values():  # a node recorded before nodes carried an address
            for host in pool.hosts:
                if host.ip == node.ip:
                    return host
        raise ProvisionError(f"no ssh pool lists a host {node.ip}")

    def reachable_address(self, cluster: str, node: NodeInfo) -> str:
        """The host's address as its pool lists it: a service's replica is found there. A host
        reached through a jump host or a proxy command has none this machine reaches."""
        try:
            host = self._host_of(node)
        except ProvisionError:  # no longer listed: its address as recorded
            return node.ip
        if host.jump is not None or host.proxy_command:
            via = "a jump host" if host.jump is not None else "a proxy command"
            raise ProvisionError(
                f"ssh host {host.ip} is reached through {via}: its ports are not reachable "
                "from this machine, so it cannot serve; list hosts this machine reaches directly"
            )
        return host.ip

    def shell_command(
        self, node: NodeInfo, command: str | None
    ) -> tuple[list[str], str | None, dict[str, str]]:
        """What `stixctl ssh CLUSTER` runs on this machine: the ssh client into the node."""
        host = self._host_of(node)
        if host.identity_file is None:
            raise ProvisionError(
                f"host {host.ip} logs in with a password; `stixctl ssh` needs an identity_file"
            )
        remote = command if command is not None else "cd ~/sky_workdir 2>/dev/null; exec $SHELL -l"
        tty = "-t" if command is None else "-T"
        argv = ["ssh", tty, *ssh_client_args(host), f"{host.user}@{host.ip}", remote]
        return argv, None, {}

    # -- pools (HasPools) ----------------------------------------------------------------

    def pool_sizes(self) -> dict[str, int]:
        """Hosts per pool, re-reading the pools' file when it changed since the last call."""
        path = self.home / POOLS_FILE
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp != self._pools_stamp:
            try:
                self.pools = load_pools(self.home)
            except PoolError as exc:
                raise InvalidConfig(str(exc)) from None
            self._pools_stamp = stamp
        return {name: len(pool.hosts) for name, pool in self.pools.items()}

    def holdings(self) -> dict[str, PoolHolding]:
        return {
            cluster: PoolHolding(holding.pool, tuple(h.host for h in holding.hosts))
            for cluster, holding in self.allocations.read().items()
        }

    def node_errors(self, cluster: str) -> dict[int, str]:
        """Per rank: why the last ``query`` or ``terminate`` could not reach that host."""
        return dict(self.last_error.get(cluster, {}))

    def connection(self, host: PoolHost) -> SshConnection:
        """The one connection to ``host``; hosts behind one jump host share the tunnel to it."""
        target = host.target(self.known_hosts)
        conn = self._conns.get(host.key)
        if conn is not None and conn.target != target:  # the pool file changed its login
            self._stale.append(self._conns.pop(host.key))
            conn = None
        if conn is None:
            via = None
            if target.jump is not None:
                jump_key = f"jump {host.jump}"
                via = self._conns.get(jump_key)
                if via is None:
                    via = self._conns[jump_key] = SshConnection(target.jump, self.settings)
            conn = SshConnection(target, self.settings, via=via)
            self._conns[host.key] = conn
        return conn

    def _held(self, cluster: str) -> list[tuple[int, PoolHost, HeldHost]]:
        holding = self.allocations.read().get(cluster)
        if holding is None:
            return []
        return [(rank, self._host(h.host), h) for rank, h in enumerate(holding.hosts)]

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()
        await self._close_stale()

    async def _close_stale(self) -> None:
        stale, self._stale = self._stale, []
        for conn in stale:
            await conn.close()

    # -- Provider ------------------------------------------------------------------------

    async def check(self) -> CheckResult:
        if not self.pools:
            return CheckResult(False, f"no SSH node pools: list your machines in {POOLS_FILE}")
        pools = ", ".join(f"{p.name} ({len(p.hosts)} hosts)" for p in self.pools.values())
        return CheckResult(True, f"SSH node pools: {pools}")

    async def probe_pool(self, pool: str) -> list[HostReport]:
        """Each host of ``pool`` on a fresh connection: one bad host never hides the others."""
        hosts = self._pool(pool).hosts
        reports: list[HostReport | None] = [None] * len(hosts)

        async def one(i: int, host: PoolHost) -> None:
            reports[i] = await self._probe_host(host)

        async with anyio.create_task_group() as tg:
            for i, host in enumerate(hosts):
                tg.start_soon(one, i, host)
        return [r for r in reports if r is not None]

    async def _probe_host(self, host: PoolHost) -> HostReport:
        conn = SshConnection(host.target(self.known_hosts), self.settings)
        try:
            status, out, err = await conn.run(_PROBE, timeout=self.settings.connect_timeout + 20)
        except SshError as exc:
            return HostReport(host.key, reachable=False, error=str(exc))
        finally:
            await conn.close()
        facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        python = facts.get("python") or None
        free_kb = facts.get("free_kb", "")
        error = None
        if python is None:
            error = f"host {host.key}: python3 is not installed; stix needs it on every node"
        elif status != 0:
            error = f"host {host.key}: the probe failed: {err.strip()[-200:]}"
        return HostReport(
            host.key,
            reachable=True,
            python=python,
            free_bytes=int(free_kb) * 1024 if free_kb.isdigit() else None,
            agents=tuple(a for a in facts.get("agents", "").split(",") if a),
            error=error,
        )

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        """Idempotent: a cluster holding hosts gets the same ones, in the same rank order."""
        await self._close_stale()
        # a launch retried until up sees hosts added since its first round (a broken file:
        # the pools as last read; new launches are refused with its error by the planner)
        with contextlib.suppress(InvalidConfig):
            self.pool_sizes()
        pool = self._pool(req.resources.get("pool"))
        hosts = await anyio.to_thread.run_sync(
            self.allocations.take, req.cluster, pool, req.num_nodes
        )
        build = _build_of(req.agent_pyz)
        num_gpus = float(req.resources.get("num_gpus") or 0.0)
        nodes: dict[int, NodeInfo] = {}
        errors: dict[int, SshError | BootstrapError] = {}

        async def one(rank: int, host: PoolHost) -> None:
            conn = self.connection(host)
            began = time.monotonic()
            try:
                await conn.connection()
                connected = time.monotonic()
                await reap(conn, host.key, self.leftovers, self.log)
                ep = await ensure_agent(
                    conn,
                    cluster=req.cluster,
                    rank=rank,
                    node_ip=host.ip,
                    pyz=req.agent_pyz,
                    build=build,
                    num_gpus=num_gpus,
                )
                workdir = f"{ep.home}/{WORKDIR}"
                await conn.run(f"mkdir -p {quote(workdir)}", timeout=30)
                if req.resources.get(FUSE_RESOURCE):  # the task mounts a bucket
                    installed = await ensure_fuse_tools(conn, allowed=pool.install_packages)
                    if installed:
                        self.log.info("ssh_fuse_installed", host=conn.host, command=installed)
            except (SshError, BootstrapError) as exc:
                errors[rank] = exc
                return
            self.log.info(
                "ssh_node_ready",
                cluster=req.cluster,
                rank=rank,
                host=conn.host,
                connect_s=round(connected - began, 4),
                **{f"{phase}_s": s for phase, s in ep.phases.items()},
                total_s=round(time.monotonic() - began, 4),
                started=ep.started,
            )
            await anyio.to_thread.run_sync(
                self.allocations.record, req.cluster, rank, ep.home, ep.socket_path
            )
            nodes[rank] = NodeInfo(
                rank=rank,
                ip=host.ip,
                status=NodeStatus.RUNNING,
                agent_address=ep.socket_path,
                workdir=workdir,
                home=ep.home,
                pid=ep.pid,
                address=host.key,
            )

        async with anyio.create_task_group() as tg:
            for rank, host in enumerate(hosts):
                tg.start_soon(one, rank, host)
        if errors:
            detail = "; ".join(f"rank {r}: {errors[r]}" for r in sorted(errors))
            raise SshLaunchError(
                f"{req.cluster} on ssh pool {pool.name}: {detail}",
                retryable=all(e.retryable for e in errors.values()),
            )
        return [nodes[r] for r in sorted(nodes)]

    async def query(self, cluster: str) -> list[NodeInfo]:
        """RUNNING where the agent answers, STOPPED where the host answers without one, and
        UNREACHABLE (the reason in last_error) where the host could not be reached at all."""
        await self._close_stale()
        held = await anyio.to_thread.run_sync(self._held, cluster)
        nodes: dict[int, NodeInfo] = {}
        errors: dict[int, str] = {}

        async def one(rank: int, host: PoolHost, h: HeldHost) -> None:
            home = h.home or "~"
            stopped = NodeInfo(
                rank,
                host.ip,
                NodeStatus.STOPPED,
                h.socket or "",
                f"{home}/{WORKDIR}",
                home,
                address=host.key,
            )
            nodes[rank] = stopped
            conn = self.connection(host)
            try:
                await conn.connection()
            except SshError as exc:
                errors[rank] = str(exc)
                nodes[rank] = dataclasses.replace(stopped, status=NodeStatus.UNREACHABLE)
                return
            if h.socket is None:
                return
            try:
                hello = await conn.agent_client(h.socket).call("hello", deadline=HELLO_DEADLINE_S)
            except AgentUnreachable:
                return
            pid = hello.get("pid")
            nodes[rank] = dataclasses.replace(
                stopped, status=NodeStatus.RUNNING, pid=pid if isinstance(pid, int) else None
            )

        async with anyio.create_task_group() as tg:
            for rank, host, h in held:
                tg.start_soon(one, rank, host, h)
        self.last_error[cluster] = errors
        return [nodes[r] for r in sorted(nodes)]

    async def stop(self, cluster: str) -> None:
        for node in await self.query(cluster):
            if node.status is NodeStatus.RUNNING:
                with contextlib.suppress(AgentUnreachable):
                    await self.connector(node).call(
                        "shutdown", deadline=SHUTDOWN_DEADLINE_S, kill_jobs=True
                    )
        # the agent replies before it exits: wait until none answers
        with anyio.move_on_after(STOP_WITHIN_S):
            while any(n.status is NodeStatus.RUNNING for n in await self.query(cluster)):
                await anyio.sleep(0.1)

    async def terminate(self, cluster: str) -> None:
        """Stop, clean each reachable host, release every host (unreachable ones are named in
        last_error: stix may have left files there)."""
        await self.stop(cluster)
        held = await anyio.to_thread.run_sync(self._held, cluster)
        errors: dict[int, str] = {}

        async def clean(rank: int, host: PoolHost, h: HeldHost) -> None:
            if h.home is None:
                return
            paths = [f"{h.home}/{WORKDIR}"]
            try:
                node_dir = remote_node_dir(f"{h.home}/.stix", cluster, rank)
            except PathOutsideParent:
                node_dir = None  # a name an earlier version took: nothing of it is deleted
            if node_dir is not None:
                paths.append(node_dir)
                if h.socket and not h.socket.startswith(node_dir + "/"):
                    paths.append(h.socket)
            try:
                await self.connection(host).run(f"rm -rf -- {quote(*paths)}", timeout=60)
            except SshError as exc:
                errors[rank] = str(exc)
                left = Leftover(cluster=cluster, rank=rank, socket=h.socket, paths=paths)
                await anyio.to_thread.run_sync(self.leftovers.add, host.key, left)

        async with anyio.create_task_group() as tg:
            for rank, host, h in held:
                tg.start_soon(clean, rank, host, h)
        self.last_error[cluster] = errors
        await anyio.to_thread.run_sync(self.allocations.release, cluster)
        for _, host, _ in held:  # the hosts went back to the pool: no idle connection to them
            conn = self._conns.pop(host.key, None)
            if conn is not None:
                await conn.close()

    async def sync(self, node: NodeInfo, mounts: list[Mount], method: Method = "auto") -> int:
        host = self._host_of(node)
        return await sync_mounts(self.connection(host), host, node, mounts, method, self._walks)

    def connector(self, node: NodeInfo) -> AgentClient:
        conn = self.connection(self._host_of(node))
        return conn.agent_client(node.agent_address, f"rank {node.rank}@{conn.host}")


def _build_of(pyz: Path) -> str:
    """The build a zipapp carries in its name (``stix-agent-<build>.pyz``)."""
    prefix, suffix = "stix-agent-", ".pyz"
    if pyz.name.startswith(prefix) and pyz.name.endswith(suffix):
        return pyz.name[len(prefix) : -len(suffix)]
    return build_id()
