"""The embedded default: nodes are sandboxes (a directory + an agent process) on this machine.

Each node lives in `<home>/clusters/<cluster>/node-<rank>`, which is also the HOME of its jobs;
both are made by `child_path`, so no name reaches outside `<home>/clusters`.
stix's own files of the node (the agent's job queue, socket, logs) sit in its hidden `.stix`
directory, as on every other infra (`~/.stix`), so a job that cleans `~/logs` or `~/*` leaves
them alone. Its agent names the cluster and rank in its command line, so `ps` tells which is
which, and every process of the node carries a marker (`local_node`) that `stop` and `down` find.

Nodes made by earlier versions kept those files in the node directory itself: an agent of that
layout still running is used where it is (its jobs keep running); its files move into `.stix`
the next time the node starts.

Given `NodeNetworks`, each node gets a network namespace of its own (`netns.py`), and its agent
(so every job) runs inside it: the node's `ip` is its address there, and two nodes may bind the
same port. Without, the nodes share this machine's network at 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio

from stixd.agent_client import AgentClient, AgentUnreachable, unix_agent
from stixd.providers.abilities import VolumeMount
from stixd.providers.base import (
    CheckResult,
    Mount,
    NodeInfo,
    NodeStatus,
    ProvisionRequest,
)
from stixd.providers.local import volumes
from stixd.providers.local.netns import NodeNetworks
from stixd.providers.local.node import (
    kill_marked,
    marked_processes,
    node_environment,
    stix_prefixes,
)
from stixd.providers.shared.filesync import sync_path
from stixd.providers.shared.fuse_mounts import SHUTDOWN_DEADLINE_S, unmount_under
from stixproto.errors import ProvisionError
from stixproto.paths import PathOutsideParent, child_path, path_under
from stixproto.volumes import VolumeConfig

LOCAL_IP = "127.0.0.1"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
STATE_DIR = ".stix"
LEGACY_FILES = (
    "agent.db",
    "agent.db-wal",
    "agent.db-shm",
    "logs",
    "gates",
    "agent.log",
    "agent.out",
    "agent.lock",
    "agent.pid",
    "self_stopped.json",
)
"""What an agent of the earlier layout kept in the node directory, moved into `.stix`."""
KILL_WITHIN_S = 5.0

# Detaches the agent from the daemon: a double fork leaves it owned by init, in its own
# session, so neither a daemon crash nor a terminal hang-up reaches it, and no zombie is left.
# Given a network namespace (argv[1]), it enters it first, so a failure is the spawner's exit
# status; given a resolv.conf (argv[2]), it shows it at /etc/resolv.conf in a mount namespace of
# the node's own (a slave of this machine's: every later mount still reaches the node).
_SPAWN = """
import os, sys
def check(done, what):
    if done != 0:
        sys.exit("cannot " + what + ": " + os.strerror(ctypes.get_errno()))
if sys.argv[1]:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(sys.argv[1], os.O_RDONLY)
    check(libc.setns(fd, 0x40000000), "enter " + sys.argv[1])
    os.close(fd)
if sys.argv[1] and sys.argv[2]:
    check(libc.unshare(0x20000), "make a mount namespace")
    check(libc.mount(b"none", b"/", None, 0x4000 | 0x80000, None), "make / a slave")
    resolv = sys.argv[2].encode()
    check(libc.mount(resolv, b"/etc/resolv.conf", None, 0x1000, None), "bind resolv.conf")
if os.fork():
    os._exit(0)
