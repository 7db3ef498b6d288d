"""Whose data a task reaches: the volumes it names and the stix buckets it reads or mounts by
URI are the requesting user's own (an admin's: anyone's), checked before anything launches.

A stix bucket's name is its storage's ``bucket``: a URI naming it (``s3://b``, or a named mount
whose ``source`` is that URI) would hand the task the bucket's keys, so it is refused as acting
on that storage is (`ownership.check_acts`)."""

from __future__ import annotations

from typing import Any

from stixd.actors import volume_mounts
from stixd.actors.specs import spec_or_none
from stixd.actors.storage import STORAGE
from stixd.actors.volume import VOLUME
from stixd.app import App
from stixd.control import ownership
from stixd.storage.plan import StorageSpec, plan_mounts
from stixproto.errors import InvalidTask
from stixproto.task import Task


async def check_owned(app: App, task: Task) -> None:
    """Refuse ``task`` if it names a volume or a stix bucket the requester may not act on
    (checked first: whose it is comes before where it may run)."""
    for v in volume_mounts.named_volumes(task):
        row = await app.store.get(VOLUME, v.name)
        if row is not None:
            gone = InvalidTask(f"volumes.{v.dest}: volume {v.name!r} does not exist")
            ownership.check_acts(app, row, f"volume {v.name}", gone)
    await _check_buckets(app, task)


async def _check_buckets(app: App, task: Any) -> None:
    wanted = {
        (p.storage.store, p.storage.bucket): p.dest
        for p in plan_mounts(task, cluster="check", configured=())
        if p.storage.external
    }
    if not wanted:
        return
    for row in await app.store.rows(STORAGE):
        spec = spec_or_none(row, StorageSpec)
        if spec is None or spec.external or (spec.store, spec.bucket) not in wanted:
            continue  # a storage recording a bucket stix did not make is no one's
        dest = wanted[(spec.store, spec.bucket)]
        gone = InvalidTask(f"file_mounts.{dest}: bucket {spec.uri} is not yours to read")
        ownership.check_acts(app, row, f"bucket {spec.uri} (storage {row.id})", gone)
