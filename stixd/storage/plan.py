"""A task's storage file mounts, resolved into what the storage actors keep and the nodes get.

SkyPilot's rules, carried over (sky/data/storage.py, sky/task.py 0.14.1):

- ``/dst: s3://bucket/sub`` (the URI shorthand) copies an existing bucket onto the node (COPY);
  stix never creates nor deletes such a bucket.
- ``/dst: {name, source, store, persistent, mode}``: ``source`` is a local folder, a list of
  them (each lands under its own base name), or a bucket URI (then the bucket is not stix's);
  ``name`` alone names a bucket stix creates if it is missing. ``mode`` defaults to MOUNT,
  ``persistent`` to true.
- The store, when absent: the URI's scheme; else the store of the cloud the task asks for when
  stix can reach that store; else the first store configured here (S3 when none is).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from stixproto.errors import InvalidTask
from stixproto.task import Storage, Task

SCHEMES = {"s3": "s3", "gs": "gcs", "r2": "r2"}
"""URI scheme → store, for the stores this build talks to (Azure is an https URL)."""
AZURE_HOST = ".blob.core.windows.net"
STORE_ORDER = ("s3", "gcs", "azure", "r2")
"""SkyPilot's fallback order among enabled storage clouds (AWS first)."""
CLOUD_STORE = {"aws": "s3", "gcp": "gcs", "azure": "azure", "cloudflare": "r2"}
MODES = ("MOUNT", "COPY", "MOUNT_CACHED")
CACHE_KEYS = {
    "vfs_cache_max_size": "--vfs-cache-max-size",
    "vfs_cache_max_age": "--vfs-cache-max-age",
    "vfs_write_back": "--vfs-write-back",
    "vfs_read_ahead": "--vfs-read-ahead",
    "buffer_size": "--buffer-size",
    "transfers": "--transfers",
    "dir_cache_time": "--dir-cache-time",
}
"""`config.mount_cached` keys stix passes to rclone (SkyPilot's knobs, rclone's flags)."""
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KNOB = re.compile(r"[0-9A-Za-z.]{1,32}")


class StorageSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One storage as its actor keeps it (the row's spec) and the nodes mount it."""

    name: str
    """The record's name: the bucket's, or the mount's generated one for a nameless source."""
    store: str
    bucket: str
    prefix: str = ""
    """A sub-path inside the bucket (``s3://bucket/sub``): what the node sees at the mount."""
    sources: list[str] = []
    """Local folders to upload (absolute); empty for a bucket that already holds the data."""
    nested: bool = False
    """The source was a list: each folder lands under its own base name."""
    external: bool = False
    """The task named an existing bucket by URI: stix reads it and never deletes it."""
    persistent: bool = True
    mode: str = "MOUNT"
    mount_cached: dict[str, str] = {}
    """rclone flag → value, from ``config.mount_cached`` (validated)."""
    owner: str | None = None
    workspace: str | None = None

    @property
    def uri(self) -> str:
        """The bucket as a task names it (``gs://`` for GCS; Azure's account is the store's)."""
        scheme = {v: k for k, v in SCHEMES.items()}.get(self.store, self.store)
        return f"{scheme}://{self.bucket}"


class MountPlan(msgspec.Struct, frozen=True):
    dest: str
    storage: StorageSpec


def split_uri(uri: str, where: str) -> tuple[str, str, str]:
    """(store, bucket, prefix) of a bucket URI; a store this build lacks is refused in one line."""
    scheme, _, rest = uri.partition("://")
    lowered = scheme.lower()
    if lowered == "https" and AZURE_HOST in rest.split("/", 1)[0].lower():
        _host, _, path = rest.partition("/")
        bucket, _, prefix = path.strip("/").partition("/")
        return "azure", bucket, prefix.strip("/")
    store = SCHEMES.get(lowered)
    if store is None:
        raise InvalidTask(
            f"{where}: {scheme}:// buckets are not supported by this build; use s3://, gs://, "
            f"r2:// or https://<account>{AZURE_HOST}/<container>"
        )
    bucket, _, prefix = rest.strip("/").partition("/")
    return store, bucket, prefix.strip("/")


def check_bucket(bucket: str, where: str) -> str:
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidTask(
            f"{where}: bucket name {bucket!r} is not valid: 3 to 63 lowercase letters, digits, "
            "'-' or '.', starting and ending with a letter or digit"
        )
    return bucket


def default_store(task: Task, configured: Sequence[str]) -> str:
    """SkyPilot's choice when a storage names no store (see the module's docstring)."""
    wanted = CLOUD_STORE.get((task.resources_or_default().cloud or "").lower())
    if wanted is not None and wanted in configured:
        return wanted
    for store in STORE_ORDER:
        if store in configured:
            return store
    return "s3"


def cache_flags(config: Mapping[str, Any] | None, where: str) -> dict[str, str]:
    """``config.mount_cached`` as rclone flags; an unknown key or odd value is refused."""
    knobs = (config or {}).get("mount_cached") or {}
    if not isinstance(knobs, Mapping):
        raise InvalidTask(f"{where}.config.mount_cached: expected a map of settings")
    flags: dict[str, str] = {}
    for key, value in knobs.items():
        flag = CACHE_KEYS.get(str(key))
        if flag is None:
            known = ", ".join(CACHE_KEYS)
            raise InvalidTask(f"{where}.config.mount_cached.{key}: unknown setting; known: {known}")
        text = str(value)
        if isinstance(value, bool) or not _KNOB.fullmatch(text):
            raise InvalidTask(
                f"{where}.config.mount_cached.{key}: expected a number or size like 10G, "
                f"got {text[:40]!r}"
            )
        flags[flag] = text
    return flags


def generated_name(cluster: str, dest: str) -> str:
    """The bucket of a nameless local source: SkyPilot's ``skypilot-filemounts-…``, ours."""
    digest = hashlib.sha256(f"{cluster}\0{dest}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]", "-", cluster.lower())[:30].strip("-") or "task"
    return f"stix-filemounts-{stem}-{digest}"


def _local(path: str, where: str) -> str:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        raise InvalidTask(f"{where}: the source {path!r} is not a folder on this machine")
    return full


def plan_mount(
    dest: str,
    src: str | Storage,
    task: Task,
    *,
    cluster: str,
    configured: Sequence[str],
    owner: str | None = None,
    workspace: str | None = None,
) -> MountPlan:
    where = f"file_mounts.{dest}"
    if isinstance(src, str):  # the URI shorthand: copy an existing bucket
        store, bucket, prefix = split_uri(src, where)
        spec = StorageSpec(
            name=check_bucket(bucket, where),
            store=store,
            bucket=bucket,
            prefix=prefix,
            external=True,
            mode="COPY",
        )
        return MountPlan(dest, msgspec.structs.replace(spec, owner=owner, workspace=workspace))
    mode = src.mount_mode
    if mode not in MODES:
        raise InvalidTask(f"{where}.mode: expected one of {', '.join(MODES)}, got {src.mode!r}")
    sources = src.sources()
    uri = sources[0] if len(sources) == 1 and "://" in sources[0] else None
    external = uri is not None
    prefix = ""
    if uri is not None:
        store, bucket, prefix = split_uri(uri, f"{where}.source")
        if src.store is not None and SCHEMES.get(src.store, src.store) != store:
            raise InvalidTask(f"{where}.store: {src.store!r} does not match the source {uri!r}")
        local: list[str] = []
    else:
        store = src.store.lower() if src.store else default_store(task, configured)
        if store not in STORE_ORDER:
            raise InvalidTask(
                f"{where}.store: {store!r} buckets are not supported by this build; "
                f"use one of {', '.join(STORE_ORDER)}"
            )
        bucket = src.name or generated_name(cluster, dest)
        local = [_local(s, f"{where}.source") for s in sources]
    check_bucket(bucket, f"{where}.name" if src.name else where)
    name = src.name or bucket  # a named storage reading a URI source keeps its name
    persistent = True if external else src.is_persistent
    spec = StorageSpec(
        name=name,
        store=store,
        bucket=bucket,
        prefix=prefix,
        sources=local,
        nested=isinstance(src.source, list),
        external=external,
        persistent=persistent,
        mode=mode,
        mount_cached=cache_flags(src.config, where),
        owner=owner,
        workspace=workspace,
    )
    return MountPlan(dest, spec)


def plan_mounts(
    task: Task,
    *,
    cluster: str,
    configured: Sequence[str],
    owner: str | None = None,
    workspace: str | None = None,
) -> list[MountPlan]:
    """Every bucket mount of ``task`` (local-path mounts are synced, not planned here)."""
    plans = []
    for dest, src in task.file_mounts.items():
        if isinstance(src, str) and "://" not in src:
            continue
        plans.append(
            plan_mount(
                dest,
                src,
                task,
                cluster=cluster,
                configured=configured,
                owner=owner,
                workspace=workspace,
            )
        )
    seen: dict[str, StorageSpec] = {}
    for plan in plans:
        other = seen.setdefault(plan.storage.name, plan.storage)
        if other.bucket != plan.storage.bucket or other.store != plan.storage.store:
            raise InvalidTask(
                f"file_mounts: storage {plan.storage.name!r} is named twice for different buckets"
            )
    return plans


def without_local_sources(task: Task) -> Task:
    """``task`` with each bucket mount's local ``source`` dropped: a managed job's recovery
    mounts the bucket its first launch uploaded, as SkyPilot (which uploads once at
    ``jobs launch``); uploading the folder again would overwrite what the job wrote there, or
    fail the recovery if the folder is gone. The bucket, its name and its store stay the same."""
    mounts: dict[str, str | Storage] = {}
    for dest, src in task.file_mounts.items():
        if isinstance(src, Storage) and not any("://" in s for s in src.sources()):
            src = msgspec.structs.replace(src, source=None)
        mounts[dest] = src
    return msgspec.structs.replace(task, file_mounts=mounts)
