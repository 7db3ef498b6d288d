"""A launch's buckets: made READY by their storage actors, copied onto the nodes (COPY), and
removed again when the launch fails (unless persistent)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from stixd.actors.mount_keys import note_mount
from stixd.actors.specs import BucketMount, data_or_none, encode, spec_or_none
from stixd.actors.storage import STORAGE, Ensure, Prune, Release, Remove, StorageData
from stixd.runtime.mailbox import Envelope
from stixd.storage.copy import copy_to_nodes
from stixd.storage.mount import mount_on_nodes, renewable
from stixd.storage.plan import (
    MountPlan,
    StorageSpec,
    is_bucket_mount,
    plan_mounts,
    unnamed_stores,
)
from stixd.storage.stores import StoreError, StoreKind, configured
from stixd.store.db import Row, RowExists
from stixproto import messages as m
from stixproto.errors import (
    InternalError,
    InvalidRequest,
    PermissionDenied,
    ProvisionError,
    StixError,
    StorageNotFound,
)
from stixproto.states import StorageStatus

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor
    from stixd.app import App
    from stixd.providers.base import NodeInfo
    from stixproto.task import Task

Emit = Callable[[Any], Awaitable[None]]


def configured_stores(app: App) -> list[str]:
    """The stores set up here (SkyPilot's "enabled storage clouds"): named in config
    ``storage:`` or whose credentials resolve (`stores.configured`); stix asks no other store
    anything."""
    import os

    return configured(app.config.storage.stores(), os.environ)


async def plans_for(
    app: App,
    task: Task,
    cluster: str,
    owner: str | None,
    workspace: str | None,
    chosen: tuple[str | None, str | None] = (None, None),
) -> list[MountPlan]:
    """``chosen``: the launch's cloud and region (SkyPilot's best_resources), which pick the
    store and the new bucket's region of a storage naming no store, unless its record exists:
    then the record's store and region (a relaunch or recovery on another cloud keeps it)."""
    if not any(map(is_bucket_mount, task.file_mounts.values())):
        return []  # no store asked about (nor its client library loaded) for a plain task
    records: dict[str, StorageSpec] = {}
    for name in unnamed_stores(task, cluster):
        row = await app.store.get(STORAGE, name)
        spec = None if row is None else spec_or_none(row, StorageSpec)
        if spec is not None:
            records[name] = spec
    return plan_mounts(
        task,
        cluster=cluster,
        configured=configured_stores(app),
        owner=owner,
        workspace=workspace,
        cloud=chosen[0],
        region=chosen[1],
        records=records,
    )


async def ask_storage(app: App, name: str, payload: Any, emit: Emit | None = None) -> Any:
    """Hand ``payload`` to the storage's actor and wait for its final reply."""
    from stixd.actors.asks import ask_record

    missing = StorageNotFound(f"storage {name!r} does not exist")
    removing = isinstance(payload, Remove)  # a damaged row can still be deleted
    return await ask_record(
        app, STORAGE, name, payload, missing=missing, removing=removing, emit=emit
    )


async def _row_for(app: App, plan: MountPlan) -> Row:
    spec = plan.storage
    row = Row(
        kind=STORAGE,
        id=spec.name,
        state=StorageStatus.INIT.value,
        version=0,
        spec=encode(spec),
        data=encode(StorageData()),
    )
    try:
        return await app.store.insert(row, "created", f"bucket {spec.uri}")
    except RowExists:
        found = await app.store.get(STORAGE, spec.name)
        if found is None:
            raise InternalError(f"storage {spec.name} vanished while it was made") from None
        return found


async def prepare_storage(
    cluster: ClusterActor, task: Task, nodes: list[NodeInfo], env: Envelope
) -> list[str]:
    """Make every bucket mount of ``task`` READY and copy the COPY ones onto ``nodes`` (before
    setup). Returns the storages this launch made; on failure the non-persistent ones it made
    are deleted before the error goes on."""
    app = cluster.app
    made_as = cluster.spec  # where the launch runs: the optimizer's pick, as provisioned
    chosen = (made_as.provider, (made_as.placement or {}).get("region"))
    plans = await plans_for(app, task, cluster.id, made_as.owner, made_as.workspace, chosen)
    if not plans:
        return []
    made: list[str] = []

    async def relay(item: Any) -> None:
        env.progress(item)

    try:
        for plan in plans:
            if plan.storage.external and plan.storage.mode == "COPY" and not _named(task, plan):
                continue  # the URI shorthand: read, never recorded
            existed = await app.store.get(STORAGE, plan.storage.name) is not None
            await _row_for(app, plan)
            if not existed:
                made.append(plan.storage.name)
            try:
                await ask_storage(app, plan.storage.name, Ensure(plan.storage, cluster.id), relay)
            except (InvalidRequest, PermissionDenied, ProvisionError):
                raise  # another user's storage, too: refused in its own words, not retried
            except StixError as exc:  # the launch fails (and may be retried), its actor lives
                raise ProvisionError(f"storage {plan.storage.name}: {exc.message}") from None
        for plan in plans:
            spec = plan.storage
            bucket = app.object_stores().bucket(StoreKind(spec.store), spec.bucket)
            if spec.mode != "COPY":  # MOUNT / MOUNT_CACHED: rclone on the node
                await mount_bucket(cluster, nodes, spec, plan.dest, env)
                continue
            try:
                count = await copy_to_nodes(cluster.provider, nodes, bucket, spec.prefix, plan.dest)
            except StoreError as exc:  # listing or signing: the launch fails in one line
                raise ProvisionError(f"file_mounts.{plan.dest}: {exc.message}") from None
            env.progress(m.Progress(f"Copied {count} object(s) of {spec.uri} to {plan.dest}."))
    except BaseException:
        await release_storage(
            app, task, made, cluster.id, cluster.spec.owner, cluster.spec.workspace
        )
        raise
    return made


