"""Quarantined rows: how they are shown, and what removing one does.

A quarantined row (unreadable, or its actor kept crashing) has no actor, so the requests that
would go to one come here: `down`, `jobs cancel` and `jobs pool down` tear down what can be
found from the row, then write it ended (terminal) and lift the quarantine. Anything else sent
to it gets the reason and the command that removes it. Nothing here trusts the row: a machine
is torn down only through a provider the row names and under a name that is one plain path
component, so a corrupt row can never point a deletion outside stix's own folders.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Awaitable, Callable
from types import GenericAlias
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec

from stixd.actors.job import ClusterGone, JobActor, JobEvent
from stixd.store.db import Row
from stixproto import messages as m
from stixproto.errors import InvalidRequest, StixError

if TYPE_CHECKING:
    from stixd.app import App

Emit = Callable[[Any], Awaitable[None]]
_Rec = TypeVar("_Rec", bound=msgspec.Struct)
TEARDOWN_WITHIN_S = 600.0

FAILED_STATE = {
    "cluster": "FAILED",
    "job": "FAILED_DRIVER",
    "managed_job": "FAILED_CONTROLLER",
    "job_pool": "FAILED",
}
"""What a quarantined row of each kind shows as its status."""

REMOVED_STATE = {
    "cluster": "TERMINATED",
    "job": "CANCELLED",
    "managed_job": "CANCELLED",
    "job_pool": "DOWN",
}
"""The terminal state a removed row is written with."""

REUSED_NAMES = ("cluster", "job_pool")
"""Kinds whose name is launched or applied again: a removed row keeps nothing of its damage."""

_WHAT = {
    "cluster": "cluster",
    "job": "job",
    "managed_job": "managed job",
    "job_pool": "pool",
    "volume": "volume",
    "storage": "storage",
}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][-_.A-Za-z0-9]{0,199}")


def job_parts(row_id: str) -> tuple[str, str]:
    """(cluster, job id) of a job row's id (`job_row_id`)."""
    parts = row_id.rsplit("/", 2)
    return parts[0], parts[-1]


def job_number(row_id: str) -> int:
    """The job id of a job row, read from its row id (which no column damage changes)."""
    number = job_parts(row_id)[1]
    return int(number) if number.isdigit() else -1


async def cluster_jobs(app: App, cluster: str, uid: Any) -> list[Row]:
    """Every job row of cluster `cluster` (launch `uid`), by row id."""
    if not isinstance(uid, str) or not uid:
        return []
    return await app.store.rows_under("job", f"{cluster}/{uid}/")


def remove_command(kind: str, id_: str) -> str:
    if kind == "managed_job":
        return f"stixctl jobs cancel {id_}"
    if kind == "job_pool":
        return f"stixctl jobs pool down {id_}"
    if kind == "job":
        cluster, job_id = job_parts(id_)
        return f"stixctl cancel {cluster} {job_id}"
    if kind == "storage":
        return f"stixctl storage delete {id_}"
    return f"stixctl down {id_}"


def explain(kind: str, id_: str, reason: str, *, held: bool = True) -> str:
    """One line for listings and refusals: the reason and the command that removes it."""
    said = f"quarantined: {reason}" if held else reason
    return f"{said}; remove it with `{remove_command(kind, id_)}`"


def refusal(row: Row, reason: str) -> InvalidRequest:
    what = _WHAT.get(row.kind, f"stored {row.kind!r}")
    return InvalidRequest(f"{what} {row.id} is {explain(row.kind, row.id, reason)}")


def reason_of(app: App, row: Row) -> str | None:
    """Why `row` is quarantined (stored, or its actor failed in this daemon's life); None if
    it is not."""
    if row.quarantined is not None:
        return row.quarantined
    child = app.supervisor.get(row.kind, row.id)
    if child is not None and child.failed is not None and not row.terminal:
        return child.failed
    return None


def shown(
    app: App, row: Row, build: Callable[[Row], _Rec], failed: Callable[[Row, str], _Rec]
) -> _Rec:
    """`build(row)` for a listing; a quarantined row, or one whose record cannot be built or
    sent, is shown by `failed(row, why)` instead, so one bad row never fails a listing."""
    reason = reason_of(app, row)
    if reason is not None:
        return failed(row, explain(row.kind, row.id, reason))
    try:
        record = build(row)
        _check_sendable(record)
    except Exception as exc:  # the row's own damage, shown on its line and logged
        why = f"the stored row cannot be shown: {type(exc).__name__}: {exc}"
        app.log.warning("row_unshowable", kind=row.kind, id=row.id, reason=why)
        return failed(row, why if row.terminal else explain(row.kind, row.id, why, held=False))
    return record