os.setsid()
log = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(log, 1); os.dup2(log, 2)
null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0)
os.execv(sys.argv[4], sys.argv[4:])
"""


class LocalProvider:
    name = "local"
    every_port_reachable: Literal[True] = True
    """Every port of a node is reachable from this machine: a task's ports need no opening."""

    def __init__(
        self,
        home: Path,
        python: str = sys.executable,
        *,
        network: NodeNetworks | None = None,
        resolver: Path | None = None,
        shared_why: str | None = None,
    ) -> None:
        self.root = home / "clusters"
        self.volumes_root = home / "volumes"
        self._run_dir = Path("/tmp") / f"stix-{os.getuid()}"
        self._python = python
        self.network = network
        """Where node namespaces are recorded: found (a node's address) and removed by `down`."""
        self._resolver = resolver
        """The resolv.conf the nodes' namespaces see instead of this machine's (`node_resolver`)."""
        self._shared_why = shared_why
        """Set: new nodes share this machine's network, and this says why; nodes that have a
        namespace already (made before a config change) keep it until `down`."""
        self._maker = network if shared_why is None else None
        """What makes each new node a namespace; None: new nodes share this machine's network."""

    def nodes_share_host_network(self) -> bool:
        return self._maker is None

    # -- layout --------------------------------------------------------------------------

    def cluster_dir(self, cluster: str) -> Path:
        """Raises `PathOutsideParent` for a name that would leave ``root`` (``..``, ``/x``,
        300 characters), which only an earlier version could have taken: such a cluster has
        no sandbox stix can see, so it is found gone and nothing outside ``root`` is touched."""
        return child_path(self.root, cluster)

    def _sandbox(self, cluster: str) -> Path | None:
        try:
            return self.cluster_dir(cluster)
        except PathOutsideParent:
            return None

    def node_dir(self, cluster: str, rank: int) -> Path:
        return child_path(self.cluster_dir(cluster), f"node-{rank}")

    @staticmethod
    def state_dir(node_dir: Path) -> Path:
        """The node's own files: the agent's queue, socket, logs; hidden from a job's `~/*`."""
        return node_dir / STATE_DIR

    def socket_path(self, state_dir: Path) -> str:
        path = state_dir / "agent.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return str(path)
        digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:20]
        return str(self._run_dir / f"{digest}.sock")

    def _node(
        self,
        cluster: str,
        rank: int,
        status: NodeStatus,
        pid: int | None,
        address: str | None = None,
    ) -> NodeInfo:
        d = self.node_dir(cluster, rank)
        return NodeInfo(
            rank=rank,
            ip=self._ip_of(d),
            status=status,
            agent_address=address or self.socket_path(self.state_dir(d)),
            workdir=str(d / "sky_workdir"),
            home=str(d),
            pid=pid,
        )

    def _ip_of(self, node_dir: Path) -> str:
        """The node's namespace address; 127.0.0.1 for a node sharing this machine's network
        (none made yet, or made before namespaces were turned on)."""
        found = self.network.address_of(node_dir) if self.network else None
        return found or LOCAL_IP

    def _ranks(self, cluster: str) -> list[int]:
        try:
            names = os.listdir(self.cluster_dir(cluster))
        except (FileNotFoundError, NotADirectoryError, PathOutsideParent):
            return []
        return sorted(r for r in map(_rank_of, map(Path, names)) if r is not None)

    # -- Provider ------------------------------------------------------------------------

    async def check(self) -> CheckResult:
        cpus = os.cpu_count() or 1
        maker = self._maker
        if maker is not None and maker.refused is not None:
            net = f"local.network is namespace but {maker.refused}: launches fail"
        elif maker is not None:
            net = f"a network namespace per node in {maker.subnet}"
        else:
            why = f" ({self._shared_why})" if self._shared_why else ""
            net = f"nodes share this machine's network{why}: two cannot bind one port"
        return CheckResult(True, f"this machine: {cpus} CPUs, no accelerators, $0/hour; {net}")

    def connector(self, node: NodeInfo) -> AgentClient:
        return unix_agent(self._current_address(node))

    def _current_address(self, node: NodeInfo) -> str:
        """Where the node's agent listens now. A node recorded by an earlier version has its
        socket in its home; once its files moved into `.stix`, its agent listens there."""
        home = Path(node.home)
        if node.agent_address == self.socket_path(home) and not (home / "agent.db").exists():
            return self.socket_path(self.state_dir(home))
        return node.agent_address

    async def _hello(self, node: NodeInfo, deadline: float = 2.0) -> dict[str, object] | None:
        try:
            return await self.connector(node).call("hello", deadline=deadline)
        except AgentUnreachable:
            return None

    async def _answering(self, cluster: str, rank: int, deadline: float = 2.0) -> NodeInfo | None:
        """The node as its running agent answers it, in the current layout or the earlier one."""
        d = self.node_dir(cluster, rank)
        addresses = [self.socket_path(self.state_dir(d))]
        if (d / "agent.db").exists():
            addresses.append(self.socket_path(d))  # an agent of the earlier layout
        for address in addresses:
            probe = self._node(cluster, rank, NodeStatus.STOPPED, None, address)
            hello = await self._hello(probe, deadline)
            if hello is not None:
                pid = hello.get("pid")
                pid = pid if isinstance(pid, int) else None
                return self._node(cluster, rank, NodeStatus.RUNNING, pid, address)
        return None

    async def query(self, cluster: str) -> list[NodeInfo]:
        nodes: dict[int, NodeInfo] = {}
        for rank in self._ranks(cluster):
            found = await self._answering(cluster, rank)
            nodes[rank] = found or self._node(cluster, rank, NodeStatus.STOPPED, None)
        sandbox = self._sandbox(cluster)
        settled = nodes and all(n.status is NodeStatus.RUNNING for n in nodes.values())
        if sandbox and not settled:
            # A node whose processes still run is not stopped, nor gone: a job may just have
            # deleted its directory (`rm -rf ~`), which its agent is putting back.
            alive = await anyio.to_thread.run_sync(marked_processes, sandbox)
            running = {r for r, n in nodes.items() if n.status is NodeStatus.RUNNING}
            ranks = {r for r in map(_rank_of, alive) if r is not None}
            for rank in ranks - running:
                nodes[rank] = self._node(cluster, rank, NodeStatus.UNREACHABLE, None)
        return [nodes[rank] for rank in sorted(nodes)]

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        """Idempotent: a node whose agent already answers is kept, never duplicated."""
        async with anyio.create_task_group() as tg:
            for rank in range(req.num_nodes):
                tg.start_soon(self._ensure_agent, req, rank)
        return [n for n in await self.query(req.cluster) if n.rank < req.num_nodes]

    async def _ensure_agent(self, req: ProvisionRequest, rank: int) -> None:
        d = self.node_dir(req.cluster, rank)
        state = self.state_dir(d)
        if await self._answering(req.cluster, rank, deadline=1.0) is not None:
            return
        netns, resolver = "", str(self._resolver or "")
        if self._maker is not None:
            netns = str((await anyio.to_thread.run_sync(self._maker.ensure, d)).path)
        node = self._node(req.cluster, rank, NodeStatus.STOPPED, None)
        (d / "sky_workdir").mkdir(parents=True, exist_ok=True)
        state.mkdir(mode=0o700, exist_ok=True)
        _move_legacy_files(d, state)
        (state / "self_stopped.json").unlink(missing_ok=True)
        Path(node.agent_address).parent.mkdir(parents=True, exist_ok=True)
        argv = [
            self._python,
            "-I",  # the agent is stdlib only: no user site, no PYTHON* variables, no cwd
            str(req.agent_pyz),
            "serve",
            "--node-dir",
            str(state),
            "--down-removes",
            str(d),
            "--socket",
            node.agent_address,
            "--cluster",
            req.cluster,
            "--rank",
            str(rank),
            "--node-ip",
            node.ip,
        ]
        env = node_environment(os.environ, node_dir=d, home=d, prefixes=stix_prefixes(os.environ))
        real_home = os.path.expanduser("~")
        if "PYENV_ROOT" not in env and os.path.isdir(os.path.join(real_home, ".pyenv")):
            env["PYENV_ROOT"] = os.path.join(real_home, ".pyenv")
        spawner = await anyio.run_process(
            [self._python, "-I", "-c", _SPAWN, netns, resolver, str(state / "agent.out"), *argv],
            env=env,
            check=False,
        )
        if spawner.returncode != 0:
            why = spawner.stderr.decode(errors="replace").strip()[-300:]
            raise ProvisionError(f"could not start the agent of {req.cluster} node {rank}: {why}")
        with anyio.move_on_after(15):
            while await self._hello(node, deadline=1.0) is None:
                await anyio.sleep(0.02)
            return
        out = (
            (state / "agent.out").read_text(errors="replace")[-2000:]
            if (state / "agent.out").exists()
            else ""
        )
        raise ProvisionError(
            f"the agent of {req.cluster} node {rank} did not come up in 15s; its output: {out}"
        )

    def shell_command(
        self, node: NodeInfo, command: str | None
    ) -> tuple[list[str], str | None, dict[str, str]]:
        """What `stixctl ssh CLUSTER` runs: a shell in the node's sandbox, HOME set to it."""
        shell = os.environ.get("SHELL") or "/bin/bash"
        argv = [shell, "-l"] if command is None else ["/bin/bash", "-c", command]
        net = self.network.record(Path(node.home)) if self.network else None
        if net is not None and shutil.which("nsenter"):
            argv = ["nsenter", f"--net={net.path}", *argv]  # the node's network, as its jobs
        return argv, node.workdir, {"HOME": node.home}

    async def stop(self, cluster: str) -> None:
        for node in await self.query(cluster):
            if node.status is NodeStatus.RUNNING:
                with contextlib.suppress(AgentUnreachable):
                    await self.connector(node).call(
                        "shutdown", deadline=SHUTDOWN_DEADLINE_S, kill_jobs=True
                    )
        # the agent replies before it exits: wait until none answers
        with anyio.move_on_after(10):
            while any(n.status is NodeStatus.RUNNING for n in await self.query(cluster)):
                await anyio.sleep(0.05)
        await self._kill_leftovers(cluster)

    async def _kill_leftovers(self, cluster: str) -> None:
        """Every process still marked as one of the cluster's nodes: a job's detached child, or
        an agent whose socket a job deleted. Found by the marker the daemon set, not by files."""
        sandbox = self._sandbox(cluster)
        if sandbox is None:
            return  # an earlier version's name: its processes carry no marker
        with anyio.move_on_after(KILL_WITHIN_S):
            while await anyio.to_thread.run_sync(kill_marked, sandbox):
                await anyio.sleep(0.02)

    async def terminate(self, cluster: str) -> None:
        await self.stop(cluster)
        await anyio.to_thread.run_sync(self.remove_sandbox, cluster)

    def remove_sandbox(self, cluster: str) -> None:
        """The cluster's node namespaces and directories, once nothing of it runs."""
        sandbox = self._sandbox(cluster)
        if sandbox is None:
            return  # never made by stix under root: nothing of stix's to delete
        if self.network is not None:
            self._remove_networks(sandbox)
        if unmount_under(sandbox):  # a bucket still mounted: never delete through it
            return
        # rmtree refuses a symlink (ignored here), so a link planted there is not followed out
        shutil.rmtree(sandbox, ignore_errors=True)

    def _remove_networks(self, sandbox: Path) -> None:
        """Every node namespace recorded for the cluster, found by record, not by the node
        directories (a job may have deleted its own)."""
        assert self.network is not None
        for net in self.network.records():
            if net.node_dir.parent == sandbox:
                self.network.remove(net)

    # -- volumes (`stixctl volumes`): stixd/providers/local/volumes.py ---------------------

    def _volumes_of(self, cluster: str | None) -> Path:
        """``<home>/volumes``; an ephemeral volume's is its cluster's own folder, so the
        cluster's `down` (`remove_sandbox`) takes it along."""
        return self.volumes_root if cluster is None else self.cluster_dir(cluster) / "volumes"

    async def make_volume(self, volume: VolumeConfig, cluster: str | None = None) -> str:
        return await anyio.to_thread.run_sync(volumes.make, self._volumes_of(cluster), volume)

    async def remove_volume(self, volume: VolumeConfig, cluster: str | None = None) -> None:
        await anyio.to_thread.run_sync(volumes.remove, self._volumes_of(cluster), volume)

    def launch_resources(self, mounts: Sequence[VolumeMount]) -> dict[str, Any]:
        return {}  # linked into each node once it is made (`mount_volumes`)

    async def mount_volumes(self, node: NodeInfo, mounts: Sequence[VolumeMount]) -> None:
        dests = [(self._volumes_of(v.cluster), self.resolve_dest(node, v.dest), v) for v in mounts]
        await anyio.to_thread.run_sync(volumes.mount_all, dests)

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        copied = 0
        for mount in mounts:
            dest = self.resolve_dest(node, mount.dest)
            copied += await anyio.to_thread.run_sync(sync_path, Path(mount.source), dest)
        return copied

    @staticmethod
    def resolve_dest(node: NodeInfo, dest: str) -> Path:
        """`~/x` and `/x` land in the node's sandbox home; relative paths in its workdir. The
        sync replaces what is there, so a `..` that climbs out of the sandbox is refused."""
        if dest.startswith("~"):
            return path_under(Path(node.home), dest[1:])
        if dest.startswith("/"):
            return path_under(Path(node.home), dest)
        return path_under(Path(node.workdir), dest)


def _rank_of(node_dir: Path) -> int | None:
    name = node_dir.name
    return int(name[5:]) if name.startswith("node-") and name[5:].isdigit() else None


def _move_legacy_files(node_dir: Path, state: Path) -> None:
    """Files of an agent of the earlier layout (no agent answers there) move into `.stix`."""
    if not (node_dir / "agent.db").exists() or (state / "agent.db").exists():
        return
    for name in LEGACY_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.replace(node_dir / name, state / name)
