"""MOUNT and MOUNT_CACHED from the daemon's side: hand each node's agent the rclone remote of
one bucket (``Bucket.rclone_remote``: credentials scoped to that bucket and short-lived where
the store can make them) and have it mount the bucket at the task's path
(``stixd/agent/mount.py``). The keys go over the agent's channel only, never into a log; how
long they last (``valid_s``) goes with them. Keys that end are renewed before they do
(``renew_on_nodes``, timed by the cluster's actor: ``stixd.actors.mount_keys``): the agent
hands them to the running rclone, which re-reads them; the mount stays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import anyio
import msgspec

from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, Provider
from stixd.storage.copy import node_path
from stixd.storage.plan import StorageSpec
from stixd.storage.stores import Bucket, RcloneRemote, StoreError
from stixproto.errors import ProvisionError
from stixproto.task import Storage, Task

MOUNT_DEADLINE_S = 90.0
"""The agent waits up to 20 s for rclone's mount to appear; unmounting a stale one first may
take longer."""
KEYS_DEADLINE_S = 20.0
SESSION_KEYS = ("access_key_id", "secret_access_key", "session_token", "token")
"""What a renewal sends: the keys alone, S3's or a GCS access token (the agent's
``mount_keys`` takes nothing else)."""
LEFT_OUT = ("not_mounted", "not_renewable")
"""A node's refusals that end its part in a renewal: its mount went (the node was replaced, or
stopped), or it was made with keys in rclone's config (by an agent before renewals)."""


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
    except (OSError, ValueError, RecursionError) as exc:
        raise StoreError(f"cannot read the GCS service-account key {path}: {exc}") from None
    rest = {k: v for k, v in keys.items() if k != "service_account_file"}
    return rest | {"service_account_credentials": json.dumps(content, separators=(",", ":"))}


async def mount_on_nodes(
    provider: Provider, nodes: list[NodeInfo], bucket: Bucket, spec: StorageSpec, dest: str
) -> RcloneRemote:
    """Mount ``spec``'s bucket (and prefix) at ``dest`` on every node; one line on failure.
    Returns the remote the nodes got: its ``note`` says when they got less than bucket-scoped
    credentials and a knob a node's rclone is too old for (for the daemon's log and the user),
    its ``valid_s`` when the keys end."""
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
        remote = msgspec.structs.replace(
            remote, note=f"{remote.note}; {older}" if remote.note else older
        )
    return remote


class Renewal(NamedTuple):
    valid_s: int | None
    """How long the new keys last; None: the store's keys no longer end (nothing to renew)."""
    renewed: int
    """Nodes that took them."""
    failed: list[str]
    """One line per node that could not take them (unreachable, or refused)."""


def renewable(remote: RcloneRemote) -> bool:
    """Keys a running mount can take afresh (the agent's ``mount.renewable``: S3's and R2's
    session keys, a GCS access token); a store's others (an Azure SAS, a GCS key file) last
    as they are."""
    from stixd.storage.stores.gcs import GCS_REMOTE  # the store is in use: loaded already

    if remote.valid_s is None:
        return False
    if remote.type == GCS_REMOTE:
        return "token" in remote.keys
    return (
        remote.type == "s3"
        and "access_key_id" in remote.keys
        and "secret_access_key" in remote.keys
    )


async def renew_on_nodes(
    provider: Provider, nodes: list[NodeInfo], bucket: Bucket, dest: str
) -> Renewal:
    """Fresh keys for the mount at ``dest`` on every node that has it; a node with no such
    mount, or none that can take them (``LEFT_OUT``), is left out."""
    remote = await bucket.rclone_remote()  # StoreError goes to the caller
    if not renewable(remote) or remote.valid_s is None:
        return Renewal(None, 0, [])
    keys = {k: v for k, v in remote.keys.items() if k in SESSION_KEYS}
    valid_s = remote.valid_s
    failed: list[str] = []
    took: list[int] = []

    async def one(node: NodeInfo) -> None:
        where = node_path(provider, node, dest)
        try:
            await provider.connector(node).call(
                "mount_keys", deadline=KEYS_DEADLINE_S, dest=where, keys=keys, valid_s=valid_s
            )
            took.append(node.rank)
        except AgentError as exc:
            if exc.code not in LEFT_OUT:
                failed.append(f"node {node.rank}: {exc}")
        except AgentUnreachable as exc:
            failed.append(f"node {node.rank}: {exc}")

    async with anyio.create_task_group() as tg:
        for node in nodes:
            tg.start_soon(one, node)
    return Renewal(remote.valid_s, len(took), sorted(failed))