def shown_each(
    app: App,
    rows: list[Row],
    build: Callable[[Row], _Rec],
    failed: Callable[[Row, str], _Rec],
    kind: type[_Rec],
) -> list[_Rec]:
    """`shown` of each of `rows`, their records (of type `kind`) checked as one list: one
    encode and decode for all instead of one a record (a listing's biggest cost in the daemon);
    only when the list fails is each checked on its own, to find which."""
    made: list[tuple[Row, _Rec | None]] = []
    for row in rows:
        if reason_of(app, row) is not None:
            made.append((row, None))  # `shown` tells it
            continue
        try:
            made.append((row, build(row)))
        except Exception:  # `shown` builds it again, and tells and logs why
            made.append((row, None))
    built = [record for _, record in made if record is not None]
    try:
        _check_all_sendable(built, kind)
    except Exception:
        return [shown(app, row, build, failed) for row, _ in made]
    return [shown(app, row, build, failed) if rec is None else rec for row, rec in made]


def _check_all_sendable(records: list[_Rec], kind: type[_Rec]) -> None:
    """`_check_sendable` of every one of `records`, in one encode and decode."""
    msgspec.msgpack.decode(msgspec.msgpack.encode(records), type=GenericAlias(list, (kind,)))
    for record in records:
        for value in msgspec.structs.astuple(record):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"a number of it is {value}")


def _check_sendable(record: msgspec.Struct) -> None:
    """Every field of the type clients decode it as, every integer within msgpack's range and
    every number finite (a client's arithmetic on an infinite time would fail)."""
    msgspec.msgpack.decode(msgspec.msgpack.encode(record), type=type(record))
    for value in msgspec.structs.astuple(record):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"a number of it is {value}")


async def remove(app: App, row: Row, reason: str) -> str:
    """Tear down what the row shows it made, then write it ended; returns what was done."""
    notes: list[str] = []
    teardown = _TEARDOWNS.get(row.kind)
    if teardown is not None:
        with anyio.move_on_after(TEARDOWN_WITHIN_S) as scope:
            try:
                notes += await teardown(app, row)
            except Exception as exc:  # the row is ended anyway: what it left is said, and logged
                app.log.exception("quarantine_teardown_failed", kind=row.kind, id=row.id)
                notes.append(f"tearing it down failed ({type(exc).__name__}: {exc})")
        if scope.cancelled_caught:
            notes.append(f"its teardown took over {TEARDOWN_WITHIN_S:g}s and was left")
    parent = JobActor.parent_of(row) if row.kind == "job" else None
    if row.kind not in REMOVED_STATE:
        parent = row.parent
    await app.store.settle(
        dataclasses.replace(row, quarantined=reason),
        state=REMOVED_STATE.get(row.kind, row.state),
        parent=parent,
        why=f"removed while quarantined ({reason})",
        fresh=row.kind in REUSED_NAMES or row.kind not in REMOVED_STATE,
    )
    app.supervisor.forget(row.kind, row.id)
    what = _WHAT.get(row.kind, f"stored {row.kind!r}")
    app.log.info("quarantine_removed", kind=row.kind, id=row.id)
    said = [f"{note[0].upper()}{note[1:].rstrip('.')}." for note in notes]
    return " ".join([f"{what[0].upper()}{what[1:]} {row.id} removed (it was quarantined).", *said])


async def end_jobs(app: App, cluster: str, uid: Any, gone: ClusterGone) -> None:
    """Tell the live jobs of a cluster that it is gone; a job that cannot hear it
    (quarantined) is written ended here. Without a readable `uid` (a damaged cluster row),
    the live jobs of every launch of its name."""
    if isinstance(uid, str) and uid:
        jobs = await cluster_jobs(app, cluster, uid)
    else:
        jobs = await app.store.rows_under("job", f"{cluster}/")
    for job in jobs:
        if job.terminal:
            continue
        if job.quarantined is None and app.supervisor.tell("job", job.id, gone):
            continue
        job = await app.store.get("job", job.id) or job  # it may have ended since the listing
        if job.terminal:
            continue
        reason = reason_of(app, job) or (app.spawn(job).failed)
        if reason is None:
            app.supervisor.tell("job", job.id, gone)
        else:
            await remove(app, job, reason)


# -- what each kind tears down ---------------------------------------------------------------


