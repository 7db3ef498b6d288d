"""A task's `volumes:` key: which applied volumes it names, checked where it will run (before
anything is launched) and mounted on each node by the cluster's launch.

A volume is named by its name (``/data: vol``) or by a map ``{name, sub_path}``. A map with a
``size`` (SkyPilot's ephemeral volume: its ``size`` wins over a ``name``, as in SkyPilot) is a
volume made for the cluster by its launch (`ephemeral_volume`): its row, naming the cluster, is
written before it is made, and the cluster's `down` removes it (`stixd.actors.volume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from stixd.actors.jobs_submit import infra_label
from stixd.actors.specs import ClusterSpec, state_of
from stixd.actors.volume import (
    VOLUME,
    Attach,
    Make,
    Remove,
    VolumeSpec,
    config_of,
    ephemeral_of,
    provider_for,
)
from stixd.providers.abilities import HasVolumes, VolumeMount
from stixd.providers.base import NodeInfo, Provider
from stixd.runtime.mailbox import Envelope
from stixd.store.db import Row, RowExists
from stixproto import messages as m
from stixproto import names
from stixproto import volumes as volume_types
from stixproto.errors import InternalError, InvalidRequest, InvalidTask
from stixproto.task import Task
from stixproto.task.storage import check_sub_path
from stixproto.volumes import VolumeConfig
from stixproto.volumes import VolumeStatus as V

if TYPE_CHECKING:
    from stixd.app import App


@dataclass(frozen=True)
class Named:
    dest: str
    name: str
    sub_path: str | None


@dataclass(frozen=True)
class Ephemeral:
    """A ``{size: ...}`` entry: a volume the launch makes for its cluster."""

    dest: str
    spec: dict[str, Any]


def task_volumes(task: Task) -> list[Named | Ephemeral]:
    """The volumes ``task`` mounts: applied ones by name, and ephemeral ones."""
    return [
        Ephemeral(dest, spec) if isinstance(spec, dict) and "size" in spec else _named(dest, spec)
        for dest, spec in (task.volumes or {}).items()
    ]


def ephemeral_config(e: Ephemeral, cluster: str, infra: str, num_nodes: int) -> VolumeConfig:
    """The volume ``e`` stands for on ``infra``; `InvalidTask` in one line for one refused."""
    try:
        return volume_types.ephemeral(e.spec, cluster, e.dest, infra, num_nodes)
    except InvalidRequest as exc:
        raise InvalidTask(f"volumes.{e.dest}: {exc.message}") from None


def named_volumes(task: Task) -> list[Named]:
    """The applied volumes ``task`` mounts, by name (ephemeral ones: `task_volumes`)."""
    return [v for v in task_volumes(task) if isinstance(v, Named)]


def _named(dest: str, spec: str | dict[str, Any]) -> Named:
    where = f"volumes.{dest}"
    if isinstance(spec, str):
        name, sub_path = spec, None
    else:
        name, sub_path = spec["name"], spec.get("sub_path")
    if not names.is_valid(name, "volume"):
        raise InvalidTask(f"{where}: volume name {names.shown(name)} is not valid")
    if sub_path is not None:  # checked again here: a task may come by any road
        check_sub_path(sub_path, f"{where}.sub_path")
    return Named(dest, name, sub_path)


def _check_not_ephemeral(v: Named, row: Row, cluster: str | None = None) -> None:
    """An ephemeral volume is its cluster's alone: another task may not name it."""
    owner = ephemeral_of(row)
    if owner is not None and owner != cluster:
        raise InvalidTask(
            f"volumes.{v.dest}: volume {v.name} is the ephemeral volume of cluster {owner}, "
            "removed with it; make one to share with `stixctl volumes apply`"
        )


async def check_task(app: App, task: Task, infra: str, pool: str | None) -> None:
    """Refuse, before anything is launched, a task naming a volume that does not exist or
    lives on another infra than ``infra``/``pool`` (where the task will run), or an ephemeral
    one that could not be made there."""
    for e in task_volumes(task):
        if isinstance(e, Ephemeral):
            ephemeral_config(e, "check", volume_types.volume_infra(infra, pool), task.num_nodes)
    for v in named_volumes(task):
        row = await app.store.get(VOLUME, v.name)
        if row is None:
            raise InvalidTask(
                f"volumes.{v.dest}: volume {v.name!r} does not exist; make it with "
                "`stixctl volumes apply FILE`"
            )
        _check_not_ephemeral(v, row)
        volume = config_of(msgspec.convert(row.spec, VolumeSpec))
        if volume.cloud != infra or (volume.where is not None and volume.where != pool):
            raise InvalidTask(
                f"volumes.{v.dest}: volume {v.name} is on {volume.infra or volume.cloud} but the "
                f"task runs on {infra_label(infra, pool)}; run it there (--infra) or use a volume "
                "of that infra"
            )


