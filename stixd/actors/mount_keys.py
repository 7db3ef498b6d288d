"""A cluster's bucket mounts keep working past their keys' end: the cluster's actor renews them.

A MOUNT or MOUNT_CACHED node gets keys that end (S3's and R2's session keys, 12 h by default:
``storage.s3.node_credentials_seconds``). Each such mount is recorded in the cluster's row
(``ClusterData.mount_keys``: the bucket, the task's path, when the keys end and when to renew
them) and the actor's timer rings at two thirds of the keys' life: the actor mints fresh keys
(``Bucket.rclone_remote``) and hands them to every node's agent (``mount_keys``), whose running
rclone re-reads them; the mount, its cache and the job using it are not touched. The timer is
armed again from the row when the actor starts (after a daemon restart or ``kill -9``), so a
renewal due while the daemon was down happens at once. A node that cannot be reached (or a
store that cannot mint) is tried again after ``RETRY_S``, doubling up to ``RETRY_MAX_S``, each
try bounded by the agent call's deadline. The records go when the cluster stops or goes (its
mounts go with its nodes), and one is dropped once no node has its mount any more.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from stixd.actors.cluster_states import C
from stixd.actors.specs import MountKeys
from stixd.storage.mount import Renewal, renew_on_nodes
from stixd.storage.stores import StoreError, StoreKind

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor

TIMER = "mount_keys"
RENEW_AT = 2 / 3
"""The share of the keys' life after which they are renewed."""
RETRY_S = 60.0
RETRY_MAX_S = 900.0
ENDED = (C.STOPPED, C.TERMINATED)
"""A cluster in these states has no mounts left (they went with its nodes)."""


class RenewMountKeys:
    """Timer message: a mount's keys are due for renewal."""


def _entry(store: str, bucket: str, dest: str, valid_s: int, now: float) -> MountKeys:
    return MountKeys(
        store=store,
        bucket=bucket,
        dest=dest,
        expires_at=now + valid_s,
        renew_at=now + valid_s * RENEW_AT,
    )


async def note_mount(
    cluster: ClusterActor, store: str, bucket: str, dest: str, valid_s: int | None
) -> None:
    """A bucket was mounted (or mounted again) at ``dest`` on the cluster's nodes with keys
    lasting ``valid_s`` (None: they do not end, nothing to renew)."""
    kept = [k for k in cluster.data.mount_keys if k.dest != dest]
    if valid_s is not None:
        kept.append(_entry(store, bucket, dest, valid_s, time.time()))
    if kept != cluster.data.mount_keys:
        await cluster.save(mount_keys=kept)
    schedule_renewal(cluster)


def schedule_renewal(cluster: ClusterActor) -> None:
    """Arm the timer for the next renewal due (at once for one overdue); none when no mount
    of the cluster has keys that end."""
    entries = cluster.data.mount_keys
    if not entries:
        cluster.cancel_timer(TIMER)
        return
    due = min(k.renew_at for k in entries)
    cluster.after(TIMER, max(0.0, due - time.time()), RenewMountKeys())


async def renew_due(cluster: ClusterActor) -> None:
    """Renew every mount whose time has come; record the outcome and arm the next timer."""
    entries = cluster.data.mount_keys
    if cluster.state in ENDED:
        if entries:
            await cluster.save(mount_keys=[])
        cluster.cancel_timer(TIMER)
        return
    now = time.time()
    kept: list[MountKeys] = []
    for entry in entries:
        if entry.renew_at > now:
            kept.append(entry)
            continue
        after = await _renew(cluster, entry, now)
        if after is not None:
            kept.append(after)
    if kept != entries:
        await cluster.save(mount_keys=kept)
    schedule_renewal(cluster)


async def _renew(cluster: ClusterActor, entry: MountKeys, now: float) -> MountKeys | None:
    """One mount's renewal: its record afterwards (None: nothing left to renew)."""
    where = f"{entry.store}:{entry.bucket} at {entry.dest}"
    if cluster.state is not C.UP or not cluster.nodes:  # a launch or a look under way
        return _later(entry, now)
    bucket = cluster.app.object_stores().bucket(StoreKind(entry.store), entry.bucket)
    try:
        done: Renewal = await renew_on_nodes(cluster.provider, cluster.nodes, bucket, entry.dest)
    except StoreError as exc:
        cluster.log.warning("mount_keys_unrenewed", mount=where, error=exc.message)
        return _later(entry, now)
    if done.valid_s is None:
        return None  # the store's keys no longer end
    if done.failed:
        cluster.log.warning("mount_keys_unrenewed", mount=where, error="; ".join(done.failed))
        return _later(entry, now)
    if done.renewed == 0:
        cluster.log.info("mount_keys_dropped", mount=where, why="no node has the mount")
        return None
    cluster.log.info("mount_keys_renewed", mount=where, nodes=done.renewed, valid_s=done.valid_s)
    return _entry(entry.store, entry.bucket, entry.dest, done.valid_s, now)


def _later(entry: MountKeys, now: float) -> MountKeys:
    delay = min(RETRY_MAX_S, RETRY_S * 2**entry.failures)
    return MountKeys(
        store=entry.store,
        bucket=entry.bucket,
        dest=entry.dest,
        expires_at=entry.expires_at,
        renew_at=now + delay,
        failures=min(entry.failures + 1, 16),
    )
