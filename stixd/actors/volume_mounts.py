"""A task's `volumes:` key: which applied volumes it names, checked where it will run (before
anything is launched) and mounted on each node by the cluster's launch.

A volume is named by its name (``/data: vol``) or by a map ``{name, sub_path}``; a map with a
``size`` and no name (SkyPilot's ephemeral volume) is refused in one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from stixd.actors.jobs_submit import infra_label
from stixd.actors.volume import VOLUME, Attach, Remove, VolumeSpec, config_of, provider_for
from stixd.providers.abilities import HasVolumes, VolumeMount
from stixd.providers.base import NodeInfo, Provider
from stixd.runtime.mailbox import Envelope, reply_channel
from stixproto import messages as m
from stixproto import names
from stixproto.errors import InternalError, InvalidRequest, InvalidTask, error_from_code
from stixproto.task import Task
from stixproto.task.storage import check_sub_path

if TYPE_CHECKING:
    from stixd.app import App


@dataclass(frozen=True)
class Named:
    dest: str
    name: str
    sub_path: str | None


def named_volumes(task: Task) -> list[Named]:
    """The volumes ``task`` mounts, by name; `InvalidTask` for one this build cannot mount."""
    out: list[Named] = []
    for dest, spec in (task.volumes or {}).items():
        where = f"volumes.{dest}"
        if isinstance(spec, str):
            name, sub_path = spec, None
        else:
            if "name" not in spec:
                raise InvalidTask(
                    f"{where}: a volume made for the task ({{size: ...}}) is not supported in "
                    "this build yet; make it with `stixctl volumes apply` and name it here"
                )
            name, sub_path = spec["name"], spec.get("sub_path")
        if not names.is_valid(name, "volume"):
            raise InvalidTask(f"{where}: volume name {names.shown(name)} is not valid")
        if sub_path is not None:  # checked again here: a task may come by any road
            check_sub_path(sub_path, f"{where}.sub_path")
        out.append(Named(dest, name, sub_path))
    return out


async def check_task(app: App, task: Task, infra: str, pool: str | None) -> None:
    """Refuse, before anything is launched, a task naming a volume that does not exist or
    lives on another infra than ``infra``/``pool`` (where the task will run)."""
    for v in named_volumes(task):
        row = await app.store.get(VOLUME, v.name)
        if row is None:
            raise InvalidTask(
                f"volumes.{v.dest}: volume {v.name!r} does not exist; make it with "
                "`stixctl volumes apply FILE`"
            )
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
    as a user first, so `volumes delete` refuses while the cluster is live."""
    wanted = named_volumes(task) if task is not None else []
    if not wanted:
        return []
    if not isinstance(provider, HasVolumes):
        raise InvalidTask(f"volumes cannot be mounted on {provider.name} in this build yet")
    mounts: list[VolumeMount] = []
    for v in wanted:
        await ask_volume(app, v.name, Attach(cluster))
        row = await app.store.get(VOLUME, v.name)
        if row is None:
            raise InvalidTask(f"volume {v.name} was deleted during the launch")
        volume = config_of(msgspec.convert(row.spec, VolumeSpec))
        if provider_for(app, volume) is not provider:
            raise InvalidTask(f"volume {v.name} is on {volume.cloud}, not {provider.name}")
        mounts.append(VolumeMount(volume=volume, dest=v.dest, sub_path=v.sub_path))
    return mounts


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
    from stixd.actors import quarantine

    row = await app.store.get(VOLUME, name)
    if row is None:
        raise InvalidRequest(f"volume {name!r} does not exist (`stixctl volumes ls`)")
    child = app.supervisor.get(VOLUME, name)
    if child is None:
        child = app.spawn(row)
    reason = row.quarantined or child.failed
    if reason is not None:
        if isinstance(payload, Remove):  # a damaged row can still be removed, as `down` does
            said = await quarantine.remove(app, row, reason)
            settled = await app.store.get(VOLUME, name)
            if settled is not None:  # a deleted volume leaves no row: its name is free again
                await app.store.delete(settled, "deleted")
            return m.OkReply(said)
        raise quarantine.refusal(row, reason)
    send, receive = reply_channel()
    if not app.supervisor.tell(VOLUME, name, Envelope(payload=payload, reply=send)):
        raise InternalError(f"volume {name!r} has no actor")
    async with receive:
        async for item in receive:
            if isinstance(item, m.ErrorReply):
                raise error_from_code(item.code, item.message)
            if isinstance(item, m.FINAL_REPLIES):
                return item
    raise InternalError(f"volume {name!r} stopped before answering")
