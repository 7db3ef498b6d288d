"""Volumes on SSH pools (`stixctl volumes`, ``type: k8s-hostpath``, ``infra: ssh/POOL``): a
folder ``~/.stix/volumes/<name>`` of the login user on every host of the pool (named only by
the volume's name, a plain stix name), linked at the task's mount path on each node that
mounts it. The login user runs the jobs and owns the folder, so they can write to it; what a
job writes stays on its host (a pool's hosts share no disk). A part of ``SshProvider``.

An ephemeral volume (made for one cluster) is a folder in each node's own directory,
``~/.stix/nodes/<cluster>-<rank>/volumes/<name>``, made as the node mounts it and removed with
the node's directory at `down`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import anyio

from stixd.providers.abilities import VolumeMount
from stixd.providers.base import NodeInfo
from stixd.providers.shared.bootstrap import remote_node_dir
from stixd.providers.shared.dests import resolve_dest
from stixd.providers.shared.ssh_hosts import PoolHost
from stixd.providers.shared.ssh_transport import SshConnection, SshError, quote
from stixproto.errors import InvalidConfig, ProvisionError
from stixproto.paths import child_path
from stixproto.volumes import VolumeConfig

if TYPE_CHECKING:
    from stixd.providers.ssh.pools import SshPool

FOLDER = ".stix/volumes"
"""Under the login user's home: stix's own folder on the host."""
TIMEOUT_S = 60.0

_MOUNT = """set -e
src="$HOME"/{folder}; dest={dest}
mkdir -p "$src" && chmod 770 "$HOME"/{top}
mkdir -p "$(dirname "$dest")"
if [ -L "$dest" ]; then rm -f "$dest"
elif [ -d "$dest" ]; then
  rmdir "$dest" 2>/dev/null || {{ echo "$dest already holds files" >&2; exit 3; }}
elif [ -e "$dest" ]; then echo "$dest is a file" >&2; exit 3; fi
ln -s "$src" "$dest"
"""


def folder(
    volume: VolumeConfig, sub_path: str | None = None, node: tuple[str, int] | None = None
) -> str:
    """``.stix/volumes/<name>[/<sub_path>]``, relative to the login user's home; an ephemeral
    volume's on ``node`` (cluster, rank): ``.stix/nodes/<cluster>-<rank>/volumes/<name>``."""
    base = FOLDER if node is None else remote_node_dir(".stix", *node) + "/volumes"
    path = str(
        child_path(PurePosixPath(base), volume.name)
    )  # one component: the name never climbs out
    return f"{path}/{sub_path.strip('/')}" if sub_path else path


def mount_script(m: VolumeMount, dest: str, rank: int = 0) -> str:
    """The shell script linking ``dest`` to the volume's folder on a host; every value in it
    is quoted (a task's ``sub_path`` and mount path are hostile input)."""
    node = None if m.cluster is None else (m.cluster, rank)
    return _MOUNT.format(
        folder=quote(folder(m.volume, m.sub_path, node)),
        top=quote(folder(m.volume, None, node)),
        dest=quote(dest),
    )


class HoldsVolumes:
    if TYPE_CHECKING:

        def pool_sizes(self) -> dict[str, int]: ...

        def _pool(self, name: Any) -> SshPool: ...

        def _host_of(self, node: NodeInfo) -> PoolHost: ...

        def connection(self, host: PoolHost) -> SshConnection: ...

    def _volume_hosts(self, volume: VolumeConfig) -> tuple[PoolHost, ...]:
        with contextlib.suppress(InvalidConfig):  # the pools as last read: the planner says why
            self.pool_sizes()
        return self._pool(volume.where).hosts

    async def _on_each(self, hosts: Sequence[PoolHost], command: str, what: str) -> None:
        failed: dict[str, str] = {}

        async def one(host: PoolHost) -> None:
            try:
                done = await self.connection(host).run(command, timeout=TIMEOUT_S)
            except SshError as exc:
                failed[host.key] = str(exc)
                return
            if done.exit_status != 0:
                failed[host.key] = (done.stderr.strip().splitlines() or ["failed"])[-1][:200]

        async with anyio.create_task_group() as tg:
            for host in hosts:
                tg.start_soon(one, host)
        if failed:
            key = sorted(failed)[0]
            more = f" (and {len(failed) - 1} more host(s))" if len(failed) > 1 else ""
            raise ProvisionError(f"{what} on host {key}: {failed[key]}{more}")

    async def make_volume(self, volume: VolumeConfig, cluster: str | None = None) -> str:
        if cluster is not None:  # made on each node's host as it mounts it
            return f"~/.stix/nodes/{cluster}-<rank>/volumes/{volume.name} on each node"
        hosts = self._volume_hosts(volume)
        path = folder(volume)
        if volume.use_existing:
            check = f"test -d {quote(path)} && ! test -L {quote(path)}"
            await self._on_each(hosts, f"cd && {check}", f"volume {volume.name} is missing")
        else:
            make = f"cd && mkdir -p {quote(path)} && chmod 770 {quote(path)}"
            await self._on_each(hosts, make, f"volume {volume.name} could not be made")
        return f"~/{path} on {len(hosts)} host(s) of ssh pool {volume.where}"

    async def remove_volume(self, volume: VolumeConfig, cluster: str | None = None) -> None:
        if volume.use_existing or cluster is not None:
            return  # adopted; or ephemeral: gone with its nodes' directories at `down`
        path = folder(volume)
        remove = f"cd && {{ test -L {quote(path)} || rm -rf -- {quote(path)}; }}"
        await self._on_each(self._volume_hosts(volume), remove, f"volume {volume.name} stays")

    def launch_resources(self, mounts: Sequence[VolumeMount]) -> dict[str, Any]:
        return {}  # linked on each host once its node is up (`mount_volumes`)

    async def mount_volumes(self, node: NodeInfo, mounts: Sequence[VolumeMount]) -> None:
        host = self._host_of(node)
        for m in mounts:
            script = mount_script(m, resolve_dest(node, m.dest), node.rank)
            await self._on_each([host], script, f"volume {m.volume.name} not mounted at {m.dest}")
