"""A storage (a bucket a task mounts): one actor per name, SkyPilot's states plus DELETING.

The actor makes the bucket when stix must (labelled ``stix-storage``/``stix-home``, the intent
``created`` written before the call), uploads the local sources (only what changed), and is
READY. A storage is its owner's: another user's launch naming it is refused (its owner never
changes). A delete is written as DELETING before the bucket is touched; one stix did not make is
only forgotten, its bucket left as is (SkyPilot's). At every start it looks
at the real bucket: a bucket gone behind stix's back is marked ``missing``; a create or upload
cut short by a daemon restart (state INIT) removes the bucket that very sync made, so nothing
leaks; a re-sync of a bucket already there (a relaunch, a recovery) keeps it and its objects.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from stixd.login_name import login_name
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope
from stixd.storage.plan import StorageSpec
from stixd.storage.stores import (
    LABEL_HOME,
    LABEL_STORAGE,
    Bucket,
    NotOurs,
    StoreError,
    StoreKind,
    label_value,
)
from stixproto import messages as m
from stixproto.errors import InvalidRequest, PermissionDenied, ProvisionError, StixError
from stixproto.states import StorageStatus as S

if TYPE_CHECKING:
    from stixd.app import App

STORAGE = "storage"
CALLER_POLL_SECONDS = 0.2
"""How often an upload looks whether its launch still waits for it."""


class StorageEvent(enum.Enum):
    SYNC = "sync"
    """A launch wants it (again): create what is missing, upload what changed."""
    READY = "ready"
    INIT_FAILED = "init_failed"
    UPLOAD_FAILED = "upload_failed"
    DELETE = "delete"


SV = StorageEvent
SETTLED = (S.READY, S.INIT_FAILED, S.UPLOAD_FAILED)
STORAGE_TRANSITIONS: dict[tuple[S, StorageEvent], S] = {
    **{(s, SV.SYNC): S.INIT for s in SETTLED},
    (S.INIT, SV.READY): S.READY,
    (S.INIT, SV.INIT_FAILED): S.INIT_FAILED,
    (S.INIT, SV.UPLOAD_FAILED): S.UPLOAD_FAILED,
    **{(s, SV.DELETE): S.DELETING for s in (S.INIT, *SETTLED)},
}


class StorageData(msgspec.Struct, frozen=True, kw_only=True):
    created: bool = False
    """stix made (or was about to make) the bucket: only then may it delete it."""
    made_by_sync: bool = False
    """The sync under way (state INIT) makes the bucket: a restart that cuts it removes it. A
    re-sync of a bucket already there never does (its objects may be a job's checkpoints)."""
    missing: bool = False
    """The bucket was not there when last looked at (deleted behind stix's back)."""
    last_error: str | None = None
    files: int = 0
    """Objects sent by the last upload."""
    clusters: list[str] = []
    """Clusters that mounted it (a non-persistent storage goes with the last of them)."""


class Ensure(msgspec.Struct, frozen=True):
    """Make the storage READY for ``cluster`` (payload of an Envelope)."""

    spec: StorageSpec
    cluster: str


class Remove(msgspec.Struct, frozen=True):
    """Delete the bucket (if stix made it) and forget the storage (payload of an Envelope)."""

    why: str = "storage delete"


class Release(msgspec.Struct, frozen=True):
    """A failed or cancelled launch on ``cluster`` gives the storage up (payload of an
    Envelope): that cluster is dropped; the storage (and the bucket stix made) goes only when no
    other cluster mounts it: two launches may each have thought they made it."""

    cluster: str
    why: str


class Prune(msgspec.Struct, frozen=True):
    """Some cluster went (down, or a managed job ended): forget the clusters gone for good; a
    non-persistent storage stix made goes with the last of them (SkyPilot's
    ``persistent: false``)."""


class Observed(msgspec.Struct, frozen=True):
    """What a look at the real bucket found (``storage ls``): kept if it changed."""

    exists: bool


def is_ours(labels: dict[str, str] | None, home_id: str) -> bool:
    return labels is not None and labels.get(LABEL_HOME) == home_id


class StorageActor(Actor):
    kind = STORAGE
    machine = Machine(STORAGE, STORAGE_TRANSITIONS)
    state_type = S
    spec_type = StorageSpec
    data_type = StorageData
    spec: StorageSpec
    data: StorageData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        self.gone = False

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return False  # a deleted storage leaves no row, as SkyPilot forgets it

    def done(self) -> bool:
        return self.gone

    def bucket(self, spec: StorageSpec | None = None) -> Bucket:
        spec = spec or self.spec
        return self.app.object_stores().bucket(StoreKind(spec.store), spec.bucket)

    # -- lifecycle -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        try:
            if self.state is S.DELETING:
                kept = await self._delete_bucket()
                await self._forget(kept or "deleted (finished after a restart)")
            elif self.state is S.INIT:
                if not self._fresh():
                    await self._abandon_init()
            else:
                await self._observe(await self.bucket().exists())
                await self._prune()  # a down or job end the daemon did not live to follow
        except (StixError, OSError) as exc:  # the store is down, or refused: kept, and said
            self.log.warning("storage_reconcile_failed", error=str(exc))
            if self.state is S.INIT:
                why = f"stixd restarted during the upload, and cleaning up failed: {exc}"
                await self.transition(SV.INIT_FAILED, why, last_error=why)

    def _fresh(self) -> bool:
        """A row a launch of this daemon's life just wrote, its first Ensure on the way: not
        one a restart cut short (nothing was made yet)."""
        return self.row.created_at >= self.app.started_at and not self.data.created

    async def _abandon_init(self) -> None:
        """A create or upload that a restart cut short: the bucket it made goes (a resumed
        launch asks again and makes it afresh); one it did not make keeps what was uploaded.
        The record stays, failed, so the launch that wanted it still finds it."""
        why = "stixd restarted during the upload"
        if self.data.made_by_sync and not self.spec.external:
            labels = await self.bucket().labels()
            if labels is not None and LABEL_HOME not in labels:
                # made, but cut before its labels were written: finish the create, so the
                # bucket is known as ours, then remove it
                await self.bucket().create({LABEL_STORAGE: label_value(self.id)})
            kept = await self._delete_bucket()
            why += f"; {kept}" if kept else "; the bucket it made was removed"
            await self.transition(SV.INIT_FAILED, why, last_error=why, made_by_sync=False)
            return
        why += "; the bucket and its objects were kept"
        await self.transition(SV.UPLOAD_FAILED, why, last_error=why)

    async def handle(self, message: Any) -> None:
        if self.gone:
            if isinstance(message, Envelope):
                message.answer(m.ErrorReply("storage_not_found", f"storage {self.id} is gone"))
            return
        if isinstance(message, Observed):
            await self._observe(message.exists)
            return
        if isinstance(message, Prune):
            try:
                await self._prune()
            except (StixError, OSError) as exc:  # kept; the next prune or boot tries again
                self.log.warning("storage_prune_failed", error=str(exc))
            return
        if not isinstance(message, Envelope):
            return
        if isinstance(message.payload, Ensure):
            message.answer(await self._ensure(message.payload, message))
        elif isinstance(message.payload, Remove):
            message.answer(await self._remove(message.payload))
        elif isinstance(message.payload, Release):
            message.answer(await self._release(message.payload))

    async def _observe(self, exists: bool) -> None:
        if self.data.missing == (not exists):
            return
        if not exists:
            self.log.warning("storage_bucket_missing", bucket=self.spec.bucket)
        await self.save(missing=not exists)

    # -- making it ready -----------------------------------------------------------------

    async def _ensure(self, req: Ensure, env: Envelope) -> m.OkReply:
        owner = self.spec.owner or login_name()
        launcher = req.spec.owner or login_name()
        if launcher != owner:  # a user launches with their own storages only (admins too:
            # the launching cluster keeps its owner, never its requester's role)
            raise PermissionDenied(
                f"storage {self.id} belongs to {owner}; user {launcher} may launch only with "
                "their own (give this mount another name)"
            )
        # the record keeps who made it and where, whatever a later launch's spec says
        spec = msgspec.structs.replace(
            req.spec, owner=self.spec.owner, workspace=self.spec.workspace
        )
        if (spec.store, spec.bucket) != (self.spec.store, self.spec.bucket):
            raise InvalidRequest(
                f"storage {self.id} is the bucket {self.spec.uri}, "
                f"not {spec.uri}; give this mount another name"
            )
        clusters = sorted({*self.data.clusters, req.cluster})
        kept = spec  # a launch with nothing to upload (a managed job's recovery) keeps the
        if not spec.sources:  # record's sources, which `storage ls` shows
            kept = msgspec.structs.replace(spec, sources=self.spec.sources, nested=self.spec.nested)
        if self.state is not S.INIT:
            await self.transition(SV.SYNC, f"launch on {req.cluster}", new_spec=kept)
        else:
            await self.save(spec=kept)
        bucket = self.bucket(spec)
        try:
            if spec.external:  # a bucket named by URI: read, never its tags (often unreadable)
                if not await bucket.exists():
                    raise StoreError(f"bucket {spec.uri} does not exist")
                labels: dict[str, str] | None = {}
            else:
                labels = await bucket.labels()
            if labels is None:
                # the intent, before the call
                await self.save(created=True, made_by_sync=True, clusters=clusters)
                env.progress(m.Progress(f"Creating bucket {spec.uri}..."))
                if spec.region:  # made in the launch's region (then used through it)
                    kind = StoreKind(spec.store)
                    bucket = self.app.object_stores().bucket(kind, spec.bucket, spec.region)
                await bucket.create({LABEL_STORAGE: label_value(self.id)})  # + ours
            else:
                await self.save(
                    created=is_ours(labels, self.app.home_id()) and not spec.external,
                    made_by_sync=False,
                    clusters=clusters,
                )
        except (StoreError, OSError) as exc:
            await self.transition(SV.INIT_FAILED, str(exc), last_error=str(exc))
            raise ProvisionError(f"storage {self.id}: {exc}") from None
        sent = 0
        try:
            with anyio.CancelScope() as cut:  # the launch went away (cancelled, or failed)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_when_caller_gone, env, cut)
                    sent = await _upload(bucket, spec)
                    tg.cancel_scope.cancel()
        except (StoreError, OSError) as exc:
            await self.transition(SV.UPLOAD_FAILED, str(exc), last_error=str(exc))
            raise ProvisionError(f"storage {self.id}: upload failed: {exc}") from None
        if cut.cancelled_caught:
            why = "the launch that wanted it went away during the upload"
            await self.transition(SV.UPLOAD_FAILED, why, last_error=why)
            raise ProvisionError(f"storage {self.id}: {why}")
        await self.transition(
            SV.READY,
            f"{sent} file(s) uploaded",
            files=sent,
            missing=False,
            last_error=None,
            made_by_sync=False,
        )
        if spec.sources:
            env.progress(m.Progress(f"Storage {self.id}: {sent} changed file(s) uploaded."))
        return m.OkReply(f"storage {self.id} is READY")

    # -- deleting ------------------------------------------------------------------------

    async def _prune(self) -> None:
        if not self.data.clusters or self.state not in SETTLED:
            return
        held = await clusters_in_use(self.app)
        if held is None:
            return
        left = [c for c in self.data.clusters if c in held]
        if left == self.data.clusters:
            return
        gone = sorted(set(self.data.clusters) - set(left))
        if left or self.spec.persistent or not self.data.created or self.spec.external:
            await self.save(clusters=left)
            return
        why = f"not persistent, and its last cluster ({', '.join(gone)}) is gone"
        await self.transition(SV.DELETE, why, clusters=[])
        kept = await self._delete_bucket()
        await self._forget(f"{why}; {kept}" if kept else why)

    async def _release(self, req: Release) -> m.OkReply:
        left = [c for c in self.data.clusters if c != req.cluster]
        if left:  # another launch made it ready for its own cluster meanwhile: kept for it
            await self.save(clusters=left)
            return m.OkReply(f"storage {self.id} kept: {', '.join(left)} mount(s) it")
        return await self._remove(Remove(why=req.why))

    async def _remove(self, req: Remove) -> m.OkReply:
        if not self.data.created or self.spec.external:  # as SkyPilot: the record goes only
            await self._forget(f"{req.why}: record only, bucket {self.spec.uri} left as is")
            return m.OkReply(forgot(self.id, self.spec))
        if self.state is not S.DELETING:
            await self.transition(SV.DELETE, req.why)
        kept = await self._delete_bucket()
        if kept:
            await self._forget(f"{req.why}: {kept}")
            return m.OkReply(f"Forgot storage {self.id}; {kept}")
        await self._forget(req.why)
        return m.OkReply(f"Deleted storage {self.id} (bucket {self.spec.uri})")

    async def _delete_bucket(self) -> str | None:
        """Delete the bucket if it is still this home's; when its labels say it is not any
        more (its tags replaced, or deleted elsewhere and the name made again by someone else)
        it is left as is and the reason returned, so the record can go (not stuck DELETING)."""
        bucket = self.bucket()
        labels = await bucket.labels()
        if labels is None:
            return None  # never made, or already gone
        try:
            if not is_ours(labels, self.app.home_id()):
                raise NotOurs(refusal(self.id, self.spec))
            await bucket.delete()
        except NotOurs:
            self.log.warning("storage_bucket_not_ours", bucket=self.spec.bucket)
            return (
                f"bucket {self.spec.uri} no longer carries this stix's label, so it is "
                "left as is (remove it with your cloud's own tools)"
            )
        self.log.info("storage_bucket_deleted", bucket=self.spec.bucket)
        return None

    async def _forget(self, why: str) -> None:
        await self.store.delete(self.row, why)
        self.app.supervisor.forget(STORAGE, self.id)
        self.gone = True


async def clusters_in_use(app: App) -> set[str] | None:
    """Clusters a storage may still be wanted on: every cluster not terminated, and the own
    cluster of every managed job not ended (torn down for a recovery, it comes back and reads
    its buckets again). None while a quarantined managed job cannot say what it holds."""
    from stixd.actors.managed_job import ManagedJobActor, cluster_name
    from stixd.actors.specs import ManagedJobSpec, spec_or_none

    held = {r.id for r in await app.store.rows("cluster", include_terminal=False)}
    for row in await app.store.rows(ManagedJobActor.kind, include_terminal=False):
        spec = spec_or_none(row, ManagedJobSpec)
        if spec is not None:
            if not spec.pool:
                held.add(spec.cluster or cluster_name(spec.name, int(row.id)))
        elif row.quarantined:
            return None
    return held


def refusal(name: str, spec: StorageSpec) -> str:
    return (
        f"storage {name}: bucket {spec.uri} was not created by this stix, "
        "so stix does not delete it (remove it with your cloud's own tools)"
    )


def forgot(name: str, spec: StorageSpec) -> str:
    return (
        f"Forgot storage {name}; its bucket {spec.uri} was not created by this stix "
        "and is left as is"
    )


async def _upload(bucket: Bucket, spec: StorageSpec) -> int:
    sent = 0
    for source in spec.sources:
        prefix = "/".join(
            p for p in (spec.prefix, _list_dir(spec, source)) if p
        )  # a list of folders: each under its own name, as SkyPilot uploads them
        sent += (await bucket.upload_tree(Path(source), prefix)).sent
    return sent


async def _cancel_when_caller_gone(env: Envelope, scope: anyio.CancelScope) -> None:
    """Cut the upload once nobody waits for its answer: a cancelled launch or managed job
    does not leave its storage uploading for nothing (its release deletes the bucket next)."""
    if env.reply is None:
        return
    while env.reply.statistics().open_receive_streams:
        await anyio.sleep(CALLER_POLL_SECONDS)
    scope.cancel()


def _list_dir(spec: StorageSpec, source: str) -> str:
    return os.path.basename(source.rstrip("/")) if spec.nested else ""
