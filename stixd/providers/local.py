"""The embedded default: nodes are sandboxes (a directory + an agent process) on this machine.

Each node lives in `<home>/clusters/<cluster>/node-<rank>`, which is also the HOME of its jobs;
both are made by `child_path`, so no name reaches outside `<home>/clusters`.
Its agent names the cluster and rank in its command line, so `ps` tells which is which.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from pathlib import Path

import anyio

from stixd.agent_client import AgentClient, AgentUnreachable, unix_agent
from stixd.providers.base import (
    CheckResult,
    Mount,
    NodeInfo,
    NodeStatus,
    ProvisionRequest,
)
from stixd.providers.filesync import sync_path
from stixproto.errors import ProvisionError
from stixproto.paths import PathOutsideParent, child_path, path_under

LOCAL_IP = "127.0.0.1"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS

# Detaches the agent from the daemon: a double fork leaves it owned by init, in its own
# session, so neither a daemon crash nor a terminal hang-up reaches it, and no zombie is left.
_SPAWN = """
import os, sys
if os.fork():
    os._exit(0)
os.setsid()
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(log, 1); os.dup2(log, 2)
null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0)
os.execv(sys.argv[2], sys.argv[2:])
"""


class LocalProvider:
    name = "local"

    def __init__(self, home: Path, python: str = sys.executable) -> None:
        self.root = home / "clusters"
        self._run_dir = Path("/tmp") / f"stix-{os.getuid()}"
        self._python = python

    # -- layout --------------------------------------------------------------------------

    def cluster_dir(self, cluster: str) -> Path:
        """Raises `PathOutsideParent` for a name that would leave ``root`` (``..``, ``/x``,
        300 characters), which only an earlier version could have taken: such a cluster has
        no sandbox stix can see, so it is found gone and nothing outside ``root`` is touched."""
        return child_path(self.root, cluster)

    def node_dir(self, cluster: str, rank: int) -> Path:
        return child_path(self.cluster_dir(cluster), f"node-{rank}")

    def socket_path(self, node_dir: Path) -> str:
        path = node_dir / "agent.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return str(path)
        digest = hashlib.sha1(str(node_dir).encode()).hexdigest()[:20]
        return str(self._run_dir / f"{digest}.sock")

    def _node(self, cluster: str, rank: int, status: NodeStatus, pid: int | None) -> NodeInfo:
        d = self.node_dir(cluster, rank)
        return NodeInfo(
            rank=rank,
            ip=LOCAL_IP,
            status=status,
            agent_address=self.socket_path(d),
            workdir=str(d / "sky_workdir"),
            home=str(d),
            pid=pid,
        )

    def _ranks(self, cluster: str) -> list[int]:
        try:
            names = os.listdir(self.cluster_dir(cluster))
        except (FileNotFoundError, NotADirectoryError, PathOutsideParent):
            return []
        return sorted(int(n[5:]) for n in names if n.startswith("node-") and n[5:].isdigit())

    # -- Provider ------------------------------------------------------------------------

    async def check(self) -> CheckResult:
        cpus = os.cpu_count() or 1
        return CheckResult(True, f"this machine: {cpus} CPUs, no accelerators, $0/hour")

    def connector(self, node: NodeInfo) -> AgentClient:
        return unix_agent(node.agent_address)

    async def _hello(self, node: NodeInfo, deadline: float = 2.0) -> dict[str, object] | None:
        try:
            return await self.connector(node).call("hello", deadline=deadline)
        except AgentUnreachable:
            return None

    async def query(self, cluster: str) -> list[NodeInfo]:
        nodes: list[NodeInfo] = []
        for rank in self._ranks(cluster):
            probe = self._node(cluster, rank, NodeStatus.STOPPED, None)
            hello = await self._hello(probe)
            if hello is None:
                nodes.append(probe)
            else:
                pid = hello.get("pid")
                nodes.append(
                    self._node(
                        cluster, rank, NodeStatus.RUNNING, pid if isinstance(pid, int) else None
                    )
                )
        return nodes

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        """Idempotent: a node whose agent already answers is kept, never duplicated."""
        async with anyio.create_task_group() as tg:
            for rank in range(req.num_nodes):
                tg.start_soon(self._ensure_agent, req, rank)
        return [n for n in await self.query(req.cluster) if n.rank < req.num_nodes]

    async def start(self, req: ProvisionRequest) -> list[NodeInfo]:
        return await self.launch(req)

    async def _ensure_agent(self, req: ProvisionRequest, rank: int) -> None:
        d = self.node_dir(req.cluster, rank)
        node = self._node(req.cluster, rank, NodeStatus.STOPPED, None)
        if await self._hello(node, deadline=1.0) is not None:
            return
        (d / "sky_workdir").mkdir(parents=True, exist_ok=True)
        (d / "self_stopped.json").unlink(missing_ok=True)
        Path(node.agent_address).parent.mkdir(parents=True, exist_ok=True)
        argv = [
            self._python,
            str(req.agent_pyz),
            "serve",
            "--node-dir",
            str(d),
            "--socket",
            node.agent_address,
            "--cluster",
            req.cluster,
            "--rank",
            str(rank),
            "--node-ip",
            LOCAL_IP,
        ]
        env = dict(os.environ)
        env["HOME"] = str(d)
        real_home = os.path.expanduser("~")
        if "PYENV_ROOT" not in env and os.path.isdir(os.path.join(real_home, ".pyenv")):
            env["PYENV_ROOT"] = os.path.join(real_home, ".pyenv")
        spawner = await anyio.run_process(
            [self._python, "-P", "-c", _SPAWN, str(d / "agent.out"), *argv], env=env, check=False
        )
        if spawner.returncode != 0:
            raise ProvisionError(f"could not start the agent of {req.cluster} node {rank}")
        with anyio.move_on_after(15):
            while await self._hello(node, deadline=1.0) is None:
                await anyio.sleep(0.02)
            return
        out = (
            (d / "agent.out").read_text(errors="replace")[-2000:]
            if (d / "agent.out").exists()
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
        return argv, node.workdir, {"HOME": node.home}

    async def stop(self, cluster: str) -> None:
        for node in await self.query(cluster):
            if node.status is NodeStatus.RUNNING:
                with contextlib.suppress(AgentUnreachable):
                    await self.connector(node).call("shutdown", deadline=15, kill_jobs=True)
        # the agent replies before it exits: wait until none answers
        with anyio.move_on_after(10):
            while any(n.status is NodeStatus.RUNNING for n in await self.query(cluster)):
                await anyio.sleep(0.05)

    async def terminate(self, cluster: str) -> None:
        await self.stop(cluster)
        try:
            sandbox = self.cluster_dir(cluster)
        except PathOutsideParent:
            return  # never made by stix under root: nothing of stix's to delete
        # rmtree refuses a symlink (ignored here), so a link planted there is not followed out
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(sandbox, ignore_errors=True))

    async def open_ports(self, cluster: str, ports: list[int]) -> None:
        """Local nodes share this machine's network: every port is already reachable."""

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
