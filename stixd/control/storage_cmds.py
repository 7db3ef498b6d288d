"""`stixctl storage ls | delete`: the storage actors' rows, each bucket looked at in its store.

`ls` asks every listed bucket whether it still exists (all at once, bounded by a deadline): a
bucket deleted outside stix shows MISSING, and its actor keeps that. `delete` (by name or `-a`)
hands each storage to its actor, which deletes the bucket only if this stix made it (one that
stix did not make is forgotten, its bucket left as is and said so by name, as SkyPilot does).
`leaked_buckets` finds buckets carrying this home's label that no storage owns (`stixctl
leaks`), old enough by their store's creation time. With several
replicas, `delete` of a storage whose actor another replica runs is answered by that replica.
"""

from __future__ import annotations

import fnmatch
import functools
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio

from stixd.actors import quarantine
from stixd.actors.specs import data_or_none, spec_or_none, state_of
from stixd.actors.storage import STORAGE, Observed, Remove, StorageData, is_ours
from stixd.actors.storage_use import ask_storage, configured_stores
from stixd.app import App
from stixd.control import ownership
from stixd.storage.plan import StorageSpec
from stixd.storage.stores import LABEL_STORAGE, StoreError, StoreKind, label_value
from stixd.store.db import Row
from stixproto import messages as m
from stixproto.errors import StixError, StorageNotFound
from stixproto.states import StorageStatus

Emit = Callable[[Any], Awaitable[None]]
LOOK_SECONDS = 20.0
"""How long `ls` waits for the stores to say which buckets exist; the rest show as stored."""

STORAGE_REQUESTS = (m.StorageLs, m.StorageDelete)


def record(row: Row, missing: bool | None = None) -> m.StorageRecord:
    """The row's record; ``ValueError`` for a row whose spec no stix writes."""
    spec = spec_or_none(row, StorageSpec)
    data = data_or_none(row, StorageData) or StorageData()
    if spec is None:
        raise ValueError("its spec is not a storage's")
    return m.StorageRecord(
        name=row.id,
        store=spec.store,
        bucket=spec.bucket,
        status=row.state,
        mode=spec.mode,
        persistent=spec.persistent,
        created=data.created and not spec.external,
        missing=data.missing if missing is None else missing,
        source=", ".join(spec.sources) or (f"{spec.uri}" if spec.external else ""),
        created_at=row.created_at,
        owner=spec.owner,
        workspace=spec.workspace,
        last_error=data.last_error,
        updated_at=row.updated_at,
        clusters=list(data.clusters),
    )


def damaged(row: Row, why: str) -> m.StorageRecord:
    """A row that cannot be shown or run (quarantined): listed failed, with why and how to
    remove it, and the bucket its spec still names."""
    store, bucket = quarantine.raw_bucket(row) or ("?", "?")
    return m.StorageRecord(
        name=row.id,
        store=store,
        bucket=bucket,
        status=StorageStatus.INIT_FAILED.value,
        mode="?",
        persistent=True,
        created=False,
        missing=False,
        created_at=row.created_at,
        owner=ownership.recorded_owner(row.spec),
        last_error=why,
        updated_at=row.updated_at,
    )


GLOB = frozenset("*?[")


async def _select(app: App, wanted: list[str]) -> tuple[list[Row], list[str]]:
    """The storages ``wanted`` names (all the caller sees when it names none), each once, and
    the names matching none. A glob (``"imagenet*"``, `fnmatch`, as `sky storage delete`)
    matches the caller's own storages only; a plain name, any the caller sees."""
    scope = ownership.scope(app, ownership.acts_on_all())
    rows = [r for r in await app.store.rows(STORAGE) if scope.sees(r.spec)]
    if not wanted:
        return rows, []
    found: dict[str, Row] = {}
    unmatched: list[str] = []
    for name in dict.fromkeys(wanted):
        if GLOB.isdisjoint(name):
            hits = [r for r in rows if r.id == name]
        else:
            hits = [r for r in rows if ownership.mine(r) and fnmatch.fnmatchcase(r.id, name)]
        if not hits:
            unmatched.append(name)
        found.update((r.id, r) for r in hits)
    return list(found.values()), unmatched


