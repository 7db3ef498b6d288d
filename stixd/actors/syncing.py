"""What a task asks to have on its nodes (workdir, local file mounts), checked and synced."""

from __future__ import annotations

import anyio

from stixd.providers.base import Mount, NodeInfo, Provider
from stixd.runtime.mailbox import Envelope
from stixd.storage.plan import plan_mounts
from stixproto import messages as m
from stixproto import names
from stixproto.errors import InvalidTask
from stixproto.task import Storage, Task, launch_problems

WORKDIR_DEST = "~/sky_workdir"


def validate_mounts(task: Task) -> None:
    """Refuse, before any infra is touched, what cannot be placed on the nodes.

    The first refusals are `launch_problems` (worded as `stixctl validate` warns); the rest are
    what this build cannot place yet, and bucket mounts that cannot be planned
    (`stixd.storage.plan`; MOUNT and MOUNT_CACHED are mounted by rclone on the node).
    """
    problems = launch_problems(task)
    if problems:
        raise InvalidTask(problems[0])
    if isinstance(task.workdir, dict):
        raise InvalidTask("workdir: a git workdir ({url, ref}) is not supported in this build yet")
    for dest, src in task.file_mounts.items():
        bucket = src.name if isinstance(src, Storage) else None
        if bucket is not None and not names.is_valid(bucket, "storage"):
            raise InvalidTask(
                f"file_mounts.{dest}.name: storage name {names.shown(bucket)} is not valid: "
                f"{names.rule('storage')}"
            )
    plan_mounts(task, cluster="check", configured=())  # refused in one line


def task_mounts(task: Task, file_mounts: bool) -> list[Mount]:
    mounts: list[Mount] = []
    if isinstance(task.workdir, str):
        mounts.append(Mount(source=task.workdir, dest=WORKDIR_DEST))
    if file_mounts:
        mounts += [  # a bucket URI is copied by its storage (stixd.actors.storage_use)
            Mount(source=src, dest=dest)
            for dest, src in task.copy_mounts().items()
            if "://" not in src
        ]
    return mounts


async def sync_task_files(
    provider: Provider, nodes: list[NodeInfo], task: Task, env: Envelope, *, file_mounts: bool
) -> int:
    mounts = task_mounts(task, file_mounts)
    if not mounts:
        return 0
    targets = nodes[: max(task.num_nodes, 1)]
    copied: dict[int, int] = {}
    failed: dict[int, Exception] = {}

    async def one(node: NodeInfo) -> None:
        try:
            copied[node.rank] = await provider.sync(node, mounts)
        except Exception as exc:  # re-raised below: one node's failure must not hide another's
            failed[node.rank] = exc

    async with anyio.create_task_group() as tg:  # every node at once: a big tree costs one copy
        for node in targets:
            tg.start_soon(one, node)
    if failed:
        raise failed[min(failed)]
    total = sum(copied.values())
    env.progress(
        m.Progress(
            f"Synced {len(mounts)} path(s) to {len(targets)} node(s): {total} file(s) changed."
        )
    )
    return total
