"""MOUNT and MOUNT_CACHED from the daemon's side: hand each node's agent the rclone remote of
one bucket (``Bucket.rclone_remote``: credentials scoped to that bucket and short-lived where
the store can make them) and have it mount the bucket at the task's path
(``stixd/agent/mount.py``). The keys go over the agent's channel only, never into a log; how
long they last (``valid_s``) goes with them, so an agent renews a mount whose keys are ending
when the next launch asks for it."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, Provider
from stixd.storage.copy import node_path
from stixd.storage.plan import StorageSpec
from stixd.storage.stores import Bucket, StoreError
from stixproto.errors import ProvisionError
from stixproto.task import Storage, Task

MOUNT_DEADLINE_S = 90.0
"""The agent waits up to 20 s for rclone's mount to appear; unmounting a stale one first may
take longer."""


def mounts_a_bucket(task: Task | None) -> bool:
    """Whether ``task`` mounts a bucket (MOUNT or MOUNT_CACHED): its nodes need rclone and FUSE,
    which a provider installs or makes room for at launch (``resources["fuse"]``)."""
    if task is None:
        return False
    return any(isinstance(v, Storage) and v.mount_mode != "COPY" for v in task.file_mounts.values())


def node_keys(keys: dict[str, str]) -> dict[str, str]:
    """The remote's settings as a node can use them: a service-account key file on this
    machine travels as its content (the node has no such file)."""
    path = keys.get("service_account_file")
    if path is None:
        return keys
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the GCS service-account key {path}: {exc}") from None
    rest = {k: v for k, v in keys.items() if k != "service_account_file"}
    return rest | {"service_account_credentials": json.dumps(content, separators=(",", ":"))}


async def mount_on_nodes(
    provider: Provider, nodes: list[NodeInfo], bucket: Bucket, spec: StorageSpec, dest: str
) -> str | None:
    """Mount ``spec``'s bucket (and prefix) at ``dest`` on every node; one line on failure.
    Returns the store's note when the nodes got less than bucket-scoped credentials, and says
    a knob a node's rclone is too old for (for the daemon's log and the user), else None."""
    remote = await bucket.rclone_remote()
    fields: dict[str, object] = {
        "remote": remote.type,
        "keys": node_keys(remote.keys),
        "path": "/".join(p for p in (spec.bucket, spec.prefix.strip("/")) if p),
        "mode": spec.mode,
        "flags": dict(spec.mount_cached) if spec.mode != "COPY" else {},
    }
    if remote.valid_s is not None:
        fields["valid_s"] = remote.valid_s
    failed: dict[int, str] = {}
    dropped: set[str] = set()

    async def one(node: NodeInfo) -> None:
        where = node_path(provider, node, dest)
        try:
            reply = await provider.connector(node).call(
                "mount", deadline=MOUNT_DEADLINE_S, dest=where, **fields
            )
        except (AgentError, AgentUnreachable) as exc:
            failed[node.rank] = str(exc)
            return
        flags = reply.get("dropped")
        if isinstance(flags, list):
            dropped.update(str(f)[:40] for f in flags[:10])

    async with anyio.create_task_group() as tg:
        for node in nodes:
            tg.start_soon(one, node)
    if failed:
        rank = min(failed)
        raise ProvisionError(
            f"mounting {spec.uri} at {dest} ({spec.mode}) on node {rank} failed: {failed[rank]}"
        )
    if dropped:  # a read-speed hint the node's rclone is too old for (it needs 1.68)
        older = f"the node's rclone is too old for {', '.join(sorted(dropped))}, left out"
        return f"{remote.note}; {older}" if remote.note else older
    return remote.note
