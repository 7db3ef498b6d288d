"""Putting an agent on a node reached over SSH: what every provider with SSH nodes shares.

``bootstrap_node`` is the per-node step of an SSH launch (connect, ``ensure_agent``, make the
workdir, log the phase times) returning the node's ``NodeInfo``; ``wait_for_ssh`` waits, with a
deadline, for a machine that is still booting. ``testing_hosts`` reads the testing-only mapping
``STIX_TEST_SSH_HOSTS`` / ``STIX_TEST_SSH_KEY``: cloud providers then reach node rank i at the
i-th listed host instead of the instance's own address (so the whole launch path runs against
a mock cloud plus local sshd hosts). It is for tests only: never set it otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import structlog

from stixd.agent_bundle import build_id
from stixd.providers.base import NodeInfo, NodeStatus
from stixd.providers.shared.bootstrap import ensure_agent
from stixd.providers.shared.fuse_tools import ensure_fuse_tools
from stixd.providers.shared.ssh_hosts import PoolHost
from stixd.providers.shared.ssh_transport import (
    SshAuthError,
    SshConnection,
    SshError,
    SshTarget,
    quote,
)
from stixproto.errors import ProvisionError

WORKDIR = "sky_workdir"
TEST_HOSTS_ENV = "STIX_TEST_SSH_HOSTS"
TEST_KEY_ENV = "STIX_TEST_SSH_KEY"


def build_of(pyz: Path) -> str:
    """The build a zipapp carries in its name (``stix-agent-<build>.pyz``)."""
    prefix, suffix = "stix-agent-", ".pyz"
    if pyz.name.startswith(prefix) and pyz.name.endswith(suffix):
        return pyz.name[len(prefix) : -len(suffix)]
    return build_id()


def testing_hosts(env: Mapping[str, str]) -> list[SshTarget] | None:
    """TESTING ONLY: the hosts of ``STIX_TEST_SSH_HOSTS`` (``user@address:port``, comma
    separated) with the key ``STIX_TEST_SSH_KEY``, or None when it is not set."""
    text = env.get(TEST_HOSTS_ENV, "").strip()
    if not text:
        return None
    key = env.get(TEST_KEY_ENV) or None
    targets = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        user, _, rest = item.rpartition("@")
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "22")
        if not host or not port.isdigit():
            raise ProvisionError(f"{TEST_HOSTS_ENV}: {item!r} is not user@address:port")
        targets.append(SshTarget(host=host, port=int(port), user=user or "root", identity_file=key))
    return targets


def pool_host(target: SshTarget) -> PoolHost:
    """The target in the shape ``ssh_sync`` takes (rsync needs the user, port and key)."""
    return PoolHost(
        ip=target.host, port=target.port, user=target.user, identity_file=target.identity_file
    )


async def wait_for_ssh(conn: SshConnection, within: float) -> None:
    """Connect, retrying while the machine boots (no sshd yet, or our key not installed yet)."""
    deadline = time.monotonic() + within
    pause = 0.5
    while True:
        try:
            await conn.connection()
            return
        except (SshAuthError, SshError) as exc:
            if not (exc.retryable or isinstance(exc, SshAuthError)):
                raise
            if time.monotonic() + pause > deadline:
                raise SshError(
                    conn.host, f"not reachable over SSH within {within:g} s: {exc}"
                ) from None
        await anyio.sleep(pause)
        pause = min(pause * 2, 5.0)


async def bootstrap_node(
    conn: SshConnection,
    *,
    cluster: str,
    rank: int,
    node_ip: str,
    pyz: Path,
    build: str,
    num_gpus: float,
    log: structlog.stdlib.BoundLogger,
    fuse: bool = False,
) -> NodeInfo:
    """An agent of ``build`` answering for ``cluster``/``rank`` on the host of ``conn``; with
    ``fuse`` (the task mounts a bucket), rclone and fuse3 installed when the node lacks them
    (a machine stix made: installing is always allowed, `fuse_tools`).

    Raises ``SshError`` (host unreachable) or ``BootstrapError`` (something wrong on the host).
    """
    began = time.monotonic()
    await conn.connection()
    connected = time.monotonic()
    ep = await ensure_agent(
        conn,
        cluster=cluster,
        rank=rank,
        node_ip=node_ip,
        pyz=pyz,
        build=build,
        num_gpus=num_gpus,
    )
    workdir = f"{ep.home}/{WORKDIR}"
    await conn.run(f"mkdir -p {quote(workdir)}", timeout=30)
    if fuse:
        installed = await ensure_fuse_tools(conn, allowed=True)
        if installed:
            log.info("fuse_installed", cluster=cluster, rank=rank, command=installed)
    log.info(
        "ssh_node_ready",
        cluster=cluster,
        rank=rank,
        host=conn.host,
        connect_s=round(connected - began, 4),
        **{f"{phase}_s": s for phase, s in ep.phases.items()},
        total_s=round(time.monotonic() - began, 4),
        started=ep.started,
    )
    return NodeInfo(
        rank=rank,
        ip=node_ip,
        status=NodeStatus.RUNNING,
        agent_address=ep.socket_path,
        workdir=workdir,
        home=ep.home,
        pid=ep.pid,
    )