async def mount_bucket(
    cluster: ClusterActor, nodes: list[NodeInfo], spec: StorageSpec, dest: str, env: Envelope
) -> None:
    """Mount ``spec``'s bucket at ``dest`` on ``nodes`` with freshly minted keys, arm their
    renewal, and record the mount in the cluster's row (``bucket_mounts``: what ``remount``
    mounts again after a stop). One line on failure."""
    app = cluster.app
    bucket = app.object_stores().bucket(StoreKind(spec.store), spec.bucket)
    try:
        remote = await mount_on_nodes(cluster.provider, nodes, bucket, spec, dest)
    except StoreError as exc:  # minting the keys: the launch (or start) fails in one line
        raise ProvisionError(f"file_mounts.{dest}: {exc.message}") from None
    lasts = remote.valid_s if renewable(remote) else None  # renewed before then
    await note_mount(cluster, spec.store, spec.bucket, dest, lasts)
    entry = BucketMount(
        dest=dest,
        name=spec.name,
        store=spec.store,
        bucket=spec.bucket,
        prefix=spec.prefix,
        mode=spec.mode,
        flags=dict(spec.mount_cached),
    )
    kept = [b for b in cluster.data.bucket_mounts if b.dest != dest] + [entry]
    if kept != cluster.data.bucket_mounts:
        await cluster.save(bucket_mounts=kept)
    note = remote.note
    if note:  # the nodes got the daemon's keys: said, not silent
        app.log.warning("storage_node_credentials", storage=spec.name, note=note)
    said = f"Mounted {spec.uri} at {dest} ({spec.mode})."
    env.progress(m.Progress(f"{said} Note: {note}." if note else said))


async def remount(
    cluster: ClusterActor, nodes: list[NodeInfo], env: Envelope, skip: Iterable[str] = ()
) -> None:
    """The cluster's nodes are back (``start``, or a launch of a stopped cluster): every bucket
    it had mounted (``bucket_mounts``; those at ``skip`` excepted, which the launch's own task
    mounts) is mounted again with keys minted afresh, their renewal armed as at launch. A
    stop unmounted them all (flushing their writes): without this a job would read and write
    an empty folder where the bucket was. A storage deleted meanwhile (`storage delete`) is
    not mounted, said, and forgotten here."""
    skipped = set(skip)
    for entry in list(cluster.data.bucket_mounts):
        if entry.dest in skipped:
            continue
        if await cluster.app.store.get(STORAGE, entry.name) is None:
            said = f"Storage {entry.name} was deleted: nothing mounted at {entry.dest}."
            env.progress(m.Progress(said))
            cluster.log.warning("bucket_mount_dropped", storage=entry.name, dest=entry.dest)
            kept = [b for b in cluster.data.bucket_mounts if b.dest != entry.dest]
            await cluster.save(bucket_mounts=kept)
            continue
        spec = StorageSpec(
            name=entry.name,
            store=entry.store,
            bucket=entry.bucket,
            prefix=entry.prefix,
            mode=entry.mode,
            mount_cached=dict(entry.flags),
        )
        await mount_bucket(cluster, nodes, spec, entry.dest, env)


def _named(task: Task, plan: MountPlan) -> bool:
    return not isinstance(task.file_mounts.get(plan.dest), str)


async def release_storage(
    app: App,
    task: Task,
    made: list[str],
    cluster: str,
    owner: str | None,
    workspace: str | None,
) -> None:
    """A failed or cancelled launch: the non-persistent storages it made go, buckets too,
    unless another cluster mounts one meanwhile (a concurrent launch that also thought it made
    it): then only this cluster is dropped from it."""
    import anyio

    try:
        plans = await plans_for(app, task, cluster, owner, workspace)
    except Exception:  # the task could not be planned: nothing was made
        return
    doomed = [p.storage.name for p in plans if p.storage.name in made and not p.storage.persistent]
    with anyio.CancelScope(shield=True):
        for name in doomed:
            try:
                why = f"the launch of {cluster} failed"
                await ask_storage(app, name, Release(cluster=cluster, why=why))
            except Exception as exc:  # the leak reconciler finds what is left
                app.log.warning("storage_release_failed", storage=name, error=str(exc))


async def prune_storages(app: App) -> None:
    """A cluster went or a managed job ended: each storage that lists a cluster looks whether
    its clusters are gone (a non-persistent one stix made goes with the last). Told, not
    awaited; never raises into the caller's down."""
    try:
        rows = await app.store.rows(STORAGE)
    except Exception as exc:  # the next boot's reconcile prunes as well
        app.log.warning("storage_prune_failed", error=str(exc))
        return
    for row in rows:
        data = data_or_none(row, StorageData)
        if data is None or not data.clusters or row.quarantined:
            continue
        if app.supervisor.get(STORAGE, row.id) is None:
            app.spawn(row)  # its reconcile prunes
            continue
        app.supervisor.tell(STORAGE, row.id, Prune())