async def task_mounts(
    app: App, cluster: str, provider: Provider, task: Task | None
) -> list[VolumeMount]:
    """The task's volumes as ``provider`` mounts them; each volume's actor records ``cluster``
    as a user first, so `volumes delete` refuses while the cluster is live. An ephemeral one
    is made first (`ephemeral_volume`)."""
    wanted = task_volumes(task) if task is not None else []
    if not wanted:
        return []
    if not isinstance(provider, HasVolumes):
        raise InvalidTask(f"volumes cannot be mounted on {provider.name} in this build yet")
    assert task is not None
    mounts: list[VolumeMount] = []
    for v in wanted:
        if isinstance(v, Ephemeral):
            volume = await ephemeral_volume(app, cluster, v, task.num_nodes)
            await ask_volume(app, volume.name, Attach(cluster))
            mounts.append(VolumeMount(volume=volume, dest=v.dest, cluster=cluster))
            continue
        row = await app.store.get(VOLUME, v.name)
        if row is not None:
            _check_not_ephemeral(v, row, cluster)
        await ask_volume(app, v.name, Attach(cluster))
        row = await app.store.get(VOLUME, v.name)
        if row is None:
            raise InvalidTask(f"volume {v.name} was deleted during the launch")
        volume = config_of(msgspec.convert(row.spec, VolumeSpec))
        if provider_for(app, volume) is not provider:
            raise InvalidTask(f"volume {v.name} is on {volume.cloud}, not {provider.name}")
        mounts.append(VolumeMount(volume=volume, dest=v.dest, sub_path=v.sub_path))
    return mounts


async def ephemeral_volume(app: App, cluster: str, e: Ephemeral, num_nodes: int) -> VolumeConfig:
    """The volume ``e`` stands for, made for ``cluster`` where it runs: its row (NOT_READY,
    naming the cluster, owned as the cluster is) written before anything is made, so a daemon
    killed in between finds it and makes or removes it; then made (idempotent) if not READY."""
    found = await app.store.get("cluster", cluster)
    if found is None:
        raise InternalError(f"cluster {cluster} has no row to make its volumes for")
    c = msgspec.convert(found.spec, ClusterSpec)
    volume = ephemeral_config(e, cluster, volume_types.volume_infra(c.provider, c.pool), num_nodes)
    spec = VolumeSpec(
        volume=msgspec.to_builtins(volume), owner=c.owner, workspace=c.workspace, cluster=cluster
    )
    row = Row(
        kind=VOLUME,
        id=volume.name,
        state=V.NOT_READY.value,
        version=0,
        spec=msgspec.to_builtins(spec),
    )
    try:
        row = await app.store.insert(row, "applied", f"ephemeral, for cluster {cluster}")
    except RowExists:
        had = await app.store.get(VOLUME, volume.name)
        if had is None:
            raise InvalidTask(f"volume {volume.name} was deleted during the launch") from None
        mine = msgspec.convert(had.spec, VolumeSpec)
        if mine.cluster != cluster:
            raise InvalidTask(
                f"volumes.{e.dest}: a volume {volume.name} that is not this cluster's exists; "
                "delete it (`stixctl volumes delete`) or launch under another cluster name"
            ) from None
        if config_of(mine) != volume:
            raise InvalidTask(
                f"volumes.{e.dest}: the cluster's ephemeral volume {volume.name} was made as "
                f"{mine.volume.get('size')}, not as this task says; launch on a new cluster"
            ) from None
        row = had
    if state_of(row, V) is not V.READY:
        await ask_volume(app, volume.name, Make())
    return volume


async def launch_resources(
    app: App, cluster: str, provider: Provider, task: Task | None
) -> dict[str, Any]:
    """What the provision request of ``cluster`` carries for the task's volumes."""
    mounts = await task_mounts(app, cluster, provider, task)
    if not mounts:
        return {}
    assert isinstance(provider, HasVolumes)
    return provider.launch_resources(mounts)


async def mount_task_volumes(
    app: App, cluster: str, provider: Provider, nodes: Sequence[NodeInfo], task: Task, env: Envelope
) -> None:
    """Mount the task's volumes on every node of ``cluster``."""
    mounts = await task_mounts(app, cluster, provider, task)
    if not mounts:
        return
    assert isinstance(provider, HasVolumes)
    for node in nodes[: max(task.num_nodes, 1)]:
        await provider.mount_volumes(node, mounts)
    shown = ", ".join(dict.fromkeys(m.volume.name for m in mounts))
    env.progress(m.Progress(f"Mounted {len(mounts)} volume(s): {shown}."))


async def ask_volume(app: App, name: str, payload: Any) -> Any:
    """Send a request to the volume's actor and wait for its final reply."""
    from stixd.actors.asks import ask_record

    missing = InvalidRequest(f"volume {name!r} does not exist (`stixctl volumes ls`)")
    removing = isinstance(payload, Remove)  # a damaged row can still be removed
    return await ask_record(app, VOLUME, name, payload, missing=missing, removing=removing)