def _not_found(name: str) -> str:
    return f"no storage {name!r} (see `stixctl storage ls`)"


async def _exists(app: App, rows: list[Row]) -> dict[str, bool]:
    """Which buckets the stores still have; a store that does not answer says nothing."""
    found: dict[str, bool] = {}

    async def look(row: Row) -> None:
        spec = spec_or_none(row, StorageSpec)
        if spec is None:
            return
        try:
            bucket = app.object_stores().bucket(StoreKind(spec.store), spec.bucket)
            found[row.id] = await bucket.exists()
        except (StoreError, OSError, ValueError) as exc:
            app.log.warning("storage_look_failed", storage=row.id, error=str(exc))

    with anyio.move_on_after(LOOK_SECONDS):
        async with anyio.create_task_group() as tg:
            for row in rows:
                tg.start_soon(look, row)
    return found


async def storage_ls(app: App, req: m.StorageLs) -> m.StorageList:
    rows, unmatched = await _select(app, list(req.names))
    if unmatched and not req.missing_ok:
        raise StorageNotFound(_not_found(unmatched[0]))
    exists = await _exists(app, rows)
    records = []
    for row in rows:
        seen = exists.get(row.id)
        if seen is False and state_of(row, StorageStatus) is StorageStatus.DELETING:
            continue  # its bucket is gone and its actor is forgetting it (after a restart)
        if seen is not None:
            app.supervisor.tell(STORAGE, row.id, Observed(exists=seen))
        build = functools.partial(record, missing=None if seen is None else not seen)
        records.append(quarantine.shown(app, row, build, damaged))
    return m.StorageList(storages=records, failed=[_not_found(n) for n in unmatched])


async def storage_delete(app: App, req: m.StorageDelete, emit: Emit) -> m.StorageList:
    """Each storage named (or matched) is deleted in turn; one that fails is told in
    ``failed`` and the others still go."""
    rows, unmatched = await _select(app, [] if req.all else list(req.names))
    failed = [_not_found(n) for n in unmatched]
    deleted: list[str] = []
    for row in rows:
        try:
            done, theirs = await _delete_one(app, row, emit)
        except StixError as exc:
            failed.append(f"{row.id}: {exc.message}")
            continue
        deleted += done
        failed += theirs
    return m.StorageList(storages=[], deleted=deleted, failed=failed)


async def _delete_one(app: App, row: Row, emit: Emit) -> tuple[list[str], list[str]]:
    """(deleted, failed) of one storage."""
    ownership.check_acts(app, row, f"storage {row.id}", StorageNotFound(_not_found(row.id)))
    if app.elsewhere is not None:  # its actor runs on another replica: deleted there
        forwarded, theirs = await app.elsewhere(
            STORAGE, row.id, m.StorageDelete(names=[row.id]), emit
        )
        if forwarded:
            return list(theirs.deleted), list(theirs.failed)
    spec = spec_or_none(row, StorageSpec)
    data = data_or_none(row, StorageData) or StorageData()
    if spec is not None and (spec.external or not data.created):
        # named or by `-a`, as SkyPilot: the record goes, the bucket stix did not make stays
        reply: m.OkReply = await ask_storage(app, row.id, Remove())
        await emit(m.Progress(reply.message))  # said per name: forgotten, bucket left as is
        return [row.id], []
    await emit(m.Progress(f"Deleting storage {row.id}..."))
    hurt = spec is None or quarantine.reason_of(app, row) is not None
    reply = await ask_storage(app, row.id, Remove())
    if hurt:  # removed as quarantined: what became of its bucket is said
        await emit(m.Progress(reply.message))
    return [row.id], []


async def dispatch(app: App, req: Any, emit: Emit) -> Any:
    if isinstance(req, m.StorageLs):
        return await storage_ls(app, req)
    return await storage_delete(app, req, emit)