async def _cluster(app: App, row: Row) -> list[str]:
    provider_name = row.spec.get("provider", app.default_infra)
    provider = app.providers.get(provider_name) if isinstance(provider_name, str) else None
    notes = []
    if "provider" not in row.spec:  # unreadable, or never launched: local is harmless to try
        notes.append(
            "its infra is not known from the row, so only a local node of its name was looked "
            "for: `stixctl leaks` finds cloud machines it may have left"
        )
    if provider is None:
        notes.append(
            f"its infra ({provider_name!r}) is unknown, so nothing was torn down: "
            "`stixctl leaks` finds cloud machines it may have left"
        )
    elif not _PLAIN_NAME.fullmatch(row.id):
        notes.append("its name is not a plain name, so nothing was torn down")
    else:
        try:
            await provider.terminate(row.id)
        except StixError as exc:
            notes.append(f"tearing it down failed ({exc.message}): see `stixctl leaks`")
    gone = ClusterGone(JobEvent.CANCELLED, "cluster removed")
    await end_jobs(app, row.id, row.data.get("uid"), gone)
    return notes


async def _managed_job(app: App, row: Row) -> list[str]:
    from stixd.actors.asks import ask_cluster
    from stixd.actors.job_pool import Release

    pool = row.spec.get("pool")
    if isinstance(pool, str) and pool:
        app.supervisor.tell("job_pool", pool, Release(_int(row.id)))
        return []
    cluster = row.spec.get("cluster")
    if not isinstance(cluster, str) or not cluster:
        return ["its cluster is not known from the row: look for it in `stixctl status`"]
    crow = await app.store.get("cluster", cluster)
    if crow is None or crow.terminal:
        return []
    try:
        await ask_cluster(app, cluster, m.Down(clusters=[cluster]), _quiet)
    except StixError as exc:
        return [f"its cluster {cluster} was not torn down: {exc.message}"]
    return [f"its cluster {cluster} was torn down"]


async def _pool(app: App, row: Row) -> list[str]:
    from stixd.actors.asks import ask_cluster

    prefix = f"{row.id}-"
    workers = [
        r.id
        for r in await app.store.rows("cluster", include_terminal=False)
        if r.id.startswith(prefix) and r.id[len(prefix) :].isdigit()
    ]
    notes = []
    for worker in workers:
        try:
            await ask_cluster(app, worker, m.Down(clusters=[worker]), _quiet)
        except StixError as exc:
            notes.append(f"worker {worker} was not torn down: {exc.message}")
    return notes


_MADE_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
"""A bucket name stix makes (``stixd.storage.plan``): all a damaged row may point a delete at."""


def raw_bucket(row: Row) -> tuple[str, str] | None:
    """(store, bucket) as a storage row's spec that does not decode still names them, if it
    names a store stix has and a bucket name stix could have made; None otherwise."""
    from stixd.storage.stores import StoreKind

    store, bucket = row.spec.get("store"), row.spec.get("bucket")
    if store not in {k.value for k in StoreKind} or not isinstance(bucket, str):
        return None
    return (str(store), bucket) if _MADE_BUCKET.fullmatch(bucket) else None


async def _storage(app: App, row: Row) -> list[str]:
    """Its bucket goes only when its labels prove stix made it for this very storage (this
    home's, ``stix-storage`` its name) and no other storage names it; else it is left, said."""
    from stixd.actors.specs import spec_or_none
    from stixd.actors.storage import STORAGE, is_ours
    from stixd.storage.plan import StorageSpec
    from stixd.storage.stores import LABEL_STORAGE, StoreKind, label_value

    found = raw_bucket(row)
    if found is None:
        return ["its bucket is not known from the row, so it was left: `stixctl leaks` finds it"]
    store, name = found
    uri = f"{store}://{name}"
    for other in await app.store.rows(STORAGE):
        spec = spec_or_none(other, StorageSpec)
        if other.id != row.id and spec is not None and (spec.store, spec.bucket) == found:
            return [f"its bucket {uri} is storage {other.id}'s too, so it was left"]
    bucket = app.object_stores().bucket(StoreKind(store), name)
    labels = await bucket.labels()
    if labels is None:
        return []
    if not is_ours(labels, app.home_id()) or labels.get(LABEL_STORAGE) != label_value(row.id):
        return [f"its bucket {uri} was not made by stix for it, so it was left as is"]
    await bucket.delete()
    return [f"its bucket {uri} was deleted"]


_TEARDOWNS: dict[str, Callable[[App, Row], Awaitable[list[str]]]] = {
    "cluster": _cluster,
    "managed_job": _managed_job,
    "job_pool": _pool,
    "storage": _storage,
}
"""A job is cancelled on its nodes by its cluster (`ClusterActor`), which then removes it."""


async def _quiet(event: Any) -> None:
    """Progress of a teardown done on a removal's behalf is not relayed."""


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1