async def bucket_leaks(
    app: App, *, terminate: bool, only: Collection[str] = ()
) -> tuple[list[m.LeakRecord], list[str]]:
    """The leaked buckets as leak records (kind ``bucket``), and those deleted (``terminate``:
    every one found, or only the ids in ``only``)."""
    found = await leaked_buckets(app, app.config.storage.leak_min_age_minutes * 60)
    records = [
        m.LeakRecord(infra=store, kind="bucket", id=f"{store}://{name}", region="-", cluster="-")
        for store, name in found
    ]
    deleted: list[str] = []
    for (store, name), rec in zip(found, records, strict=True):
        if not terminate or (only and rec.id not in only):
            continue
        if (store, name) in await _owned(app):  # a launch recorded it since the scan: its own
            app.log.info("bucket_leak_owned_again", bucket=rec.id)
            continue
        try:
            await app.object_stores().bucket(StoreKind(store), name).delete()
        except (StoreError, OSError) as exc:
            app.log.warning("bucket_leak_delete_failed", bucket=rec.id, error=str(exc))
            continue
        app.log.warning("bucket_leak_deleted", bucket=rec.id)
        deleted.append(rec.id)
    return records, deleted


async def leaked_buckets(app: App, min_age_s: float = 0.0) -> list[tuple[str, str]]:
    """(store, bucket) of every bucket labelled as this home's that no storage row owns and
    that is at least ``min_age_s`` old by its store's creation time (a launch writes its
    storage row before it makes the bucket, and a bucket just made by one a restart cut short
    is old only after the grace: a restart never starts the grace afresh). A store that does
    not say when a bucket was made has it aged from when this daemon first saw it."""
    now = time.time()
    seen = app.bucket_seen
    unowned = await _unowned_buckets(app)
    for gone in set(seen) - {f"{k}://{n}" for k, n, _ in unowned}:
        del seen[gone]  # owned again, or deleted: forgotten
    return [
        (k, n)
        for k, n, made in unowned
        if now - (made if made is not None else seen.setdefault(f"{k}://{n}", now)) >= min_age_s
    ]


async def _owners(app: App) -> tuple[set[tuple[str, str]], set[str]]:
    """(store, bucket) of every storage row, read now (a damaged row's as its spec still names
    it), and the label values of the damaged rows' names: a bucket labelled with one is
    theirs, whatever their spec lost."""
    owned: set[tuple[str, str]] = set()
    names: set[str] = set()
    for r in await app.store.rows(STORAGE):
        spec = spec_or_none(r, StorageSpec)
        if spec is not None:
            owned.add((spec.store, spec.bucket))
            continue
        names.add(label_value(r.id))
        if (raw := quarantine.raw_bucket(r)) is not None:
            owned.add(raw)
    return owned, names


async def _owned(app: App) -> set[tuple[str, str]]:
    return (await _owners(app))[0]


async def _unowned_buckets(app: App) -> list[tuple[str, str, float | None]]:
    """(store, bucket, when it was made) of this home's buckets no storage row owns."""
    owned, damaged_names = await _owners(app)
    stores = app.object_stores()
    leaked: list[tuple[str, str, float | None]] = []

    def unread(name: str, why: str) -> None:  # skipped, said: the others are still looked at
        app.log.warning("bucket_labels_unread", bucket=name, error=why)

    for kind in map(StoreKind, configured_stores(app)):
        try:
            names = await stores.tagged(kind, unread)
        except (StoreError, OSError) as exc:  # this store's leaks are unknown, said so
            app.log.warning("bucket_leak_scan_failed", store=kind.value, error=str(exc))
            continue
        for name in names:
            if (kind.value, name) in owned:
                continue
            bucket = stores.bucket(kind, name)
            try:
                labels = await bucket.labels()
                if not is_ours(labels, app.home_id()):  # another home's is never ours to touch
                    continue
                if labels is not None and labels.get(LABEL_STORAGE) in damaged_names:
                    continue  # a damaged storage row's, deleted with it
                made = await bucket.created()
            except (StoreError, OSError):
                continue
            leaked.append((kind.value, name, made))
    return leaked
